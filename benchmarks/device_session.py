"""One prepared call on a lent accelerator: measures, in priority order and inside a time budget,
what the GPU tables still lack, and writes its raw table and logs as it goes.

    python benchmarks/device_session.py [--out DIR] [--budget 540] [--plan] [--smoke]

Steps, in this order (each a child process with its own time budget; a step whose least useful
time no longer fits in what is left is recorded as skipped; every row a step finishes is on disk
the moment it finishes, so a kill loses nothing finished):

  setup       tokdyn importable (else ``pip install --no-deps --no-build-isolation -e .``); the
              device, driver, JAX and PyTorch versions -> device.txt
  dynamics    the ceilings (GEMM, copy, FMA, exp) and the token-dynamics rows: the kernel alone,
              the study path with a ``jax.profiler`` trace (trace.tgz), the given-data forms, the
              Pallas kernel checked against ``dynamics.run``
  training    every learned model's training at 1, 64 and 1,024 seeds (4,096 for the visual-token
              autoencoder), each with its share of the bound (XLA's cost analysis)
  peers       the PyTorch peers on CUDA, eager and ``torch.compile``
  compile     one compile's seconds (the studies' host probe, ``compile_probe.py``), under XLA's
              default flags and with GEMM autotuning off
  study:NAME  the studies' defaults (``tokdyn reproduce --studies NAME``), the latent studies
              first; each study's tables and report -> studies.tgz (its .npz parts left out)
  rest        the suite's other rows (sampling, DMLR, mediation), then the 10^9-run sweep

Files under ``--out`` (default ``$OUT``; at most 8, none deeper than the folder itself):
device.txt, session.json (the plan and each step's status, seconds and exit code, rewritten after
each step), session.log (every step's output), rows.jsonl (every row, appended as it finishes,
with the commit and device), table.md (the rows as a table, rewritten after each step),
ceilings.json, trace.tgz, studies.tgz.

``--plan`` prints the steps, their budgets and commands, and runs nothing (no JAX import).
``--smoke`` runs every step at a tiny size on whatever backend is there (a test runs it on the
CPU: it checks the script, not speed): the row variants whose code another row runs are skipped,
the two cheapest learned models are trained and the others built and their step lowered (its cost
analysis), and the studies step stops its study at a few seconds, which tests the stop. Its CPU
time is about 1.5 to 2 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LATENT_FIRST = (
    "latent-reasoning",
    "latent-diagnostics",
    "latent-optimisation",
    "token-dynamics",
    "token-dynamics-sweep",
    "collapse",
    "scenes",
    "visual-tokens",
    "grid-diffusion",
    "video",
)


@dataclasses.dataclass
class Step:
    """One step: its name, the most seconds it may take, the least worth starting it with, and its
    command (a list of arguments, or a Python callable for the in-process steps)."""

    name: str
    budget: float
    least: float
    command: object
    what: str = ""


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


def plan(args) -> list[Step]:
    """The steps of this call, in priority order (module docstring)."""
    smoke = args.smoke
    steps = [
        # with --smoke the budgets are wide (a loaded CPU is slow; the work is tiny): only the study
        # step is held to a few seconds, which tests the stop
        Step("setup", 300 if smoke else 60, 5, setup, "tokdyn importable; device.txt"),
        Step(
            "dynamics",
            600 if smoke else 120,
            15 if smoke else 60,
            suite(
                args,
                "ceilings,dynamics",
                600 if smoke else 120,
                "--trace",
                os.path.join(args.out, "trace.tgz"),
                *([] if smoke else ["--chunks", "100000,1000000"]),
            ),
            "ceilings; kernel alone, study path + profile, given data, Pallas check",
        ),
        # the learned models the GPU tables lack most: the visual-token autoencoder and Slot Attention
        # at 1,024 and 4,096 seeds, each trained as one program per call ("scan")
        Step(
            "train:autoencoder",
            600 if smoke else 80,
            15 if smoke else 40,
            suite(
                args,
                "training",
                600 if smoke else 80,
                "--models",
                "autoencoder",
                "--seeds",
                "2" if smoke else "4096,1024",
                "--strategy",
                "scan",
            ),
            "visual-token autoencoder at 4,096 and 1,024 seeds, one program per call",
        ),
        Step(
            "train:slots",
            600 if smoke else 150,
            15 if smoke else 60,
            suite(
                args,
                "training",
                600 if smoke else 150,
                "--models",
                "slot",
                "--seeds",
                "2" if smoke else "1024,4096",
                "--strategy",
                "scan",
            ),
            "Slot Attention at 1,024 and 4,096 seeds, one program per call",
        ),
        # on the H200 (benchmarks/runs/h200-2026-11-26-f7091be) each model's program at 1,024 seeds
        # compiled in 50-55 s: six models at their largest seed count need about 340 s
        Step(
            "training",
            600 if smoke else 340,
            15 if smoke else 60,
            suite(args, "training", 600 if smoke else 340),
            "every learned model at 1, 64, 1,024 seeds (autoencoder 4,096), share of the bound",
        ),
        Step(
            "peers",
            600 if smoke else 60,
            10 if smoke else 40,
            suite(args, "peers", 600 if smoke else 60),
            "PyTorch peers, eager and torch.compile",
        ),
        Step(
            "compile",
            300 if smoke else 60,
            10 if smoke else 30,
            [
                sys.executable,
                os.path.join(HERE, "compile_probe.py"),
                "--jsonl",
                os.path.join(args.out, "rows.jsonl"),
                "--timeout",
                "250" if smoke else "28",
            ],
            "one compile's seconds (the studies' host probe), XLA's defaults and GEMM autotuning off",
        ),
    ]
    studies = LATENT_FIRST[:1] if smoke else LATENT_FIRST
    for name in studies:
        cmd = [
            sys.executable,
            "-m",
            "tokdyn.cli",
            "reproduce",
            "--studies",
            name,
            "--out",
            args.studies_dir,
            "--no-plots",
            "--quiet",
        ]
        steps.append(
            Step(f"study:{name}", 5 if smoke else 600, 3 if smoke else 45, cmd + (["--quick"] if smoke else []))
        )
    steps.append(
        Step(
            "rest",
            600 if smoke else 300,
            15 if smoke else 30,
            suite(
                args,
                "sampling,dmlr,diagnostics,sweep",
                600 if smoke else 300,
                "--sweep-seconds",
                "20" if smoke else "200",
            ),
            "sampling, DMLR, mediation; the 10^9-run sweep",
        )
    )
    return steps


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


def setup(args, log) -> int:
    """tokdyn importable (an editable install where it is not; the step fails unless ``import
    tokdyn`` then works), and the device described."""
    importable = subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd="/", capture_output=True, text=True)
    if importable.returncode:
        log.write("tokdyn not importable: pip install --no-deps --no-build-isolation -e .\n")
        log.flush()
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", ROOT],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        importable = subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd="/", capture_output=True, text=True)
    lines = [importable.stdout.strip() or "import tokdyn FAILED: " + importable.stderr.strip()[-1500:]]
    if shutil.which("nvidia-smi"):
        q = "name,memory.total,driver_version,clocks.sm,clocks.max.sm"
        p = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv"], capture_output=True, text=True)
        lines.append(p.stdout.strip() or p.stderr.strip())
    probe = (
        "import jax, sys; print('jax', jax.__version__, jax.default_backend(), jax.devices()); "
        'exec(\'try:\\n import torch; print("torch", torch.__version__, torch.cuda.is_available())\\n'
        'except ImportError: print("torch not installed")\')'
    )
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    lines += [p.stdout.strip(), p.stderr.strip()[-2000:]]
    lines.append(f"commit {commit()}")
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


def run_step(step: Step, timeout: float, args, log) -> dict:
    t = time.perf_counter()
    log.write(f"\n===== {step.name} (timeout {timeout:.0f} s) =====\n")
    log.flush()
    if callable(step.command):
        rc = step.command(args, log)
        status = "ok" if rc == 0 else "error"
    else:
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
        env.setdefault("TOKDYN_COMMIT", commit())  # the rows' commit where the copy has no .git
        # its own process group: a stop kills the step's children too (the sweep row's child, the
        # compile probe's), and a compiler abort in one step loses that step alone
        proc = subprocess.Popen(
            step.command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else "error"
        except subprocess.TimeoutExpired:
            rc, status = None, "stopped at its budget"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left (also after a Ctrl-C)
            except ProcessLookupError:
                pass
            proc.wait()
    return dict(name=step.name, status=status, rc=rc, seconds=round(time.perf_counter() - t, 1))


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
        "--steps",
        default=None,
        help="comma list of step names (or prefixes, such as study: or train:) to run, in the plan's order; "
        "default every step",
    )
    args = ap.parse_args(argv)
    if args.budget is None:
        args.budget = 3600.0 if args.smoke else 540.0
    if not args.budget > 0:
        ap.error(f"--budget must be > 0, got {args.budget}")
    args.out = os.path.abspath(args.out)
    args.studies_dir = args.studies_dir or os.path.join("/tmp", "tokdyn-device-studies")
    steps = plan(args)
    if args.steps:
        wanted = [w.strip() for w in args.steps.split(",") if w.strip()]
        unknown = [w for w in wanted if not any(st.name.startswith(w) for st in steps)]
        if unknown:
            ap.error(f"--steps: no step is named {unknown}; the steps: {[st.name for st in steps]}")
        steps = [st for st in steps if st.name == "setup" or any(st.name.startswith(w) for w in wanted)]
    if args.plan:
        total = 0.0
        print(f"budget {args.budget:.0f} s; out {args.out}" + ("; SMOKE" if args.smoke else ""))
        print("| # | step | budget s | least s | starts by s (at the latest) | what / command |")
        print("|---:|---|---:|---:|---:|---|")
        for i, st in enumerate(steps):
            cmd = st.what or " ".join(st.command[1:]) if not callable(st.command) else st.what
            starts = min(total, args.budget)
            print(f"| {i} | {st.name} | {st.budget:.0f} | {st.least:.0f} | {starts:.0f} | {cmd} |")
            total += st.budget
        print(f"\nthe steps' budgets add to {total:.0f} s; the call stops starting steps at {args.budget:.0f} s")
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
            if left < st.least:
                record["steps"].append(dict(name=st.name, status=f"skipped ({left:.0f} s left, needs {st.least:.0f})"))
            else:
                record["steps"].append(run_step(st, min(st.budget, left), args, log))
                if st.name.startswith("study:"):
                    pack_studies(args)
            print(f"[{time.perf_counter() - start:6.1f} s] {record['steps'][-1]}", flush=True)
            with open(os.path.join(args.out, "session.json"), "w") as f:
                json.dump(record, f, indent=1)
            with open(os.path.join(args.out, "table.md"), "w") as f:
                f.write(table(args))
    print(table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
