"""One command that measures tokdyn on whatever backend JAX runs on, and places every row against
the measured ceilings of that device.

    python benchmarks/suite.py [--smoke] [--out DIR] [--budget SECONDS] [--sections a,b,...]

Sections (in this order; ``--sections`` picks some):

  ceilings    the device's own ceilings, measured here: a float32 GEMM at matmul precision
              "highest" and at the backend's default (TF32 on recent NVIDIA GPUs), a float32
              FMA-bound elementwise pass (a degree-32 polynomial per element), an exp-bound pass,
              and a device-to-device copy (bytes read + written)
  dynamics    the token-dynamics workload (the study's runs: Gaussian clusters, K in {3,4,5}
              padded to 5 x 100 points, D = 4, 4 tokens, at most 30 steps, tol 1e-3, the four
              methods in equal shares, ARI/NMI/SSE/collapse per run):
                study path   ``sweep.run`` of the study's run function over its grid, in memory, at
                             chunk sizes 10^3 ... 10^7 runs (as memory and the budget allow), each
                             on the same number of runs (10^5 on CPU, 10^6 on an accelerator, or
                             one chunk where it is larger)
                given data   ``dynamics.run`` (early-exit ``while_loop``) and ``dynamics.run_fixed``
                             (masked fixed-step ``scan``) + metrics on a pool of ready data
              each row's runs/s, achieved useful GFLOP/s and its share of the float32 roofline
              (flops / the best float32 rate + exponentials / the exp rate); the compiled
              program's own cost analysis (flops, bytes accessed) and the count of kernels in it;
              on an accelerator a ``jax.profiler`` trace of one chunk (``--out``/trace.tgz)
  sweep       a sweep through ``engine.sweep.run`` with chunk files on disk and progress:
              ``--sweep-runs`` runs (default 10^8; 10^9 on an accelerator; 28,800 with --smoke),
              in a child process stopped at ``--sweep-seconds``; the rate is read off the chunk
              files written, and a sweep stopped early says so (and how long the rest would take).
              On an accelerator it runs first, before this process holds any of the device's memory
  training    each learned model's optimiser step through ``tokdyn.train.train_many`` (the
              package's strategy for the backend), vmapped over 1, 8 and 64 seeds, in
              model-steps/s: the scenes study's Slot Attention, the latent reasoner (``latent``
              variant), a visual-token autoencoder, the grid-diffusion sequence model
              (D3PM-absorbing); the latent reasoner and Slot Attention also at TF32 ("default")
  peers       where benchmarks/ has a PyTorch peer of a learned model (Slot Attention as the
              paper has it, ``torch_slots.py``; the latent reasoner, ``torch_latent.py``): one model's
              training step, tokdyn's jitted step against the same model and step in PyTorch on the
              same device (CUDA when there is one), both at full float32 (no TF32), the two losses
              on the same weights and batch compared first; skipped when PyTorch is not installed
  sampling    grid-diffusion sampling: ancestral (T steps) and DDIM-50, grids/s
  dmlr        the confidence-driven latent optimiser (``dmlr.make``), instances/s
  diagnostics the latent -> answer mediation (``mediation.latent_effects``), instances/s

Every row: steady state with compile time excluded (reported apart), results pulled to the host
(which blocks until ready), the precision of its matrix products, and its rate against the
ceiling that bounds it. The table printed last names the device, JAX version, backend and dtype;
``--out`` gets ``suite.json`` (every row, written after each section, so a stopped run keeps what
it measured) and ``suite.log``.

``--smoke`` runs every section at a tiny size (a test runs it, so the script cannot rot);
``--budget`` stops starting new rows once that many seconds have passed (rows not run are listed
as skipped, never silently dropped).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback

SECTIONS = ("ceilings", "dynamics", "peers", "training", "sampling", "dmlr", "diagnostics", "sweep")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="every row at a tiny size (CPU, under a minute)")
    ap.add_argument("--out", default=None, help="directory for suite.json, suite.log (and trace.tgz)")
    ap.add_argument("--budget", type=float, default=None, help="seconds after which no new row starts")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--sweep-runs", type=int, default=None, help="runs of the sweep row (default per backend)")
    ap.add_argument("--sweep-seconds", type=float, default=None, help="the sweep row stops after this")
    ap.add_argument("--chunks", default=None, help="comma list of study-path chunk sizes (default per backend)")
    ap.add_argument("--seeds", default=None, help="comma list of vmapped seed counts for training (default 1,8,64)")
    ap.add_argument(
        "--models",
        default=None,
        help="comma list of words; the training rows only of learned models whose name holds one "
        "(e.g. latent,diffusion,autoencoder; default every model)",
    )
    ap.add_argument(
        "--rows",
        default=None,
        help="a regular expression: only the rows whose 'section | name' it matches run (the others "
        "are listed as skipped)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="write a jax.profiler trace of one study chunk")
    ap.add_argument("--child-sweep", default=None, help=argparse.SUPPRESS)  # internal: the sweep row's child
    args = ap.parse_args(argv)
    bad = sorted(set(args.sections.split(",")) - set(SECTIONS))
    if bad:
        ap.error(f"--sections: unknown {bad}; allowed {list(SECTIONS)}")
    for name in ("budget", "sweep_seconds"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            ap.error(f"--{name.replace('_', '-')} must be > 0, got {v}")
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # as the tokdyn command does: every CPU core a host device (only the CPU platform reads it)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={os.cpu_count() or 1}"
    ).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # the checkout's tokdyn, also where it is not installed

from tokdyn import data, dynamics, fused, metrics  # noqa: E402
from tokdyn.engine import execute, sweep  # noqa: E402
from tokdyn.studies import token_dynamics as td  # noqa: E402

CFG = td.Config()
TASK = CFG.task()
T_TOK, DIM = CFG.n_tokens, CFG.dim
PTS, M_CL = CFG.points_per_cluster, TASK.max_clusters
N_PAD = M_CL * PTS


# ---------------------------------------------------------------------------------------------- bookkeeping


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
        self.log(
            f"[{self.elapsed():7.1f} s] {section} | {name} |",
            ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k not in ("section", "name")),
        )
        return row

    def row(self, section, name, fn, *, always=False):
        """Run ``fn() -> dict`` as one row: skipped past the budget (unless ``always``), an error
        recorded (never lost)."""
        if self.args.rows and not re.search(self.args.rows, f"{section} | {name}"):
            return self.add(section, name, status="skipped (--rows)")
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


# ---------------------------------------------------------------------------------------------- ceilings


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


def section_ceilings(s: Suite):
    smoke = s.args.smoke
    n_gemm = 256 if smoke else (8192 if s.accelerator else 1024)
    nd = len(jax.local_devices())
    a = spread(jax.random.normal(jax.random.key(0), (nd, n_gemm, n_gemm), jnp.float32))
    b = spread(jax.random.normal(jax.random.key(1), (nd, n_gemm, n_gemm), jnp.float32))
    reps = 2 if smoke else (20 if s.accelerator else 4)
    for prec in ("highest", "default"):

        def gemm():
            f = on_devices(lambda x, y: jnp.matmul(x, y, precision=prec))
            c, comp = compiled_of(f, a, b)
            call = lambda: c(a, b).block_until_ready()  # noqa: E731
            call()
            ts = []
            for _ in range(reps):
                t = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t)
            flops = 2.0 * n_gemm**3 * nd
            s.ceil[f"gemm_{prec}"] = flops / min(ts)
            return dict(
                size=f"{n_gemm}^3 x {nd} device(s)",
                unit="GFLOP/s",
                best=flops / min(ts) / 1e9,
                median=flops / float(np.median(ts)) / 1e9,
                compile_s=comp,
                precision=prec,
            )

        s.row("ceilings", f"float32 GEMM, precision {prec}", gemm)

    n = (1 << (16 if smoke else (28 if s.accelerator else 24))) * nd
    x = spread(jax.random.uniform(jax.random.key(2), (n,), jnp.float32, -1.0, 0.0))

    def copy():
        f = on_devices(lambda v: v * 1.0000001 + 1e-7)  # one read and one write of every element
        c, comp = compiled_of(f, x)
        best, med, _ = steady(lambda: c(x).block_until_ready(), reps)
        nbytes = 2 * 4 * n
        s.ceil["copy_bytes"] = nbytes / best
        return dict(
            size=f"{n:,} float32",
            unit="GB/s (read + write)",
            best=nbytes / best / 1e9,
            median=nbytes / med / 1e9,
            compile_s=comp,
        )

    s.row("ceilings", "device-to-device elementwise copy", copy)

    degree = 256 if s.accelerator else 32  # enough multiply-adds per byte to be compute-bound there
    n_exp = 64 if s.accelerator else 8

    def fma():
        def poly(v):  # Horner: `degree` multiply-adds per element, read once, write once
            acc = jnp.full_like(v, 0.5)
            for k in range(degree):
                acc = acc * v + (1.0 / (k + 2))
            return acc

        c, comp = compiled_of(on_devices(poly), x)
        best, med, _ = steady(lambda: c(x).block_until_ready(), reps)
        flops = 2.0 * degree * n
        s.ceil["fma_flops"] = flops / best
        return dict(
            size=f"{n:,} x {degree} FMA",
            unit="GFLOP/s",
            best=flops / best / 1e9,
            median=flops / med / 1e9,
            compile_s=comp,
        )

    s.row("ceilings", "float32 elementwise FMA pass", fma)

    def exps():
        def many(v):  # n_exp dependent exponentials per element
            acc = v
            for _ in range(n_exp):
                acc = jnp.exp(acc) - 1.5
            return acc

        c, comp = compiled_of(on_devices(many), x)
        best, med, _ = steady(lambda: c(x).block_until_ready(), reps)
        s.ceil["exp"] = n_exp * n / best
        return dict(
            size=f"{n:,} x {n_exp} exp",
            unit="G exp/s",
            best=n_exp * n / best / 1e9,
            median=n_exp * n / med / 1e9,
            compile_s=comp,
        )

    s.row("ceilings", "float32 exp pass", exps)
    s.ceil["float32_flops"] = max(s.ceil.get("gemm_highest", 0.0), s.ceil.get("fma_flops", 0.0)) or np.nan


# ---------------------------------------------------------------------------------------------- dynamics


def work_per_run(steps, n, metrics_too=True):
    """(flops, exponentials) of one run of ``steps`` steps on ``n`` points of the default workload
    (the count of ``bench_roofline.py``: scores, softmax, the means' product, force/momentum/repulsion
    per step; the final labels and the metrics once)."""
    T, D = T_TOK, DIM
    step = 2 * T * n * D + 2 * T * n + 6 * T * n + 2 * T * n * (D + 1) + T * D + 8 * T * T * D + 6 * T * D
    flops = steps * step + 2 * T * n * D + 2 * T * n + ((3 * D + 1) * n if metrics_too else 0)
    return flops, steps * T * n


def against_roofline(s: Suite, runs_per_s, mean_steps, valid_points):
    f_use, e_use = work_per_run(mean_steps, valid_points)
    f_pad, e_pad = work_per_run(mean_steps, N_PAD)
    peak_f, peak_e = s.ceil.get("float32_flops", np.nan), s.ceil.get("exp", np.nan)
    roof_use = f_use / peak_f + e_use / peak_e  # seconds per run at the ceilings
    roof_pad = f_pad / peak_f + e_pad / peak_e
    return dict(
        gflops_useful=runs_per_s * f_use / 1e9,
        bound_runs_per_s=1.0 / roof_use,
        of_bound=runs_per_s * roof_use,
        of_bound_padded=runs_per_s * roof_pad,
    )


def runs_row(s: Suite, call, n: int, size: str, strategy: str, *, valid=None, repeats=None, precision=None):
    """``(outputs, row)``: ``call()`` returns the outputs of ``n`` runs; the row holds its rate
    (median and best of the repetitions, compile excluded), mean steps and ARI, and its place
    against the roofline (``valid``: mean valid points per run; default from the outputs' cluster
    counts)."""
    box = {}

    def timed_call():
        box["r"] = call()

    best, med, first = steady(timed_call, s.args.repeats if repeats is None else repeats)
    r = box["r"]
    rate, steps = n / med, float(np.mean(r["steps"]))
    valid = float(np.mean(r["n_clusters"])) * PTS if valid is None else valid
    return r, dict(
        size=size,
        unit="runs/s",
        best=n / best,
        median=rate,
        compile_s=max(first - med, 0.0),
        mean_steps=steps,
        mean_ari=float(np.nanmean(r["ari"])),
        strategy=strategy,
        precision=precision or str(jax.config.jax_default_matmul_precision),
        **against_roofline(s, rate, steps, valid),
    )


def make_pool(n):
    seeds = np.arange(n, dtype=np.int32)
    ks = np.asarray(CFG.n_clusters, np.int32)[seeds % 3]
    noise = np.asarray(CFG.noise, np.float32)[(seeds // 3) % 3]

    def one(key, k, nz):
        c = data.gaussian_clusters(
            key,
            k,
            points_per_cluster=PTS,
            dim=DIM,
            noise=nz,
            center_box=CFG.center_box,
            centers=CFG.centers,
            max_clusters=M_CL,
        )
        return c, dynamics.forgy(c.x, c.init_noise, c.mask, T_TOK)

    keys = jax.vmap(lambda q: jax.random.fold_in(jax.random.key(7), q))(seeds)
    c, t0 = jax.jit(jax.vmap(one))(keys, ks, noise)
    return dict(x=c.x, mask=c.mask, labels=c.labels, tokens0=t0, n_true=jnp.asarray(ks))


METHOD_NAMES = ("baseline", "inertia", "repulsion", "inertia+repulsion")


def params_for(n):
    m = np.arange(n) % 4
    p = [dynamics.METHODS[name] for name in METHOD_NAMES]
    return dynamics.Hparams(**{f: np.asarray([getattr(q, f) for q in p], np.float32)[m] for f in dynamics.FIELDS})


def given_data(form: str):
    """Run + metrics on a pooled problem (the peers' workload), the run by ``form``: ``"while"``
    (``dynamics.run``, early exit), ``"fixed"`` (``dynamics.run_fixed``, a masked scan),
    ``"fused"`` (``dynamics.run`` of the candidate rule :data:`FUSED`) or ``"package"``
    (:func:`tokdyn.fused.run`: the built-in rule as one kernel per run)."""

    def task(pool, run):
        i = run["idx"]
        x, mask, labels = pool["x"][i], pool["mask"][i], pool["labels"][i]
        kw = dict(mask=mask, n_steps=CFG.n_steps, tol=CFG.tol)
        if form == "package":
            r = fused.run(x, pool["tokens0"][i], run["params"], mask=mask, n_steps=CFG.n_steps, tol=CFG.tol)
        elif form == "fixed":
            r = dynamics.run_fixed(x, pool["tokens0"][i], run["params"], **kw)
        else:
            r = dynamics.run(
                x, pool["tokens0"][i], run["params"], rule=FUSED if form == "fused" else dynamics.BUILTIN, **kw
            )
        yt, yp = jnp.where(mask, labels, 0), jnp.where(mask, r.labels, 0)
        sizes = dict(n_true=M_CL, n_pred=T_TOK)
        return dict(
            ari=metrics.ari(yt, yp, mask, **sizes),
            nmi=metrics.nmi(yt, yp, mask, **sizes),
            sse=metrics.sse(x, yp, r.tokens, mask),
            steps=r.steps,
            converged=r.converged,
            collapsed=metrics.collapsed(yp, T_TOK, pool["n_true"][i], mask),
        )

    task.__name__ = f"given_data_{form}"
    return task


GIVEN = {form: given_data(form) for form in ("while", "fixed", "fused", "package")}


# A candidate for accelerators, measured here before it goes into the package: the built-in rule's
# step for the knobs the study sweeps (temperature, momentum, repulsion, damping; no annealing,
# Langevin noise, Sinkhorn rounds or slot normalisation) with its two products over the points
# written as D multiply-adds and reductions (no dot_general, which XLA:GPU runs as a batched GEMM
# of (4 x 4) @ (4 x 500) blocks, the two slowest kernels of a step in the profile) and the softmax
# only (the built-in's Sinkhorn/softmax ``cond`` becomes a select under vmap that computes both).
# XLA may then fuse scores, softmax and the means into a few kernels that read the points instead
# of writing and reading (T, N) intermediates.
def _fused_init(points, tokens, hparams):
    return dynamics.Motion(tokens=tokens, velocity=jnp.zeros_like(tokens))


def _fused_step(state, points, hp, step, key):
    t, v = state.tokens, state.velocity  # (T, D)
    x_t, w = points.x_t, points.weights  # (D, N), (N,)
    tau = jnp.maximum(hp.temperature, jnp.finfo(t.dtype).tiny)
    s = -jnp.sum(t * t, axis=1)[:, None]  # (T, 1) -> (T, N): 2 t.x - |t|^2
    for d in range(x_t.shape[0]):
        s = s + (2.0 * t[:, d, None]) * x_t[d][None, :]
    e = jnp.exp((s - jnp.max(s, axis=0, keepdims=True)) / tau)  # (T, N), the nearest token's entry 1
    a = e * (w / jnp.sum(e, axis=0))[None, :]  # (T, N)
    mass = jnp.sum(a, axis=1)  # (T,)
    sums = jnp.stack([jnp.sum(a * x_t[d][None, :], axis=1) for d in range(x_t.shape[0])], axis=1)  # (T, D)
    means = (sums + dynamics.EPS_MASS * t) / (mass + dynamics.EPS_MASS)[:, None]
    force = means - t + hp.repulsion * dynamics.coulomb(t)
    v = hp.momentum * v + hp.damping * force
    return dynamics.Motion(tokens=t + v, velocity=v)


FUSED = dynamics.Rule(
    init=_fused_init,
    step=_fused_step,
    hparams=dynamics.Hparams(),
    name="builtin-fused",
    movement=lambda old, new: new.velocity,
)


def default_chunks(s: Suite):
    if s.args.chunks:
        return [int(c) for c in s.args.chunks.split(",")]
    if s.args.smoke:
        return [128, 1024]
    if s.accelerator:
        return [10**3, 10**4, 10**5, 10**6, 10**7]
    return [10**3, 10**4, 10**5]


def study_call(grid, chunk, devs, task=None):
    return sweep.run(
        TASK if task is None else task,
        grid,
        key=jax.random.key(CFG.root_seed),
        common_random_numbers=True,
        chunk_size=chunk,
        devices=devs,
        progress=False,
    )


def section_dynamics(s: Suite):
    devs = jax.local_devices()
    per_seed = len(CFG.grid()) // CFG.seeds  # 36 runs per seed
    strategy = "sequential map" if execute.default_batch_size() == 1 else "vmap"
    cap = 15.0 if s.args.smoke else (40.0 if s.accelerator else 60.0)  # seconds one timed call may take
    floor = 2016 if s.args.smoke else (10**6 if s.accelerator else 10**5)  # runs timed per row, at least
    # the study's run as the studies run it (ClusterRun's kernel "auto": the fused kernel where it is
    # the faster form), and where that is the fused kernel, also the XLA form beside it
    forms = [(TASK, "")]
    if TASK.uses_fused:
        forms.append((dataclasses.replace(TASK, kernel="xla"), ", kernel xla (dynamics.run under vmap)"))
    for task, suffix in forms:
        last_rate = None
        for chunk in default_chunks(s):
            # round to whole seeds, and a multiple of the device count
            chunk = max(per_seed * len(devs), (chunk // (per_seed * len(devs))) * per_seed * len(devs))
            name = f"study path (sweep.run){suffix}, chunk {chunk:,}"
            if last_rate is not None and max(chunk, floor) / last_rate > cap:
                s.add("dynamics", name, status=f"skipped (one call ~{max(chunk, floor) / last_rate:.0f} s)")
                continue

            def one(chunk=chunk, task=task):
                # the same number of runs at every chunk size (or one chunk, when larger), so that the
                # rows differ by the chunk alone, not by sweep.run's fixed cost per call
                total = max(chunk, floor)
                grid = dataclasses.replace(CFG, seeds=total // per_seed).grid()
                warm = dataclasses.replace(CFG, seeds=chunk // per_seed).grid()
                t = time.perf_counter()
                study_call(warm, chunk, devs, task)  # compiles this chunk shape
                first = time.perf_counter() - t
                r, row = runs_row(
                    s,
                    lambda: study_call(grid, chunk, devs, task),
                    len(grid),
                    f"{len(grid):,} runs, chunk {chunk:,}",
                    strategy,
                    repeats=1 if len(grid) >= 10**6 else None,
                )
                row["compile_s"] = max(first - chunk / row["median"], 0.0)
                row["kernel"] = "fused" if task.uses_fused else "xla"
                return row

            row = s.row("dynamics", name, one)
            if row.get("status") == "ok":
                last_rate = row["median"]
            elif "RESOURCE_EXHAUSTED" in row.get("error", "") or "out of memory" in row.get("error", "").lower():
                break  # larger chunks will not fit either

    # the given-data paths: while_loop (early exit) against the masked fixed-step scan, one chunk size
    n_pool = 256 if s.args.smoke else 2048
    chunk = 1024 if s.args.smoke else (10**5 if s.accelerator else 8192)
    chunk = (chunk // len(devs)) * len(devs)
    pool = make_pool(n_pool)
    runs = chunk * (1 if s.args.smoke else 2)
    idx = ((np.arange(runs) // 4) % n_pool).astype(np.int32)
    run_args = dict(idx=idx, params=params_for(runs))
    valid = float(np.mean(np.asarray(pool["mask"]).sum(1)[idx]))
    reference = {}
    gpu = jax.default_backend() == "gpu"
    # the fused kernel (tokdyn.fused): timed on a GPU only (elsewhere it runs in the Pallas
    # interpreter, far too slow to time; the smoke run checks it below)
    variants = ["while", "fixed", "fused"] + (["package"] if gpu else [])
    for variant in variants:
        fn = GIVEN[variant]

        def one(fn=fn, variant=variant):
            r, row = runs_row(
                s,
                lambda: execute.map_runs(fn, run_args, shared=pool, devices=devs, chunk_size=chunk),
                runs,
                f"{runs:,} runs, chunk {chunk:,}",
                strategy,
                valid=valid,
            )
            reference[variant] = np.asarray(r["ari"])
            for ref, what in (("while", "run()'s"),):
                if ref != variant and ref in reference:
                    diff = np.abs(reference[variant] - reference[ref])
                    row.setdefault("agreement", "")
                    row["agreement"] += f"ARI within 1e-3 of {what} on {np.mean(diff < 1e-3):.1%} of runs; "
            return row

        label = {
            "while": "early-exit while_loop (run)",
            "fixed": "masked fixed-step scan (run_fixed)",
            "fused": "candidate rule: products as multiply-adds, softmax only (run)",
            "package": "tokdyn.fused.run: the built-in rule, every knob, one kernel per run",
        }[variant]
        s.row("dynamics", f"given data, {label}", one)

    # the fused kernel checked against dynamics.run (at "highest") on every built-in method, the
    # Langevin draws included: what the compiled kernel computes on this backend
    def fused_check():
        n = 36 if s.args.smoke else 8192
        names = list(dynamics.METHODS)
        hp = dynamics.Hparams.stack([dynamics.METHODS[names[i % len(names)]] for i in range(n)])
        ii = jnp.asarray(np.arange(n) % n_pool, jnp.int32)
        keys = jax.vmap(lambda q: jax.random.fold_in(jax.random.key(11), q))(jnp.arange(n))
        args = (pool["x"][ii], pool["tokens0"][ii], hp, pool["mask"][ii], keys)
        with jax.default_matmul_precision("highest"):
            ref = jax.jit(
                jax.vmap(lambda x, t, h, m, k: dynamics.run(x, t, h, mask=m, key=k, n_steps=CFG.n_steps, tol=CFG.tol))
            )(*args)
        got = jax.jit(
            jax.vmap(lambda x, t, h, m, k: fused.run(x, t, h, mask=m, key=k, n_steps=CFG.n_steps, tol=CFG.tol))
        )(*args)
        jax.block_until_ready(got.tokens)
        dt = np.abs(np.asarray(got.tokens) - np.asarray(ref.tokens)).reshape(n, -1).max(1)
        same = np.asarray(got.steps) == np.asarray(ref.steps)
        per = {nm: f"{np.mean(same[i :: len(names)]):.0%}" for i, nm in enumerate(names)}
        return dict(
            size=f"{n:,} runs, {len(names)} methods",
            note=(
                f"steps equal on {same.mean():.2%} of runs ({per}); |token diff| median {np.median(dt):.1e}, "
                f"99th pct {np.percentile(dt, 99):.1e}; labels equal on "
                f"{np.mean(np.asarray(got.labels) == np.asarray(ref.labels)):.2%} of points"
            ),
        )

    if gpu:  # elsewhere the kernel runs in the Pallas interpreter, which tests/test_fused.py checks
        s.row("dynamics", "check: tokdyn.fused.run against dynamics.run (highest), every method", fused_check)

    # one method per chunk: with the knobs shared by the chunk's runs (not batched), the rule's
    # Sinkhorn/softmax ``cond`` stays a branch under vmap instead of a select that computes both
    base = dynamics.METHODS["baseline"]
    one_method = dict(idx=idx)
    shared_hp = dict(pool, params=jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), base))

    def per_run_hp(pool_, run):
        return GIVEN["while"](pool_, dict(idx=run["idx"], params=pool_["params"]))

    def batched_hp(pool_, run):
        return GIVEN["while"](pool_, run)

    for label, fn, run_args_ in (
        (
            "baseline only, knobs batched per run",
            batched_hp,
            dict(idx=idx, params=jax.tree_util.tree_map(lambda v: np.full(runs, v, np.float32), base)),
        ),
        ("baseline only, knobs shared by the chunk (the cond a branch)", per_run_hp, one_method),
    ):

        def one(fn=fn, run_args_=run_args_):
            call = lambda: execute.map_runs(fn, run_args_, shared=shared_hp, devices=devs, chunk_size=chunk)  # noqa: E731
            return runs_row(s, call, runs, f"{runs:,} runs, chunk {chunk:,}", strategy, valid=valid)[1]

        s.row("dynamics", f"given data, {label}", one)

    # the study path as the studies run it (matmul precision "highest")
    def highest():
        c = 10**5 if s.accelerator and not s.args.smoke else 1008
        c = max(per_seed * len(devs), (c // (per_seed * len(devs))) * per_seed * len(devs))
        grid = dataclasses.replace(CFG, seeds=c // per_seed).grid()

        def call():
            with jax.default_matmul_precision("highest"):
                return study_call(grid, c, devs)

        return runs_row(s, call, len(grid), f"{len(grid):,} runs, chunk {c:,}", strategy, precision="highest")[1]

    s.row("dynamics", "study path at matmul precision highest", highest)

    # what XLA compiles for one chunk of the study path: its cost analysis and kernel count
    def anatomy():
        chunk = 1024 if s.args.smoke else (65536 if s.accelerator else 2048)
        fn, _ = execute.sharded_map(GIVEN["while"], tuple(devs[:1]), execute.default_batch_size(), True)
        sub = dict(idx=idx[:chunk], params=jax.tree_util.tree_map(lambda a: a[:chunk], run_args["params"]))
        sub = jax.tree_util.tree_map(jnp.asarray, sub)
        c, comp = compiled_of(fn, pool, sub)
        out = dict(size=f"given data, chunk {len(sub['idx']):,}", compile_s=comp, **cost_of(c))
        if s.accelerator and s.out and (s.args.profile or not s.args.smoke):
            c(pool, sub)
            jax.block_until_ready(c(pool, sub))
            tdir = os.path.join(tempfile.mkdtemp(), "trace")
            with jax.profiler.trace(tdir):
                jax.block_until_ready(c(pool, sub))
            tgz = os.path.join(s.out, "trace.tgz")
            with tarfile.open(tgz, "w:gz") as tf:
                tf.add(tdir, arcname="trace")
            out["trace"] = f"{os.path.getsize(tgz):,} bytes in trace.tgz"
        return out

    s.row("dynamics", "compiled chunk: XLA cost analysis and kernels", anatomy)


# ---------------------------------------------------------------------------------------------- sweep


def sweep_child(out_dir, runs, chunk):
    """The sweep row's child: ``runs`` runs of the study function to ``out_dir`` with progress."""
    per_seed = len(CFG.grid()) // CFG.seeds
    grid = dataclasses.replace(CFG, seeds=-(-runs // per_seed)).grid()
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


def section_sweep(s: Suite):
    runs = s.args.sweep_runs or (36 * 800 if s.args.smoke else (10**9 if s.accelerator else 10**8))
    seconds = s.args.sweep_seconds or (60.0 if s.args.smoke else 600.0)
    chunk = 36 * (100 if s.args.smoke else (2**14 if s.accelerator else 2**10))  # whole seeds

    def one():
        out_dir = tempfile.mkdtemp(prefix="tokdyn-suite-sweep-")
        sweep_dir = os.path.join(out_dir, "sweep")  # the sweep's own directory (out_dir holds the child's log)
        cmd = [sys.executable, os.path.abspath(__file__), "--child-sweep", json.dumps([sweep_dir, runs, chunk])]
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


# ---------------------------------------------------------------------------------------------- training


def _train_rate(trainer, pool, keys, hp, strategy, calls, batch_size=None):
    from tokdyn import train

    stamps = [time.perf_counter()]
    execution = train.Execution(strategy, batch_size=batch_size, vectorised_init=strategy != "loop")
    train.train_many(
        trainer,
        pool,
        keys,
        hp,
        max_calls=calls + 1,
        execution=execution,
        on_log=lambda step, logs: stamps.append(time.perf_counter()),
    )
    dt = np.diff(stamps[1:])
    return dt.min(), float(np.median(dt)), stamps[1] - stamps[0]


def learned_models(s: Suite, n_models: int):
    """name -> (trainer, pool, keys, hparams, strategy, steps per call): each learned model of the
    studies, ``n_models`` models, at the study's sizes (tiny ones with --smoke)."""
    from tokdyn import train
    from tokdyn.experiment import reasoners
    from tokdyn.models import sequence as G
    from tokdyn.models import slots, vtae
    from tokdyn.models.latent import training as LT
    from tokdyn.studies import grid_diffusion
    from tokdyn.studies import object_discovery

    smoke, backend = s.args.smoke, jax.default_backend()
    k = 2 if smoke else 10  # steps per call (one timed interval)
    out = {}

    def latent():
        tc = reasoners.Config().training
        if smoke:
            tc = dataclasses.replace(tc, width=16, depth=1, heads=2, batch_size=8)
        tc = dataclasses.replace(
            tc,
            seeds=n_models,
            n_train=512 if smoke else 20_000,
            n_val=8,
            n_test=8,
            train=dataclasses.replace(tc.train, steps=k * 1000, steps_per_call=k),
        )
        keys, hp = LT.models(tc)
        return LT.trainer(tc, "latent"), LT.data(tc).train, keys, hp, "scan", k

    def slot_attention():
        cfg = object_discovery.Config.quick() if smoke else object_discovery.Config()
        sc = cfg.slot_config("slot_attention")
        sc = dataclasses.replace(
            sc, train=dataclasses.replace(sc.train, steps=k * 1000, steps_per_call=k), seeds=n_models
        )
        if smoke:
            sc = dataclasses.replace(sc, batch_size=4)
        pool = object_discovery.split(dataclasses.replace(cfg, n_train=64 if smoke else 512), "train").images
        keys, hp = slots.models(sc)
        return slots.trainer(sc), pool, keys, hp, slots.default_strategy(backend), k

    def autoencoder():
        cfg = vtae.Config(
            vocab_size=5,
            grid=3,
            colours=2,
            mode="gumbel_st",
            hidden=32,
            batch_size=16,
            train=dataclasses.replace(vtae.Config().train, steps=k * 1000, steps_per_call=k),
        )
        keys = jax.random.split(jax.random.key(0), n_models)
        hp = train.broadcast(vtae.Hparams(), n_models)
        return vtae.trainer(cfg), vtae.inputs(cfg), keys, hp, "scan", k

    def diffusion():
        st = grid_diffusion.Config()
        cfg = st.model("grid_d3pm_absorbing", "sequence")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=k * 1000, steps_per_call=k, warmup=1))
        if smoke:
            cfg = dataclasses.replace(cfg, width=16, depth=1, batch_size=8)
        seqs = jax.random.randint(jax.random.key(3), (512, *cfg.sample_shape), 0, cfg.colours)
        keys, hp = train.grid(jax.random.split(jax.random.key(0), n_models), G.Hparams(learning_rate=2e-3, lam=0.01))
        return G.trainer(cfg), G.inputs(cfg, seqs), keys, hp, "scan", k

    out["Slot Attention (scenes study)"] = slot_attention
    out["latent reasoner (latent variant)"] = latent
    out["grid diffusion (D3PM absorbing)"] = diffusion
    out["visual-token autoencoder"] = autoencoder
    return out


def section_training(s: Suite):
    seeds = [int(v) for v in s.args.seeds.split(",")] if s.args.seeds else ([2] if s.args.smoke else [1, 8, 64])
    calls = 2 if s.args.smoke else s.args.repeats
    names = list(learned_models(s, 1))
    if s.args.models:
        words = [w.strip().lower() for w in s.args.models.split(",") if w.strip()]
        names = [n for n in names if any(w in n.lower() for w in words)]
    for name in names:
        for m in seeds:
            precisions = ["highest"]
            if s.accelerator and m == seeds[-1] and name.startswith(("latent", "Slot")):
                precisions.append("default")  # what TF32 changes
            for prec in precisions:

                def one(name=name, m=m, prec=prec):
                    tr, pool, keys, hp, strategy, k = learned_models(s, m)[name]()
                    with jax.default_matmul_precision(prec):
                        best, med, first = _train_rate(tr, pool, keys, hp, strategy, calls)
                    return dict(
                        size=f"{m} model(s) x {k} steps per call",
                        unit="model-steps/s",
                        best=m * k / best,
                        median=m * k / med,
                        compile_s=max(first - med, 0.0),
                        strategy=strategy,
                        precision=prec,
                    )

                s.row("training", f"{name}, {m} seed(s)" + (", TF32" if prec == "default" else ""), one)


# ---------------------------------------------------------------------------------------------- PyTorch peers


def _torch():
    try:
        import torch
    except ImportError:
        return None, None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32, as tokdyn's "highest"
    torch.backends.cudnn.allow_tf32 = False
    if dev == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    return torch, dev


def _torch_timed(torch, dev, run, steps, repeats):
    def sync_run():
        run(steps)
        if dev == "cuda":
            torch.cuda.synchronize()

    run(3)
    best, med, _ = steady(sync_run, repeats)
    return best / steps, med / steps


def _jax_step_timed(step, state, data, run_key, steps, repeats):
    box = [state]

    def run():
        st = box[0]
        for _ in range(steps):
            st, _ = step(st, data, run_key)
        box[0] = jax.block_until_ready(st)

    best, med, _ = steady(run, repeats)
    return best / steps, med / steps


def section_peers(s: Suite):
    torch, dev = _torch()
    if torch is None:
        s.add("peers", "PyTorch peers", status="skipped (PyTorch not installed)")
        return
    from tokdyn import train
    from tokdyn.models import slots
    from tokdyn.studies import object_discovery
    import torch_latent
    import torch_slots

    steps = 2 if s.args.smoke else 20
    prec = "highest"

    def slot_peer():
        base = object_discovery.Config.quick() if s.args.smoke else object_discovery.Config()
        cfg = dataclasses.replace(
            base.slot_config("slot_attention"),
            seeds=1,
            slot_init="random",
            masks="decoder",
            encoder_kernel=3,
            encoder_stride=2,
        )
        tr = slots.trainer(cfg)
        pool = object_discovery.split(dataclasses.replace(base, n_train=64 if s.args.smoke else 512), "train").images
        keys, hp = slots.models(cfg)
        with jax.default_matmul_precision(prec):
            state, run_keys = train.init_states(tr, keys, hp, vectorised=False)
            state1 = jax.tree_util.tree_map(lambda a: a[0], state)
            step, comp = compiled_of(jax.jit(train.make_step(tr)), state1, pool, run_keys[0])
            ours = _jax_step_timed(step, state1, pool, run_keys[0], steps, s.args.repeats)
            B = cfg.batch_size
            key = jax.random.key(12345)
            z = slots.slot_noise(key, cfg, B)
            loss_j = float(jax.jit(lambda p: slots.loss_fn(key, p, cfg, pool[:B])[0])(state1.params))
        net = torch_slots.TorchSlots.from_flax(cfg, state1.params).to(dev)
        images = torch.from_numpy(np.array(pool)).permute(0, 3, 1, 2).contiguous().to(dev)
        loss_t = float(net.loss(images[:B], torch.from_numpy(np.array(z)).to(dev))[0].detach().cpu())
        opt, sched = torch_slots.optimizer(
            net, learning_rate=4e-4, warmup=tr.config.warmup_steps, steps=tr.config.steps
        )
        gen = torch.Generator(device=dev).manual_seed(0)

        def run(n):
            for _ in range(n):
                idx = torch.randint(0, images.shape[0], (B,), generator=gen, device=dev)
                zz = torch.randn((B, cfg.slots, cfg.slot_size), generator=gen, device=dev)
                torch_slots.train_step(net, opt, sched, images[idx], zz, cfg.train.clip_norm)

        theirs = _torch_timed(torch, dev, run, steps, s.args.repeats)
        return ours, theirs, comp, abs(loss_j - loss_t), B

    def latent_peer():
        from tokdyn.experiment import reasoners
        from tokdyn.models.latent import model as latent_model
        from tokdyn.models.latent import training as LT
        from tokdyn.models.latent import variants

        tc = reasoners.Config().training
        if s.args.smoke:
            tc = dataclasses.replace(tc, width=16, depth=1, heads=2, batch_size=8)
        tc = dataclasses.replace(tc, seeds=1, n_train=512 if s.args.smoke else 20_000, n_val=8, n_test=8)
        name = "direct"  # one stage: the same objective in both frameworks (torch_latent's train_step)
        cfg = variants.model_config(tc, name, -1)
        pool = LT.data(tc).train
        tr = LT.trainer(tc, name).first
        keys, hp = LT.models(tc)
        with jax.default_matmul_precision(prec):
            state, run_keys = train.init_states(tr, keys, hp)
            state1 = jax.tree_util.tree_map(lambda a: a[0], state)
            step, comp = compiled_of(jax.jit(train.make_step(tr)), state1, pool, run_keys[0])
            ours = _jax_step_timed(step, state1, pool, run_keys[0], steps, s.args.repeats)
            model = latent_model.Model(cfg)
            batch = jax.tree.map(lambda a: a[:16], pool)
            logits = np.asarray(jax.jit(lambda p, b: model.apply(p, b).logits)(state1.params, batch))
        net = torch_latent.TorchReasoner.from_flax(cfg, state1.params).to(dev)
        t_of = lambda a: torch.from_numpy(np.asarray(a)).long().to(dev)  # noqa: E731
        with torch.no_grad():
            theirs_logits = net(t_of(batch.image), t_of(batch.question)).cpu().numpy()
        diff = float(np.abs(logits - theirs_logits).max())
        image, question, answer = t_of(pool.image), t_of(pool.question), t_of(pool.answer)
        opt, sched = torch_latent.optimizer(
            net, learning_rate=2e-3, weight_decay=0.01, warmup=tc.train.warmup_steps, steps=tc.train.steps
        )
        gen = torch.Generator(device=dev).manual_seed(0)

        def run(n):
            for _ in range(n):
                idx = torch.randint(0, len(answer), (tc.batch_size,), generator=gen, device=dev)
                torch_latent.train_step(net, opt, sched, image[idx], question[idx], answer[idx])

        theirs = _torch_timed(torch, dev, run, steps, s.args.repeats)
        return ours, theirs, comp, diff, tc.batch_size

    for name, fn, what in (
        ("Slot Attention (the paper's pieces)", slot_peer, "|loss diff|"),
        ("latent reasoner (direct variant)", latent_peer, "max |logit diff|"),
    ):
        box = {}

        def ours_row(fn=fn):
            (o_best, o_med), (t_best, t_med), comp, diff, b = fn()
            box.update(t_best=t_best, t_med=t_med, diff=diff, b=b)
            return dict(
                size=f"1 model, batch {b}, one call per step",
                unit="model-steps/s",
                best=1 / o_best,
                median=1 / o_med,
                compile_s=comp,
                precision=prec,
                agreement=f"{what} {diff:.1e}",
            )

        row = s.row("peers", f"{name}: tokdyn jitted step", ours_row)
        if row.get("status") == "ok":
            s.add(
                "peers",
                f"{name}: PyTorch {torch.__version__} on {dev}",
                status="ok",
                size=f"1 model, batch {box['b']}",
                unit="model-steps/s",
                best=1 / box["t_best"],
                median=1 / box["t_med"],
                precision="float32 (TF32 off)",
                agreement=f"{what} {box['diff']:.1e}",
            )


# ---------------------------------------------------------------------------------------------- sampling, DMLR, diagnostics


def section_sampling(s: Suite):
    from tokdyn.models import sequence as G
    from tokdyn.studies import grid_diffusion

    st = grid_diffusion.Config()
    n = 16 if s.args.smoke else 256
    for name in ("grid_ddpm", "grid_d3pm_absorbing"):
        cfg = dataclasses.replace(st.model(name, "sequence"), T=20 if s.args.smoke else st.T)
        if s.args.smoke:
            cfg = dataclasses.replace(cfg, width=16, depth=1)
        params = G.init(jax.random.key(1), cfg)
        for sampler, steps in (("ancestral", cfg.T), ("ddim", 10 if s.args.smoke else 50)):
            if sampler == "ddim" and not cfg.continuous:
                continue

            def one(cfg=cfg, params=params, sampler=sampler, steps=steps):
                c, comp = compiled_of(G.sample.jitted, jax.random.key(2), params, cfg, n, sampler, steps)
                best, med, _ = steady(lambda: jax.block_until_ready(c(jax.random.key(2), params)), s.args.repeats)
                grids = n * cfg.length
                return dict(
                    size=f"{n} sequences x {cfg.length} grids, {steps} steps",
                    unit="grids/s",
                    best=grids / best,
                    median=grids / med,
                    compile_s=comp,
                    precision=str(jax.config.jax_default_matmul_precision),
                )

            s.row("sampling", f"{name}, {sampler}", one)


def _latent_setup(s: Suite, n):
    from tokdyn.experiment import reasoners
    from tokdyn.models.latent import model as latent_model
    from tokdyn.models.latent import tasks, variants

    tc = reasoners.Config().training
    if s.args.smoke:
        tc = dataclasses.replace(tc, width=16, depth=1, heads=2)
    model = latent_model.Model(variants.model_config(tc, "latent"))
    params = model.init(jax.random.key(0))
    batch = tasks.generate(jax.random.key(1), n, tc.task)
    return model, params, batch


def compiled_row(s: Suite, f, args: tuple, result, n: int, size: str, unit: str) -> dict:
    """A row for one jitted call: ``f`` compiled for ``args`` (compile time apart), then timed;
    ``result(outputs)`` pulls what the call must finish to the host; ``n`` items per call."""
    c, comp = compiled_of(f, *args)
    best, med, _ = steady(lambda: np.asarray(result(c(*args))), s.args.repeats)
    return dict(
        size=size,
        unit=unit,
        best=n / best,
        median=n / med,
        compile_s=comp,
        precision=str(jax.config.jax_default_matmul_precision),
    )


def section_dmlr(s: Suite):
    from tokdyn.diagnostics import dmlr

    n = 16 if s.args.smoke else 1000

    def one():
        model, params, batch = _latent_setup(s, n)
        lay = model.layout
        opt = dmlr.Config() if not s.args.smoke else dataclasses.replace(dmlr.Config(), n_iters=3)
        f = dmlr.make(
            model.apply,
            opt,
            latent_positions=tuple(range(lay.latents.start, lay.latents.stop)),
            answer_position=lay.answer,
        )
        return compiled_row(
            s,
            f,
            (jax.random.key(0), params, batch, dmlr.Hparams(), jnp.arange(n)),
            lambda out: out.reward_best,
            n,
            f"{n} instances, {opt.n_iters} iterations x {2 * opt.n_pairs} evaluations",
            "instances/s",
        )

    s.row("dmlr", "dmlr.make, every instance in one call", one)


def section_diagnostics(s: Suite):
    from tokdyn.diagnostics import mediation

    n = 16 if s.args.smoke else 1000

    def one():
        model, params, batch = _latent_setup(s, n)
        other = jax.random.normal(jax.random.key(2), (n, model.cfg.n_latents, model.cfg.width))
        ans = model.layout.answer
        f = jax.jit(
            lambda k, p, b, a, o: mediation.latent_effects(
                k, model.apply, p, b, answer_position=ans, answers=a, kinds=mediation.INTERVENTIONS, other=o
            )
        )
        return compiled_row(
            s,
            f,
            (jax.random.key(3), params, batch, batch.answer, other),
            lambda out: out.kl,
            n,
            f"{n} instances x {len(mediation.INTERVENTIONS)} interventions",
            "instances/s",
        )

    s.row("diagnostics", "mediation.latent_effects, one call", one)


# ---------------------------------------------------------------------------------------------- the table


def table(s: Suite) -> str:
    m = s.meta
    lines = [
        f"device: {m['device']} x {m['devices']} ({m['backend']}); host {m['host']}; JAX {m['jax']}; dtype "
        f"float32; default matmul precision {m['default_matmul_precision']}; {m['date']}"
        + ("; SMOKE (tiny sizes)" if m["smoke"] else ""),
        "",
        "| section | row | size | rate (median) | best | compile s | precision | against the ceiling |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for r in s.rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['section']} | {r['name']} | | {r.get('status')} {r.get('error', '')} | | | | |")
            continue
        rate = r.get("median")
        unit = r.get("unit", "")
        against = ""
        if "of_bound" in r:
            against = (
                f"{r['of_bound']:.2%} of the float32 roofline ({r['bound_runs_per_s']:,.0f} runs/s; "
                f"{r['gflops_useful']:.1f} useful GFLOP/s; {r['mean_steps']:.1f} steps)"
                + (f"; {r['agreement']}" if "agreement" in r else "")
            )
        elif "xla_bytes" in r or "kernels" in r:
            against = (
                f"XLA: {r.get('xla_flops', np.nan):.3g} flops, {r.get('xla_bytes', np.nan):.3g} bytes, "
                f"{r.get('kernels', '?')} kernels"
            )
        elif "agreement" in r:
            against = r["agreement"]
        elif r["section"] == "sweep":
            against = f"{r.get('runs_done', 0):,} runs done in {r.get('wall_s', 0):.0f} s; " + (
                "finished"
                if r.get("finished")
                else f"stopped; all would take ~{r.get('projected_total_s', np.nan):,.0f} s; last: "
                f"{r.get('last_progress', '')}"
            )
        best, comp = r.get("best"), r.get("compile_s")
        lines.append(
            f"| {r['section']} | {r['name']} | {r.get('size', '')} | "
            f"{'' if rate is None else format(rate, ',.4g')} {unit} | "
            f"{'' if best is None else format(best, ',.4g')} | "
            f"{'' if comp is None else format(comp, '.1f')} | {r.get('precision', '')} | {against} |"
        )
    c = s.ceil
    lines += ["", "ceilings: " + ", ".join(f"{k} {v:.4g}" for k, v in c.items())]
    return "\n".join(lines)


def main(args):
    if args.child_sweep:
        out_dir, runs, chunk = json.loads(args.child_sweep)
        sweep_child(out_dir, runs, chunk)
        return
    s = Suite(args)
    s.log(f"suite: {s.meta}")
    chosen = args.sections.split(",")
    if "dynamics" in chosen and "ceilings" not in chosen:
        chosen = ["ceilings"] + chosen  # the dynamics rows are placed against the ceilings
    order = list(SECTIONS)
    if s.accelerator:  # the sweep's child first, before this process's allocator holds the device's memory
        order.remove("sweep")
        order.insert(0, "sweep")
    for name in order:
        if name in chosen:
            globals()[f"section_{name}"](s)
            s.save()
    text = table(s)
    if s.out:
        with open(os.path.join(s.out, "suite.md"), "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main(ARGS)
