"""Read a ``jax.profiler`` trace (the ``trace.tgz`` that ``suite.py`` writes on an accelerator, or a
trace directory) and say where the device's time went: the span, how busy the device was, the
idle gaps between kernels, and each kernel's count, total and mean time.

    python benchmarks/trace_summary.py TRACE.tgz|TRACE_DIR [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import statistics
import tarfile
import tempfile


def load_events(path: str) -> list:
    if os.path.isfile(path):
        root = tempfile.mkdtemp()
        with tarfile.open(path) as tf:
            tf.extractall(root, filter="data")
        path = root
    files = sorted(glob.glob(os.path.join(path, "**", "*.trace.json.gz"), recursive=True))
    if not files:
        raise SystemExit(f"no *.trace.json.gz under {path}")
    with gzip.open(files[-1]) as f:
        return json.load(f)["traceEvents"]


def device_events(events: list) -> list:
    """The trace's kernel events on its devices (``/device:...``), in time order."""
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    pids = {p for p, n in names.items() if n.startswith("/device:")}
    return sorted((e for e in events if e.get("ph") == "X" and e["pid"] in pids), key=lambda e: e["ts"])


def kernel_seconds(events: list, name: str) -> float:
    """The total seconds of the device kernels named ``name`` (0 when there are none)."""
    return sum(e["dur"] for e in device_events(events) if e["name"] == name) / 1e6


def summary(events: list, top: int = 25) -> str:
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    device_pids = [p for p, n in names.items() if n.startswith("/device:")]
    lines = []
    for pid in device_pids:
        ks = sorted((e for e in events if e.get("ph") == "X" and e["pid"] == pid), key=lambda e: e["ts"])
        if not ks:
            continue
        span = ks[-1]["ts"] + ks[-1]["dur"] - ks[0]["ts"]
        busy = sum(e["dur"] for e in ks)
        gaps = [b["ts"] - (a["ts"] + a["dur"]) for a, b in zip(ks, ks[1:])]
        idle = sum(g for g in gaps if g > 0)
        lines.append(
            f"{names[pid]}: span {span / 1e3:.1f} ms, kernels busy {busy / 1e3:.1f} ms ({busy / span:.1%}), "
            f"{len(ks)} kernels, idle between them {idle / 1e3:.2f} ms (median gap "
            f"{statistics.median(gaps) if gaps else 0:.2f} us, largest {max(gaps) if gaps else 0:.1f} us)"
        )
        agg = collections.defaultdict(lambda: [0, 0.0])
        for e in ks:
            agg[e["name"]][0] += 1
            agg[e["name"]][1] += e["dur"]
        lines.append("| kernel | count | total ms | share | mean us |")
        lines.append("|---|---:|---:|---:|---:|")
        for name, (n, dur) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:top]:
            lines.append(f"| {name[:60]} | {n} | {dur / 1e3:.2f} | {dur / busy:.1%} | {dur / n:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    print(summary(load_events(args.trace), args.top))


if __name__ == "__main__":
    main()
