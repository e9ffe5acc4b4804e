# syntax=docker/dockerfile:1
# Image of k8s-upgrade-chain: the detector, every chain phase and the weekly report run this one
# binary. Build: docker build -t registry.example/k8s-upgrade-chain:0.1.0 .
# Use a registry you control and pin the tag (seed failure 18: a lost image kept the Jobs alive
# only through node caches).

FROM rust:bookworm AS builder
# libssl-dev and pkg-config: libssh2-sys (ssh2) links the system OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
# zlib (pulled in by libssh2) is linked statically: the distroless runtime is not guaranteed to
# carry libz.so.1. OpenSSL stays dynamic: libssl3 is part of the distroless base.
ENV LIBZ_SYS_STATIC=1
WORKDIR /src
COPY . .
# Release profile (Cargo.toml): LTO, one codegen unit, opt-level s, stripped.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin k8s-upgrade-chain \
 && cp target/release/k8s-upgrade-chain /k8s-upgrade-chain

# distroless cc: glibc, libgcc, libssl3 and CA certificates; no shell; user nonroot (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /k8s-upgrade-chain /usr/local/bin/k8s-upgrade-chain
# The Job template and the per-node script are compiled into the binary; copies are shipped for
# reference and for `job.template` overrides that start from the built-in one.
COPY templates/job.yaml.j2 /usr/share/k8s-upgrade-chain/templates/job.yaml.j2
COPY scripts/update_k8s.sh /usr/share/k8s-upgrade-chain/scripts/update_k8s.sh
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/k8s-upgrade-chain"]
