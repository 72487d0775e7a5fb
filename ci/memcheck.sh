#!/usr/bin/env bash
# Memory-safety run (issue 13) under valgrind memcheck, zero errors:
# - `engine/tests/misuse.rs`: leaked guards and spans, guards entered twice
#   or dropped out of order, spans finished on another thread while entered;
# - `engine/tests/remote_context.rs`: spans that point into a shared remote
#   context, changed, entered and finished in every order;
# - `engine/tests/recording_allocator.rs`: a global allocator that records
#   spans from inside `dealloc`, re-entering the span path.
# Leaks are not errors here: leaking is what the misuse tests do on purpose.
# Teeth: the misuse tests on the engine before the fix (raw pointers in the
# active-span stack) made memcheck report 6 errors.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
for test in misuse recording_allocator remote_context; do
  bin=$(cargo test -q -p spanrec --test "$test" --no-run --message-format=json 2>/dev/null |
    TEST="$test" python3 -c 'import json,os,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == os.environ["TEST"]:
        print(m["executable"])')
  [ -n "$bin" ] || { echo "memcheck: $test test binary not found"; exit 1; }
  log="$target/memcheck-$test.log"
  valgrind --tool=memcheck --error-exitcode=1 --leak-check=no --track-origins=yes \
    "$bin" --test-threads=1 >"$log" 2>&1 || {
    tail -n 80 "$log"
    echo "memcheck: $test: errors or failures (log: $log)"
    exit 1
  }
  grep -q "test result: ok" "$log" || { tail -n 40 "$log"; echo "memcheck: $test: tests did not pass"; exit 1; }
  echo "memcheck: $test: $(grep -o 'test result: ok. [0-9]* passed' "$log"), $(grep -o 'ERROR SUMMARY: [0-9]* errors' "$log" | tail -1)"
done
