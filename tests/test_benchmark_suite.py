"""The benchmark machinery: the one count of the token-dynamics work and its bound
(benchmarks/work.py), the prepared device call (benchmarks/device_session.py: its --plan, and its
--smoke run, which runs every step and every row of benchmarks/suite.py at a tiny size, so the
scripts cannot rot between GPU sessions), the suite's option checks and the trace reader."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
SUITE = os.path.join(BENCH, "suite.py")
SESSION = os.path.join(BENCH, "device_session.py")
sys.path.insert(0, BENCH)

import work  # noqa: E402


def run(script, *argv, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, script, *argv], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


# --------------------------------------------------------------------------- the work count and its bound


def test_work_per_point_step_is_the_kernels_count():
    """(4 D + 7) T - 1 flops and T exponentials per point per step, counted by hand from the
    kernel: scores T (2 D + 1), the max T - 1, logits 2 T, softmax 2 T (+ T exp), mass T, means 2 T D."""
    for T, D in ((4, 4), (3, 2), (8, 16)):
        by_hand = T * (2 * D + 1) + (T - 1) + 2 * T + 2 * T + T + 2 * T * D
        w = work.per_point_step(T, D)
        assert w.flops == by_hand and w.exps == T
    assert work.per_point_step().flops == 91
    # a run-step scales with the points; the per-run scalars do not
    a, b = work.per_run_step(100), work.per_run_step(200)
    assert b.flops - a.flops == 100 * 91 and b.exps - a.exps == 400


def test_bound_is_the_largest_time_not_the_sum():
    ceil = dict(fma_flops=10.0, exp=2.0, copy_bytes=100.0)
    b = work.bound(work.Work(flops=50.0, exps=4.0, bytes=300.0), ceil)  # 5 s, 2 s, 3 s
    assert b["binding"] == "ffma" and b["seconds"] == pytest.approx(5.0)
    assert b["times"] == pytest.approx(dict(ffma=5.0, exp=2.0, hbm=3.0))
    b = work.bound(work.Work(flops=10.0, exps=40.0, bytes=0.0), ceil)
    assert b["binding"] == "exp" and b["seconds"] == pytest.approx(20.0)
    # the share of the bound: 0.1 runs/s at a 5 s bound is half of it
    a = work.against(0.1, work.Work(50.0, 4.0, 300.0), ceil)
    assert a["of_bound"] == pytest.approx(0.5) and a["bound_runs_per_s"] == pytest.approx(0.2)
    # a ceiling not measured is left out, never taken as infinitely fast by a division by zero
    assert work.bound(work.Work(1.0, 1.0), dict(exp=1.0))["binding"] == "exp"


def test_ffma_ceiling_is_the_faster_of_the_fma_pass_and_the_gemm():
    # the GEMM at precision "highest" runs on the same FFMA units: when it outruns the elementwise
    # pass, its rate is the ceiling (the H200's 50.3 against 28.3 TFLOP/s, here 20 against 10)
    w = work.Work(flops=100.0, exps=4.0, bytes=0.0)
    b = work.bound(w, dict(fma_flops=10.0, gemm_highest=20.0, exp=2.0))
    assert b["binding"] == "ffma" and b["seconds"] == pytest.approx(5.0)  # 100 / 20, not 100 / 10
    assert work.rate("ffma", dict(fma_flops=10.0, gemm_highest=20.0)) == 20.0
    # the pass faster than the GEMM (a CPU without a fast matmul): the pass is the ceiling
    assert work.bound(w, dict(fma_flops=40.0, gemm_highest=20.0))["seconds"] == pytest.approx(2.5)
    # either alone is enough; the GEMM at the default precision (TF32 on a GPU) is never the FFMA
    assert work.bound(w, dict(gemm_highest=25.0))["seconds"] == pytest.approx(4.0)
    assert work.bound(w, dict(fma_flops=10.0, gemm_default=1e6))["seconds"] == pytest.approx(10.0)
    # the share: 0.1 runs/s against a 5 s bound is half of it (against the pass alone: all of it)
    assert work.against(0.1, w, dict(fma_flops=10.0, gemm_highest=20.0, exp=2.0))["of_bound"] == pytest.approx(0.5)


def test_model_bound_uses_the_gemm_rate_of_its_precision():
    ceil = dict(gemm_highest=10.0, gemm_default=80.0, copy_bytes=4.0)
    assert work.model_bound(100.0, 8.0, ceil, "highest")["binding"] == "gemm"  # 10 s against 2 s
    b = work.model_bound(100.0, 8.0, ceil, "default")  # 1.25 s against 2 s
    assert b["binding"] == "hbm" and b["seconds"] == pytest.approx(2.0)


# --------------------------------------------------------------------------- the device call


def test_plan_prints_the_steps_in_priority_order_without_jax():
    code = (
        "import runpy, sys; sys.argv = ['device_session.py', '--plan', '--out', 'unused'];\n"
        "try:\n    runpy.run_path(%r, run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('JAX IMPORTED' if 'jax' in sys.modules else 'no jax')" % SESSION
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.rstrip().endswith("no jax")
    lines = [ln.split("|") for ln in out.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    names = [cells[2].strip() for cells in lines]
    assert names[0] == "setup" and "budget 540 s" in out
    assert {"dynamics", "train:autoencoder", "train:slots", "training", "peers", "compile", "rest"} <= set(names)
    assert {"sweep:vtae", "train:iodine", "study:latent-reasoning", "study:video"} <= set(names)
    # the ledger's order: the steps still to measure rows, by the best priority among them and, at one
    # priority, unmeasured before stale; then the current; then the steps the ledger does not name,
    # those in the default order (the latent studies first)
    order = ("unmeasured", "stale", "current", "")
    keys = []
    for cells in lines[1:]:
        st = next((st for st in order if cells[5].strip().startswith(st)), "")
        prio = int(cells[5].split("(priority ")[1].split(")")[0]) if st else 9
        keys.append((st in ("current", ""), order.index(st) if st in ("current", "") else 0, prio, order.index(st)))
    assert keys == sorted(keys), keys
    studies = [n for n in names if n.startswith("study:")]
    assert studies[:2] == ["study:latent-reasoning", "study:latent-diagnostics"]


@pytest.mark.full
def test_one_tiny_step_of_the_device_call_runs(tmp_path):
    # the device call itself at its smallest: setup and the autoencoder's training at 2 seeds (the
    # whole --smoke run is in the slow tier)
    out = tmp_path / "out"
    proc = run(SESSION, "--smoke", "--steps", "train:autoencoder", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = json.loads((out / "session.json").read_text())["steps"]
    assert [(st["name"], st["status"]) for st in steps] == [("setup", "ok"), ("train:autoencoder", "ok")]
    assert "tokdyn" in (out / "device.txt").read_text().splitlines()[0]  # import tokdyn worked
    rows = [json.loads(ln) for ln in (out / "rows.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["section"] == "training"]
    assert len(trained) == 1 and trained[0]["status"] == "ok" and trained[0]["median"] > 0
    assert trained[0]["name"] == "visual-token autoencoder, 2 seed(s), strategy scan"


def test_bad_budget_exits_2():
    proc = run(SESSION, "--plan", "--budget", "0", timeout=60)
    assert proc.returncode == 2 and "--budget must be > 0, got 0.0" in proc.stderr


# every step at tiny size (about 70 s of child processes): the full execution is slow-only; the
# default run keeps --plan and the rows' own checks above
@pytest.mark.slow
def test_smoke_runs_every_step_and_row(tmp_path):
    out = tmp_path / "out"
    # (its CPU time is about 2 minutes; the wide timeout is for a loaded machine)
    proc = run(SESSION, "--smoke", "--out", str(out), "--studies-dir", str(tmp_path / "studies"), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # what comes back from a device call: at most 8 files, none in a folder
    files = sorted(os.listdir(out))
    assert len(files) <= 8 and all(os.path.isfile(out / f) for f in files), files
    assert {"device.txt", "session.json", "session.log", "rows.jsonl", "table.md", "ceilings.json"} <= set(files)
    session = json.loads((out / "session.json").read_text())
    steps = {st["name"]: st for st in session["steps"]}
    for name in (
        "setup",
        "dynamics",
        "train:autoencoder",
        "train:slots",
        "training",
        "peers",
        "vlm:3b",
        "vlm:3b-mediation",
        "dynamics:given",
        "compile",
        "rest",
    ):
        assert steps[name]["status"] == "ok", (steps[name], (out / "session.log").read_text()[-3000:])
    assert steps["sweep:vtae"]["status"] == "ok", (steps["sweep:vtae"], (out / "session.log").read_text()[-3000:])
    # the study is stopped at its few seconds (or finishes): either way recorded, never lost
    assert steps["study:latent-reasoning"]["status"] in ("ok", "stopped at its budget")
    rows = [json.loads(ln) for ln in (out / "rows.jsonl").read_text().splitlines()]
    # the two dynamics steps split the family's rows (--rows): each row runs in one, is skipped in the other
    ran = {(r["section"], r["name"]) for r in rows if r["status"] != "skipped (--rows)"}
    assert all((r["section"], r["name"]) in ran for r in rows)
    every = len(rows)
    rows = [r for r in rows if r["status"] != "skipped (--rows)"]
    assert {r["section"] for r in rows} == {
        "ceilings",
        "dynamics",
        "training",
        "peers",
        "compile",
        "sampling",
        "sweep",
        "sweeps",
        "vlm",
    }
    for r in rows:
        if r["section"] == "peers" and r["status"].startswith("skipped (PyTorch"):
            continue
        if r["status"].startswith("skipped (smoke"):
            # the dynamics variants whose code the smoke run runs elsewhere; the heavier models'
            # training, built and lowered (their flops counted), not compiled
            assert r["section"] == "dynamics" or r["flops_per_step"] > 0, r
            continue
        assert r["status"] == "ok", r
        assert r["commit"] and r["device"]
        if "median" in r:
            assert math.isfinite(r["median"]) and r["median"] > 0, r
    ceil = json.loads((out / "ceilings.json").read_text())
    for k in ("gemm_highest", "gemm_default", "copy_bytes", "fma_flops", "exp"):
        assert ceil[k] > 0
    # every token-dynamics row placed against its binding ceiling; the two named rows are there
    dyn = [r for r in rows if r["section"] == "dynamics" and "of_bound" in r]
    names = {r["name"] for r in dyn}
    assert "study path" in names and any(n.startswith("kernel alone") for n in names)
    for r in dyn:
        assert r["binding"] in ("ffma", "exp", "hbm") and 0 < r["of_bound"] and r["mean_steps"] > 1, r
        assert r["of_bound_padded"] >= r["of_bound"] * 0.999, r  # padding only adds work
    # every training row with XLA's flops per step and its share of the bound
    # (the training step's six models, and the autoencoder and Slot Attention of their own steps)
    train = [r for r in rows if r["section"] == "training"]
    assert len(train) == 8 and all(r["flops_per_step"] > 0 for r in train)
    trained = [r for r in train if r["status"] == "ok"]
    assert len(trained) == 3 and all(r["of_bound"] > 0 and r["binding"] in ("gemm", "hbm") for r in trained)
    assert {r["precision"] for r in trained} == {"highest"}
    sweep = next(r for r in rows if r["section"] == "sweep")
    assert sweep["finished"] and sweep["runs_done"] > 0
    table = (out / "table.md").read_text()
    assert table.count("\n") == every + 2 and "| dynamics | study path |" in table


# --------------------------------------------------------------------------- the suite


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sections", "ceilings,bogus"], "--sections: unknown ['bogus']"),
        (["--budget", "0"], "--budget must be > 0, got 0.0"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    ],
)
def test_bad_options_exit_2_naming_them(argv, message):
    proc = run(SUITE, *argv, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr


def test_trace_summary_reads_a_profile(tmp_path):
    """trace_summary.py on a hand-made trace in jax.profiler's layout: the device's busy share, idle
    gaps and per-kernel totals equal the ones counted by hand; host events are left out."""
    import gzip

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


def test_table_renders_every_row_a_gpu_call_measured():
    """The suite's table over the rows an H100 call wrote at d41d300: its decode rows carry a share
    of a bound in tokens/s (not model-steps/s), which once stopped the table with a KeyError after
    every row had been measured."""
    import types

    import suite

    path = os.path.join(BENCH, "runs", "h100-2026-11-28-d41d300", "rows.jsonl")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if "section" in r]
    meta = dict(
        device="NVIDIA H100 80GB HBM3",
        devices=1,
        backend="gpu",
        host="x86_64, 16 cores",
        jax="0.11.2",
        matmul_precision="highest",
        date="2026-11-28 01:30",
        smoke=False,
    )
    text = suite.table(types.SimpleNamespace(meta=meta, rows=rows, ceil={"gemm_highest": 5e13}))
    decode = [r for r in rows if r.get("bound_tokens_per_s")]
    assert decode, "the raw file holds the decode rows"
    for r in decode:
        line = next(ln for ln in text.splitlines() if f"| {r['name']} |" in ln)
        assert f"{r['bound_tokens_per_s']:,.0f} tokens/s" in line and f"{r['of_bound']:.2%}" in line
