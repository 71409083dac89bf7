# syntax=docker/dockerfile:1
# ferry: the submit client (for CI jobs that stage or submit from a pod).
# Build from the repository root:
#   docker build -f deploy/docker/ferry.Dockerfile -t ghcr.io/ferry-dev/ferry:0.1.0 .

FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ferry-client --bin ferry \
 && install -D -m 0755 target/release/ferry /out/ferry

# glibc, libgcc and CA certificates; no shell. "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ferry /usr/local/bin/ferry
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ferry" \
      org.opencontainers.image.description="ferry client: stages dependencies and wraps spark-submit" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.source="https://github.com/ferry-dev/ferry" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ferry"]
