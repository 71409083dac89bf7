# syntax=docker/dockerfile:1
# ferry-init: the init container that fetches a pod's dependencies.
# Build from the repository root:
#   docker build -f deploy/docker/ferry-init.Dockerfile -t ghcr.io/ferry-dev/ferry-init:0.1.0 .

FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ferry-init --bin ferry-init \
 && install -D -m 0755 target/release/ferry-init /out/ferry-init

# glibc, libgcc and CA certificates; no shell. "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ferry-init /usr/local/bin/ferry-init
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ferry-init" \
      org.opencontainers.image.description="ferry init container: fetches a pod's dependencies, verified, into its volumes" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.source="https://github.com/ferry-dev/ferry" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ferry-init"]
