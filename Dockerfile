# syntax=docker/dockerfile:1
# Image of k8s-upgrade-chain: the detector, every chain phase and the weekly report run this one
# binary. Build: docker build -t registry.example/k8s-upgrade-chain:0.1.0 .
# Use a registry you control and pin the tag (seed failure 18: a lost image kept the Jobs alive
# only through node caches).
#
# Without a daemon or a registry, `scripts/build-image.sh oci DIR` builds the same image as an
# OCI layout with umoci (CI does, and runs it from an empty root: tests/image.rs). Both run
# the same script for the root filesystem; its header explains the static build.

FROM rust:bookworm AS builder
# perl and make build the vendored OpenSSL, lld links the binary, binutils' readelf checks that
# it is static, ca-certificates is the CA bundle copied into the image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils ca-certificates lld make perl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-image.sh rootfs /rootfs

# Nothing but the root filesystem: the static binary, CA certificates, /etc/passwd with 65532,
# /etc/nsswitch.conf, and the Job template and update_k8s.sh for reference.
FROM scratch
COPY --from=builder /rootfs/ /
# The same config as scripts/build-image.sh gives the OCI image (tests/image.rs compares them).
ENV PATH=/usr/local/bin
WORKDIR /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/k8s-upgrade-chain"]
