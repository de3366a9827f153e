"""Image perturbations of a batch of grid tasks, for grounding scores and mediation analyses.

Each is a pure function ``(key, batch, cfg) -> batch`` of :class:`tokdyn.data.grid_tasks.Instance`-
like records (anything with an ``image`` (B, G, G) of colour indices 0..C), vmapped over the batch
inside; only the image changes:

``blank``
    every cell empty (0)
``swap``
    another instance's image: instance i gets instance (i + 1) mod B's
``shuffle``
    the cells of each image permuted at random (colour counts kept, layout destroyed)
``resample``
    each cell replaced, with probability ``rate``, by a uniform draw from 0..C

:data:`PERTURBATIONS` registers them; :func:`perturb` applies one by name.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tokdyn import _checks
from tokdyn.data import grid_tasks as tasks


def blank(key, batch, cfg: tasks.Config, rate: float = 0.5):
    """``batch`` with every cell of every image empty (0).

    Args:
      key: unused (every perturbation has one signature).
      batch: an :class:`~tokdyn.data.grid_tasks.Instance`-like record with ``image`` (B, G, G).
      cfg: the task's :class:`~tokdyn.data.grid_tasks.Config`; unused.
      rate: unused.

    Returns:
      ``batch`` with its ``image`` replaced (same shape and dtype).

    Examples:
      >>> import dataclasses
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.diagnostics import perturb
      >>> from tokdyn.data import grid_tasks as tasks
      >>> @dataclasses.dataclass(frozen=True)
      ... class Batch:   # any record with an image (B, G, G)
      ...     image: jax.Array
      >>> batch, cfg = Batch(image=jnp.array([[[1, 2], [3, 4]], [[5, 5], [0, 0]]])), tasks.Config(grid_size=2)
      >>> perturb.blank(None, batch, cfg).image.tolist()
      [[[0, 0], [0, 0]], [[0, 0], [0, 0]]]
    """
    del key, cfg, rate
    return dataclasses.replace(batch, image=jnp.zeros_like(batch.image))


def swap(key, batch, cfg: tasks.Config, rate: float = 0.5):
    """``batch`` with instance i given instance (i + 1) mod B's image.

    Args:
      key: unused (every perturbation has one signature).
      batch: an :class:`~tokdyn.data.grid_tasks.Instance`-like record with ``image`` (B, G, G).
      cfg: the task's :class:`~tokdyn.data.grid_tasks.Config`; unused.
      rate: unused.

    Returns:
      ``batch`` with its ``image`` replaced (same shape and dtype).

    Examples:
      >>> import dataclasses
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.diagnostics import perturb
      >>> from tokdyn.data import grid_tasks as tasks
      >>> @dataclasses.dataclass(frozen=True)
      ... class Batch:   # any record with an image (B, G, G)
      ...     image: jax.Array
      >>> batch, cfg = Batch(image=jnp.array([[[1, 2], [3, 4]], [[5, 5], [0, 0]]])), tasks.Config(grid_size=2)
      >>> perturb.swap(None, batch, cfg).image.tolist()   # instance 0 gets 1's image and back
      [[[5, 5], [0, 0]], [[1, 2], [3, 4]]]
    """
    del key, cfg, rate
    return dataclasses.replace(batch, image=jnp.roll(batch.image, -1, axis=0))


def shuffle(key, batch, cfg: tasks.Config, rate: float = 0.5):
    """``batch`` with the G * G cells of each image permuted at random: colour counts kept, layout
    destroyed.

    Args:
      key: PRNG key, split into one key per instance.
      batch: an :class:`~tokdyn.data.grid_tasks.Instance`-like record with ``image`` (B, G, G).
      cfg: the task's :class:`~tokdyn.data.grid_tasks.Config` (G = ``cfg.grid_size``).
      rate: unused.

    Returns:
      ``batch`` with its ``image`` replaced (same shape and dtype).

    Examples:
      >>> import dataclasses
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.diagnostics import perturb
      >>> from tokdyn.data import grid_tasks as tasks
      >>> @dataclasses.dataclass(frozen=True)
      ... class Batch:   # any record with an image (B, G, G)
      ...     image: jax.Array
      >>> batch, cfg = Batch(image=jnp.array([[[1, 2], [3, 4]], [[5, 5], [0, 0]]])), tasks.Config(grid_size=2)
      >>> out = perturb.shuffle(jax.random.key(0), batch, cfg).image
      >>> np.sort(np.asarray(out).reshape(2, 4), axis=1).tolist()   # the same colours, moved
      [[1, 2, 3, 4], [0, 0, 5, 5]]
    """
    del rate
    b, g = batch.image.shape[0], cfg.grid_size
    keys = jax.random.split(key, b)
    flat = batch.image.reshape(b, g * g)
    image = jax.vmap(lambda k, row: jax.random.permutation(k, row))(keys, flat).reshape(batch.image.shape)
    return dataclasses.replace(batch, image=image)


def resample(key, batch, cfg: tasks.Config, rate: float = 0.5):
    """``batch`` with each cell replaced, with probability ``rate``, by a uniform draw from 0..C.

    Args:
      key: PRNG key.
      batch: an :class:`~tokdyn.data.grid_tasks.Instance`-like record with ``image`` (B, G, G)
        of colour indices (0 is empty).
      cfg: the task's :class:`~tokdyn.data.grid_tasks.Config` (C = ``cfg.n_colours``).
      rate: the share of cells redrawn, in [0, 1] (may be traced).

    Returns:
      ``batch`` with its ``image`` replaced (same shape and dtype).

    Examples:
      >>> import dataclasses
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.diagnostics import perturb
      >>> from tokdyn.data import grid_tasks as tasks
      >>> @dataclasses.dataclass(frozen=True)
      ... class Batch:   # any record with an image (B, G, G)
      ...     image: jax.Array
      >>> batch, cfg = Batch(image=jnp.array([[[1, 2], [3, 4]], [[5, 5], [0, 0]]])), tasks.Config(grid_size=2)
      >>> bool((perturb.resample(jax.random.key(0), batch, cfg, rate=0.0).image == batch.image).all())
      True
      >>> out = perturb.resample(jax.random.key(0), batch, cfg, rate=1.0).image   # every cell redrawn
      >>> out.shape, bool(((out >= 0) & (out <= cfg.n_colours)).all())
      ((2, 2, 2), True)
    """
    k1, k2 = jax.random.split(key)
    hit = jax.random.bernoulli(k1, rate, batch.image.shape)
    new = jax.random.randint(k2, batch.image.shape, 0, cfg.n_colours + 1, batch.image.dtype)
    return dataclasses.replace(batch, image=jnp.where(hit, new, batch.image))


PERTURBATIONS = {"blank": blank, "swap": swap, "shuffle": shuffle, "resample": resample}


def perturb(key, batch, cfg: tasks.Config, name: str, *, rate: float = 0.5):
    """``batch`` with its images perturbed by ``PERTURBATIONS[name]``.

    Args:
      key: PRNG key ("shuffle" and "resample" draw from it).
      batch: an :class:`~tokdyn.data.grid_tasks.Instance`-like record with ``image`` (B, G, G)
        of colour indices, G = ``cfg.grid_size``.
      cfg: the task's :class:`~tokdyn.data.grid_tasks.Config`.
      name: "blank", "swap", "shuffle" or "resample" (see the module docstring).
      rate: the share of cells "resample" redraws, in [0, 1] (may be traced).

    Returns:
      ``batch`` with its ``image`` replaced (same shape and dtype).

    Examples:
      >>> import dataclasses
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.diagnostics import perturb
      >>> from tokdyn.data import grid_tasks as tasks
      >>> @dataclasses.dataclass(frozen=True)
      ... class Batch:   # any record with an image (B, G, G)
      ...     image: jax.Array
      >>> batch, cfg = Batch(image=jnp.array([[[1, 2], [3, 4]], [[5, 5], [0, 0]]])), tasks.Config(grid_size=2)
      >>> perturb.perturb(None, batch, cfg, "swap").image.tolist()
      [[[5, 5], [0, 0]], [[1, 2], [3, 4]]]
    """
    _checks.choice("perturbation", name, PERTURBATIONS)
    _checks.real("rate", rate, low=0.0, high=1.0)
    g = cfg.grid_size
    if tuple(jnp.shape(batch.image)[1:]) != (g, g):
        raise ValueError(f"batch.image must have shape (B, {g}, {g}), got {tuple(jnp.shape(batch.image))}")
    return PERTURBATIONS[name](key, batch, cfg, rate)
