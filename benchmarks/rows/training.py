"""The training rows: each learned model's optimiser step through ``tokdyn.train.train_many`` (the
package's strategy for the backend), vmapped over seeds, in model-steps/s: Slot Attention and
IODINE (the scenes study's), SAVi (the video study's, transformer predictor), grid diffusion (D3PM absorbing) and a visual-token autoencoder; and its share of the
bound: XLA's cost analysis of one model's step (``jax.jit(step).lower(...).compile()
.cost_analysis()``: flops and bytes accessed) times the seeds, against the larger of flops over
the float32 GEMM rate at the row's matmul precision and bytes over the copy bandwidth
(``work.model_bound``). Seeds: 1, 8, 64 on a CPU; 1, 64, 1,024 on an accelerator (4,096 for the
visual-token autoencoder); ``--seeds`` overrides. The models a device vmaps at once are sized from
its memory (``Execution(batch_size="auto")``, :mod:`tokdyn.train.sizing`), recorded as ``group``
(the seeds where they all ran at once)."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

import work
from rows.base import Suite, cost_of


def _train_rate(trainer, pool, keys, hp, strategy, calls, batch_size="auto"):
    """``(best, median, first)`` seconds per call of ``train_many`` and the models a device
    vmapped at once (``batch_size="auto"``: sized from the device's memory)."""
    from tokdyn import train

    stamps = [time.perf_counter()]
    execution = train.Execution(strategy, batch_size=batch_size, vectorised_init=strategy != "loop")
    res = train.train_many(
        trainer,
        pool,
        keys,
        hp,
        max_calls=calls + 1,
        execution=execution,
        on_log=lambda step, logs: stamps.append(time.perf_counter()),
    )
    dt = np.diff(stamps[1:])
    return dt.min(), float(np.median(dt)), stamps[1] - stamps[0], res.group


def learned_models(s: Suite, n_models: int):
    """name -> (trainer, pool, keys, hparams, strategy, steps per call): each learned model of the
    studies, ``n_models`` models, at the study's sizes (tiny ones with --smoke)."""
    from tokdyn import train
    from tokdyn.models import sequence
    from tokdyn.models import slots, vtae
    from tokdyn.studies import grid_diffusion
    from tokdyn.studies import object_discovery

    smoke, backend = s.args.smoke, jax.default_backend()
    k = 2 if smoke else 10  # steps per call (one timed interval)
    out = {}

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
        # --smoke: the one-program "scan" strategy (the CPU's "loop" compiles far longer at a tiny size)
        return slots.trainer(sc), pool, keys, hp, "scan" if smoke else slots.default_strategy(backend), k

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
        keys, hp = train.grid(
            jax.random.split(jax.random.key(0), n_models), sequence.Hparams(learning_rate=2e-3, lam=0.01)
        )
        return sequence.trainer(cfg), sequence.inputs(cfg, seqs), keys, hp, "scan", k

    def iodine_model():
        from tokdyn.models import iodine

        cfg = object_discovery.Config.quick() if smoke else object_discovery.Config()
        ic = cfg.iodine_config()
        ic = dataclasses.replace(
            ic, train=dataclasses.replace(ic.train, steps=k * 1000, steps_per_call=k), seeds=n_models
        )
        if smoke:
            ic = dataclasses.replace(ic, batch_size=4)
        pool = object_discovery.split(dataclasses.replace(cfg, n_train=64 if smoke else 512), "train").images
        keys, hp = iodine.models(ic)
        return iodine.trainer(ic), pool, keys, hp, "scan" if smoke else iodine.default_strategy(backend), k

    def savi_model():
        from tokdyn.models import savi
        from tokdyn.studies import video
        from tokdyn.studies.video import learned as video_learned

        vc = video.Config.quick() if smoke else video.Config()
        vc = dataclasses.replace(vc, learned_pool=16 if smoke else 128)
        sc = video_learned.savi_config(vc, "transformer")
        sc = dataclasses.replace(
            sc, train=dataclasses.replace(sc.train, steps=k * 1000, steps_per_call=k, warmup=1), seeds=n_models
        )
        keys, hp = train.grid(jax.random.split(jax.random.key(0), n_models), savi.Hparams(learning_rate=2e-3))
        pool = video_learned.learned_pool(vc)
        return savi.trainer(sc), pool, keys, hp, "scan" if smoke else savi.default_strategy(backend), k

    out["Slot Attention (scenes study)"] = slot_attention
    out["IODINE (scenes study)"] = iodine_model
    out["SAVi (video study, transformer predictor)"] = savi_model
    out["grid diffusion (D3PM absorbing)"] = diffusion
    out["visual-token autoencoder"] = autoencoder
    return out


SMOKE_TRAINED = ("visual-token autoencoder", "grid diffusion")  # the models --smoke trains (the cheapest)


def seeds_for(s: Suite, name: str) -> list[int]:
    """The seed counts of a model's rows (module docstring)."""
    if s.args.seeds:
        return [int(v) for v in s.args.seeds.split(",")]
    if s.args.smoke:
        return [2]
    if s.accelerator:
        return [1, 64, 4096] if "autoencoder" in name else [1, 64, 1024]
    return [1, 8, 64]


def step_cost(trainer, pool, keys, hp, *, compiled: bool = True) -> dict:
    """XLA's cost analysis of one model's optimiser step (flops, bytes accessed; of a curriculum's
    first stage; loops inside a step counted once, as XLA counts them): of the compiled
    program, or (``compiled=False``, the smoke run's) of the lowered one, without compiling it."""
    from tokdyn import train

    hp1 = jax.tree_util.tree_map(lambda a: a[:1], hp)
    try:  # the state's shapes only: nothing of the initialisation compiled
        shapes = jax.eval_shape(lambda k, h: train.init_states(trainer, k, h), keys[:1], hp1)
        state1, key1 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), shapes)
    except Exception:  # noqa: BLE001 -- an initialisation that needs host values: run it
        state, run_keys = train.init_states(trainer, keys[:1], hp1)
        state1, key1 = jax.tree_util.tree_map(lambda a: a[0], (state, run_keys))
    first = trainer.first if isinstance(trainer, train.Curriculum) else trainer  # a curriculum: its first stage
    lowered = jax.jit(train.make_step(first)).lower(state1, pool, key1)
    if compiled:
        return cost_of(lowered.compile())
    ca = lowered.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return dict(xla_flops=float(ca.get("flops", np.nan)), xla_bytes=float(ca.get("bytes accessed", np.nan)))


def run(s: Suite):
    """Every training row (module docstring)."""
    calls = 2 if s.args.smoke else s.args.repeats
    names = list(learned_models(s, 1))
    if s.args.models:
        words = [w.strip().lower() for w in s.args.models.split(",") if w.strip()]
        names = [n for n in names if any(w in n.lower() for w in words)]
    costs = {}

    # every model at its largest seed count first (the rows that matter most on a device), then at
    # 1 seed, then the rest; the TF32 rows last
    def priority(seeds):
        return [max(seeds)] + sorted(v for v in seeds if v != max(seeds))

    per = {name: priority(seeds_for(s, name)) for name in names}
    precisions = (getattr(s.args, "training_precisions", None) or "highest,default").split(",")
    plan = []
    if "highest" in precisions:
        plan += [
            (name, per[name][i], "highest")
            for i in range(max(map(len, per.values()), default=0))
            for name in names
            if i < len(per[name])
        ]
    if s.accelerator and "default" in precisions:  # --training-precisions: the TF32 rows at the largest count
        plan += [(name, per[name][0], "default") for name in names if name.startswith("Slot")]
    for name, m, prec in plan:

        def one(name=name, m=m, prec=prec):
            tr, pool, keys, hp, strategy, k = learned_models(s, m)[name]()
            strategy = s.args.strategy or strategy
            with jax.default_matmul_precision(prec):
                if (name, prec) not in costs:
                    costs[name, prec] = step_cost(tr, pool, keys, hp, compiled=not s.args.smoke)
                best, med, first, group = _train_rate(tr, pool, keys, hp, strategy, calls)
            cost = costs[name, prec]
            rate = m * k / med
            extra = {}
            if cost.get("xla_flops", 0) > 0:
                b = work.model_bound(cost["xla_flops"], cost.get("xla_bytes", 0.0), s.ceil, prec)
                extra = dict(
                    flops_per_step=cost["xla_flops"],
                    bytes_per_step=cost.get("xla_bytes"),
                    binding=b["binding"],
                    of_bound=rate * b["seconds"],
                    bound_steps_per_s=1.0 / b["seconds"] if b["seconds"] > 0 else float("nan"),
                )
            return dict(
                size=f"{m} model(s) x {k} steps per call",
                unit="model-steps/s",
                best=m * k / best,
                median=m * k / med,
                compile_s=max(first - med, 0.0),
                strategy=strategy,
                group=group,
                precision=prec,
                **extra,
            )

        label = (
            f"{name}, {m} seed(s)"
            + (", TF32" if prec == "default" else "")
            + (f", strategy {s.args.strategy}" if s.args.strategy else "")
        )
        if s.args.smoke and not name.startswith(SMOKE_TRAINED):
            # --smoke: the heavier models built and their step lowered (the cost analysis), not
            # compiled and trained: their compiles would take minutes of a 2-core CPU, and
            # train_many is the same code as for the models the smoke run trains
            def lowered(name=name, m=m):
                tr, pool, keys, hp, _, _ = learned_models(s, m)[name]()
                return step_cost(tr, pool, keys, hp, compiled=False)

            try:
                cost = lowered()
                s.add(
                    "training",
                    label,
                    status="skipped (smoke: built and lowered, not trained)",
                    **{"flops_per_step": cost["xla_flops"], "bytes_per_step": cost["xla_bytes"]},
                )
            except Exception as e:  # noqa: BLE001 -- recorded, as any row's error
                s.add("training", label, status="error", error=f"{type(e).__name__}: {str(e)[:300]}")
            continue
        s.row("training", label, one)
