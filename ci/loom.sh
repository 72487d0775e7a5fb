#!/usr/bin/env bash
# loom model checks of the lock-free protocols (docs/architecture.md,
# "Loom models"), then the mutants: each weakens one ordering or removes one
# check, and must make at least one model fail — proof the models have teeth.
#
# Builds with --cfg spanrec_loom into its own target dir (the normal build
# cache stays valid), release profile with debug assertions for speed. The
# mutants share that dir: each is named by SPANREC_LOOM_MUTANT, which
# engine/build.rs turns into its cfg, so a mutant rebuilds only spanrec and
# the models, not every dependency (a changed RUSTFLAGS would).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
target="${CARGO_TARGET_DIR:-target}/loom"
base_flags="--cfg spanrec_loom ${RUSTFLAGS:-}"
started=$(date +%s)

echo "loom: LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS"
out=$(mktemp)
for group in ring block_ring slot_protocol flush_requests doorbell room_wait; do
  group_out=$(mktemp)
  RUSTFLAGS="$base_flags" CARGO_TARGET_DIR="$target" \
    cargo test -p spanrec-loom-tests --release --test "$group" -- --nocapture --test-threads 1 \
    >"$group_out" 2>&1 || true
  cat "$group_out" >>"$out"
  grep -E "loom model|test result|panicked|FAILED" "$group_out" || true
  # This group's own result: a group that does not build has none.
  if ! grep -q "test result: ok" "$group_out"; then
    tail -n 30 "$group_out"
    echo "loom: model group $group FAILED"; exit 1
  fi
done
models=$(grep -oE "loom model [a-z0-9_]+: [0-9]+ interleavings" "$out" | wc -l)
interleavings=$(grep -oE "loom model [a-z0-9_]+: [0-9]+ interleavings" "$out" | awk '{s += $(NF-1)} END {print s + 0}')
echo "loom: $models models, $interleavings interleavings explored, all passed"

mutants=(ring_publish_relaxed ring_release_relaxed exit_relaxed exit_checked_after_drain close_drops_silently flush_completes_unread_tickets doorbell_no_fence doorbell_no_recheck doorbell_no_refused_recheck block_spare_relaxed read_in_place_releases room_wait_no_fence room_wait_no_lock)
for m in "${mutants[@]}"; do
  # Each mutant runs the model group of the protocol it weakens (the
  # block queue's indices and blocks, the slot's exit and close flags, the
  # flush tickets, the doorbell, the room wait): that group must catch it.
  case "$m" in
    ring_*|block_*|read_in_place_*) only=(--test block_ring) ;;
    exit_*|close_*) only=(--test slot_protocol) ;;
    flush_*) only=(--test flush_requests) ;;
    doorbell_*) only=(--test doorbell) ;;
    room_wait_*) only=(--test room_wait) ;;
    *) echo "loom: mutant $m has no model group"; exit 1 ;;
  esac
  if SPANREC_LOOM_MUTANT="$m" RUSTFLAGS="$base_flags" CARGO_TARGET_DIR="$target" \
      cargo test -p spanrec-loom-tests --release --no-fail-fast "${only[@]}" -- --test-threads 1 >"$out" 2>&1; then
    echo "loom: mutant $m SURVIVED: no model failed"; exit 1
  fi
  # A failing model shows as a FAILED test, or (a panic while unwinding)
  # as an aborted test binary naming the panicking test thread.
  caught=$( { grep -E "^test [a-z0-9_]+ \.\.\. FAILED" "$out" | awk '{print $2}';
              grep -oE "^thread '[a-z0-9_]+' .*panicked" "$out" | cut -d"'" -f2; } | sort -u | paste -sd, - || true)
  echo "loom: mutant $m caught by: ${caught:-build or harness failure, see log}"
  if [ -z "$caught" ]; then tail -n 30 "$out"; exit 1; fi
done
rm -f "$out"
echo "loom: done in $(( $(date +%s) - started ))s"
