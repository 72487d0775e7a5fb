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

# --- whole-process cost (issue 12): every thread the library runs ---------
cpu_root = root.parent / "spanrec-cpu"


def cpu(group, bench_id):
    path = cpu_root / group / (bench_id.replace("/", "_") + ".json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def totals(group, ids, per_iteration_spans=1):
    """Per delivered span: (request-thread ns, background ns, total ns)."""
    out = {}
    for i in ids:
        c = cpu(group, i)
        if not c or not c["delivered"]:
            continue
        if c.get("request_ns") is not None:
            request = c["request_ns"] / c["delivered"]
        else:
            m = median(group, i)
            if m is None:
                continue
            # criterion's median is per created span; spread over delivered.
            request = m / per_iteration_spans * c["created"] / c["delivered"]
        background = c["background_ns"] / c["delivered"]
        out[i] = (request, background, request + background, c["created"], c["delivered"])
    return out


def show_totals(title, group, ids, ours, peers, per_iteration_spans=1):
    t = totals(group, ids, per_iteration_spans)
    print(f"\n{title}: CPU per delivered span, every thread (request + background)")
    print(f"  {'id':34} {'request':>10} {'background':>11} {'total':>10} {'lost':>8}")
    for i in ids:
        if i in t:
            r, b, tot, created, delivered = t[i]
            lost = f"{(created - delivered) / created * 100:.1f} %" if created else "-"
            print(f"  {i:34} {r:8.1f} ns {b:8.1f} ns {tot:7.1f} ns {lost:>8}")
    if ours in t:
        for peer, target in peers:
            if peer in t:
                print(f"    total {ours} / {peer}: {t[ours][2] / t[peer][2]:.2f}x {target}")


show_totals(
    "span_lifecycle", "span_lifecycle",
    ["spanrec/root_2_tags", "spanrec/child_2_tags", "spanrec/root_log_baggage",
     "spanrec_via_tracing/root_2_fields", "fastrace/local_2_props", "fastrace/root_2_props",
     "otel/root_2_attrs", "tracing/root_2_fields"],
    "spanrec/root_2_tags",
    [("otel/root_2_attrs", "(target <= 0.5)"), ("fastrace/local_2_props", "(target <= 0.5)"),
     ("fastrace/root_2_props", "")],
)
show_totals(
    "throughput", "throughput",
    ["spanrec/2x1M", "spanrec_block/2x1M", "fastrace/2x1M", "otel_default/2x1M",
     "otel_large_queue/2x1M"],
    "spanrec_block/2x1M",
    [("otel_default/2x1M", "(target <= 0.5)"), ("otel_large_queue/2x1M", ""),
     ("fastrace/2x1M", "(target <= 0.5)")],
)
tp = totals("throughput", ["spanrec_block/2x1M", "spanrec/2x1M"])
for i, v in tp.items():
    print(f"    {i} background {v[1]:.1f} ns per delivered span (target <= 30)")

print("\nidle (flusher CPU with registered threads doing nothing):")
for n in [2, 2000]:
    c = cpu("idle", f"spanrec_{n}_threads")
    if c:
        ok = "met" if c["percent"] <= c["target"] else "MISSED"
        print(f"  idle/spanrec/{n}_threads {c['percent']:8.3f} % of a core, {c['wakeups']} wakeups "
              f"(target <= {c['target']} %: {ok})")

print("\nserver (hyper, current-thread runtime, 3 spans per request; vs untraced in the same run):")
base = cpu("server", "untraced")
if base:
    print(f"  {'tracer':14} {'req/s':>8} {'capacity':>9} {'± s.e.':>7} {'p99@90%':>9} {'win p99':>8} "
          f"{'p99 chg':>8} {'± s.e.':>7} {'bg CPU/span':>12} {'lost':>6}")
    losses = {}
    ses = {}
    p99_changes = {}
    p99_ses = {}
    backgrounds = {}
    for v in ["untraced", "untraced_again", "untraced_tower", "spanrec_layer", "spanrec_api", "otel",
              "fastrace"]:
        c = cpu("server", v)
        if not c:
            continue
        loss = (1 - c["relative"]) * 100
        losses[v] = loss
        p99 = c.get("p99_at_90")
        # the median 100 ms window p99 over untraced's (older runs: the
        # median of per-round ratios, or the one p99)
        ratio = c.get("p99_ratio_at_90")
        if ratio is None and p99 and base.get("p99_at_90"):
            ratio = p99 / base["p99_at_90"]
        change = (ratio - 1) * 100 if ratio else 0
        p99_changes[v] = change
        spans = c["received"] or 0
        # background CPU per span over every saturation run (older runs:
        # the last run's CPU over the mean rate)
        bg = c.get("background_ns_per_span")
        if bg is None:
            bg = c["background_ns"] / max(1.0, c["rps"] * c["seconds"] * 3) if c["created"] else 0
        backgrounds[v] = bg
        lost = c["created"] - c["received"]
        # the bootstrap standard errors of the capacity change and of the
        # window p99 change (newer runs only)
        se = ses[v] = c.get("relative_se", 0) * 100
        window = c.get("window_p99_at_90")
        window = f"{window:.0f}us" if window is not None else "-"
        p99_se = p99_ses[v] = c.get("p99_ratio_se_at_90", 0) * 100
        print(f"  {v:14} {c['rps']:8.0f} {-loss:+8.1f}% {se:6.1f}% {p99 or 0:7d}us {window:>8} "
              f"{change:+7.1f}% {p99_se:6.1f}% {bg:9.1f} ns {lost:6d}")
    if "untraced_again" in losses:
        print(f"    noise floor: a second untraced server measured {-losses['untraced_again']:+.1f} % "
              f"capacity, window p99 at 90 % {p99_changes['untraced_again']:+.1f} %")
    if "untraced_tower" in losses and "spanrec_layer" in losses:
        print(f"    tower alone (untraced_tower): {-losses['untraced_tower']:+.1f} % capacity; "
              f"TraceLayer's own share: {losses['untraced_tower'] - losses['spanrec_layer']:+.1f} %")
    print("    p99@90%: all requests of every round, the VM's ms stalls included; win p99: the "
          "median p99 of 100 ms windows, which the change compares")
    for v in ["spanrec_api", "spanrec_layer"]:
        if v in losses and losses.get("otel"):
            print(f"    {v}: capacity loss {losses[v]:.1f} % ± {ses[v]:.1f} % (target <= 5), "
                  f"{losses[v] / losses['otel']:.2f}x OpenTelemetry's (target <= 0.3), "
                  f"window p99 at 90 % {p99_changes[v]:+.1f} % ± {p99_ses[v]:.1f} % (target <= +5), "
                  f"background {backgrounds[v]:.1f} ns per span (target <= 30)")

print("\nmemory (peak RSS of the whole process; Block policy, counting recorder):")
mem_root = root.parent / "spanrec-mem" / "memory"
targets = {"threads_512x4000": 64, "threads_2000x1000": 96}
for shape in ["threads_2x1000000", "threads_64x31250", "threads_512x4000", "threads_2000x1000"]:
    try:
        ours = json.loads((mem_root / "spanrec" / f"{shape}.json").read_text())
        base = json.loads((mem_root / "untraced" / f"{shape}.json").read_text())
    except (OSError, ValueError):
        continue
    target = targets.get(shape)
    verdict = ""
    if target:
        verdict = f" (target <= {target} MiB: {'met' if ours['peak_mib'] <= target else 'MISSED'})"
    print(f"  memory/spanrec/{shape:20} {ours['peak_mib']:7.1f} MiB, untraced {base['peak_mib']:6.1f} MiB; "
          f"{ours['summary']}{verdict}")
try:
    with_ctx = json.loads((mem_root / "remote_context" / "with.json").read_text())
    without = json.loads((mem_root / "remote_context" / "without.json").read_text())
    def after_mib(m):
        words = m["summary"].split()
        return int(words[words.index("rss_after_kib") + 1]) / 1024
    peak = with_ctx["peak_mib"] - without["peak_mib"]
    kept = after_mib(with_ctx) - after_mib(without)
    ok = "met" if peak <= 8 and kept <= 1 else "MISSED"
    print(f"  memory/remote_context (2,000 live children, 8 KB baggage + 16 KB tracestate): "
          f"peak {with_ctx['peak_mib']:.1f} MiB vs {without['peak_mib']:.1f} without (+{peak:.2f}, target <= 8), "
          f"after flush +{kept:.2f} MiB (target <= 1): {ok}")
except (OSError, ValueError, KeyError):
    pass
for lib in ["spanrec", "otel", "fastrace"]:
    try:
        m = json.loads((mem_root / lib / "10M_overload.json").read_text())
    except (OSError, ValueError):
        continue
    print(f"  memory/{lib}/10M_overload {m['peak_mib']:9.1f} MiB; {m['summary']}")

print("\npropagation/hostile (one extract of a hostile request; targets <= 1000 us, <= 65536 bytes):")
hostile_root = root.parent / "spanrec-hostile"
for path in sorted(hostile_root.glob("*.json")) if hostile_root.exists() else []:
    try:
        h = json.loads(path.read_text())
    except (OSError, ValueError):
        continue
    ok = "met" if h["us"] <= 1000 and h["allocated"] <= 65536 else "MISSED"
    print(f"  {h['id']:44} {h['us']:9.1f} us {h['allocated']:8d} B  {ok}; {h['outcome']}")
