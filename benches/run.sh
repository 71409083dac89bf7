#!/usr/bin/env bash
# The benchmark's one entry point:
#
#   benches/run.sh [--quick] [--runs N] [--only server-io,wrk] [--keep-data]
#
# installs the references (tests/install-deps.sh: nginx, curl, aria2c, wrk,
# openssl), builds the release binaries under test, and runs ferry-bench,
# which prints the table and writes benches/results/latest-{quick,full}.*
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash tests/install-deps.sh
# One build of everything the run needs (separate -p builds would each
# resolve features their own way and compile the dependencies again).
cargo build --locked --release -p ferry-server -p ferry-init -p ferry-client -p ferry-benches --bins
exec "${CARGO_TARGET_DIR:-$root/target}/release/ferry-bench" --skip-install "$@"
