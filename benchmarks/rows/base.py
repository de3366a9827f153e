"""What every family of rows shares: the run's bookkeeping (:class:`Suite`: rows, clock, budget,
log, JSON), steady-state timing, compiled programs and their cost analysis, and placing work on the
local devices."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
import traceback

import jax
import numpy as np


def git_commit() -> str:
    """``TOKDYN_COMMIT`` where the caller set it (a device machine's copy of the tree may carry a
    ``.git`` that is not the tree's), else the checkout's commit (``+dirty`` when it has uncommitted
    changes), or "unknown"."""
    import subprocess

    if os.environ.get("TOKDYN_COMMIT"):
        return os.environ["TOKDYN_COMMIT"]

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    if head.returncode:
        return os.environ.get("TOKDYN_COMMIT", "unknown")
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class Suite:
    """Rows, the clock, the budget, the log and the JSON."""

    def __init__(self, args):
        self.args, self.rows, self.start = args, [], time.perf_counter()
        self.out = args.out
        self.ceil = {}
        if self.out:
            os.makedirs(self.out, exist_ok=True)
            self.log_file = open(os.path.join(self.out, "suite.log"), "a")
        else:
            self.log_file = None
        dev = jax.devices()[0]
        self.meta = dict(
            date=time.strftime("%Y-%m-%d %H:%M"),
            jax=jax.__version__,
            backend=jax.default_backend(),
            device=getattr(dev, "device_kind", str(dev)),
            devices=jax.device_count(),
            host=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            dtype="float32",
            smoke=bool(args.smoke),
            default_matmul_precision=str(jax.config.jax_default_matmul_precision),
            matmul_precision=getattr(args, "matmul_precision", None) or "default",
            commit=git_commit(),
        )
        stats = memory_stats()
        if stats:
            self.meta["device_memory_bytes"] = stats.get("bytes_limit")

    @property
    def accelerator(self) -> bool:
        return self.meta["backend"] != "cpu"

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over_budget(self) -> bool:
        return self.args.budget is not None and self.elapsed() > self.args.budget

    def log(self, *parts):
        line = " ".join(str(p) for p in parts)
        print(line, file=sys.stderr, flush=True)
        if self.log_file:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def add(self, section, name, **row):
        row = dict(section=section, name=name, **row)
        self.rows.append(row)
        if getattr(self.args, "jsonl", None):  # every row on disk as it finishes (a kill loses none)
            with open(self.args.jsonl, "a") as f:
                f.write(
                    json.dumps(dict(row, commit=self.meta["commit"], device=self.meta["device"]), default=_jsonable)
                    + "\n"
                )
        self.log(
            f"[{self.elapsed():7.1f} s] {section} | {name} |",
            ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k not in ("section", "name")),
        )
        return row

    def selected(self, section: str, name: str) -> bool:
        """Whether ``--rows`` (when given) lets the row ``section | name`` run: a family skips the
        set-up of rows none of which is selected."""
        return not self.args.rows or bool(re.search(self.args.rows, f"{section} | {name}"))

    def row(self, section, name, fn, *, always=False, smoke=True):
        """Run ``fn() -> dict`` as one row: skipped past the budget (unless ``always``), skipped
        with ``--smoke`` when ``smoke`` is False (a row whose code another row of the smoke run
        already runs, at another size or setting), an error recorded (never lost)."""
        if not self.selected(section, name):
            return self.add(section, name, status="skipped (--rows)")
        if self.args.smoke and not smoke:
            return self.add(section, name, status="skipped (smoke: its code runs in another row)")
        if self.over_budget() and not always:
            return self.add(section, name, status="skipped (budget)")
        try:
            return self.add(section, name, status="ok", **fn())
        except Exception as e:  # noqa: BLE001 -- a failing row is a result; the others go on
            self.log(traceback.format_exc())
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            return self.add(section, name, status="error", error=msg)

    def save(self):
        if self.out:
            with open(os.path.join(self.out, "suite.json"), "w") as f:
                json.dump(dict(meta=self.meta, ceilings=self.ceil, rows=self.rows), f, indent=1, default=_jsonable)


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def memory_stats() -> dict:
    try:
        s = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 -- backends without it
        return {}
    return dict(s) if s else {}


def steady(fn, repeats):
    """``(best s, median s, first s)``: ``fn()`` (which ends on host values or blocks) called once
    to compile and warm, then ``repeats`` times."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), float(np.median(ts)), first


def compiled_of(f, *args):
    """``(compiled, compile seconds)``: ``f`` (jitted) lowered and compiled for ``args``."""
    t = time.perf_counter()
    c = f.lower(*args).compile()
    return c, time.perf_counter() - t


def cost_of(compiled) -> dict:
    """XLA's own cost analysis of a compiled program (flops, bytes accessed; loops counted once)
    and the number of kernels (fusions and library calls) in its optimised HLO."""
    out = {}
    try:
        ca = compiled.cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        out.update(xla_flops=float(ca.get("flops", np.nan)), xla_bytes=float(ca.get("bytes accessed", np.nan)))
    except Exception:  # noqa: BLE001
        pass
    try:
        text = compiled.as_text()
        out["kernels"] = sum(
            1
            for ln in text.splitlines()
            if " fusion(" in ln or "custom-call(" in ln or " = f32[" in ln and "dot(" in ln
        )
    except Exception:  # noqa: BLE001
        pass
    return out


def _mesh():
    from jax.sharding import Mesh

    return Mesh(np.asarray(jax.local_devices()), ("d",))


def spread(x):
    """``x`` split along its leading axis over the local devices."""
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.device_put(x, NamedSharding(_mesh(), PartitionSpec("d")))


def on_devices(f):
    """``f`` applied to each device's share of its arguments' leading axis (``shard_map``), jitted:
    a ceiling of all the local devices, as the package's runs use them."""
    from jax.sharding import PartitionSpec

    return jax.jit(
        jax.shard_map(f, mesh=_mesh(), in_specs=PartitionSpec("d"), out_specs=PartitionSpec("d"), check_vma=False)
    )
