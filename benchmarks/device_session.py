"""One prepared call on a lent accelerator: measures, in the order the GPU ledger asks for
(``benchmarks/runs/gpu-ledger.csv``, :mod:`ledger`) and inside a time budget, what the GPU tables
still lack, and writes its raw table and logs as it goes.

    python benchmarks/device_session.py [--out DIR] [--budget 540] [--device h200|h100] [--plan] [--smoke]
        [--steps NAME,...] [--priority N]

The steps (each in its own process group with its own time budget: a stop kills its children too,
and a compiler abort loses that step alone; every row a step finishes is on disk the moment it
finishes, so a kill loses nothing finished). Every row at precision ``highest`` but those named
``, TF32`` (JAX's default precision) and the Qwen2.5-VL rows (bfloat16):

  setup              tokdyn importable as the children import it (the checkout on their PYTHONPATH;
                     else ``pip install --no-deps --no-build-isolation -e .``; the step fails unless
                     ``import tokdyn`` then works); the device, driver, JAX and PyTorch versions and
                     the commit (``+dirty`` for uncommitted changes) -> device.txt
  dynamics           the ceilings (GEMM, copy, FMA, exp), the kernel alone and the study path with a
                     ``jax.profiler`` trace (trace.tgz; then the Pallas kernel's own rate from it),
                     each with its TF32 variant
  dynamics:given     the other token-dynamics rows: the given-data forms, the Pallas kernel checked
                     against ``dynamics.run``, the peers, chunk sizes, XLA's cost analysis
  train:autoencoder  the visual-token autoencoder at 4,096 and 1,024 seeds, one program per call
  train:slots        Slot Attention at 1,024 seeds, one program per call (``-tf32``: TF32;
                     ``-4096``: 4,096 seeds, which did not compile within 150 s at ca6932f)
  train:MODEL        IODINE, SAVi, grid diffusion at 1,024 seeds, a step each
  training           every learned model at 1, 64 and 1,024 seeds, with its share of the bound
  sweep:NAME         each learned sweep end to end (``tokdyn sweep vtae``, the others ``--quick``),
                     the sweep's own seconds from its output
  peers              the PyTorch peers on CUDA, eager and ``torch.compile``
  vlm:3b, vlm:7b     Qwen2.5-VL at the 3B (7B) checkpoint's shapes (random weights, bfloat16): decode
                     and prefill at batch 8 and 1, the vision tower at 1 and 8 images
  vlm:7b-mediation,  the vlm-diagnostics study's mediation with latent-mode generation on one batch of
  vlm:3b-mediation   its GPU preset at the 7B (3B) shapes (batch 8, 16): instances/s
  compile            one compile's seconds (``compile_probe.py``), XLA's default flags and GEMM
                     autotuning off
  study:NAME         the studies' defaults (``tokdyn reproduce --studies NAME``), the latent ones
                     first; each study's tables and report -> studies.tgz (its .npz parts left out)
  rest               the suite's other rows (sampling), then the 10^9-run sweep

The order: setup, then the steps serving the ledger's rows of ``--device`` still to measure,
unmeasured or stale (``python benchmarks/ledger.py`` says why), by the best priority among them and,
at one priority, unmeasured first; then the rest in the order above (:func:`ledger.step_order`). A
step starts only when its whole budget still fits in what is left of ``--budget``; a later, shorter
one may still fit. The first priority's steps (setup, dynamics, train:autoencoder, train:slots,
vlm:3b) have budgets that add to 505 s, each at least 1.3 times its expected seconds
(:mod:`session_plan`, from the raw files of earlier calls), so one call of the default 540 s measures
every first-priority row; the 7B shapes, Slot Attention at 4,096 seeds and the rest go to later calls
(``--priority 2``: only the steps still to measure second-priority rows: the 7B shapes' and the 7B
mediation's steps, budgets 30 + 260 + 160 s, first in that call). ``--steps`` keeps only the
steps named (setup always). After the call, ``python benchmarks/ledger.py --record OUT --device ...
--date ...`` copies what it measured into the ledger (with each raw row's commit and precision), and
``--write`` regenerates the docs' GPU tables from it.

Files under ``--out`` (default ``$OUT``; at most 8, none deeper than the folder itself):
device.txt, session.json (the plan and each step's status, seconds and exit code, rewritten after
each step), session.log (every step's output), rows.jsonl (every row, appended as it finishes,
with the commit and device), table.md (the rows as a table, rewritten after each step),
ceilings.json, trace.tgz, studies.tgz.

``--plan`` prints the steps in this call's order, their budgets, the ledger rows each serves (each
row's state, priority and precision, as ``ledger.py`` gives them) and their expected seconds, then
the first priority's arithmetic against ``--budget``, and runs nothing (no JAX import). ``--smoke`` runs every step at a tiny size on whatever backend
is there, in the plan's own order (a test runs it on the CPU: it checks the script, not speed): the
row variants whose code another row runs are skipped (and the steps whose code a sibling step
runs: train:slots-tf32, train:slots-4096, vlm:7b), the two cheapest learned models are trained
and the others built and their step lowered (its cost analysis), the sweeps step runs the
autoencoder's quick sweep at 2 seeds, and the studies step stops its study at a few seconds, which
tests the stop.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the plan's module beside this file, however this file is run

import session_plan  # noqa: E402
from session_plan import Step  # noqa: E402

ROOT = os.path.dirname(HERE)
LATENT_FIRST = (
    "latent-reasoning",
    "latent-diagnostics",
    "token-dynamics",
    "token-dynamics-sweep",
    "collapse",
    "scenes",
    "visual-tokens",
    "grid-diffusion",
    "video",
)


def suite(args, sections: str, budget: float, *extra) -> list:
    """The suite's command for ``sections``, stopping new rows at 80% of ``budget``."""
    cmd = [
        sys.executable,
        os.path.join(HERE, "suite.py"),
        "--sections",
        sections,
        "--jsonl",
        os.path.join(args.out, "rows.jsonl"),
        "--ceilings-file",
        os.path.join(args.out, "ceilings.json"),
    ]
    if args.smoke:  # no row skipped for time: the smoke run checks every row runs
        cmd += ["--smoke", "--repeats", "1"]
    else:
        cmd += ["--budget", f"{max(budget * 0.8, 1.0):.0f}"]
    return cmd + list(extra)


# each learned sweep, a step of its own: (the row's name, the command's arguments after `tokdyn`)
SWEEPS = (
    ("tokdyn sweep vtae", ["sweep", "vtae"]),
    ("tokdyn sweep slots --quick", ["sweep", "slots", "--quick"]),
    ("tokdyn sweep iodine --quick", ["sweep", "iodine", "--quick"]),
    ("tokdyn sweep savi --quick", ["sweep", "savi", "--quick"]),
    ("tokdyn sweep grid-diffusion --quick", ["sweep", "grid-diffusion", "--quick"]),
)
SWEEP_TIMEOUT = 150.0  # one sweep's step budget (three quick sweeps did not finish in 58 s, ca6932f)
# the learned models trained at 1,024 seeds by a step of their own: (the suite's --models word, what)
TRAINED = (
    ("iodine", "IODINE"),
    ("savi", "SAVi (transformer predictor)"),
    ("diffusion", "grid diffusion (D3PM absorbing)"),
)
MODELS_IN = re.compile(r"(\d+) models in ([0-9.]+) s")


# the dynamics step's rows (the first priority's: the ceilings, the kernel alone and the study path, each
# with its TF32 variant on a GPU) and the dynamics:given step's (every other token-dynamics row)
FIRST_DYNAMICS = r"dynamics \| (kernel alone|study path)( \(dynamics\.run: no Pallas on this backend\))?(, TF32)?$"
DYNAMICS_ROWS = rf"^(ceilings \| .*|{FIRST_DYNAMICS})"
GIVEN_ROWS = rf"^(?!{FIRST_DYNAMICS})dynamics \| "
SMOKE_SKIPS = ("train:slots-tf32", "train:slots-4096", "vlm:7b", "vlm:7b-mediation")  # --smoke: a sibling's code
# the vlm family's rows: the model's own with the copy bandwidth their decode bound reads, where no ceilings
# were read (the vlm:SIZE steps), and the study's mediation (the vlm:SIZE-mediation steps)
MEDIATION_ROWS = r"^vlm \| .*: vlm-diagnostics mediation"
MODEL_ROWS = r"^(ceilings \| device-to-device elementwise copy|vlm \| (?!.*: vlm-diagnostics mediation))"


def plan(args) -> list[Step]:
    """The steps of this call in their default order (module docstring); :func:`ordered` puts them
    in the ledger's. With ``--smoke`` the budgets are wide (a loaded CPU is slow; the work is tiny),
    the steps whose code a sibling step runs are left out (:data:`SMOKE_SKIPS`), and only the study
    step is held to a few seconds, which tests the stop."""
    smoke = args.smoke

    def budget(name):
        return (300 if name == "setup" else 600) if smoke else session_plan.BUDGETS.get(name, 120)

    def train(name, models, seeds, *extra):
        b = budget(name)
        seeds = "2" if smoke else seeds
        return suite(args, "training", b, "--models", models, "--seeds", seeds, *extra)

    steps = [
        Step("setup", budget("setup"), setup, "tokdyn importable; device.txt"),
        Step(
            "dynamics",
            budget("dynamics"),
            suite(args, "ceilings,dynamics", budget("dynamics"), "--rows", DYNAMICS_ROWS)
            + ["--trace", os.path.join(args.out, "trace.tgz")],
            "ceilings; kernel alone, study path + profile (precision highest), each with its TF32 variant",
        ),
        # the learned models trained as one program per call ("scan")
        Step(
            "train:autoencoder",
            budget("train:autoencoder"),
            train("train:autoencoder", "autoencoder", "4096,1024", "--strategy", "scan"),
            "visual-token autoencoder at 4,096 and 1,024 seeds, one program per call",
        ),
        Step(
            "train:slots",
            budget("train:slots"),
            train("train:slots", "slot", "1024", "--strategy", "scan", "--training-precisions", "highest"),
            "Slot Attention at 1,024 seeds, one program per call, precision highest",
        ),
    ]
    # the VLM steps after the first priority's training: vlm:7b first of a later call's steps
    for size in ("3b", "7b"):
        name = f"vlm:{size}"
        steps.append(
            Step(
                name,
                budget(name),
                suite(args, "vlm", budget(name), "--vlm-sizes", size, "--rows", MODEL_ROWS),
                f"Qwen2.5-VL {size.upper()} shapes, random weights, bfloat16: decode and prefill at batch 8 "
                "and 1, the vision tower at 1 and 8 images",
            )
        )
    for size in ("7b", "3b"):  # the study's mediation with generation, the 7B's first
        name = f"vlm:{size}-mediation"
        steps.append(
            Step(
                name,
                budget(name),
                suite(args, "vlm", budget(name), "--vlm-sizes", size, "--rows", MEDIATION_ROWS),
                f"vlm-diagnostics' mediation with latent-mode generation at the {size.upper()} shapes (random "
                "weights, bfloat16), one batch of its GPU preset: instances/s",
            )
        )
    steps += [
        Step(
            "train:slots-tf32",
            budget("train:slots-tf32"),
            train("train:slots-tf32", "slot", "1024", "--strategy", "scan", "--training-precisions", "default"),
            "Slot Attention at 1,024 seeds, TF32",
        ),
        Step(
            "train:slots-4096",
            budget("train:slots-4096"),
            train("train:slots-4096", "slot", "4096", "--strategy", "scan", "--training-precisions", "highest"),
            "Slot Attention at 4,096 seeds (no compile within 150 s on the H200 at ca6932f)",
        ),
        Step(
            "dynamics:given",
            budget("dynamics:given"),
            suite(args, "dynamics", budget("dynamics:given"), "--rows", GIVEN_ROWS)
            + ([] if smoke else ["--chunks", "100000,1000000"]),
            "given data (each form), the Pallas check, the peers, chunk sizes, XLA's cost analysis",
        ),
    ]
    # the other learned models at 1,024 seeds, each a step of its own (train_many's strategy for the
    # backend); on the H200 (benchmarks/runs/h200-2026-11-26-f7091be) each program at 1,024 seeds
    # compiled in 50-55 s
    for word, what in () if smoke else TRAINED:  # --smoke: the training step runs their rows
        name = f"train:{word}"
        steps.append(Step(name, budget(name), train(name, word, "1024"), f"{what} at 1,024 seeds"))
    steps.append(
        Step(
            "training",
            budget("training"),
            suite(args, "training", budget("training")),
            "every learned model at 1, 64, 1,024 seeds (autoencoder 4,096), share of the bound",
        )
    )
    for label, argv in SWEEPS[:1] if smoke else SWEEPS:
        name = "sweep:" + argv[1]
        steps.append(Step(name, 600 if smoke else SWEEP_TIMEOUT, functools.partial(sweep_step, label, argv), label))
    steps.append(Step("peers", budget("peers"), suite(args, "peers", budget("peers")), "PyTorch peers"))
    steps.append(
        Step(
            "compile",
            300 if smoke else session_plan.BUDGETS["compile"],
            [
                sys.executable,
                os.path.join(HERE, "compile_probe.py"),
                "--jsonl",
                os.path.join(args.out, "rows.jsonl"),
                "--timeout",
                "250" if smoke else "28",
            ],
            "one compile's seconds (the studies' host probe), XLA's defaults and GEMM autotuning off",
        )
    )
    for name in LATENT_FIRST[:1] if smoke else LATENT_FIRST:
        cmd = [sys.executable, "-m", "tokdyn.cli", "reproduce", "--studies", name, "--out", args.studies_dir]
        cmd += ["--no-plots", "--quiet"] + (["--quick"] if smoke else [])
        steps.append(Step(f"study:{name}", 5 if smoke else 240, cmd, f"tokdyn reproduce --studies {name}"))
    steps.append(
        Step(
            "rest",
            budget("rest"),
            suite(args, "sampling,sweep", budget("rest"), "--sweep-seconds", "20" if smoke else "200"),
            "sampling; the 10^9-run sweep",
        )
    )
    return [st for st in steps if not (smoke and st.name in SMOKE_SKIPS)]


def sweep_step(label: str, argv: list, args, log) -> int:
    """One learned sweep in a fresh folder, a child in its own process group stopped at the step's
    budget, as a row of ``rows.jsonl``: its own seconds (``N models in S s`` from its output) as
    ``median``, the wall seconds beside; a stopped or failed sweep is a row with that status.
    ``--smoke``: the autoencoder's quick sweep at 2 seeds."""
    if args.smoke:
        label, argv = "tokdyn sweep vtae --quick --seeds 2", ["sweep", "vtae", "--quick", "--seeds", "2"]
    folder = os.path.join(args.studies_dir + "-sweeps", argv[1])  # beside the studies' folder, not in it
    shutil.rmtree(folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "tokdyn.cli", *argv, "--out", folder, "--no-plots"]  # the time is the sweep's
    t = time.perf_counter()
    rc, status, text = child(cmd, args.step_timeout, args, log)
    m = MODELS_IN.search(text)
    row = dict(section="sweeps", name=label, status=status, wall_s=round(time.perf_counter() - t, 1), unit="s", rc=rc)
    if status == "ok" and m:
        row.update(median=float(m.group(2)), size=f"{m.group(1)} models")
    elif status == "ok":
        row.update(status="error", error="no 'N models in S s' line in its output")
    append_row(args, row)
    return 0 if row["status"] == "ok" else 1


def append_row(args, row: dict) -> None:
    """One row appended to ``rows.jsonl`` with the commit and the device, as the suite's rows."""
    row = dict(row, commit=commit(), device=getattr(args, "device_name", "") or device_name())
    with open(os.path.join(args.out, "rows.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


KERNEL_ROW = "the Pallas kernel itself, from the trace"


def kernel_row(args) -> None:
    """After the dynamics step: the Pallas kernel's own rate, the traced chunk's runs (the study
    path's row) over the kernel's total time on the device in ``trace.tgz``, as a row of
    ``rows.jsonl`` (``kernel alone`` times ``dynamics.pallas.run`` end to end, XLA's preparation of
    its inputs and the labels included)."""
    import ledger
    import trace_summary

    path = os.path.join(args.out, "trace.tgz")
    rows_file = os.path.join(args.out, "rows.jsonl")
    if not (os.path.exists(path) and os.path.exists(rows_file)):
        return
    try:
        runs = ledger.traced_runs(ledger.jsonl_rows(rows_file))
        seconds = trace_summary.kernel_seconds(trace_summary.load_events(path), "_kernel")
    except (ValueError, SystemExit, OSError) as e:
        append_row(args, dict(section="dynamics", name=KERNEL_ROW, status="error", error=str(e)[:300]))
        return
    if seconds > 0:
        row = dict(section="dynamics", name=KERNEL_ROW, status="ok", median=runs / seconds, unit="runs/s")
        append_row(args, dict(row, size=f"{runs:,} runs, one chunk", kernel_s=seconds))


def ordered(args, steps: list[Step]) -> tuple[list[Step], dict]:
    """The steps in the ledger's order for ``args.device`` (module docstring), and for each step the
    ledger rows it serves as ``(state, priority, [(id, state, priority, precision), ...])``, each row's
    state as ``ledger.py`` gives it; in the default order with ``--smoke`` or without a readable
    ledger."""
    try:
        import ledger

        rows = ledger.load()
        order = ledger.step_order(rows, args.device, [st.name for st in steps])
    except Exception as e:  # noqa: BLE001 -- the call still runs, in the default order
        print(f"the ledger could not be read ({type(e).__name__}: {e}); the default order", file=sys.stderr)
        return steps, {}
    precision = {r.id: r.precision for r in rows if r.device == args.device}
    serves = {name: (st, prio, [(i, s, p, precision[i]) for i, s, p in served]) for name, st, prio, served in order}
    if args.smoke:
        return steps, serves
    by_name = {st.name: st for st in steps}
    return [by_name[name] for name, *_ in order], serves


def commit() -> str:
    """``TOKDYN_COMMIT`` where the caller set it (with its ``+dirty``: a device machine's copy of
    the tree may carry a ``.git`` at another commit than the tree's), else the checkout's commit
    with ``+dirty`` when it has uncommitted changes to tracked files, or "unknown"."""
    if os.environ.get("TOKDYN_COMMIT"):
        return os.environ["TOKDYN_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT
        )
    except OSError:
        head = None
    if head is None or head.returncode:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


IMPORT_PROBE = "import tokdyn, tokdyn.dynamics, tokdyn.engine; print('tokdyn', tokdyn.__file__)"


def probe(cmd: list, timeout: float, **kw) -> subprocess.CompletedProcess:
    """``cmd`` run to its end or ``timeout`` seconds (then a failed result saying so)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"{cmd[0]}: no answer within {timeout:.0f} s")


def setup(args, log) -> int:
    """tokdyn importable as the steps' children import it (the checkout on their ``PYTHONPATH``; an
    editable install only where that fails; the step fails unless ``import tokdyn`` then works), and
    the device described. Each command is held to a timeout: the step takes tens of seconds at most."""
    env = child_env(args)
    importable = probe([sys.executable, "-c", IMPORT_PROBE], 60, cwd="/", env=env)
    if importable.returncode:
        log.write("tokdyn not importable: pip install --no-deps --no-build-isolation -e .\n")
        log.flush()
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", ROOT]
        log.write(probe(pip, 120).stderr[-2000:])
        importable = probe([sys.executable, "-c", IMPORT_PROBE], 60, cwd="/", env=env)
    lines = [importable.stdout.strip() or "import tokdyn FAILED: " + importable.stderr.strip()[-1500:]]
    if shutil.which("nvidia-smi"):
        q = "name,memory.total,driver_version,clocks.sm,clocks.max.sm"
        p = probe(["nvidia-smi", f"--query-gpu={q}", "--format=csv"], 20)
        lines.append(p.stdout.strip() or p.stderr.strip())
    code = (
        "import jax, sys; print('jax', jax.__version__, jax.default_backend(), jax.devices()); "
        'exec(\'try:\\n import torch; print("torch", torch.__version__, torch.cuda.is_available())\\n'
        'except ImportError: print("torch not installed")\')'
    )
    p = probe([sys.executable, "-c", code], 60, cwd=ROOT, env=env)
    lines += [p.stdout.strip(), p.stderr.strip()[-2000:]]
    lines.append(f"commit {commit()}")
    args.device_name = device_name()
    with open(os.path.join(args.out, "device.txt"), "w") as f:
        f.write("\n".join(x for x in lines if x) + "\n")
    return importable.returncode or p.returncode


def table(args) -> str:
    """rows.jsonl as a markdown table (every row, skipped and failed ones included)."""
    path = os.path.join(args.out, "rows.jsonl")
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            rows = [json.loads(ln) for ln in f if ln.strip()]
    out = [
        "| section | row | size | rate (median) | of bound (binding) | compile s | precision | status |",
        "|---|---|---|---:|---|---:|---|---|",
    ]
    for r in rows:
        rate = r.get("median")
        rate = "" if rate is None else f"{rate:,.4g} {r.get('unit', '')}"
        bound = f"{r['of_bound']:.2%} ({r.get('binding', '?')})" if isinstance(r.get("of_bound"), float) else ""
        if args.smoke:  # tiny sizes, the ceilings too: a share of such a bound means nothing
            bound = "smoke" if bound else ""
        comp = f"{r['compile_s']:.1f}" if isinstance(r.get("compile_s"), float) else ""
        status = r.get("status", "") + (f" {r['error']}" if "error" in r else "")
        size = r.get("size", "") + (f", {r['group']} vmapped at once" if isinstance(r.get("group"), int) else "")
        out.append(
            f"| {r.get('section')} | {r.get('name')} | {size} | {rate} | {bound} | {comp} | "
            f"{r.get('precision', '')} | {status[:200]} |"
        )
    return "\n".join(out) + "\n"


def pack_studies(args):
    """Every study's directory without its .npz parts -> studies.tgz."""
    if not os.path.isdir(args.studies_dir):
        return
    with tarfile.open(os.path.join(args.out, "studies.tgz"), "w:gz") as tf:
        tf.add(args.studies_dir, arcname="studies", filter=lambda ti: None if ti.name.endswith(".npz") else ti)


def child_env(args) -> dict:
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        # a child (the sweep row's) allocates beside its parent on the device
        XLA_PYTHON_CLIENT_PREALLOCATE="false",
    )
    env.setdefault("TOKDYN_CACHE_DIR", os.path.join("/tmp", "tokdyn-jax-cache"))
    if args.smoke:  # the smoke run checks that every step runs, not its speed
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    env.setdefault("TOKDYN_COMMIT", commit())  # the rows' commit, also where the copy's .git is not the tree's
    return env


def child(cmd: list, timeout: float, args, log) -> tuple:
    """``cmd`` as a child in its own process group, stopped at ``timeout`` seconds: a stop kills its
    children too (the sweep row's child, the compile probe's), and a compiler abort in it loses it
    alone. Its output goes to ``log``; returns ``(rc, status, output)``."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=child_env(args), start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else "error"
        except subprocess.TimeoutExpired:
            rc, status = None, f"stopped at {timeout:.0f} s"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left (also after a Ctrl-C)
            except ProcessLookupError:
                pass
            proc.wait()
        out.seek(0)
        text = out.read()
    log.write(text)
    log.flush()
    return rc, status, text


def run_step(step: Step, timeout: float, args, log) -> dict:
    t = time.perf_counter()
    log.write(f"\n===== {step.name} (timeout {timeout:.0f} s) =====\n")
    log.flush()
    if callable(step.command):
        args.step_timeout = timeout
        rc = step.command(args, log)
        status = "ok" if rc == 0 else "error"
    else:
        rc, status, _ = child(step.command, timeout, args, log)
        if status.startswith("stopped"):
            status = "stopped at its budget"
    return dict(name=step.name, status=status, rc=rc, seconds=round(time.perf_counter() - t, 1))


def device_name() -> str:
    """The GPU's name (``nvidia-smi``), else the host's processor: the ``device`` of the rows this
    script writes itself."""
    if shutil.which("nvidia-smi"):
        p = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        if p.stdout.strip():
            return p.stdout.strip().splitlines()[0]
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


def detect_device() -> str:
    """The ledger's name of this machine's GPU (``h100`` or ``h200`` from ``nvidia-smi``), else ``h200``."""
    if shutil.which("nvidia-smi"):
        p = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        if "H100" in p.stdout:
            return "h100"
    return "h200"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "device-out"))
    ap.add_argument(
        "--budget", type=float, default=None, help="seconds for the whole call (default 9 min; 1 h with --smoke)"
    )
    ap.add_argument("--plan", action="store_true", help="print the steps and their budgets; run nothing")
    ap.add_argument("--smoke", action="store_true", help="every step at a tiny size")
    ap.add_argument("--studies-dir", default=None, help="where the studies run (default a folder in /tmp)")
    ap.add_argument(
        "--device", choices=("h200", "h100"), default=None, help="the ledger's device (default: nvidia-smi's)"
    )
    ap.add_argument(
        "--steps",
        default=None,
        help="comma list of step names (or prefixes, such as study: or train:) to run, in the plan's order; "
        "default every step",
    )
    ap.add_argument(
        "--priority",
        type=int,
        default=None,
        help="only the steps still to measure ledger rows of this priority (e.g. 2 for the call after the first "
        "priority's was recorded); default every step, in the ledger's order",
    )
    args = ap.parse_args(argv)
    if args.budget is None:
        args.budget = 3600.0 if args.smoke else 540.0
    if not args.budget > 0:
        ap.error(f"--budget must be > 0, got {args.budget}")
    args.out = os.path.abspath(args.out)
    args.studies_dir = args.studies_dir or os.path.join("/tmp", "tokdyn-device-studies")
    args.device = args.device or detect_device()
    steps = plan(args)
    if args.steps:
        wanted = [w.strip() for w in args.steps.split(",") if w.strip()]
        unknown = [w for w in wanted if not any(st.name.startswith(w) for st in steps)]
        if unknown:
            ap.error(f"--steps: no step is named {unknown}; the steps: {[st.name for st in steps]}")
        steps = [st for st in steps if st.name == "setup" or any(st.name.startswith(w) for w in wanted)]
    steps, serves = ordered(args, steps)
    if args.priority is not None:  # the steps still to measure rows of that priority (setup with them)
        keep = set(session_plan.arithmetic(steps, serves, args.priority)["steps"])
        steps = [st for st in steps if st.name in keep]
    if args.plan:
        print(session_plan.plan_text(args, steps, serves))
        return 0
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    record = dict(
        budget_s=args.budget,
        smoke=args.smoke,
        plan=[dataclasses.asdict(s) | {"command": str(s.command)} for s in steps],
        steps=[],
    )
    with open(os.path.join(args.out, "session.log"), "a") as log:
        for st in steps:
            left = args.budget - (time.perf_counter() - start)
            if left < st.budget:
                record["steps"].append(dict(name=st.name, status=f"skipped ({left:.0f} s left, needs {st.budget:.0f})"))
            else:
                record["steps"].append(run_step(st, st.budget, args, log))
                if st.name.startswith("study:"):
                    pack_studies(args)
                if st.name == "dynamics":
                    kernel_row(args)
            print(f"[{time.perf_counter() - start:6.1f} s] {record['steps'][-1]}", flush=True)
            with open(os.path.join(args.out, "session.json"), "w") as f:
                json.dump(record, f, indent=1)
            with open(os.path.join(args.out, "table.md"), "w") as f:
                f.write(table(args))
    print(table(args))
    print(
        f"\nrecord it: python benchmarks/ledger.py --record {args.out} --device {args.device} --commit {commit()} "
        f"--date {time.strftime('%Y-%m-%d')}  (the folder copied into benchmarks/runs/ first)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
