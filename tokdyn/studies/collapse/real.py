"""The collapse study on real scenes (``--data``): does collapse occur on a trained Slot
Attention's encoder features of a dataset's scenes?

With ``data`` (a multi-object dataset's file, :mod:`tokdyn.datasets.multi_object`), the scenes
with 1 to ``data_max_objects`` visible objects are read in file order at ``data_size``
(:func:`tokdyn.datasets.scenes.load`): the first ``data_scenes`` are measured, the next
``data_pool`` train one Slot Attention (:mod:`tokdyn.models.slots`, one slot per object and one for
the background, ``data_steps`` steps, checkpointed in ``parts/real_slots.npz``: a killed run
resumes). Two questions, on the measured scenes only:

1. **The rule on the encoder's features** (:func:`threshold_rows`, ``real_threshold.csv``): each
   scene's encoder features (the N = ``data_size``\\ :sup:`2` inputs of Slot Attention, C wide;
   ``data_points`` of them drawn at random) are the point cloud of the threshold check: the
   built-in rule with T tokens of ``n_tokens`` at tau = ratio x tau_c for every ratio of
   :meth:`~tokdyn.studies.collapse.Config.ratios` and ``seeds`` seeds. Does the collapse rate
   cross 1/2 at tau_c = 2 lambda_max(Cov X), as on the synthetic clouds?
2. **The trained model's own slots** (:func:`slot_rows`, ``real_slots.csv``): per scene, the slots
   merged into another (:func:`tokdyn.models.slots.collapse` at the package's merge tolerance),
   the slots that own no pixel, and the FG-ARI of its segmentation.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import analysis, dynamics, extras, io, metrics, train
from tokdyn.experiment.study import Refused, Study, digest
from tokdyn.models import slots
from tokdyn.studies.collapse.config import Config
from tokdyn.studies.collapse.parts import crossing

KEYS = {"points": 30, "runs": 31, "segment": 32}  # fold_in(key(root_seed), i)


def slot_config(cfg: Config) -> slots.Config:
    """The Slot Attention trained on the scenes: the model's defaults at ``data_size`` with
    ``data_max_objects + 1`` slots, one model, ``data_steps`` steps of ``data_batch`` scenes (a
    checkpoint every 100 steps, or every ``data_steps`` below 100; a warm-up of a tenth of them, at
    most 200)."""
    every = min(100, cfg.data_steps)
    schedule = dataclasses.replace(
        slots.Config().train, steps=cfg.data_steps, steps_per_call=every, warmup=max(1, min(200, cfg.data_steps // 10))
    )
    return slots.Config(
        size=cfg.data_size,
        slots=cfg.data_max_objects + 1,
        batch_size=cfg.data_batch,
        train=schedule,
        seeds=1,
        root_seed=cfg.root_seed,
    )


@functools.lru_cache(maxsize=1)
def real_scenes(data: str, count: int, size: int, max_objects: int):
    """The first ``count`` scenes of ``data`` with 1 to ``max_objects`` visible objects at ``size``
    (:func:`tokdyn.datasets.scenes.load`), read once."""
    from tokdyn.datasets import scenes

    return scenes.load(data, count, size=size, min_objects=1, max_objects=max_objects)


def prepare_data(session, cfg: Config) -> None:
    """The runner's ``prepare`` (before the study's directory is opened): with ``data``, the
    scenes of the real part are read now, once (:func:`real_scenes` keeps them), so that a file with
    too few usable scenes, or one that does not read (a corrupt record, a wrong feature spec), is
    refused before any work: :class:`~tokdyn.experiment.study.Refused` (the command exits 2)
    naming the file, how many usable scenes it holds, and which of ``--data-scenes``,
    ``--data-pool`` and ``--data-max-objects`` to change, and to what."""
    if not cfg.data:
        return None
    extras.require("data", f"reading data={cfg.data!r}")  # its readers' packages, before any work
    from tokdyn.datasets.scenes import TooFewScenes, shortfall_message, ways_out

    counts = {"--data-scenes": cfg.data_scenes, "--data-pool": cfg.data_pool}
    session.say(f"reading the {sum(counts.values())} scenes of {cfg.data} the real part takes")
    try:
        real_scenes(cfg.data, cfg.data_scenes + cfg.data_pool, cfg.data_size, cfg.data_max_objects)
    except TooFewScenes as e:
        ways = ways_out(e, counts, trim="--data-pool", max_option="--data-max-objects")
        raise Refused(f"data: {shortfall_message(e, counts, ways)}") from None
    except (ValueError, OSError) as e:  # a corrupt record or feature spec, an unreadable file: named inside
        raise Refused(f"data: {e}") from None
    return None


def split(cfg: Config) -> tuple:
    """``(measured, pool)``: the first ``data_scenes`` scenes, and the next ``data_pool`` (training)."""
    loaded = real_scenes(cfg.data, cfg.data_scenes + cfg.data_pool, cfg.data_size, cfg.data_max_objects)
    return loaded[: cfg.data_scenes], loaded[cfg.data_scenes :]


def fit(cfg: Config, study: Study, pool_images, progress=None) -> train.Result:
    """Train (or resume) the Slot Attention of :func:`slot_config` on ``pool_images``, its
    checkpoint ``parts/real_slots.npz`` of ``study`` (stamped with the study's stamp and the model's)."""
    scfg = slot_config(cfg)
    ckpt = study.part_path("real_slots")
    stamp = f"{study.key}:{digest({'slots': slots.stamp(scfg)})}"

    def run():
        return train.train_many(
            slots.trainer(scfg),
            pool_images,
            *slots.models(scfg, slots.Hparams(learning_rate=cfg.data_learning_rate)),
            checkpointing=train.Checkpointing(ckpt, stamp),
            execution=train.Execution(slots.default_strategy(jax.default_backend()), vectorised_init=False),
            progress=progress,
        )

    return io.recomputing(ckpt, run)


@functools.partial(jax.jit, static_argnames=("n_tokens", "n_steps"))
def feature_runs(x, keys, ratios, merge_rel, tol_rel, *, n_tokens: int, n_steps: int) -> dict:
    """The built-in rule on point cloud ``x`` (N, D) once per ``(keys[i], ratios[i])``: T =
    ``n_tokens`` tokens started at distinct points (Forgy, drawn by the key), tau = ratio x tau_c(x),
    run to ``tol_rel`` times the RMS radius or ``n_steps``; as
    :class:`tokdyn.engine.runs.CollapseRun` does on a synthetic cloud. Returns (R,) arrays:
    ``groups`` (at ``merge_rel`` times the RMS radius), ``collapsed``, ``converged``, ``tau_c``
    (``groups`` and ``collapsed`` NaN where the tokens are not finite)."""
    tau_c = analysis.collapse_threshold(x)
    scale = jnp.sqrt(jnp.trace(analysis.covariance(x)[0]))

    def one(key, ratio):
        t0 = dynamics.forgy(x, jax.random.uniform(key, x.shape[:1]), None, n_tokens)
        r = dynamics.run(x, t0, dynamics.Hparams(ratio * tau_c), n_steps=jnp.int32(n_steps), tol=tol_rel * scale)
        _, groups = dynamics.token_groups(r.tokens, merge_rel * scale)
        finite = jnp.all(jnp.isfinite(r.tokens))
        nan = jnp.float32(jnp.nan)
        return dict(
            groups=jnp.where(finite, groups.astype(jnp.float32), nan),
            collapsed=jnp.where(finite, (groups == 1).astype(jnp.float32), nan),
            converged=r.converged,
            tau_c=tau_c,
        )

    return jax.vmap(one)(keys, ratios)


@functools.partial(jax.jit, static_argnames=("scfg",))
def _encode(params, images, *, scfg: slots.Config):
    return slots.Encoder(scfg).apply(params, images)


def features(cfg: Config, params, images) -> np.ndarray:
    """The encoder's features of ``images``: ``(n, data_points, C)``, ``data_points`` of each
    scene's N inputs drawn without replacement (all N when ``data_points >= N``), float32."""
    feats = _encode(params, jnp.asarray(images), scfg=slot_config(cfg))
    n, N, _ = feats.shape
    if cfg.data_points >= N:
        return np.asarray(feats, np.float32)
    root = jax.random.fold_in(jax.random.key(cfg.root_seed), KEYS["points"])
    picks = jax.vmap(lambda k: jax.random.choice(k, N, (cfg.data_points,), replace=False))(
        jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(n))
    )
    return np.asarray(jnp.take_along_axis(feats, picks[:, :, None], axis=1), np.float32)


def threshold_rows(cfg: Config, feats, index) -> list:
    """One row per measured scene x T: the collapse rate over tau / tau_c on the scene's encoder
    features (:func:`feature_runs`, ``seeds`` runs a ratio), its crossing of 1/2 (``ratio_50``,
    ``rel_error`` = ratio_50 - 1), the largest rate at or below 0.9 tau_c and the smallest at or
    above 1.1 tau_c, tau_c itself and the convergence rate."""
    ratios = cfg.ratios()
    grid_r = np.repeat(ratios, cfg.seeds)
    root = jax.random.fold_in(jax.random.key(cfg.root_seed), KEYS["runs"])
    rows = []
    for s, x in enumerate(feats):
        for t in cfg.n_tokens:
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, s), t), i))(
                jnp.arange(len(grid_r))
            )
            r = jax.device_get(
                feature_runs(
                    jnp.asarray(x),
                    keys,
                    jnp.asarray(grid_r),
                    np.float32(cfg.merge_rel),
                    np.float32(cfg.tol_rel),
                    n_tokens=t,
                    n_steps=cfg.n_steps,
                )
            )
            rate = np.array([np.nanmean(r["collapsed"][grid_r == q]) for q in ratios])
            r50 = crossing(ratios, rate)
            rows.append(
                dict(
                    scene=int(index[s]),
                    n_points=int(x.shape[0]),
                    dim=int(x.shape[1]),
                    n_tokens=t,
                    tau_c=float(r["tau_c"][0]),
                    ratio_50=r50,
                    rel_error=r50 - 1.0,
                    rate_below=float(rate[ratios <= 0.9 + 1e-6].max()),
                    rate_above=float(rate[ratios >= 1.1 - 1e-6].min()),
                    converged_rate=float(np.mean(r["converged"])),
                    n_runs=int(len(grid_r)),
                    rates=" ".join(f"{v:.3g}" for v in rate),
                )
            )
    return rows


def slot_rows(cfg: Config, params, measured) -> list:
    """One row per measured scene: the trained model's ``duplicates`` (slots merged into another),
    ``unused`` slots (owning no pixel), ``slots``, the scene's visible ``objects`` and ``fg_ari``."""
    scfg = slot_config(cfg)
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), KEYS["segment"])
    labels, final = slots.segment(key, params, scfg, jnp.asarray(measured.images))
    dup, unused = jax.vmap(slots.collapse)(final, labels)
    n = len(measured.index)
    flat_true = jnp.asarray(measured.masks).reshape(n, -1)
    ari = jax.vmap(lambda m, p: metrics.fg_ari(m, p, n_true=cfg.data_max_objects + 1, n_pred=scfg.slots))(
        flat_true, labels.reshape(n, -1)
    )
    return [
        dict(
            scene=int(measured.index[i]),
            objects=int(measured.n_objects[i]),
            slots=scfg.slots,
            duplicates=int(dup[i]),
            unused=int(unused[i]),
            fg_ari=float(ari[i]),
        )
        for i in range(n)
    ]


def real_parts(cfg: Config, study: Study, progress=False) -> tuple:
    """``(threshold rows, slot rows)``: the model trained (or resumed from its checkpoint) when a
    row part is missing, then both kept row parts (``real_threshold``, ``real_slots_scores``)."""
    measured, pool = split(cfg)
    state = {}

    def params():
        if "params" not in state:
            bar = io.Progress(cfg.data_steps, desc="slot attention", unit="steps") if progress else None
            state["params"] = slots.params_of(fit(cfg, study, pool.images, progress=bar).state, 0)
        return state["params"]

    thr = study.rows(
        "real_threshold", lambda: threshold_rows(cfg, features(cfg, params(), measured.images), measured.index)
    )
    sl = study.rows("real_slots_scores", lambda: slot_rows(cfg, params(), measured))
    return thr, sl


def real_summary(cfg: Config, thr: list, sl: list) -> dict:
    """The headline numbers of the real part (``summary.json``'s ``real``): the data file, the
    measured scenes, the threshold check's largest ``|ratio_50 - 1|`` and the mean collapse rates at
    or below 0.9 tau_c and at or above 1.1 tau_c on the encoder's features, and the trained model's
    mean duplicate and unused slots, the share of scenes with a duplicate slot, and its mean FG-ARI."""
    rel = np.array([r["rel_error"] for r in thr], float)
    dup = np.array([r["duplicates"] for r in sl], float)
    return dict(
        data=cfg.data,
        scenes=len(sl),
        threshold_max_abs_rel_error=float(np.nanmax(np.abs(rel))) if np.isfinite(rel).any() else float("nan"),
        threshold_never_crossed=int(np.sum(~np.isfinite(rel))),
        rate_below_mean=float(np.mean([r["rate_below"] for r in thr])),
        rate_above_mean=float(np.mean([r["rate_above"] for r in thr])),
        slot_duplicates_mean=float(dup.mean()),
        scenes_with_duplicate_slots=float(np.mean(dup > 0)),
        slot_unused_mean=float(np.mean([r["unused"] for r in sl])),
        slot_fg_ari_mean=float(np.nanmean([r["fg_ari"] for r in sl])),
    )
