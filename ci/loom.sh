#!/usr/bin/env bash
# loom model checks of the lock-free protocols (see docs/architecture.md).
# Builds with --cfg spanrec_loom into its own target dir so the normal build
# cache is not invalidated; release profile with debug assertions for speed.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg spanrec_loom ${RUSTFLAGS:-}"
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
target="${CARGO_TARGET_DIR:-target}/loom"
echo "loom: LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS"
CARGO_TARGET_DIR="$target" cargo test -p spanrec-loom-tests --release --test ring
