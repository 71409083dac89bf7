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
cargo build --release -p ferry-server -p ferry-init --bins
# The client scenarios are reported as "not run" while ferry does not build.
cargo build --release -p ferry-client --bins \
  || echo "[bench] ferry (client) did not build; its scenarios will be skipped" >&2
exec cargo run --release -p ferry-benches --bin ferry-bench -- --skip-install "$@"
