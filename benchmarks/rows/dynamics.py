"""The token-dynamics rows: the study's runs (Gaussian clusters, K in {3, 4, 5} padded to 5 x 100
points, D = 4, 4 tokens, at most 30 steps, tol 1e-3, the four methods in equal shares,
ARI/NMI/SSE/collapse per run), each placed against the binding bound of ``work.py``.

  kernel alone   the study's kernel (``tokdyn.dynamics.pallas.run``, the Pallas kernel, where it is the
                 preferred form; ``dynamics.run`` elsewhere) on ready data, tokens and steps only
  study path     ``sweep.run`` of the study's run function at one chunk: data drawn on the device,
                 the kernel, labels and metrics; with a ``jax.profiler`` trace of one chunk on an
                 accelerator (``--trace``)
  ..., TF32      on an accelerator, the two rows above at JAX's default precision (TF32 float32
                 products on an NVIDIA GPU); every other row at the suite's (``highest`` unless
                 ``--matmul-precision`` says otherwise), as the ``tokdyn`` command runs the studies
  study path (sweep.run), chunk C   the same over chunk sizes
  given data     run + metrics on a pool of ready data, the run by each form: the early-exit
                 ``while_loop``, the masked fixed-step scan, the XLA candidate rule
                 (:data:`XLA_CANDIDATE_RULE`), the Pallas kernel (``tokdyn.dynamics.pallas.run``, on a GPU)
  peer: P        the same pooled problems and the four methods through each peer of ``peers.py``
                 installed here (the published way: NumPy per run + scikit-learn, float64; NumPy,
                 PyTorch and Numba batched), with the share of runs whose ARI matches the given-data
                 ``while_loop`` row's on the same run
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tarfile
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import work
from rows.base import Suite, compiled_of, cost_of, steady
from tokdyn import data, dynamics, metrics
from tokdyn.dynamics import pallas as kernel
from tokdyn.engine import execute, sweep
from tokdyn.studies import token_dynamics as td

CFG = td.Config()
TASK = CFG.task()
T_TOK, DIM = CFG.n_tokens, CFG.dim
PTS, M_CL = CFG.points_per_cluster, TASK.max_clusters
N_PAD = M_CL * PTS
PER_SEED = len(CFG.grid()) // CFG.seeds  # 36 runs per seed


def pallas_form() -> bool:
    """Whether the Pallas kernel (``tokdyn.dynamics.pallas``) is the form the study runs on this backend."""
    return kernel.preferred()


def against_bound(s: Suite, runs_per_s, mean_steps, valid_points, *, pallas=False, study=False) -> dict:
    """The row's place against the binding bound of ``work.py``: useful work (the valid points)
    and padded work (the points the program computes on: 512 for the Pallas kernel, 500 for XLA)."""
    read = 0.0 if study else N_PAD
    use = work.per_run(mean_steps, valid_points, data=study, input_points=read)
    pad = work.per_run(mean_steps, work.POINTS_FUSED if pallas else N_PAD, data=study, input_points=read)
    a = work.against(runs_per_s, use, s.ceil)
    return dict(
        valid_points=valid_points,
        gflops_useful=runs_per_s * use.flops / 1e9,
        of_bound_padded=work.against(runs_per_s, pad, s.ceil)["of_bound"],
        **a,
    )


def runs_row(
    s: Suite,
    call,
    n: int,
    size: str,
    strategy: str,
    *,
    valid=None,
    repeats=None,
    precision=None,
    pallas=False,
    study=False,
    ari=True,
):
    """``(outputs, row)``: ``call()`` returns the outputs of ``n`` runs; the row holds its rate
    (median and best of the repetitions, compile excluded), mean steps and ARI (when ``ari``), and
    its place against the binding bound (``valid``: mean valid points per run; default from the
    outputs' cluster counts; ``pallas``: padded to the kernel's 512 points; ``study``: the data
    drawn on the device)."""
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
        **({"mean_ari": float(np.nanmean(r["ari"]))} if ari else {}),
        strategy=strategy,
        precision=precision or str(jax.config.jax_default_matmul_precision),
        **against_bound(s, rate, steps, valid, pallas=pallas, study=study),
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
    ``"xla-candidate"`` (``dynamics.run`` of the candidate rule :data:`XLA_CANDIDATE_RULE`) or
    ``"pallas"`` (:func:`tokdyn.dynamics.pallas.run`: the built-in rule as one Pallas kernel per run)."""

    def task(pool, run):
        i = run["idx"]
        x, mask, labels = pool["x"][i], pool["mask"][i], pool["labels"][i]
        kw = dict(mask=mask, n_steps=CFG.n_steps, tol=CFG.tol)
        if form == "pallas":
            r = kernel.run(x, pool["tokens0"][i], run["params"], mask=mask, n_steps=CFG.n_steps, tol=CFG.tol)
        elif form == "fixed":
            r = dynamics.run_fixed(x, pool["tokens0"][i], run["params"], **kw)
        else:
            r = dynamics.run(
                x,
                pool["tokens0"][i],
                run["params"],
                rule=XLA_CANDIDATE_RULE if form == "xla-candidate" else dynamics.BUILTIN,
                **kw,
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


GIVEN = {form: given_data(form) for form in ("while", "fixed", "xla-candidate", "pallas")}


# The XLA candidate rule, measured here beside the package's forms: the built-in rule's
# step for the knobs the study sweeps (temperature, momentum, repulsion, damping; no annealing,
# Langevin noise, Sinkhorn rounds or slot normalisation) with its two products over the points
# written as D multiply-adds and reductions (no dot_general, which XLA:GPU runs as a batched GEMM
# of (4 x 4) @ (4 x 500) blocks, the two slowest kernels of a step in the profile) and the softmax
# only (the built-in's Sinkhorn/softmax ``cond`` becomes a select under vmap that computes both).
# XLA may then fuse scores, softmax and the means into a few kernels that read the points instead
# of writing and reading (T, N) intermediates.
def _candidate_init(points, tokens, hparams):
    return dynamics.Motion(tokens=tokens, velocity=jnp.zeros_like(tokens))


def _candidate_step(state, points, hp, step, key):
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


XLA_CANDIDATE_RULE = dynamics.Rule(
    init=_candidate_init,
    step=_candidate_step,
    hparams=dynamics.Hparams(),
    name="builtin-xla-candidate",
    movement=lambda old, new: new.velocity,
)
"""The candidate rule above as a :class:`tokdyn.dynamics.Rule`, run by ``dynamics.run`` under XLA
(not the package's Pallas kernel, ``tokdyn.dynamics.pallas``)."""


def default_chunks(s: Suite):
    if s.args.chunks:
        return [int(c) for c in s.args.chunks.split(",")]
    if s.args.smoke:
        return [144]
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


def precision_of(tf32: bool):
    """The context of a row's matrix products: JAX's default precision (TF32 on an NVIDIA GPU) for
    a row named ``, TF32``, else the suite's (``--matmul-precision``, default ``highest``)."""
    return jax.default_matmul_precision("default") if tf32 else contextlib.nullcontext()


TF32 = ", TF32"  # the suffix of the rows run at JAX's default precision (TF32 float32 products on a GPU)


def kernel_alone(s: Suite, pool, idx, run_args, chunk, devs, strategy, valid, tf32=False):
    """The row "kernel alone": the study's kernel on ready data (the pool), tokens and steps only:
    no data draw, no labels or metrics. The Pallas kernel where it is the preferred form (a GPU);
    elsewhere ``dynamics.run`` (the Pallas interpreter is for checking, not timing). ``tf32``: the
    row ``kernel alone, TF32``, at JAX's default precision."""
    pallas = pallas_form()

    def task(p, run):
        i = run["idx"]
        f = kernel.run if pallas else dynamics.run
        r = f(p["x"][i], p["tokens0"][i], run["params"], mask=p["mask"][i], n_steps=CFG.n_steps, tol=CFG.tol)
        return dict(steps=r.steps, tokens=jnp.sum(r.tokens), n_clusters=p["n_true"][i])

    def one():
        n = len(idx)

        def call():
            with precision_of(tf32):
                return execute.map_runs(task, run_args, shared=pool, devices=devs, chunk_size=chunk)

        with precision_of(tf32):
            precision = str(jax.config.jax_default_matmul_precision)
        _, row = runs_row(
            s,
            call,
            n,
            f"{n:,} runs, chunk {chunk:,}",
            strategy,
            valid=valid,
            pallas=pallas,
            ari=False,
            precision=precision,
        )
        # the count of work.py without the final labels and metrics, which this row does not compute
        steps = row["mean_steps"]
        w = work.per_run_step(valid) * steps + work.Work(0, 0, N_PAD * (4 * DIM + 1) + 4 * T_TOK * DIM + 8)
        pad = work.per_run_step(work.POINTS_FUSED if pallas else N_PAD) * steps
        row.update(work.against(row["median"], w, s.ceil))
        row["of_bound_padded"] = work.against(row["median"], pad + work.Work(0, 0, w.bytes), s.ceil)["of_bound"]
        row["gflops_useful"] = row["median"] * w.flops / 1e9
        row["kernel"] = "pallas" if pallas else "xla (dynamics.run)"
        return row

    name = "kernel alone" + ("" if pallas else " (dynamics.run: no Pallas on this backend)") + (TF32 if tf32 else "")
    s.row("dynamics", name, one, smoke=not tf32)


def study_chunk(s: Suite, devs) -> int:
    """The study path's chunk: 10^6 runs on an accelerator, 1,008 (28 seeds) on a CPU, whole seeds
    and a multiple of the device count."""
    c = 144 if s.args.smoke else (10**6 if s.accelerator else 10**4)  # smoke: the chunk rows' shape
    unit = PER_SEED * len(devs)
    return max(unit, (c // unit) * unit)


def study_path(s: Suite, devs, strategy, tf32=False):
    """The row "study path": ``sweep.run`` of the study's run function, one chunk, as the studies
    run it (data drawn on the device, the kernel, labels, metrics, at the suite's precision, by
    default ``highest`` as the ``tokdyn`` command runs them); on an accelerator with ``--trace`` (or
    ``--out``) a ``jax.profiler`` trace of one chunk and its summary. ``tf32``: the row
    ``study path, TF32`` at JAX's default precision, without a trace."""
    chunk = study_chunk(s, devs)
    grid = dataclasses.replace(CFG, seeds=chunk // PER_SEED).grid()

    def call():
        with precision_of(tf32):
            return study_call(grid, chunk, devs)

    def one():
        with precision_of(tf32):
            precision = str(jax.config.jax_default_matmul_precision)
        r, row = runs_row(
            s,
            call,
            len(grid),
            f"{len(grid):,} runs, one chunk",
            strategy,
            pallas=TASK.uses_fused,
            study=True,
            precision=precision,
        )
        row["kernel"] = "pallas" if TASK.uses_fused else "xla (dynamics.run)"
        trace = getattr(s.args, "trace", None) or (os.path.join(s.out, "trace.tgz") if s.out else None)
        if not tf32 and trace and (s.accelerator or getattr(s.args, "profile", False)):
            tdir = os.path.join(tempfile.mkdtemp(), "trace")
            with jax.profiler.trace(tdir):
                study_call(grid, chunk, devs)
            with tarfile.open(trace, "w:gz") as tf:
                tf.add(tdir, arcname="trace")
            row["trace"] = f"{os.path.getsize(trace):,} bytes in {os.path.basename(trace)}"
            try:
                import trace_summary

                row["profile"] = trace_summary.summary(trace_summary.load_events(tdir)).splitlines()[0][:300]
            except (Exception, SystemExit) as e:  # noqa: BLE001 -- the trace is kept; its summary is a convenience
                row["profile"] = f"no summary: {type(e).__name__}: {e}"[:300]
        return row

    s.row("dynamics", "study path" + (TF32 if tf32 else ""), one, smoke=not tf32)


def given_peers(s: Suite, pool, reference=None):
    """The rows "peer: P": the peers of ``peers.py`` on the given-data pool, each of the four methods on
    the same problems (the published way on fewer runs: it runs one at a time), timed over the four
    methods; the first call's JIT / warm-up apart (Numba, PyTorch). ``reference``: the given-data
    ``while_loop`` row's ARI (run ``4 i + j`` is problem ``i`` under method ``j``), against which each
    peer's runs are compared (the share within 1e-6 and within 1e-3)."""
    import peers
    import published_way

    host = {k: np.asarray(v) for k, v in pool.items()}
    n_pool = len(host["x"])

    def one(peer, per_method):
        sel = np.arange(per_method) % n_pool
        inputs = dict(
            x=host["x"][sel],
            mask=host["mask"][sel],
            tokens0=host["tokens0"][sel],
            labels_true=host["labels"][sel],
            n_true=host["n_true"][sel],
        )
        problems = [  # the published way's float64 inputs, prepared outside the timing
            (
                host["x"][i][host["mask"][i]].astype(np.float64),
                host["labels"][i][host["mask"][i]],
                host["tokens0"][i].astype(np.float64),
                int(host["n_true"][i]),
            )
            for i in sel
        ]
        kws = [
            dict(momentum=dynamics.METHODS[name].momentum, repulsion=dynamics.METHODS[name].repulsion)
            for name in METHOD_NAMES
        ]

        def call(kw, inp=inputs):
            if peer == "published_way":
                res = [published_way.one_run(*p, kw, CFG.n_steps, CFG.tol, CFG.temperature) for p in problems]
                return {f: np.asarray([r[f] for r in res]) for f in ("ari", "steps")}
            return peers.PEERS[peer](**inp, temperature=CFG.temperature, n_steps=CFG.n_steps, tol=CFG.tol, **kw)

        first = 0.0
        if peer in ("numba_parallel", "torch_batched"):  # JIT / warm-up, reported apart
            t = time.perf_counter()
            call(kws[0], {k: v[: min(8, per_method)] for k, v in inputs.items()})
            first = time.perf_counter() - t
        seconds, outs = [], []
        for _ in range(s.args.repeats):
            t, outs = time.perf_counter(), [call(kw) for kw in kws]
            seconds.append(time.perf_counter() - t)
        ari = np.concatenate([np.asarray(o["ari"], np.float64) for o in outs])  # method-major
        n = 4 * per_method
        row = dict(
            size=f"{n:,} runs ({per_method:,} problems x 4 methods)",
            unit="runs/s",
            best=n / min(seconds),
            median=n / float(np.median(seconds)),
            compile_s=first,
            mean_steps=float(np.mean(np.concatenate([np.asarray(o["steps"]) for o in outs]))),
            mean_ari=float(np.nanmean(ari)),
            precision="float64" if peer == "published_way" else "float32",
        )
        if reference is not None:
            i = np.arange(per_method)
            runs = (4 * i[None, :] + np.arange(4)[:, None]).ravel()  # tokdyn's run of (method, problem)
            ok = runs < len(reference)
            diff = np.abs(ari[ok] - np.asarray(reference)[runs[ok]])
            row["agreement"] = (
                f"ARI within 1e-6 / 1e-3 of the given-data while_loop row on {np.mean(diff < 1e-6):.1%} / "
                f"{np.mean(diff < 1e-3):.1%} of {ok.sum():,} runs"
            )
        return row

    for peer in ["published_way"] + [p for p in peers.available_peers() if p != "numpy_per_run"]:
        per_method = 2 if s.args.smoke else (200 if peer == "published_way" else 2048)
        light = peer in ("published_way", "numpy_batched")  # the smoke run skips the JIT-compiled peers
        s.row("dynamics", f"peer: {peer}, given data", lambda p=peer, m=per_method: one(p, m), smoke=light)


def run(s: Suite):
    """Every token-dynamics row (module docstring)."""
    devs = jax.local_devices()
    per_seed = PER_SEED
    strategy = "sequential map" if execute.default_batch_size() == 1 else "vmap"
    # the given-data paths: while_loop (early exit) against the masked fixed-step scan, one chunk size
    n_pool = 64 if s.args.smoke else 2048
    # on a CPU the command's chunk (2,048 runs a device), so that every CPU rate is at one chunk
    chunk = 128 if s.args.smoke else (10**5 if s.accelerator else execute.default_chunk_size(len(devs), "cpu"))
    chunk = (chunk // len(devs)) * len(devs)
    pool = make_pool(n_pool)
    runs = chunk * (1 if s.args.smoke else 2)
    idx = ((np.arange(runs) // 4) % n_pool).astype(np.int32)
    run_args = dict(idx=idx, params=params_for(runs))
    valid = float(np.mean(np.asarray(pool["mask"]).sum(1)[idx]))
    reference = {}
    gpu = jax.default_backend() == "gpu"
    kernel_alone(s, pool, idx, run_args, chunk, devs, strategy, valid)
    study_path(s, devs, strategy)
    if s.accelerator:  # the same two at JAX's default precision (TF32 float32 products on a GPU), beside them
        kernel_alone(s, pool, idx, run_args, chunk, devs, strategy, valid, tf32=True)
        study_path(s, devs, strategy, tf32=True)
    # the fused kernel (tokdyn.dynamics.pallas): timed on a GPU only (elsewhere it runs in the Pallas
    # interpreter, far too slow to time; the smoke run checks it below)
    variants = ["while", "fixed", "xla-candidate"] + (["pallas"] if gpu else [])
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
                pallas=variant == "pallas",
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
            "xla-candidate": "XLA candidate rule: products as multiply-adds, softmax only (run)",
            "pallas": "Pallas kernel (tokdyn.dynamics.pallas.run): the built-in rule, every knob, one kernel per run",
        }[variant]
        s.row("dynamics", f"given data, {label}", one)

    given_peers(s, pool, reference.get("while"))

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
            jax.vmap(lambda x, t, h, m, k: kernel.run(x, t, h, mask=m, key=k, n_steps=CFG.n_steps, tol=CFG.tol))
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
        s.row("dynamics", "check: tokdyn.dynamics.pallas.run against dynamics.run (highest), every method", fused_check)

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

        s.row("dynamics", f"given data, {label}", one, smoke=False)

    # the study path over chunk sizes
    cap = 15.0 if s.args.smoke else (40.0 if s.accelerator else 60.0)  # seconds one timed call may take
    floor = 144 if s.args.smoke else (10**6 if s.accelerator else 10**5)  # runs timed per row, at least
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
                    pallas=task.uses_fused,
                    study=True,
                )
                row["compile_s"] = max(first - chunk / row["median"], 0.0)
                row["kernel"] = "fused" if task.uses_fused else "xla"
                return row

            row = s.row("dynamics", name, one, smoke=False)
            if row.get("status") == "ok":
                last_rate = row["median"]
            elif "RESOURCE_EXHAUSTED" in row.get("error", "") or "out of memory" in row.get("error", "").lower():
                break  # larger chunks will not fit either

    # what XLA compiles for one chunk of the study path: its cost analysis and kernel count
    def anatomy():
        chunk = 128 if s.args.smoke else (65536 if s.accelerator else 2048)
        fn, _ = execute.sharded_map(GIVEN["while"], tuple(devs[:1]), execute.default_batch_size(), True)
        sub = dict(idx=idx[:chunk], params=jax.tree_util.tree_map(lambda a: a[:chunk], run_args["params"]))
        sub = jax.tree_util.tree_map(jnp.asarray, sub)
        c, comp = compiled_of(fn, pool, sub)
        out = dict(size=f"given data, chunk {len(sub['idx']):,}", compile_s=comp, **cost_of(c))
        return out

    s.row("dynamics", "compiled chunk: XLA cost analysis and kernels", anatomy)
