#!/usr/bin/env bash
# Deterministic hot-path gate: instructions per operation under callgrind,
# counted only inside the measured function (the flusher thread and set-up
# are excluded), compared with benches/instruction-budgets.txt. Fails when an
# operation exceeds its budget by more than 5 %. Budgets only move down, or
# up in a commit that says why.
#
# Built with the bench profile (fat LTO, one codegen unit): the code the
# benchmarks run. A plain release build spreads functions over 16 codegen
# units, and its inlining (so its counts) moved by ~40 instructions when a
# function merely moved to another module.
set -euo pipefail
cd "$(dirname "$0")/.."
n=5000
cargo build -q --profile bench -p spanrec-benches --bin hot_path
# The bench profile inherits release's output directory.
bin="${CARGO_TARGET_DIR:-target}/release/hot_path"
status=0
printf '%-14s %10s %10s %8s\n' operation instr/op budget ratio
while read -r op budget per; do
  case "$op" in ''|'#'*) continue ;; esac
  # An operation that runs 1/per of the iterations (a request of three
  # spans: the counted loop stays within one ring) is divided by those.
  ops=$(( n / ${per:-1} ))
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" --collect-atstart=no \
    --toggle-collect="hot_path::measured_${op}" "$bin" "$op" "$n" >/dev/null 2>&1
  total=$(grep -E '^(summary|totals):' "$out" | head -n 1 | awk '{print $2}')
  rm -f "$out"
  each=$(( total / ops ))
  ratio=$(awk -v a="$each" -v b="$budget" 'BEGIN { printf "%.2f", a / b }')
  printf '%-14s %10s %10s %8s\n' "$op" "$each" "$budget" "$ratio"
  if awk -v a="$each" -v b="$budget" 'BEGIN { exit !(a > b * 1.05) }'; then
    echo "instructions: $op regressed: $each > $budget * 1.05"; status=1
  fi
done < benches/instruction-budgets.txt
exit $status
