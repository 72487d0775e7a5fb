#!/usr/bin/env bash
# The engine's concurrency tests, 20 times in a row beside a CPU hog (one
# busy loop per core), issue 13: tests that race the flusher or lean on
# timing fail here long before a user's first `cargo test` does.
# STRESS_RUNS overrides the count.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${STRESS_RUNS:-20}
tests=(concurrency flusher_wakes thread_slots misuse)
bins=()
for test in "${tests[@]}"; do
  bin=$(cargo test -q -p spanrec --all-features --test "$test" --no-run --message-format=json 2>/dev/null |
    TEST="$test" python3 -c 'import json,os,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == os.environ["TEST"]:
        print(m["executable"])')
  [ -n "$bin" ] || { echo "stress: $test test binary not found"; exit 1; }
  bins+=("$bin")
done
hogs=()
cleanup() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq "$(nproc)"); do
  (while :; do :; done) &
  hogs+=($!)
done
started=$(date +%s)
for run in $(seq "$runs"); do
  for i in "${!bins[@]}"; do
    log=$(mktemp)
    if ! "${bins[$i]}" -q >"$log" 2>&1; then
      cat "$log"
      echo "stress: ${tests[$i]} failed on run $run of $runs beside a CPU hog"
      exit 1
    fi
    rm -f "$log"
  done
done
echo "stress: ${tests[*]}: $runs runs each beside $(nproc) busy loops, all green ($(( $(date +%s) - started )) s)"
