"""The scenes study's fixed methods on per-pixel features: the data splits (:func:`split`), the
scores of a segmentation (:func:`segment_scores`), the settings chosen on the validation split
(:func:`choose_settings`, :func:`choose_refinement`) and every seed scored on the test split, kept as
a part (:func:`run_fixed`)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import dynamics, extras, metrics, refinement
from tokdyn.data import scenes
from tokdyn.experiment.study import Refused, Study
from tokdyn.studies.object_discovery.config import KMEANS, REFINEMENT, Config


SPLITS = {"train": 0, "val": 1, "test": 2}


def split(cfg: Config, name: str):
    """The ``train`` (n_train), ``val`` (n_val) or ``test`` (n_test) scenes: a
    :class:`~tokdyn.data.scenes.Scenes`, each split from ``fold_in(key(root_seed), 0 | 1 | 2)``; with
    ``data``, a :class:`~tokdyn.datasets.scenes.LoadedScenes` of the dataset's scenes in file order
    (validation first, then test, then train: :func:`real_scenes`)."""
    n = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}[name]
    if cfg.data:
        start = {"val": 0, "test": cfg.n_val, "train": cfg.n_val + cfg.n_test}[name]
        return real_scenes(cfg.data, *real_arguments(cfg))[start : start + n]
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), SPLITS[name])
    return scenes.sprite_scenes(key, n, **cfg.generate_args())


@functools.lru_cache(maxsize=1)
def real_scenes(data: str, count: int, size: int, min_objects: int, max_objects: int):
    """The first ``count`` scenes of dataset ``data`` with ``min_objects`` to ``max_objects`` visible
    objects at ``size x size`` (:func:`tokdyn.datasets.scenes.load`), read once for the three splits."""
    from tokdyn.datasets import scenes as real

    return real.load(data, count, size=size, min_objects=min_objects, max_objects=max_objects)


def real_arguments(cfg: Config) -> tuple:
    """``(count, size, min_objects, max_objects)`` of :func:`real_scenes` for ``cfg``: the splits'
    scenes (validation, test, and training where a model is learned)."""
    total = cfg.n_val + cfg.n_test + (cfg.n_train if cfg.learned else 0)
    return total, cfg.size, cfg.min_objects, cfg.max_objects


def split_counts(cfg: Config) -> dict:
    """The options that count the dataset's scenes the study takes: ``{option: value}``."""
    counts = {"--n-val": cfg.n_val, "--n-test": cfg.n_test}
    return {**counts, "--n-train": cfg.n_train} if cfg.learned else counts


def prepare_data(session, cfg: Config) -> None:
    """The runner's ``prepare`` (before the study's directory is opened): with ``data``, the
    dataset's scenes are read now, once (:func:`real_scenes` keeps them for the splits), so that a
    file with too few usable scenes, or one that does not read (a corrupt record, a wrong feature
    spec), is refused before any work: :class:`~tokdyn.experiment.study.Refused` (the command
    exits 2) naming the file, how many usable scenes it holds, and which of ``--n-val``,
    ``--n-test``, ``--n-train``, ``--min-objects`` and ``--max-objects`` to change, and to what."""
    if not cfg.data:
        return None
    extras.require("data", f"reading data={cfg.data!r}")  # its readers' packages, before any work
    from tokdyn.datasets.scenes import TooFewScenes, shortfall_message, ways_out

    counts = split_counts(cfg)
    session.say(f"reading the {sum(counts.values())} scenes of {cfg.data} the splits take")
    try:
        real_scenes(cfg.data, *real_arguments(cfg))
    except TooFewScenes as e:

        def also(fitted):  # the options the split sizes bound
            out = {}
            if cfg.n_curve > fitted["--n-val"]:
                out["--n-curve"] = fitted["--n-val"]
            if cfg.n_examples > fitted["--n-test"]:
                out["--n-examples"] = fitted["--n-test"]
            return out

        ways = ways_out(
            e,
            counts,
            trim="--n-train" if cfg.learned else None,
            min_option="--min-objects",
            max_option="--max-objects",
            also=also,
        )
        raise Refused(f"data: {shortfall_message(e, counts, ways)}") from None
    except (ValueError, OSError) as e:  # a corrupt record or feature spec, an unreadable file: named inside
        raise Refused(f"data: {e}") from None
    return None


def method_key(cfg: Config, seed: int):
    """Seed ``seed``'s key of the fixed methods' initial tokens (scene i: ``fold_in(key, i)``)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.root_seed), 10), seed)


def _segments(masks, n_true: int):
    """Number of segments (background and visible objects) of each scene: (n,)."""
    flat = masks.reshape(masks.shape[0], -1)
    return jax.vmap(lambda m: metrics.n_used(m, n_true))(flat)


@functools.partial(jax.jit, static_argnames=("cfg", "kmeans"))
def _fixed(cfg: Config, images, masks, key, hparams, position_scale, kmeans: bool = False):
    """Per scene: FG-ARI, matched IoU, collapsed, labels of one fixed method (or k-means): the
    built-in rule with :class:`tokdyn.dynamics.Hparams`, the refinement rule with
    :class:`tokdyn.refinement.Hparams` (labels: the nearest final means, ``Result.labels``)."""
    K, n_true = cfg.n_slots, cfg.max_objects + 1
    x = scenes.pixel_features(images, position_scale=position_scale, fourier_bands=cfg.fourier_bands)  # (n, N, F)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(images.shape[0]))

    def one(x, k):
        if kmeans:
            tokens = dynamics.init_tokens(k, K, x.shape[-1], method="kmeans++", x=x)
            return dynamics.kmeans(x, tokens, n_steps=cfg.dyn_steps).labels
        tokens = dynamics.init_tokens(k, K, x.shape[-1], method="data", x=x)
        rule = refinement.REFINEMENT if isinstance(hparams, refinement.Hparams) else dynamics.BUILTIN
        return dynamics.run(x, tokens, hparams, rule=rule, n_steps=cfg.dyn_steps, tol=cfg.tol).labels

    labels = jax.vmap(one)(x, keys)  # (n, N)
    return segment_scores(masks, labels, K, n_true)


def segment_scores(masks, labels, K: int, n_true: int) -> dict:
    """Per scene: FG-ARI, matched IoU and collapsed of ``labels`` (``(n, ...)``, ``K`` predicted
    segments) against the true ``masks`` (``n_true`` segments), and the labels in the masks' shape."""
    flat = masks.reshape(masks.shape[0], -1)
    labels = labels.reshape(flat.shape)
    fg = jax.vmap(lambda m, l: metrics.fg_ari(m, l, n_true=n_true, n_pred=K))(flat, labels)
    iou = jax.vmap(lambda m, l: metrics.matched_iou(m, l, n_true=n_true, n_pred=K))(flat, labels)
    segs = _segments(masks, n_true)
    col = jax.vmap(lambda l, s: metrics.collapsed(l, K, s))(labels, segs)
    return dict(fg_ari=fg, miou=iou, collapsed=col, labels=labels.reshape(masks.shape))


def choose_settings(cfg: Config, name: str, val: scenes.Scenes) -> tuple[float, float, np.ndarray]:
    """``(temperature, position_scale, scores)``: the pair of ``temperatures`` x
    ``position_scales`` with the best mean validation FG-ARI for rule ``name`` (seed 0's initial
    tokens; k-means has no temperature: its row is NaN), and the (T, P) mean FG-ARI of each."""
    km = name == KMEANS
    base = dynamics.Hparams() if km else dynamics.method(name)
    temps = (float("nan"),) if km else cfg.temperatures
    scores = np.zeros((len(temps), len(cfg.position_scales)))
    for i, t in enumerate(temps):
        hp = base if km else dataclasses.replace(base, temperature=float(t))
        for j, ps in enumerate(cfg.position_scales):
            out = _fixed(cfg, val.images, val.masks, method_key(cfg, 0), hp, float(ps), kmeans=km)
            scores[i, j] = float(jnp.mean(out["fg_ari"]))
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(temps[i]), float(cfg.position_scales[j]), scores


def refinement_settings(cfg: Config) -> list[refinement.Hparams]:
    """The refinement rule's settings swept on the validation split: ``refinement_log_scales`` x
    ``refinement_strengths`` (the strength fastest), each at step size 1 (EM steps)."""
    return [
        refinement.Hparams(step_size=1.0, prior_log_scale=float(s0), prior_strength=float(k))
        for s0 in cfg.refinement_log_scales
        for k in cfg.refinement_strengths
    ]


def choose_refinement(cfg: Config, val: scenes.Scenes) -> tuple[refinement.Hparams, float, np.ndarray]:
    """``(hparams, position_scale, scores)``: the refinement rule's setting of
    :func:`refinement_settings` x ``position_scales`` with the best mean validation FG-ARI (seed
    0's initial tokens, as :func:`choose_settings`), and the (S, P) mean FG-ARI of each."""
    settings = refinement_settings(cfg)
    scores = np.zeros((len(settings), len(cfg.position_scales)))
    for i, hp in enumerate(settings):
        for j, ps in enumerate(cfg.position_scales):
            out = _fixed(cfg, val.images, val.masks, method_key(cfg, 0), hp, float(ps))
            scores[i, j] = float(jnp.mean(out["fg_ari"]))
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return settings[i], float(cfg.position_scales[j]), scores


def run_fixed(cfg: Config, name: str, val, test, study: Study) -> dict:
    """One fixed method (or ``kmeans``) on the test split, every seed, at the settings chosen on validation.

    Kept as the part ``fixed__NAME`` of ``study``.

    Args:
      cfg: the study's :class:`Config`.
      name: a name of :data:`~tokdyn.studies.object_discovery.FIXED_METHODS`, or :data:`KMEANS`.
      val: the validation :class:`~tokdyn.data.scenes.Scenes` (the temperature and position
        scale are chosen on them).
      test: the test :class:`~tokdyn.data.scenes.Scenes` (n scenes).
      study: the :class:`~tokdyn.experiment.study.Study` that keeps the part.

    Returns:
      A dict: ``fg_ari``, ``miou`` and ``collapsed`` (seeds, n), seed 0's ``labels`` of the first
      ``n_examples`` scenes (n_examples, size, size), the chosen ``temperature`` (NaN for the
      refinement rule, whose part holds its ``prior_log_scale`` and ``prior_strength`` instead)
      and ``position_scale``, and the validation ``sweep``.
    """

    def compute():
        km = name == KMEANS
        extra = {}
        if name == REFINEMENT:
            hp, position_scale, sweep = choose_refinement(cfg, val)
            temperature = float("nan")
            extra = dict(prior_log_scale=float(hp.prior_log_scale), prior_strength=float(hp.prior_strength))
        else:
            temperature, position_scale, sweep = choose_settings(cfg, name, val)
            hp = dynamics.Hparams() if km else dataclasses.replace(dynamics.method(name), temperature=temperature)
        per_seed = [
            _fixed(cfg, test.images, test.masks, method_key(cfg, s), hp, position_scale, kmeans=km)
            for s in range(cfg.seeds)
        ]
        out = {k: np.stack([np.asarray(p[k]) for p in per_seed]) for k in ("fg_ari", "miou", "collapsed")}
        out["labels"] = np.asarray(per_seed[0]["labels"][: cfg.n_examples])
        return dict(out, temperature=temperature, position_scale=position_scale, sweep=sweep, **extra)

    return study.part(f"fixed__{name}", compute, key={"method": name})
