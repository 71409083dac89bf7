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
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo build --locked --workspace --bins
containers=${FERRY_TEST_CONTAINERS:-${CARGO_TARGET_DIR:-$root/target}/containers}
bash deploy/images/build.sh --binaries "${CARGO_TARGET_DIR:-$root/target}/debug" \
  --root "$containers/storage" --runroot "$containers/run"
cargo nextest run --locked --workspace --no-fail-fast "$@"
