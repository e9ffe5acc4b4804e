#!/usr/bin/env bash
# build-image.sh: builds the k8s-upgrade-chain container image without a container daemon.
#
#   scripts/build-image.sh rootfs DIR        the image's root filesystem, laid out in DIR
#   scripts/build-image.sh oci DIR [TAG]     the same root filesystem as an OCI image layout in
#                                            DIR (tag TAG, default the crate version), via umoci
#
# The Dockerfile runs `rootfs` in its builder stage and copies DIR into `FROM scratch`, so both
# ways give the same files, user and entrypoint (tests/image.rs checks that they agree).
#
# The image is `scratch` plus:
#   /usr/local/bin/k8s-upgrade-chain            the release binary, fully static (below)
#   /etc/ssl/certs/ca-certificates.crt          CA roots for Slack and other HTTPS endpoints
#   /etc/passwd, /etc/group                     user and group 65532 (nonroot)
#   /etc/nsswitch.conf                          `hosts: files dns` (see below)
#   /usr/share/k8s-upgrade-chain/templates/job.yaml.j2   for reference: both are compiled
#   /usr/share/k8s-upgrade-chain/scripts/update_k8s.sh   into the binary, which uses its own
#   /tmp                                        HOME of the Jobs (an emptyDir in a pod)
#
# Why fully static, on glibc: the image has no libc, libssl or libz to link against, and no
# musl target can be installed on the build machines. So:
#   - `-C target-feature=+crt-static` links glibc statically. It is set through RUSTFLAGS here,
#     with an explicit `--target`, so that it applies to the binary only: build scripts and
#     proc macros stay dynamic (they cannot be static), and a plain `cargo build`/`cargo test`
#     is untouched (no .cargo/config.toml).
#   - ssh2's `vendored-openssl` (our feature of the same name) builds OpenSSL from source and
#     links it statically; libssh2 itself is always built from its bundled source.
#   - LIBZ_SYS_STATIC=1 builds zlib from libz-sys's bundled source and links it statically.
#   - Name resolution stays glibc's getaddrinfo: since glibc 2.34 the `files` and `dns` NSS
#     modules are part of libc itself, so a static binary resolves through /etc/hosts and
#     /etc/resolv.conf (search domains and ndots included) without loading any shared NSS
#     module. Kubernetes mounts both files into the pod; /etc/nsswitch.conf puts /etc/hosts
#     first (hostAliases). tests/image.rs resolves a Prometheus, a Pushgateway and a Slack URL
#     through both from the unpacked image.
#   - Linked by lld (Debian's `lld`): `--pack-dyn-relocs=relr` (DT_RELR, glibc >= 2.36) keeps
#     the binary a static PIE (ASLR) but packs its ~45,000 relative relocations from 1 MB into
#     a few KB, and `--icf=all` folds functions with identical machine code (monomorphised
#     generics mostly): about 160 KB less than GNU ld. Rust promises nothing about function
#     addresses being distinct, so folding them is sound.
#   - Cargo profile `image` (Cargo.toml): the release profile (LTO, one codegen unit,
#     stripped) with opt-level "z". The suite builds this same binary, so the size it prints is
#     the shipped one.
#
# Environment: CARGO_TARGET_DIR (default <repo>/target/image, kept apart from the normal build
# so that the static flags never mix with it), CARGO (default cargo), CA_BUNDLE (default
# /etc/ssl/certs/ca-certificates.crt, from Debian's ca-certificates).
set -euo pipefail
# The image's directories and files get the modes given here, whatever the caller's umask.
umask 022

PROG=build-image.sh
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN=k8s-upgrade-chain
CARGO="${CARGO:-cargo}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/image}"

die() {
  echo "$PROG: $*" >&2
  exit 1
}

usage() {
  echo "usage: $PROG rootfs DIR | $PROG oci DIR [TAG]" >&2
  exit 2
}

# Builds the static binary and prints its path.
build_binary() {
  local host target bin
  host="$(rustc -vV | sed -n 's/^host: //p')"
  case "$host" in
    *-linux-gnu) target="$host" ;;
    *) die "the image build needs a *-linux-gnu host toolchain, got ${host:-nothing}" ;;
  esac
  command -v ld.lld >/dev/null || die "ld.lld not found (Debian package lld)"
  echo "$PROG: building the static release binary for $target in $CARGO_TARGET_DIR" >&2
  RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-fuse-ld=lld -C link-arg=-Wl,--pack-dyn-relocs=relr -C link-arg=-Wl,--icf=all" \
    LIBZ_SYS_STATIC=1 \
    "$CARGO" build --manifest-path "$ROOT/Cargo.toml" --profile image --locked \
    --target "$target" --features vendored-openssl --bin "$BIN" >&2
  bin="$CARGO_TARGET_DIR/$target/image/$BIN"
  # A dynamic binary would fail in the image with a bare "no such file or directory" (no
  # loader): refuse it here with the reason.
  if readelf --program-headers --dynamic "$bin" | grep -Eq 'INTERP|\(NEEDED\)'; then
    readelf --program-headers --dynamic "$bin" | grep -E 'INTERP|interpreter|NEEDED' >&2
    die "$bin is not fully static"
  fi
  echo "$bin"
}

# Lays out the image's root filesystem in $1 (which must not exist or be empty).
rootfs() {
  local dir="$1" bin
  [ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (install Debian's ca-certificates)"
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    die "$dir is not empty"
  fi
  bin="$(build_binary)"
  mkdir -p "$dir"
  install -D -m 0755 "$bin" "$dir/usr/local/bin/$BIN"
  install -D -m 0644 "$CA_BUNDLE" "$dir/etc/ssl/certs/ca-certificates.crt"
  install -D -m 0644 /dev/stdin "$dir/etc/passwd" <<'EOF'
nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin
EOF
  install -D -m 0644 /dev/stdin "$dir/etc/group" <<'EOF'
nonroot:x:65532:
EOF
  install -D -m 0644 /dev/stdin "$dir/etc/nsswitch.conf" <<'EOF'
hosts: files dns
EOF
  install -D -m 0644 "$ROOT/templates/job.yaml.j2" "$dir/usr/share/$BIN/templates/job.yaml.j2"
  install -D -m 0644 "$ROOT/scripts/update_k8s.sh" "$dir/usr/share/$BIN/scripts/update_k8s.sh"
  install -d -m 1777 "$dir/tmp"
}

# The image config: the same user, entrypoint and working directory as the Dockerfile.
USER_SPEC=65532:65532
ENTRYPOINT=/usr/local/bin/$BIN

WORK=""
cleanup() {
  if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

oci() {
  local dir="$1" tag="$2"
  command -v umoci >/dev/null || die "umoci not found (Debian package umoci)"
  [ ! -e "$dir" ] || die "$dir exists"
  WORK="$(mktemp -d)"
  rootfs "$WORK/rootfs"
  umoci init --layout "$dir"
  umoci new --image "$dir:$tag"
  # One layer holding the whole root filesystem, owned by root like a Dockerfile COPY (run as
  # another user, --rootless maps that user's files to root).
  local rootless=()
  [ "$(id -u)" -eq 0 ] || rootless=(--rootless)
  umoci insert "${rootless[@]}" --image "$dir:$tag" \
    --history.created_by "scripts/build-image.sh rootfs" "$WORK/rootfs" /
  umoci config --image "$dir:$tag" --no-history \
    --os linux --architecture "$(oci_arch)" \
    --config.user "$USER_SPEC" \
    --config.entrypoint "$ENTRYPOINT" \
    --config.workingdir / \
    --config.env PATH=/usr/local/bin \
    --config.label "org.opencontainers.image.title=$BIN" \
    --config.label "org.opencontainers.image.version=$(crate_version)"
  umoci gc --layout "$dir"
  report_size "$dir" "$tag" "$WORK/rootfs"
}

oci_arch() {
  case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    *) uname -m ;;
  esac
}

crate_version() {
  sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1
}

# Prints the image size: the compressed layer (what a registry stores and a node pulls) and
# the unpacked root filesystem's files (about what `docker image ls` shows).
report_size() {
  local dir="$1" tag="$2" rootfs="$3" blobs unpacked
  # Every blob of a fresh layout after `umoci gc`: the layer, the config, the manifest.
  blobs="$(du -cb "$dir"/blobs/sha256/* | tail -n 1 | cut -f 1)"
  unpacked="$(find "$rootfs" -type f -printf '%s\n' | awk '{ n += $1 } END { print n }')"
  echo "$PROG: image $dir:$tag: $blobs bytes compressed (layer, config and manifest)," \
    "$unpacked bytes unpacked" >&2
}

case "${1:-}" in
  rootfs)
    [ $# -eq 2 ] || usage
    rootfs "$2"
    ;;
  oci)
    [ $# -eq 2 ] || [ $# -eq 3 ] || usage
    oci "$2" "${3:-$(crate_version)}"
    ;;
  *) usage ;;
esac
