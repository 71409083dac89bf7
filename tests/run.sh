#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the real servers the
# tests need (tests/install-deps.sh), builds the workspace once, builds the
# images from that same debug build (deploy/images/build.sh, into container
# storage under the target dir, where the pod tests find them), and runs
# every test with nextest. Style and lints are part of the suite: `cargo fmt
# --check` and clippy with warnings denied run first. Extra arguments go to
# `cargo nextest run`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tests/install-deps.sh
# shellcheck disable=SC1091
source "${CARGO_TARGET_DIR:-$root/target}/emulators/env.sh"
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# Incremental state only helps a developer's next edit; the suite goes without.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# One build for the images and the tests: --tests resolves features as
# `cargo test` does (dev-dependencies included), so nextest below reuses every
# artifact instead of compiling tokio, hyper and the rest a second time.
cargo build --locked --workspace --bins --tests
containers=${FERRY_TEST_CONTAINERS:-${CARGO_TARGET_DIR:-$root/target}/containers}
bash deploy/images/build.sh --binaries "${CARGO_TARGET_DIR:-$root/target}/debug" \
  --root "$containers/storage" --runroot "$containers/run"
cargo nextest run --locked --workspace --no-fail-fast "$@"
