#!/usr/bin/env bash
# Race-detector run (issue 5): the `stress` example (3 threads, tiny ring,
# one thread exiting early, flush, shutdown) under Helgrind and DRD, built
# with `--cfg spanrec_valgrind` so the engine's atomics and locks announce
# their happens-before edges (engine/src/sync/valgrind.rs). Must report zero
# errors. Then the same run on a mutant whose ring publishes with `Relaxed`
# must report races: the run has teeth.
set -euo pipefail
cd "$(dirname "$0")/.."
spans=${RACE_SPANS:-400}
target="${CARGO_TARGET_DIR:-target}"
vg=(valgrind --error-limit=no --suppressions=ci/helgrind.supp)

RUSTFLAGS="--cfg spanrec_valgrind" CARGO_TARGET_DIR="$target/race" \
  cargo build -q -p spanrec --example stress
for tool in helgrind drd; do
  "${vg[@]}" --tool=$tool --error-exitcode=1 "$target/race/debug/examples/stress" "$spans" \
    >"$target/race-$tool.log" 2>&1 || {
    tail -n 60 "$target/race-$tool.log"
    echo "race: $tool reported errors (log: $target/race-$tool.log)"
    exit 1
  }
  echo "race: $tool: $(grep -o 'ERROR SUMMARY: [0-9]* errors' "$target/race-$tool.log")"
done

# The same target dir: the mutant (engine/build.rs turns the variable into
# its cfg) rebuilds spanrec and the example only.
SPANREC_LOOM_MUTANT=ring_publish_relaxed RUSTFLAGS="--cfg spanrec_valgrind" \
  CARGO_TARGET_DIR="$target/race" cargo build -q -p spanrec --example stress
if "${vg[@]}" --tool=helgrind --error-exitcode=1 \
  "$target/race/debug/examples/stress" "$spans" >"$target/race-mutant.log" 2>&1; then
  echo "race: the ring_publish_relaxed mutant passed helgrind: the run has no teeth"
  exit 1
fi
echo "race: mutant ring_publish_relaxed caught: $(grep -o 'ERROR SUMMARY: [0-9]* errors' "$target/race-mutant.log")"
