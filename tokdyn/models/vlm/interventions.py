"""The interventions on a latent block, in one table (:data:`TABLE`): each kind defined once, with what it
replaces, at what scale and from which source. Generation applies them while it runs
(:func:`tokdyn.models.vlm.generation.generate`'s ``intervention``), whether the block was written by the model
(generated mode) or forced after the prompt (block mode): both modes run the same kinds, so "noise" means one
perturbation across the package.

- :class:`Intervention`: the traced value generation takes, one kind per row (an index into :data:`KINDS`), so
  that instances x interventions run as one call of one program.
- :func:`intervene`: the traced rule that turns a computed latent into the one fed back; :func:`dropped`: what a
  drop kind hides from the attention of what follows the block.
- :func:`~tokdyn.models.vlm.interventions.set_sources`: the sources of ``swap`` and ``mean`` for every instance of a set from its clean run, by
  the one rule of the table (other instances of the whole set, never "the batch"), so that a result never
  depends on how the set was batched.

Keys: a row's noise is drawn from its own key (the caller gives one key per row: the instance's own index
folded into the root key, :func:`instance_keys`), then folded with the step, so permuting the rows or batching
them otherwise changes nothing.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of intervention.

    Attributes:
      name: its name.
      replaces: what of the block it changes.
      value: what each latent fed back becomes ("" for the kinds that feed it as computed).
      scale: what the value's size is relative to ("" when it has none).
      source: where the value comes from ("" when it needs nothing but the row itself).
      drops: (the block's latent slots, its two markers): what is hidden from the attention of everything
        after the block (the block itself still reads them while it is written).
    """

    name: str
    replaces: str
    value: str
    scale: str = ""
    source: str = ""
    drops: tuple[bool, bool] = (False, False)


_FED = "each latent fed back"
_AFTER = "the attention of everything after the block"
TABLE = (
    Kind("none", "nothing", "the latent as computed"),
    Kind("zeros", _FED, "zeros"),
    Kind(
        "noise",
        _FED,
        "Gaussian noise N(0, s^2 I)",
        "s = scale x the computed latent vector's own root mean square (over its hidden axis)",
        "the row's own key, folded with the step",
    ),
    Kind(
        "add_noise",
        _FED,
        "the computed latent plus that Gaussian noise",
        "as noise",
        "as noise",
    ),
    Kind("fill", _FED, "the input embedding of the latent pad token (the block's format, no content)"),
    Kind(
        "mean",
        _FED,
        "the mean of the other instances' latents at the same block and step",
        "",
        "the clean run of every other instance of the whole set that wrote that block (set_sources)",
    ),
    Kind(
        "swap",
        _FED,
        "another instance's latent at the same block and step",
        "",
        "the clean run of the next instance, in a cycle through the set's instances that wrote a block in the "
        "order of a permutation drawn from the root key (set_sources)",
    ),
    Kind("drop_slots", _AFTER, "", drops=(True, False)),
    Kind("drop_markers", _AFTER, "", drops=(False, True)),
    Kind("drop_block", _AFTER, "", drops=(True, True)),
)
"""Every kind: ``drop_slots`` hides the block's latent slots (its markers kept: "markers only"),
``drop_markers`` its two markers (the slots kept: "slots only"; the start marker from the end marker's step
on, the end marker after its own step), ``drop_block`` both ("no block"). Where a row's source holds no latent
at a block (``swap``, ``mean``: fewer ``source_blocks``), the latent is fed as computed, and the analyses count
that row nowhere."""

KINDS = tuple(k.name for k in TABLE)
"""The kinds' names, in the order of :data:`TABLE` (an :class:`Intervention`'s ``kind`` indexes it)."""
BY_NAME = {k.name: k for k in TABLE}
"""Each :class:`Kind` by its name."""
SOURCED = tuple(k.name for k in TABLE if k.source.startswith("the clean run"))
"""The kinds that take other instances' latents (``source``)."""
NOISY = ("noise", "add_noise")
"""The kinds that draw from the row's key."""
MAX_SOURCE = 1 << 28
"""The most entries an intervention's ``source`` may hold (1 GiB of float32)."""


def index(name) -> int:
    """The index of a kind in :data:`KINDS`; a ValueError naming the kinds otherwise (a bool is refused)."""
    if isinstance(name, str) and name in BY_NAME:
        return KINDS.index(name)
    if isinstance(name, (int, np.integer)) and not isinstance(name, (bool, np.bool_)) and 0 <= name < len(KINDS):
        return int(name)
    raise ValueError(f"intervention kind {name!r} is not one of {KINDS} (or an index into them)")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Intervention:
    """What is done to each row's latents while they are generated; every field is traced.

    Attributes:
      kind: (B,) int index into :data:`KINDS`.
      scale: (B,) float, the noise's scale for ``noise`` and ``add_noise`` (ignored by the other kinds).
      source: (B, K, S, hidden) the latents ``swap`` and ``mean`` feed (:func:`~tokdyn.models.vlm.interventions.set_sources`), block by block and
        step by step (S at most the latent size), or shape (B, 0, S, hidden) when unused.
      source_blocks: (B,) int, how many blocks of each row of ``source`` hold latents.
    """

    kind: jax.Array
    scale: jax.Array
    source: jax.Array
    source_blocks: jax.Array

    @classmethod
    def make(cls, kinds, batch: int, size: int, hidden: int, scale=1.0, source=None, source_blocks=None):
        """An :class:`Intervention` for ``batch`` rows from host values: ``kinds`` one name of :data:`KINDS` (or
        index) for every row, or one per row; ``scale`` a finite number >= 0 or one per row; ``source`` (B, K,
        S, hidden) finite latents with S <= ``size`` and ``source_blocks`` (B,) integers in [0, K] (default K
        each) for ``swap`` and ``mean``. ValueError/TypeError naming the argument otherwise."""
        for name, value in (("batch", batch), ("size", size), ("hidden", hidden)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        names = [kinds] if isinstance(kinds, (str, int, np.integer)) else list(kinds)
        idx = [index(k) for k in names]
        if len(idx) == 1:
            idx = idx * batch
        if len(idx) != batch:
            raise ValueError(f"intervention kinds: {len(idx)} given for a batch of {batch} rows")
        if isinstance(scale, (bool, np.bool_)) or np.asarray(scale).dtype == bool:
            raise TypeError(f"intervention scale must be a number or numbers, got {scale!r}")
        scale = np.broadcast_to(np.asarray(scale, np.float64), (batch,)) if np.ndim(scale) == 0 else scale
        scale = np.asarray(scale, np.float64)
        if scale.shape != (batch,) or not np.isfinite(scale).all() or (scale < 0).any():
            raise ValueError(f"intervention scale must be one finite number >= 0 or {batch} of them, got {scale}")
        needs_source = any(KINDS[i] in SOURCED for i in idx)
        if source is None:
            if needs_source:
                raise ValueError(f"interventions {SOURCED} need source=(B, K, S, hidden) latents (set_sources)")
            source = np.zeros((batch, 0, 1, hidden), np.float32)
        shape = tuple(np.shape(source))
        if len(shape) != 4 or shape[0] != batch or shape[3] != hidden or not 1 <= shape[2] <= size:
            raise ValueError(
                f"intervention source must be ({batch}, K, S, {hidden}) with 1 <= S <= {size} latent steps, "
                f"got shape {shape}"
            )
        if int(np.prod(shape)) > MAX_SOURCE:
            raise ValueError(f"intervention source of shape {shape} holds more than {MAX_SOURCE:,} entries")
        source = np.asarray(source, np.float32)
        if not np.isfinite(source).all():
            bad = np.argwhere(~np.isfinite(source))[0].tolist()
            raise ValueError(f"intervention source must be finite latents, got {source[tuple(bad)]} at {bad}")
        if source_blocks is None:
            source_blocks = np.full((batch,), shape[1], np.int64)
        blocks = np.asarray(source_blocks)
        if blocks.dtype == bool or not np.issubdtype(blocks.dtype, np.integer):
            raise TypeError(f"source_blocks must be integer counts, got {blocks.dtype}: {source_blocks!r}")
        if blocks.shape != (batch,) or (blocks < 0).any() or (blocks > shape[1]).any():
            raise ValueError(f"source_blocks must be {batch} counts in [0, {shape[1]}], got {blocks}")
        return cls(
            jax.device_put(np.asarray(idx, np.int32)),  # converted in NumPy: no program compiled for them
            jax.device_put(np.asarray(scale, np.float32)),
            jax.device_put(source),
            jax.device_put(np.asarray(blocks, np.int32)),
        )


def check(iv, batch: int, size: int, hidden: int) -> None:
    """ValueError/TypeError unless ``iv`` is an :class:`Intervention` of ``batch`` rows whose source fits latents
    of ``size`` steps x ``hidden``."""
    if not isinstance(iv, Intervention):
        raise TypeError(f"intervention must be an Intervention (Intervention.make), got {type(iv).__name__}")
    for name in ("kind", "scale", "source_blocks"):
        if tuple(np.shape(getattr(iv, name))) != (batch,):
            raise ValueError(f"intervention.{name} must have shape ({batch},), got {np.shape(getattr(iv, name))}")
    src = tuple(np.shape(iv.source))
    if len(src) != 4 or src[0] != batch or src[3] != hidden or not 1 <= src[2] <= size:
        raise ValueError(f"intervention.source must be ({batch}, K, S, {hidden}) with 1 <= S <= {size}, got {src}")


def dropped(kind: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Whether each row's ``kind`` (B,) hides its blocks' latent slots, and their markers, from the attention
    of what follows them (:attr:`Kind.drops`): two (B,) bools."""
    parts = jnp.asarray(np.asarray([k.drops for k in TABLE], bool))[kind]
    return parts[..., 0], parts[..., 1]


def rms(x: jax.Array) -> jax.Array:
    """The root mean square of ``x`` (..., hidden) over its last axis, in float32: (..., 1)."""
    return jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))


def intervene(iv: Intervention, latent: jax.Array, block: jax.Array, step: jax.Array, keys, fill) -> jax.Array:
    """The latent fed back in place of ``latent`` (B, hidden), the one computed at step ``step`` (B,) of block
    ``block`` (B,) of each row, under each row's intervention (:data:`TABLE`); ``keys`` (B,) the rows' noise
    keys for this step, ``fill`` (hidden,) the latent pad token's input embedding. Traced."""
    b, d = latent.shape
    x = latent.astype(jnp.float32)
    noise = jax.vmap(lambda k: jax.random.normal(k, (d,), jnp.float32))(keys) * rms(x) * iv.scale[:, None]
    sourced = x
    n_src, span = iv.source.shape[1], iv.source.shape[2]
    if n_src:
        kb = jnp.clip(block, 0, n_src - 1)
        got = iv.source[jnp.arange(b), kb, jnp.clip(step, 0, span - 1)].astype(jnp.float32)  # (B, hidden)
        sourced = jnp.where(((block < iv.source_blocks) & (step < span))[:, None], got, x)
    values = {
        "none": x,
        "zeros": jnp.zeros_like(x),
        "noise": noise,
        "add_noise": x + noise,
        "fill": jnp.broadcast_to(fill.astype(jnp.float32), x.shape),
        "mean": sourced,
        "swap": sourced,
    }
    options = jnp.stack([values.get(k, x) for k in KINDS])  # (kinds, B, hidden); the drop kinds feed x
    return options[iv.kind, jnp.arange(b)].astype(latent.dtype)


def instance_keys(key, index) -> jax.Array:
    """(B,) keys of the instances ``index`` (B,) (their ids in the whole set): ``fold_in(key, id)``, so that a
    row's draws depend on the instance, never on its row in a batch."""
    ids = np.asarray(index)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
        raise ValueError(f"index must be (B,) instance ids >= 0, got {index!r}")
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(ids, jnp.uint32))


def swap_partners(key, has_block) -> np.ndarray:
    """(N,) the instance whose clean latents each of N instances gets under ``swap``: a cycle through the
    instances with ``has_block`` True in the order of ``jax.random.permutation(key, N)`` (each gets the next
    one's); -1 for an instance without a block and for the only one with a block (no other instance)."""
    has = np.asarray(has_block, bool)
    order = np.asarray(jax.random.permutation(key, len(has)))
    cycle = order[has[order]]
    out = np.full(len(has), -1, np.int64)
    if len(cycle) > 1:
        out[cycle] = np.roll(cycle, -1)
    return out


@dataclasses.dataclass(frozen=True)
class Sources:
    """The ``swap`` and ``mean`` sources of a set's instances (host arrays), from :func:`~tokdyn.models.vlm.interventions.set_sources`.

    Attributes:
      partner: (N,) the instance each one swaps in (-1: none).
      total: (K, S, hidden) float64 the sum of the clean latents of every instance that wrote block k.
      count: (K,) how many instances wrote block k.
    """

    partner: np.ndarray
    total: np.ndarray
    count: np.ndarray

    def mean_of_others(self, latents, blocks) -> tuple[np.ndarray, np.ndarray]:
        """For instances whose clean ``latents`` (B, K', S, hidden) and written ``blocks`` (B,) are given: the
        mean of the OTHER instances' latents at each block and step, (B, K, S, hidden) float32, and how many
        leading blocks of each row have at least one other instance (B,)."""
        lat = np.asarray(latents, np.float64)
        b, k = len(lat), self.total.shape[0]
        own = np.zeros((b,) + self.total.shape)
        kk = min(k, lat.shape[1])
        wrote = np.arange(k)[None, :] < np.asarray(blocks)[:, None]  # (B, K)
        own[:, :kk] = np.where(wrote[:, :kk, None, None], lat[:, :kk, : self.total.shape[1]], 0.0)
        others = self.count[None, :] - wrote  # (B, K)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (self.total[None] - own) / np.maximum(others, 1)[:, :, None, None]
        usable = others > 0
        leading = np.where(usable.all(1), k, np.argmin(usable, axis=1))
        return mean.astype(np.float32), leading.astype(np.int64)


def set_sources(key, latents, blocks) -> Sources:
    """The sources of ``swap`` and ``mean`` (:data:`TABLE`) of a set of N instances from their clean runs'
    ``latents`` (N, K, S, hidden) and written ``blocks`` (N,) (a block cut by the token limit does not count as
    written): the swap partners (:func:`swap_partners` with ``key``) and the per-block sums and counts the
    mean of the others is taken from (:meth:`Sources.mean_of_others`). Host arrays; a study that streams its
    set in batches adds the sums of each batch (:func:`accumulate`)."""
    lat = np.asarray(latents, np.float64)
    blocks = np.asarray(blocks)
    wrote = np.arange(lat.shape[1])[None, :] < blocks[:, None]
    total = np.einsum("nk,nksd->ksd", wrote.astype(np.float64), lat)
    return Sources(swap_partners(key, blocks > 0), total, wrote.sum(0))


def accumulate(total, count, latents, blocks) -> tuple[np.ndarray, np.ndarray]:
    """``(total, count)`` (K, S, hidden), (K,) with a batch's clean ``latents`` (B, K', S, hidden) and written
    ``blocks`` (B,) added (K grows to the most blocks seen; ``total`` None starts the sums)."""
    lat = np.asarray(latents, np.float64)
    blocks = np.asarray(blocks)
    k = max(lat.shape[1], 0 if total is None else total.shape[0])
    if total is None:
        total, count = np.zeros((k,) + lat.shape[2:]), np.zeros(k, np.int64)
    grow = lambda a: np.pad(a, [(0, k - a.shape[0])] + [(0, 0)] * (a.ndim - 1))  # noqa: E731
    total, count, lat = grow(total), grow(count), np.pad(lat, [(0, 0), (0, k - lat.shape[1]), (0, 0), (0, 0)])
    wrote = np.arange(k)[None, :] < blocks[:, None]
    return total + np.einsum("bk,bksd->ksd", wrote.astype(np.float64), lat), count + wrote.sum(0)


__all__ = [
    "BY_NAME",
    "Intervention",
    "KINDS",
    "Kind",
    "NOISY",
    "SOURCED",
    "Sources",
    "TABLE",
    "accumulate",
    "check",
    "dropped",
    "index",
    "instance_keys",
    "intervene",
    "rms",
    "set_sources",
    "swap_partners",
]
