"""The sweep row: ``--sweep-runs`` runs of the token-dynamics study through ``engine.sweep.run``
with chunk files on disk and progress, in a child process stopped at ``--sweep-seconds``; the rate
is read off the chunk files written (compile excluded), and a sweep stopped early says so and
*projects* the whole sweep's time from that rate (a projection, not a measurement)."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import jax

from rows.base import Suite
from rows.dynamics import CFG, PER_SEED, TASK
from tokdyn.engine import sweep

SUITE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "suite.py")


def sweep_child(out_dir, runs, chunk):
    """The sweep row's child: ``runs`` runs of the study function to ``out_dir`` with progress."""
    grid = dataclasses.replace(CFG, seeds=-(-runs // PER_SEED)).grid()
    sweep.run(
        TASK,
        grid,
        key=jax.random.key(CFG.root_seed),
        common_random_numbers=True,
        chunk_size=chunk,
        out=out_dir,
        collect=False,
        progress=True,
    )


def run(s: Suite):
    """The sweep row (module docstring)."""
    runs = s.args.sweep_runs or (36 * 8 if s.args.smoke else (10**9 if s.accelerator else 10**8))
    seconds = s.args.sweep_seconds or (60.0 if s.args.smoke else 600.0)
    chunk = 36 * (2 if s.args.smoke else (2**14 if s.accelerator else 2**10))  # whole seeds

    def one():
        out_dir = tempfile.mkdtemp(prefix="tokdyn-suite-sweep-")
        sweep_dir = os.path.join(out_dir, "sweep")  # the sweep's own directory (out_dir holds the child's log)
        cmd = [sys.executable, SUITE, "--child-sweep", json.dumps([sweep_dir, runs, chunk])]
        log_path = os.path.join(out_dir, "child.log")
        t = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            try:
                rc = proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
        wall = time.perf_counter() - t
        with open(log_path) as f:
            lines = [ln.strip() for ln in f.read().replace("\r", "\n").splitlines() if ln.strip()]
        if rc not in (0, None):
            raise RuntimeError(f"the sweep's child exited {rc}: {' | '.join(lines[-3:])[-500:]}")
        spans = []
        for f in glob.glob(os.path.join(sweep_dir, "chunks", "*.npz")):
            a, b = os.path.basename(f)[:-4].split("-")
            spans.append((os.path.getmtime(f), int(b) - int(a), os.path.getsize(f)))
        spans.sort()
        done = sum(n for _, n, _ in spans)
        # the rate between the first and the last chunk written: compile and start-up excluded
        rate = (done - spans[0][1]) / (spans[-1][0] - spans[0][0]) if len(spans) > 2 else float("nan")
        disk = sum(b for _, _, b in spans)
        shutil.rmtree(out_dir, ignore_errors=True)
        total = len(dataclasses.replace(CFG, seeds=-(-runs // 36)).grid())
        return dict(
            size=f"{total:,} runs, chunk {chunk:,}",
            unit="runs/s",
            median=rate,
            wall_s=wall,
            runs_done=done,
            finished=rc == 0,
            chunk_bytes_on_disk=disk,
            projected_total_s=total / rate if rate == rate else float("nan"),
            last_progress=lines[-1][:200] if lines else "",
            note="rate between the first and last chunk file written (compile excluded)",
        )

    s.row("sweep", f"engine.sweep.run to disk, {runs:.0e} runs, progress", one, always=True)
