#!/usr/bin/env python3
"""Prints the side-by-side table of the benches just run: each id's median,
and spanrec's span cost as a ratio to each peer and to `ref/tsc_now`, all
measured in the same run (absolute times drift on this machine; ratios
measured together do not). Reads criterion's
`<target>/criterion/<group>/<id>/new/estimates.json`."""

import json
import os
import sys
from pathlib import Path

root = Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "criterion"
if len(sys.argv) > 1:
    root = Path(sys.argv[1])


def median(group, bench_id):
    path = root / group / bench_id.replace("/", "_") / "new" / "estimates.json"
    try:
        return json.loads(path.read_text())["median"]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None


def show(group, ids):
    print(f"\n{group}:")
    print(f"  {'id':34} {'median':>12}")
    for i in ids:
        m = median(group, i)
        print(f"  {i:34} {'-' if m is None else f'{m:10.1f} ns':>12}")


lifecycle = [
    "spanrec/root_2_tags", "spanrec/child_2_tags", "spanrec/root_log_baggage",
    "spanrec/unsampled", "spanrec_via_tracing/root_2_fields", "fastrace/local_2_props", "fastrace/root_2_props",
    "otel/root_2_attrs", "tracing/root_2_fields", "ref/tsc_now", "ref/instant_now",
]
show("span_lifecycle", lifecycle)
ours = median("span_lifecycle", "spanrec/root_2_tags")
if ours is not None:
    print("\n  spanrec/root_2_tags as a ratio (target in brackets):")
    for peer, target in [
        ("fastrace/local_2_props", "<= 0.5"),
        ("fastrace/root_2_props", ""),
        ("otel/root_2_attrs", "<= 0.15"),
        ("tracing/root_2_fields", ""),
        ("ref/tsc_now", ""),
    ]:
        m = median("span_lifecycle", peer)
        ratio = "-" if not m else f"{ours / m:8.2f}x"
        print(f"    / {peer:26} {ratio:>10} {target}")

show("propagation", [
    "w3c_inject", "w3c_extract", "ot_inject", "ot_extract",
    "otel_w3c_inject", "otel_w3c_extract",
])
print("\nthroughput (2,000,000 spans per iteration; spans lost are printed by the bench):")
for i in ["spanrec/2x1M", "spanrec_block/2x1M", "fastrace/2x1M", "otel_default/2x1M", "otel_large_queue/2x1M"]:
    m = median("throughput", i)
    rate = "-" if not m else f"{2_000_000 / (m / 1e9) / 1e6:8.2f} M spans/s"
    print(f"  {i:34} {rate:>18}")

for op in ["inject", "extract"]:
    a, b = median("propagation", f"w3c_{op}"), median("propagation", f"otel_w3c_{op}")
    if a and b:
        print(f"  w3c_{op} / otel_w3c_{op}: {a / b:.2f}x")
