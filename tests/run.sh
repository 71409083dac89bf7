#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the real servers the
# tests need (tests/install-deps.sh), builds the workspace once, and runs
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
cargo nextest run --locked --workspace --no-fail-fast "$@"
