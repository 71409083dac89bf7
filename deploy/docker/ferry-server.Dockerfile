# syntax=docker/dockerfile:1
# ferry-server: the staging server.
# Build from the repository root:
#   docker build -f deploy/docker/ferry-server.Dockerfile -t ghcr.io/ferry-dev/ferry-server:0.1.0 .

FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ferry-server --bin ferry-server \
 && install -D -m 0755 target/release/ferry-server /out/ferry-server \
 && install -d -m 0750 /out/data

# glibc, libgcc and CA certificates; no shell. "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ferry-server /usr/local/bin/ferry-server
# Local data lands here unless --data/FERRY_DATA says otherwise; mount a
# volume there to keep it.
COPY --from=build --chown=65532:65532 /out/data /var/lib/ferry/data
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ferry-server" \
      org.opencontainers.image.description="ferry staging server: content-addressed blobs and bundles for batch job dependencies" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.source="https://github.com/ferry-dev/ferry" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
WORKDIR /var/lib/ferry
ENV FERRY_LISTEN=0.0.0.0:7070 FERRY_DATA=/var/lib/ferry/data
EXPOSE 7070
ENTRYPOINT ["/usr/local/bin/ferry-server"]
