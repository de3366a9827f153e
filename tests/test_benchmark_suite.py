"""benchmarks/suite.py: the one measuring command runs every row at its smoke size, and its JSON and
table say what ran, on what, at what precision (so the script cannot rot between GPU sessions)."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "benchmarks", "suite.py")


def run_suite(*argv, timeout=600):
    # the smoke run checks that every row runs and reports, not its speed: XLA's backend
    # optimisations off halve its time (its programs compile, not run, in these seconds)
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_FLAGS=f"{flags} --xla_backend_optimization_level=0".strip())
    return subprocess.run(
        [sys.executable, SUITE, *argv], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def test_smoke_runs_every_row(tmp_path):
    out = tmp_path / "suite"
    proc = run_suite("--smoke", "--out", str(out), "--repeats", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "suite.json").read_text())
    meta, rows = result["meta"], result["rows"]
    assert meta["smoke"] and meta["backend"] == "cpu" and meta["dtype"] == "float32"
    sections = {r["section"] for r in rows}
    assert sections == {"ceilings", "dynamics", "sweep", "training", "peers", "sampling", "dmlr", "diagnostics"}
    for r in rows:
        if r["section"] == "peers" and r["status"].startswith("skipped (PyTorch"):
            continue
        assert r["status"] == "ok", r
        if "median" in r:
            assert math.isfinite(r["median"]) and r["median"] > 0, r
    # every ceiling the roofline needs was measured, and each dynamics row is placed against it
    for k in ("gemm_highest", "gemm_default", "copy_bytes", "fma_flops", "exp", "float32_flops"):
        assert result["ceilings"][k] > 0
    dyn = [r for r in rows if r["section"] == "dynamics" and "of_bound" in r]
    assert len(dyn) >= 5 and all(math.isfinite(r["of_bound"]) and r["of_bound"] > 0 for r in dyn)
    assert all(r["mean_steps"] > 1 and 0 < r["mean_ari"] <= 1 for r in dyn)
    # the two training paths and the sweep did real work
    sweep = next(r for r in rows if r["section"] == "sweep")
    assert sweep["finished"] and sweep["runs_done"] > 0
    assert {r["precision"] for r in rows if r["section"] == "training"} == {"highest"}
    # the table names the device, the JAX version and the precision
    table = (out / "suite.md").read_text()
    assert table.startswith("device: ") and "JAX " in table and "float32" in table
    assert table.strip() in proc.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sections", "ceilings,bogus"], "--sections: unknown ['bogus']"),
        (["--budget", "0"], "--budget must be > 0, got 0.0"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    ],
)
def test_bad_options_exit_2_naming_them(argv, message):
    proc = run_suite(*argv, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr


def test_trace_summary_reads_a_profile(tmp_path):
    """trace_summary.py on a hand-made trace in jax.profiler's layout: the device's busy share, idle
    gaps and per-kernel totals equal the ones counted by hand; host events are left out."""
    import gzip

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import trace_summary

    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
        {"ph": "X", "pid": 1, "tid": 1, "name": "gemm", "ts": 0.0, "dur": 60.0},
        {"ph": "X", "pid": 1, "tid": 1, "name": "loop_fusion", "ts": 70.0, "dur": 20.0},
        {"ph": "X", "pid": 1, "tid": 1, "name": "gemm", "ts": 90.0, "dur": 10.0},
        {"ph": "X", "pid": 2, "tid": 1, "name": "python", "ts": 0.0, "dur": 500.0},
    ]
    d = tmp_path / "trace" / "plugins" / "profile" / "run"
    d.mkdir(parents=True)
    with gzip.open(d / "vm.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    text = trace_summary.summary(trace_summary.load_events(str(tmp_path / "trace")))
    # span 100 us, busy 90 us, one 10 us gap; gemm 70 us of 90 in 2 kernels
    assert "span 0.1 ms, kernels busy 0.1 ms (90.0%), 3 kernels, idle between them 0.01 ms" in text
    assert "| gemm | 2 | 0.07 | 77.8% | 35.0 |" in text
    assert "| loop_fusion | 1 | 0.02 | 22.2% | 20.0 |" in text
    assert "/host:CPU" not in text
