"""Token dynamics of a vision-language model's perception tokens: the vision tower's patch features of an
image, before and after the merger of 2x2 patches (its family's ``probes.vision_taps``, for Qwen2.5-VL
:func:`tokdyn.models.qwen2_5_vl.probes.vision_taps`; the family found by the model's configuration,
:func:`tokdyn.diagnostics.subjects.family_of`), as
the points of :func:`tokdyn.dynamics.run`, for every built-in rule of :data:`tokdyn.dynamics.METHODS` and for
k-means (:func:`tokdyn.dynamics.kmeans`) from the same initial tokens.

Per image and feature level the partition of the patches is scored against the image's object masks, each
mask cut to the level's grid by majority (:func:`grid_masks`): the ARI with the background as a segment
(``ari``) and without it (``fg_ari``); the tokens' collapse as the collapse study measures it (token groups
at ``merge_rel`` times the data's RMS radius: ``groups``, ``collapsed`` when one group is left, ``merged``
when fewer groups than tokens); ``n_used`` tokens that receive a patch, ``under_used`` when fewer than the
image's segments (:func:`tokdyn.metrics.collapsed`); and each rule's agreement with k-means
(``ari_kmeans``).

The features are centred and scaled to unit RMS radius per image (``sqrt(tr Cov X) = 1``) before the
dynamics, so the rules' knobs (repulsion, Langevin temperature, tolerances) read in one unit for every model,
and each rule runs at ``temperature_ratio`` times the image's collapse threshold
:math:`\\tau_c = 2\\lambda_{\\max}(\\mathrm{Cov}\\,X)` (:func:`tokdyn.analysis.collapse_threshold`) times the
method's own temperature.

:func:`cluster_features` is the traced kernel (one image, one level); :func:`perception_dynamics` runs a batch
of images through the vision tower and every rule in one compiled program. On a random model (the tiny test
checkpoint) the numbers are those of random features, never a finding about a trained model.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, analysis, dynamics, metrics
from tokdyn.diagnostics.subjects import family_of

LEVELS = ("patches", "merged")
"""The feature levels: the last vision block's patch features, and the merger's output."""
KMEANS = "kmeans"
"""The name of the k-means row beside the rules."""
SCORES = ("ari", "fg_ari", "groups", "collapsed", "merged", "n_used", "under_used", "ari_kmeans", "steps", "converged")
"""The per-image, per-method numbers :func:`cluster_features` returns."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The static settings of the analysis (hashable).

    Attributes:
      n_tokens: tokens of every rule and centres of k-means, >= 2 and at most the merged grid's size.
      methods: names from :data:`tokdyn.dynamics.METHODS`, run side by side (k-means is always added).
      temperature_ratio: each rule's temperature as a multiple of the image's collapse threshold
        tau_c (times the method's own temperature, 1 for every built-in method), > 0.
      n_steps: the most steps of a rule.
      kmeans_steps: the most Lloyd iterations.
      tol_rel: a rule's convergence tolerance (largest coordinate movement of a step), in units of the
        data's RMS radius.
      merge_rel: tokens closer than this many RMS radii form one group (the collapse study's
        ``analysis.MERGE_REL``).
    """

    n_tokens: int = 5
    methods: tuple[str, ...] = tuple(dynamics.METHODS)
    temperature_ratio: float = 0.5
    n_steps: int = 50
    kmeans_steps: int = 100
    tol_rel: float = 1e-5
    merge_rel: float = analysis.MERGE_REL

    def validate(self) -> Config:
        """``self``, or a ValueError/TypeError naming the field."""
        _checks.positive_int("n_tokens", self.n_tokens, minimum=2)
        if not isinstance(self.methods, tuple) or not self.methods:
            raise ValueError(f"methods must be a non-empty tuple of names from {tuple(dynamics.METHODS)}")
        for name in self.methods:
            _checks.choice("methods", name, dynamics.METHODS)
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must not repeat a name, got {self.methods}")
        _checks.real("temperature_ratio", self.temperature_ratio, low=0.0, low_open=True)
        _checks.positive_int("n_steps", self.n_steps)
        _checks.positive_int("kmeans_steps", self.kmeans_steps)
        _checks.real("tol_rel", self.tol_rel, low=0.0)
        _checks.real("merge_rel", self.merge_rel, low=0.0, low_open=True)
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """The rows of the results: the methods, then :data:`KMEANS`."""
        return (*self.methods, KMEANS)


FLAT_REL = 1e-4
"""Features whose RMS radius is at most this fraction of their RMS norm are flat (one feature for the whole
image, up to rounding): :func:`standardise` sets them to zero rather than magnify their rounding errors."""


def standardise(x):
    """``x`` (N, D) centred on its mean and divided by its RMS radius ``sqrt(tr Cov X)`` (population
    covariance). Returns ``(standardised, radius, flat)``: ``flat`` when the radius is at most
    :data:`FLAT_REL` times the features' RMS norm (a uniform image's patches differ by float rounding alone),
    and then the standardised features are all zero, so every rule ends in one group."""
    x = jnp.asarray(x, jnp.float32)
    centred = x - jnp.mean(x, axis=0)
    radius = jnp.sqrt(jnp.mean(jnp.sum(centred**2, axis=-1)))
    norm = jnp.sqrt(jnp.mean(jnp.sum(x**2, axis=-1)))
    flat = radius <= FLAT_REL * norm
    return jnp.where(flat, 0.0, centred / jnp.where(flat, 1.0, radius)), radius, flat


def cluster_features(key, x, segments, n_segments: int, cfg: Config) -> dict:
    """Every rule of ``cfg.methods`` and k-means on one image's features, scored against its segments.

    Args:
      key: PRNG key: the initial tokens (Forgy: distinct patches, the same for every rule and k-means) from
        ``fold_in(key, 0)``, rule ``i``'s Langevin noise from ``fold_in(key, i + 1)``.
      x: (N, D) features of the image's patches (any scale: standardised here, :func:`standardise`).
      segments: (N,) int segment id of each patch in ``[0, n_segments)``, 0 the background.
      n_segments: static bound on the segment ids.
      cfg: the :class:`Config` (static).

    Returns:
      A dict of arrays with a leading axis over ``cfg.names`` (the rules, then k-means): each of
      :data:`SCORES` (M,), ``labels`` (M, N) (each patch's nearest final token), ``partition`` (M, N) (the
      group of that token: tokens closer than ``merge_rel`` are one segment; the scores read this partition,
      so coincident tokens never split a segment by float rounding; ``n_used`` counts its segments) and final
      ``tokens`` (M, T, D), the initial tokens ``start``
      (T, D), all in standardised units, and the image's ``tau_c`` (of the standardised features),
      ``radius`` (of the features as given) and ``flat`` (:func:`standardise`), scalars. Traceable: ``jit`` and ``vmap`` over images apply.
    """
    xs, radius, flat = standardise(x)
    n, k = xs.shape[0], cfg.n_tokens
    tau_c = analysis.collapse_threshold(xs)
    tau = cfg.temperature_ratio * jnp.maximum(tau_c, jnp.float32(1e-12))
    start = dynamics.forgy(xs, jax.random.uniform(jax.random.fold_in(key, 0), (n,)), None, k)  # (T, D)
    hps = dynamics.Hparams.stack([dynamics.method(name) for name in cfg.methods])
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i + 1))(jnp.arange(len(cfg.methods)))

    def rule(hp, rkey):
        hp = dataclasses.replace(hp, temperature=hp.temperature * tau)
        r = dynamics.run(xs, start, hp, n_steps=cfg.n_steps, tol=cfg.tol_rel, key=rkey)
        return r.tokens, r.labels, r.steps, r.converged

    tokens, labels, steps, converged = jax.vmap(rule)(hps, keys)
    km = dynamics.kmeans(xs, start, n_steps=cfg.kmeans_steps)
    tokens = jnp.concatenate([tokens, km.tokens[None].astype(tokens.dtype)])  # (M, T, D)
    labels = jnp.concatenate([labels, km.labels[None]])  # (M, N)
    steps = jnp.concatenate([steps, km.steps[None]])
    converged = jnp.concatenate([converged, km.converged[None]])

    segments = jnp.asarray(segments, jnp.int32)
    present = metrics.n_used(segments, n_segments)

    def partition(t, lab):
        # the token groups' partition: coincident tokens are one segment, never split by rounding
        group, groups = dynamics.token_groups(t, cfg.merge_rel)
        return jnp.where(lab >= 0, group[jnp.clip(lab, 0, k - 1)], -1), groups

    km_part, _ = partition(km.tokens.astype(tokens.dtype), km.labels)

    def score(t, lab):
        part, groups = partition(t, lab)
        used = metrics.n_used(part, k)
        return dict(
            ari=metrics.ari(segments, part, n_true=n_segments, n_pred=k),
            fg_ari=metrics.fg_ari(segments, part, n_true=n_segments, n_pred=k),
            groups=groups,
            collapsed=groups == 1,
            merged=groups < k,
            n_used=used,
            under_used=used < jnp.minimum(present, k),
            ari_kmeans=metrics.ari(km_part, part, n_true=k, n_pred=k),
            partition=part,
        )

    out = jax.vmap(score)(tokens, labels)
    return dict(
        out,
        steps=steps,
        converged=converged,
        labels=labels,
        tokens=tokens,
        start=start,
        tau_c=tau_c,
        radius=radius,
        flat=flat,
    )


def grid_masks(masks, grid: tuple[int, int], n_segments: int) -> np.ndarray:
    """Masks (n, H, W) cut to a (rows, cols) grid by majority: each pixel goes to the cell its centre falls in
    (the image is resized to the grid's extent as a whole), and a cell takes the segment that covers most of
    its pixels (the smallest id on ties). Returns (n, rows * cols) int32 in raster order. Host NumPy."""
    masks = np.asarray(masks)
    n, h, w = masks.shape
    rows, cols = grid
    r = np.minimum(((np.arange(h) + 0.5) * rows / h).astype(np.int64), rows - 1)
    c = np.minimum(((np.arange(w) + 0.5) * cols / w).astype(np.int64), cols - 1)
    cell = (r[:, None] * cols + c[None, :]).reshape(-1)  # (H * W,)
    counts = np.zeros((n, rows * cols, n_segments), np.int64)
    flat = masks.reshape(n, -1).astype(np.int64)
    np.add.at(counts, (np.arange(n)[:, None], cell[None, :], flat), 1)
    return counts.argmax(-1).astype(np.int32)


def as_uint8(images, family=None) -> list[np.ndarray]:
    """``images`` as a list of (H, W, 3) uint8 arrays: an (n, H, W, 3) array or a list of images; floats are
    read as [0, 1] (rounded to 8 bits), PIL images converted to RGB as ``family``'s image processor converts
    them (its ``processor.as_rgb``; default Qwen2.5-VL's, :func:`tokdyn.models.qwen2_5_vl.processor.as_rgb`)."""
    if family is None:
        from tokdyn.models import families

        family = families.family("qwen2_5_vl")
    processor = family.processor

    if isinstance(images, (list, tuple)):
        items = list(images)
    else:
        arr = np.asarray(images)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"images must be an (n, H, W, 3) array or a list of images, got shape {arr.shape}")
        items = list(arr)
    if not items:
        raise ValueError("images is empty")
    out = []
    for i, image in enumerate(items):
        if not hasattr(image, "convert"):
            a = np.asarray(image)
            if a.dtype.kind == "f":
                if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
                    raise ValueError(f"images[{i}] is a float image with values outside [0, 1]")
                image = np.round(a * 255).astype(np.uint8)
        out.append(processor.as_rgb(image))
    return out


def check_masks(masks, images: list[np.ndarray]) -> tuple[np.ndarray | None, int]:
    """``masks`` as an (n, H, W) int array matching ``images`` and its number of segments (max id + 1), or
    ``(None, 1)`` for none; a ValueError naming what does not fit."""
    if masks is None:
        return None, 1
    arr = np.asarray(masks)
    if arr.ndim != 3 or arr.dtype.kind not in "iu":
        raise ValueError(f"masks must be an (n, H, W) integer array, got shape {arr.shape} dtype {arr.dtype}")
    if arr.shape[0] != len(images) or any(im.shape[:2] != arr.shape[1:] for im in images):
        sizes = sorted({im.shape[:2] for im in images})
        raise ValueError(f"masks has shape {arr.shape}; the {len(images)} images have sizes {sizes}")
    if arr.min() < 0:
        raise ValueError(f"masks must hold segment ids >= 0 (0 the background), got {arr.min()}")
    return arr.astype(np.int32), int(arr.max()) + 1


@functools.partial(jax.jit, static_argnames=("model_cfg", "cfg", "n_segments"))
def program(model_cfg, params, pixels, plan, raster, segments, key, cfg, n_segments):
    """The compiled part of :func:`perception_dynamics`: per image of ``pixels`` (N, patches, patch_dim) the
    vision tower's taps (``probes.vision_taps`` of ``model_cfg``'s family under ``plan`` and ``raster``;
    Qwen2.5-VL's :func:`tokdyn.models.qwen2_5_vl.probes.vision_taps`) and
    :func:`cluster_features` at both :data:`LEVELS` against ``segments`` (``{level: (N, cells)}``), the key of
    image i and level j ``fold_in(fold_in(key, i), j)``; vmapped over the images. ``model_cfg``, ``cfg`` and
    ``n_segments`` are static."""
    probes = family_of(model_cfg).probes

    def one(px, segs, i):
        taps = probes.vision_taps(model_cfg, params, px, plan, raster)
        ikey = jax.random.fold_in(key, i)
        return {
            level: cluster_features(jax.random.fold_in(ikey, j), taps[level], segs[level], n_segments, cfg)
            for j, level in enumerate(LEVELS)
        }

    return jax.vmap(one)(pixels, segments, jnp.arange(pixels.shape[0]))


def perception_dynamics(model, key, images, masks=None, *, cfg: Config = Config(), processor=None, size=None) -> dict:
    """Token dynamics of ``model``'s perception tokens on ``images``: :func:`cluster_features` at both
    :data:`LEVELS`, every image in one compiled program.

    Args:
      model: a checkpoint family's ``Model`` (:mod:`tokdyn.models.families`; Qwen2.5-VL's
        :class:`tokdyn.models.qwen2_5_vl.Model`), its family found by its configuration.
      key: PRNG key; image ``i`` uses ``fold_in(key, i)`` and level ``j`` of it ``fold_in(that, j)``.
      images: (n, H, W, 3) array (uint8, or floats in [0, 1] as :func:`tokdyn.data.scenes.sprite_scenes`
        draws) or a list of images (PIL or uint8 arrays; sizes may differ).
      masks: optional (n, H, W) integer segment ids, 0 the background (e.g. ``Scenes.masks``); without them
        ``ari`` and ``fg_ari`` are NaN and the rest is reported.
      cfg: the :class:`Config`.
      processor: the family's ``ImageProcessor`` (default: its defaults).
      size: (height, width) every image is resized to first, multiples of ``patch_size * merge_size``
        (default: the processor's size for the first image), so that all share one grid.

    Returns:
      ``{"names": cfg.names, "grid": {level: (rows, cols)}, "segments": {level: (n, N)}, level: {...}}`` where
      each level's dict holds :func:`cluster_features`' arrays with a leading image axis, as NumPy.
    """
    cfg = cfg.validate() if isinstance(cfg, Config) else _bad_type("cfg", cfg, "a perception.Config")
    try:
        family = family_of(getattr(model, "config", None))
    except TypeError:
        family = None
    if family is None or not isinstance(model, family.Model):
        _bad_type(
            "model", model, "a checkpoint family's Model (tokdyn.models.families; tokdyn.models.qwen2_5_vl.Model)"
        )
    images = as_uint8(images, family)
    masks, n_segments = check_masks(masks, images)
    processor = processor or family.ImageProcessor()
    factor = processor.patch_size * processor.merge_size
    if size is None:
        size = processor.target_size(*images[0].shape[:2])
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < factor or any(s % factor for s in size):
        raise ValueError(f"size must be (height, width), positive multiples of {factor}, got {size}")
    if not processor.min_pixels <= size[0] * size[1] <= processor.max_pixels:
        raise ValueError(
            f"size {size} has {size[0] * size[1]} pixels; the processor keeps [{processor.min_pixels}, "
            f"{processor.max_pixels}]"
        )
    resized = [family.processor.resize(im, *size) for im in images]
    batch = processor(resized)
    grid = batch["image_grid_thw"][:1]
    merge = model.config.vision.spatial_merge_size
    rows, cols = int(grid[0, 1]), int(grid[0, 2])
    grids = {"patches": (rows, cols), "merged": (rows // merge, cols // merge)}
    if cfg.n_tokens > grids["merged"][0] * grids["merged"][1]:
        raise ValueError(
            f"cfg.n_tokens={cfg.n_tokens} exceeds the {grids['merged'][0] * grids['merged'][1]} merged tokens of "
            f"a {size} image"
        )
    n = len(images)
    if masks is None:
        segments = {level: np.zeros((n, g[0] * g[1]), np.int32) for level, g in grids.items()}
    else:
        segments = {level: grid_masks(masks, g, n_segments) for level, g in grids.items()}
    pixels = batch["pixel_values"].reshape(n, rows * cols, -1)
    plan = family.vision.plan(model.config.vision, grid)
    raster = family.probes.raster_order(model.config, grid)
    out = program(
        model.config, model.params, jnp.asarray(pixels), plan, jnp.asarray(raster), segments, key, cfg, n_segments
    )
    out = jax.tree_util.tree_map(np.asarray, out)
    if masks is None:
        for level in LEVELS:
            for name in ("ari", "fg_ari"):
                out[level][name] = np.full_like(out[level][name], np.nan)
    return dict(out, names=cfg.names, grid=grids, segments=segments)


def _bad_type(name, value, allowed):
    raise TypeError(f"{name} must be {allowed}, got {type(value).__name__}")


def table(result: dict, *, random_model: bool = False) -> str:
    """A plain-text table of :func:`perception_dynamics`' result: per level and method, the mean over images
    of every score of :data:`SCORES`. ``random_model`` heads it with the line that says these are a random
    model's numbers, never a finding."""
    lines = []
    if random_model:
        lines.append("RANDOM MODEL: these are the numbers of random weights, not findings about a trained VLM.")
    head = f"{'level':8} {'method':18} " + " ".join(f"{s:>10}" for s in SCORES)
    lines.append(head)
    for level in LEVELS:
        for i, name in enumerate(result["names"]):
            vals = [float(np.mean(np.asarray(result[level][s])[:, i], dtype=np.float64)) for s in SCORES]
            lines.append(f"{level:8} {name:18} " + " ".join(f"{v:10.3f}" for v in vals))
    return "\n".join(lines)
