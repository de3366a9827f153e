"""The scenes study: how far do the fixed token dynamics get on multi-object images, and what does
a learned Slot Attention add? (``tokdyn study scenes --out DIR``)

1. Sprite scenes (:func:`tokdyn.data.scenes.sprite_scenes`): 2-4 flat-coloured shapes on a plain
   background, 32 x 32, with instance masks; a training pool, a validation split and a test
   split, each from its own key.
2. Fixed methods on per-pixel features (:func:`tokdyn.data.scenes.pixel_features`: position and
   colour): the token-dynamics rules of :data:`tokdyn.dynamics.METHODS` (baseline, inertia,
   repulsion, Sinkhorn, annealing), K = ``max_objects + 1`` tokens started at K random pixels
   (Forgy), each rule's temperature and the features' position weight chosen on the validation
   split (``temperatures`` x ``position_scales``); and k-means (k-means++ seeding, Lloyd) on the
   same features (its position weight chosen the same way). Seed s draws every scene's initial
   tokens from ``fold_in(key, s)``.
3. The learned Slot Attention autoencoder (:mod:`tokdyn.models.slots`), ``seeds`` models trained together,
   without and with implicit differentiation (``learned``), with a learning curve (training
   loss, validation FG-ARI) after every ``eval_every`` steps.
4. On the test split, per method and seed: FG-ARI (:func:`tokdyn.metrics.fg_ari`), the mean IoU
   of matched segments (:func:`tokdyn.metrics.matched_iou`), the share of collapsed scenes (fewer
   tokens or slots own a pixel than the scene has segments, :func:`tokdyn.metrics.collapsed`),
   and for the learned models duplicate slots (merged at the package's merge tolerance) and unused
   slots. A seed *fails* when its mean FG-ARI is below ``fail_below``.

Outputs: ``results.csv`` (method x seed), ``learning_curve.csv``, ``examples.png`` (test scenes,
their true masks and every method's prediction), ``summary.md`` and ``config.json``. Every
finished piece (each method's test results, each learned model's checkpoint, which holds its state
and training curves, and its validation scores) is kept in ``DIR/parts/``: a rerun resumes, and a
training run killed midway resumes from its last checkpoint with identical results.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, dynamics, io, metrics, train
from tokdyn.data import scenes
from tokdyn.models import slots
from tokdyn.stats import figures

FIXED = ("baseline", "inertia", "repulsion", "sinkhorn", "annealing")
LEARNED = ("slot_attention", "slot_attention_implicit")
KMEANS = "kmeans"
COLUMNS = ("method", "seed", "fg_ari", "miou", "collapsed", "duplicates", "unused", "temperature", "position_scale",
           "failed")
CURVE_COLUMNS = ("method", "seed", "step", "loss", "val_fg_ari", "seconds")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      size: image side in pixels.
      min_objects: fewest objects per scene.
      max_objects: most objects per scene (K = max_objects + 1 tokens and slots).
      shapes: sprite shapes, names from tokdyn.data.scenes.SHAPES.
      scale: (low, high) object size as a fraction of the canvas side.
      background: plain | textured.
      n_train: scenes in the learned models' training pool.
      n_val: validation scenes (the fixed methods' temperatures, the learning curve).
      n_test: test scenes (every reported figure).
      methods: fixed token-dynamics rules, names from tokdyn.dynamics.METHODS.
      temperatures: the validation sweep of each fixed rule's (final) temperature.
      kmeans: also run k-means (k-means++ seeding, Lloyd) on the same features.
      dyn_steps: most steps of the fixed rules and of k-means.
      tol: the fixed rules stop when no coordinate moves more than this.
      position_scales: weights of the pixel position in the features (colour has weight 1), swept
        on the validation split with the temperature (k-means takes the best of its own).
      fourier_bands: Fourier bands of the position added to the features (0: none).
      learned: learned models, names from slot_attention | slot_attention_implicit.
      seeds: seeds per method (the learned models of a kind are trained together).
      train_steps: optimiser steps of every learned model.
      batch_size: images per optimiser step.
      lr: peak Adam learning rate.
      iterations: Slot Attention iterations.
      slot_size: slot width D.
      encoder_channels: channels of the learned encoder's convolutions.
      encoder_kernel: side of the encoder's convolution kernels.
      decoder: spatial-broadcast decoder, mlp | cnn.
      decoder_hidden: hidden width of the decoder.
      eval_every: steps between learning-curve points (the checkpoint interval).
      n_curve: validation scenes scored at every learning-curve point.
      fail_below: a seed fails when its mean test FG-ARI is below this.
      n_examples: test scenes drawn in examples.png.
      root_seed: root PRNG seed.
    """

    size: int = 32
    min_objects: int = 2
    max_objects: int = 4
    shapes: tuple = ("square", "circle", "triangle")
    scale: tuple = (0.3, 0.5)
    background: str = "plain"
    n_train: int = 8000
    n_val: int = 256
    n_test: int = 1000
    methods: tuple = FIXED
    temperatures: tuple = (0.003, 0.01, 0.03, 0.1, 0.3)
    kmeans: bool = True
    dyn_steps: int = 50
    tol: float = 1e-4
    position_scales: tuple = (0.25, 0.5, 1.0)
    fourier_bands: int = 0
    learned: tuple = LEARNED
    seeds: int = 4
    train_steps: int = 1500
    batch_size: int = 16
    lr: float = 1e-3
    iterations: int = 3
    slot_size: int = 64
    encoder_channels: tuple = (32, 32)
    encoder_kernel: int = 3
    decoder: str = "mlp"
    decoder_hidden: int = 32
    eval_every: int = 250
    n_curve: int = 128
    fail_below: float = 0.5
    n_examples: int = 6
    root_seed: int = 0

    def validate(self) -> "Config":
        for name in ("size", "min_objects", "max_objects", "n_train", "n_val", "n_test", "dyn_steps", "seeds",
                     "train_steps", "batch_size", "eval_every", "n_curve"):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive_int("fourier_bands", self.fourier_bands, minimum=0)
        _checks.positive_int("n_examples", self.n_examples, minimum=0)
        _checks.positive_int("root_seed", self.root_seed, minimum=0)
        for m in self.methods:
            _checks.choice("methods", m, dynamics.METHODS)
        for m in self.learned:
            _checks.choice("learned", m, LEARNED)
        if not self.methods and not self.learned and not self.kmeans:
            raise ValueError("methods and learned are both empty and kmeans is off: nothing to run")
        if self.methods and not self.temperatures:
            raise ValueError("temperatures must hold at least one value when methods are given")
        _checks.real("temperatures", np.asarray(self.temperatures, float), low=0.0, low_open=True)
        _checks.real("tol", self.tol, low=0.0)
        if not self.position_scales:
            raise ValueError("position_scales must hold at least one value")
        _checks.real("position_scales", np.asarray(self.position_scales, float), low=0.0, low_open=True)
        _checks.real("lr", self.lr, low=0.0, low_open=True)
        _checks.real("fail_below", self.fail_below, low=-0.5, high=1.0)
        if self.train_steps % self.eval_every:
            raise ValueError(f"train_steps must be a multiple of eval_every={self.eval_every}, got {self.train_steps}")
        # the scene generator's own checks (they run before tracing), without generating anything
        jax.eval_shape(functools.partial(scenes.sprite_scenes, jax.random.key(0), 1, **self.generate_args()))
        for m in self.learned:
            self.slot_config(m).validate()
        return self

    @classmethod
    def quick(cls) -> "Config":
        """A one-minute version (tests, smoke runs)."""
        return cls(size=16, max_objects=3, n_train=256, n_val=32, n_test=48, temperatures=(0.01, 0.1),
                   position_scales=(0.5, 1.0), dyn_steps=20,
                   seeds=2, train_steps=20, batch_size=4, slot_size=16, encoder_channels=(8,), decoder_hidden=8,
                   eval_every=10, n_curve=16, n_examples=3)

    @property
    def n_slots(self) -> int:
        return self.max_objects + 1

    def generate_args(self) -> dict:
        return dict(size=self.size, min_objects=self.min_objects, max_objects=self.max_objects,
                    shapes=tuple(self.shapes), scale=tuple(float(v) for v in self.scale),
                    background=self.background)

    def slot_config(self, name: str) -> slots.Config:
        return slots.Config(size=self.size, slots=self.n_slots, iterations=self.iterations, slot_size=self.slot_size,
                            mlp_hidden=2 * self.slot_size, encoder_channels=tuple(self.encoder_channels),
                            encoder_kernel=self.encoder_kernel, decoder=self.decoder,
                            decoder_hidden=self.decoder_hidden, implicit=name == "slot_attention_implicit",
                            steps=self.train_steps, batch_size=self.batch_size,
                            warmup=min(200, self.train_steps // 10) or 1, steps_per_call=self.eval_every,
                            seeds=self.seeds, root_seed=self.root_seed)


# ---------------------------------------------------------------------------------------------- data


SPLITS = {"train": 0, "val": 1, "test": 2}


def split(cfg: Config, name: str) -> scenes.Scenes:
    """The ``train`` (n_train), ``val`` (n_val) or ``test`` (n_test) scenes, each split from
    ``fold_in(key(root_seed), 0 | 1 | 2)``."""
    n = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}[name]
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), SPLITS[name])
    return scenes.sprite_scenes(key, n, **cfg.generate_args())


def _method_key(cfg: Config, seed: int):
    """Seed ``seed``'s key of the fixed methods' initial tokens (scene i: ``fold_in(key, i)``)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.root_seed), 10), seed)


def _segments(masks, n_true: int):
    """Number of segments (background and visible objects) of each scene: (n,)."""
    flat = masks.reshape(masks.shape[0], -1)
    return jax.vmap(lambda m: metrics.n_used(m, n_true))(flat)


@functools.partial(jax.jit, static_argnames=("cfg", "kmeans"))
def _fixed(cfg: Config, images, masks, key, hparams, position_scale, kmeans: bool = False):
    """Per scene: FG-ARI, matched IoU, collapsed, labels of one fixed method (or k-means)."""
    K, n_true = cfg.n_slots, cfg.max_objects + 1
    x = scenes.pixel_features(images, position_scale=position_scale, fourier_bands=cfg.fourier_bands)  # (n, N, F)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(images.shape[0]))

    def one(x, k):
        if kmeans:
            tokens = dynamics.init_tokens(k, K, x.shape[-1], method="kmeans++", x=x)
            return dynamics.kmeans(x, tokens, n_steps=cfg.dyn_steps).labels
        tokens = dynamics.init_tokens(k, K, x.shape[-1], method="data", x=x)
        return dynamics.run(x, tokens, hparams, n_steps=cfg.dyn_steps, tol=cfg.tol).labels

    labels = jax.vmap(one)(x, keys)  # (n, N)
    return _scores(masks, labels, K, n_true)


def _scores(masks, labels, K: int, n_true: int) -> dict:
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
            out = _fixed(cfg, val.images, val.masks, _method_key(cfg, 0), hp, float(ps), kmeans=km)
            scores[i, j] = float(jnp.mean(out["fg_ari"]))
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(temps[i]), float(cfg.position_scales[j]), scores


def run_fixed(cfg: Config, name: str, val, test, parts: str) -> dict:
    """One fixed method (or ``kmeans``) on the test split, every seed, at the settings chosen on
    the validation split (kept in ``parts``)."""
    stamp = json.dumps({"study": io.jsonable(dataclasses.asdict(cfg)), "method": name}, sort_keys=True)

    def compute():
        km = name == KMEANS
        temperature, position_scale, sweep = choose_settings(cfg, name, val)
        hp = dynamics.Hparams() if km else dataclasses.replace(dynamics.method(name), temperature=temperature)
        per_seed = [_fixed(cfg, test.images, test.masks, _method_key(cfg, s), hp, position_scale, kmeans=km)
                    for s in range(cfg.seeds)]
        out = {k: np.stack([np.asarray(p[k]) for p in per_seed]) for k in ("fg_ari", "miou", "collapsed")}
        out["labels"] = np.asarray(per_seed[0]["labels"][: cfg.n_examples])
        return dict(out, temperature=temperature, position_scale=position_scale, sweep=sweep)

    return io.kept(os.path.join(parts, f"fixed__{name}.npz"), stamp, compute)


# ---------------------------------------------------------------------------------------------- learned


def _learned_scores(scfg: slots.Config, state, images, masks, n_true: int, key) -> dict:
    """Per model and scene: FG-ARI, matched IoU, collapsed, duplicates, unused; labels."""
    out = {k: [] for k in ("fg_ari", "miou", "collapsed", "duplicates", "unused")}
    labels0 = None
    for i in range(scfg.seeds):
        labels, final = slots.segment(key, slots.params_of(state, i), scfg, images)
        s = _scores(masks, labels.reshape(labels.shape[0], -1), scfg.slots, n_true)
        dup, unused = jax.vmap(slots.collapse)(final, labels)
        for k, v in dict(s, duplicates=dup, unused=unused).items():
            if k in out:
                out[k].append(np.asarray(v))
        labels0 = np.asarray(labels) if labels0 is None else labels0
    return dict({k: np.stack(v) for k, v in out.items()}, labels=labels0)


def fit(cfg: Config, name: str, images, parts: str, **kw) -> train.Result:
    """Train (or resume) the ``seeds`` models of ``name`` on ``images`` with their checkpoint in
    ``parts``: :func:`tokdyn.train.train_many` of :func:`tokdyn.models.slots.trainer` (``kw``: more
    of its arguments, e.g. ``max_calls``)."""
    scfg = cfg.slot_config(name)
    return train.train_many(slots.trainer(scfg), images, *slots.models(scfg, slots.Hparams(learning_rate=cfg.lr)),
                            checkpoint=os.path.join(parts, f"{name}.npz"), stamp=slots.stamp(scfg),
                            strategy=slots.default_strategy(jax.default_backend()), vectorised_init=False, **kw)


def train_learned(cfg: Config, name: str, train_split, val, parts: str, progress=None) -> tuple:
    """Train the ``seeds`` models of ``name`` (resuming from ``parts``); returns ``(state, curve
    rows, training seconds)``. The checkpoint (every ``eval_every`` steps) holds the state and the
    training curves together; each checkpointed state is scored on ``n_curve`` validation scenes
    before training goes on (``parts/NAME__val.json``: FG-ARI per seed and the training seconds so
    far, by step), so a run killed between a checkpoint and its score scores it when resumed. Curve
    rows: per step and seed, the mean training loss over the interval (from the checkpoint), the
    validation FG-ARI and the seconds."""
    scfg = cfg.slot_config(name)
    stamp = json.dumps({"study": io.jsonable(dataclasses.asdict(cfg)), "model": name}, sort_keys=True)
    ckpt, val_path = os.path.join(parts, f"{name}.npz"), os.path.join(parts, f"{name}__val.json")
    scores = io.read_json(val_path) if os.path.exists(val_path) else None
    stale = scores is not None and scores.get("stamp") != stamp
    if os.path.exists(ckpt) and (stale or train.checkpoint_stamp(ckpt) != slots.stamp(scfg)):
        os.remove(ckpt)  # another configuration's (or an earlier version's) leftovers
        stale = True
    if scores is None or stale:
        scores = {"stamp": stamp, "points": {}}
    points = scores["points"]  # str(step) -> {"val_fg_ari": [per seed], "seconds": training seconds so far}
    val_images, val_masks = val.images[: cfg.n_curve], val.masks[: cfg.n_curve]
    k_eval = jax.random.fold_in(jax.random.key(cfg.root_seed), 20)
    max_calls, noted = 0, set()  # first the checkpoint as it is: a kill may have left its last state unscored
    while True:
        t0 = time.time()
        res = fit(cfg, name, train_split.images, parts, max_calls=max_calls)
        jax.block_until_ready(res.state.params)
        step = res.stopped_at
        if step > 0 and str(step) not in points:
            before = [int(t) for t in points if int(t) < step]
            seconds = (points[str(max(before))]["seconds"] if before else 0.0) + time.time() - t0
            s = _learned_scores(scfg, res.state, val_images, val_masks, cfg.max_objects + 1, k_eval)
            fg = [float(np.mean(s["fg_ari"][i])) for i in range(cfg.seeds)]
            points[str(step)] = {"val_fg_ari": fg, "seconds": seconds}
            io.write_json(val_path, scores)
            if progress is not None:
                progress.update(cfg.eval_every, model=name, val_fg_ari=float(np.mean(fg)))
                for i, t, _ in res.nan_report():
                    if i not in noted:
                        noted.add(i)
                        progress.note(f"{name}: seed {i} skipped a non-finite step, the first at step {t}")
        if res.finished:
            break
        max_calls = 1
    rows = []
    for c, step in enumerate(res.steps):
        p = points.get(str(int(step)), {"val_fg_ari": [float("nan")] * cfg.seeds, "seconds": float("nan")})
        for i in range(cfg.seeds):
            rows.append(dict(method=name, seed=i, step=int(step), loss=float(res.curves["loss"][i, c]),
                             val_fg_ari=p["val_fg_ari"][i], seconds=round(p["seconds"], 2)))
    return res.state, rows, points[str(res.stopped_at)]["seconds"]


# ---------------------------------------------------------------------------------------------- tables


def rows_of(cfg: Config, name: str, res: dict) -> list[dict]:
    rows = []
    for s in range(cfg.seeds):
        fg = float(np.mean(res["fg_ari"][s]))
        rows.append(dict(method=name, seed=s, fg_ari=fg, miou=float(np.mean(res["miou"][s])),
                         collapsed=float(np.mean(res["collapsed"][s])),
                         duplicates=float(np.mean(res["duplicates"][s])) if "duplicates" in res else float("nan"),
                         unused=float(np.mean(res["unused"][s])) if "unused" in res else float("nan"),
                         temperature=float(res.get("temperature", float("nan"))),
                         position_scale=float(res.get("position_scale", float("nan"))), failed=int(fg < cfg.fail_below)))
    return rows


def summary(cfg: Config, rows: list[dict], seconds: dict, curves: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["# Scenes study: fixed token dynamics, k-means and a learned Slot Attention on sprite scenes",
             "",
             f"{cfg.n_test} test scenes of {cfg.size} x {cfg.size}, {cfg.min_objects}-{cfg.max_objects} objects "
             f"({', '.join(cfg.shapes)}), {cfg.background} background; K = {cfg.n_slots} tokens / slots; "
             f"{cfg.seeds} seeds per method. FG-ARI and matched mIoU are means over the test scenes, then mean "
             f"+- std over seeds; a seed fails when its FG-ARI is below {cfg.fail_below}.",
             "",
             "| method | temperature | position scale | FG-ARI | mIoU | collapsed scenes | duplicate slots | unused slots "
             "| failed seeds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in methods:
        r = [x for x in rows if x["method"] == m]
        col = lambda k: np.asarray([x[k] for x in r], float)
        ms = lambda k, d=3: (f"{np.mean(col(k)):.{d}f} +- {np.std(col(k)):.{d}f}" if np.all(np.isfinite(col(k)))
                             else "-")
        t, ps = r[0]["temperature"], r[0]["position_scale"]
        g = lambda v: "-" if not np.isfinite(v) else f"{v:g}"
        lines.append(f"| {m} | {g(t)} | {g(ps)} | {ms('fg_ari')} | {ms('miou')} | "
                     f"{ms('collapsed', 2)} | {ms('duplicates', 2)} | {ms('unused', 2)} | "
                     f"{int(np.sum(col('failed')))} / {len(r)} |")
    for m, sec in seconds.items():
        fg = np.asarray([x["fg_ari"] for x in rows if x["method"] == m])
        lines += ["", f"**{m}**: {cfg.train_steps} steps x {cfg.seeds} seeds trained together in {sec / 60:.1f} min "
                  f"on {jax.devices()[0].platform} ({io.environment().get('cpu_count', '?')} cores); the goal "
                  f"FG-ARI >= 0.90 is {'met' if np.mean(fg) >= 0.9 else 'not met'}: mean {np.mean(fg):.3f}, "
                  f"{int(np.sum(fg >= 0.9))} of {len(fg)} seeds >= 0.90."]
        c = [r for r in curves[m] if r["seed"] == 0]
        if c:
            pts = ", ".join(f"{r['step']}: {np.mean([x['val_fg_ari'] for x in curves[m] if x['step'] == r['step']]):.2f}"
                            for r in c[:: max(1, len(c) // 8)])
            lines.append(f"Validation FG-ARI (mean over seeds) by step: {pts}.")
    return "\n".join(lines)


def plot_examples(path: str, cfg: Config, test, labels: dict) -> str:
    n = min(cfg.n_examples, test.images.shape[0])
    columns = {"image": np.asarray(test.images[:n]), "true": np.asarray(test.masks[:n])}
    columns.update({m: v[:n] for m, v in labels.items()})
    return figures.segmentation_grid(path, columns, title="test scenes: true masks and each method's segments (seed 0)")


def plot_curves(path: str, curves: dict) -> str:
    panels = {}
    steps = None
    for m, rows in curves.items():
        steps = sorted({r["step"] for r in rows})
        seeds = sorted({r["seed"] for r in rows})
        panels[m] = {f"seed {s}": [next(r["val_fg_ari"] for r in rows if r["step"] == t and r["seed"] == s)
                                   for t in steps] for s in seeds}
    return figures.line_plot(path, steps, {}, panels=panels, xlabel="step", ylabel="validation FG-ARI",
                            title="learned Slot Attention")


# ---------------------------------------------------------------------------------------------- main


def _check_out(cfg: Config, out: str) -> None:
    path = os.path.join(out, "config.json")
    if os.path.exists(path):
        old = io.read_json(path).get("study")
        if old is not None and old != io.jsonable(dataclasses.asdict(cfg)):
            raise io.OutputConflict(f"{out} holds a study with a different configuration; use another --out")


def main(cfg: Config, out: str, *, quiet: bool = False, plots: bool = True) -> bool:
    """Run the study (resumable); returns True when it finished."""
    cfg.validate()
    _check_out(cfg, out)
    parts = os.path.join(out, "parts")
    os.makedirs(parts, exist_ok=True)
    io.write_json(os.path.join(out, "config.json"), {"study": dataclasses.asdict(cfg), "environment": io.environment()})
    t_start = time.time()
    val, test = split(cfg, "val"), split(cfg, "test")
    results, labels = {}, {}
    fixed = list(cfg.methods) + ([KMEANS] if cfg.kmeans else [])
    with io.Progress(len(fixed), desc="fixed methods", unit="methods", quiet=quiet) as progress:
        for name in fixed:
            results[name] = run_fixed(cfg, name, val, test, parts)
            labels[name] = results[name]["labels"]
            progress.update(1)
    seconds, curves = {}, {}
    if cfg.learned:
        pool = split(cfg, "train")
        k_test = jax.random.fold_in(jax.random.key(cfg.root_seed), 21)
        with io.Progress(cfg.train_steps * len(cfg.learned), desc="slot attention", unit="steps",
                         quiet=quiet) as progress:
            for name in cfg.learned:
                state, curves[name], seconds[name] = train_learned(cfg, name, pool, val, parts, progress)
                scfg = cfg.slot_config(name)
                stamp = json.dumps({"study": io.jsonable(dataclasses.asdict(cfg)), "model": name,
                                    "step": int(np.asarray(state.step)[0])}, sort_keys=True)
                results[name] = io.kept(os.path.join(parts, f"{name}__test.npz"), stamp, lambda: _learned_scores(
                    scfg, state, test.images, test.masks, cfg.max_objects + 1, k_test))
                results[name]["labels"] = results[name]["labels"][: cfg.n_examples]
                labels[name] = results[name]["labels"]
    rows = [r for name in results for r in rows_of(cfg, name, results[name])]
    io.write_csv(os.path.join(out, "results.csv"), io.to_columns(rows, COLUMNS))
    curve_rows = [r for name in curves for r in curves[name]]
    io.write_csv(os.path.join(out, "learning_curve.csv"), io.to_columns(curve_rows, CURVE_COLUMNS))
    if plots:
        plot_examples(os.path.join(out, "examples.png"), cfg, test, labels)
        if curves:
            plot_curves(os.path.join(out, "learning_curve.png"), curves)
    text = summary(cfg, rows, seconds, curves)
    with io.atomic_write(os.path.join(out, "summary.md")) as f:
        f.write(text + "\n")
    io.write_json(os.path.join(out, "config.json"), {"study": dataclasses.asdict(cfg), "seconds": time.time() - t_start,
                                                      "training_seconds": seconds, "environment": io.environment()})
    if not quiet:
        print(text)
    return True
