#!/usr/bin/env bash
# The long mode of the hostile-input suite: runs every cargo-fuzz target in
# fuzz/ for a bounded time each (default 30 s; `tests/fuzz.sh 300` for five
# minutes a target) and prints the executions each one made.
#
# cargo-fuzz needs nightly-only compiler flags; on a stable toolchain this
# script sets RUSTC_BOOTSTRAP=1 to allow them for the fuzz build only.
# A crash leaves its input in fuzz/artifacts/<target>/; copy it into
# fuzz/corpus/<target>/ (committed) so every later run replays it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-30}
cd "$root/fuzz"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
rustc --version | grep -q nightly || export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build -O $targets 2>/dev/null || cargo fuzz build -O
total=0
for target in $targets; do
  # New inputs go to a scratch corpus; the committed seeds are read only.
  mkdir -p "corpus/$target" "target/corpus-work/$target"
  log=$(mktemp)
  cargo fuzz run -O "$target" "target/corpus-work/$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1 || {
    cat "$log"; echo "fuzz target $target FAILED (see fuzz/artifacts/$target/)"; exit 1; }
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  echo "fuzz $target: $execs executions in ${seconds}s, no crash"
  total=$((total + execs))
  rm -f "$log"
done
echo "fuzz: $total executions over $(echo $targets | wc -w) targets, no crash"
