"""How long one compile takes on this backend, under XLA's default flags and under other flags.

    python benchmarks/compile_probe.py [--jsonl FILE] [--variants "" "--xla_gpu_autotune_level=0"]

The program compiled is the training probe's step of :mod:`tokdyn.experiment.rates` (one
transformer block's loss, gradient and Adam update): the compile whose time sets the studies'
``host`` speed, which their time estimates divide by. Each variant runs in a fresh process (XLA
reads its flags once, at start), with JAX's compilation cache off for the timed compile. On the
H200 (``benchmarks/runs/h200-2026-11-26-f7091be/``) that compile was about 15x slower than on the
reference CPU, which made the latent-reasoning study's estimate there about 4 hours; on a GPU much
of a small program's compile can be XLA's autotuning of its products, which the second variant
turns off. Each variant's row is appended to ``--jsonl`` as it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHILD = (
    "import json; from tokdyn.experiment import rates; r = rates.measure(('host',)); "
    "print('RESULT ' + json.dumps(dict(compile_s=1.0 / r.rates['host'], backend=r.backend, device=r.device)))"
)
GPU_VARIANTS = ("", "--xla_gpu_autotune_level=0")


def commit() -> str:
    """The checkout's commit (short), or ``unknown``."""
    c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return c.stdout.strip() or os.environ.get("TOKDYN_COMMIT", "unknown")


def one(flags: str, timeout: float) -> dict:
    """The row of one variant: its compile's seconds, from a fresh process under ``flags``."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    name = f"the training probe's step, XLA_FLAGS {flags or '(as set)'}"
    t = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(section="compile", name=name, status=f"stopped at {timeout:.0f} s")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        return dict(section="compile", name=name, status="error", error=(p.stderr or p.stdout).strip()[-300:])
    r = json.loads(lines[-1][len("RESULT ") :])
    return dict(
        section="compile",
        name=name,
        status="ok",
        size="one transformer block's training step",
        unit="s per compile",
        median=r["compile_s"],
        compile_s=r["compile_s"],
        process_s=time.perf_counter() - t,
        backend=r["backend"],
        device=r["device"],
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jsonl", default=None, help="append every row to this file as it finishes")
    ap.add_argument(
        "--variants",
        nargs="*",
        default=None,
        help="XLA_FLAGS added per variant ('' for none); default: none, and on a GPU also autotuning off",
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds each variant's process may take")
    args = ap.parse_args(argv)
    variants = args.variants
    if variants is None:
        import shutil

        variants = list(GPU_VARIANTS) if shutil.which("nvidia-smi") else [""]
    sha = commit()
    for flags in variants:
        row = dict(one(flags, args.timeout), commit=sha)
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
