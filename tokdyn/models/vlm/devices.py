"""The rows of a batch split over devices: one program runs a batch as equal shares of rows on the devices of a
one-axis mesh (:data:`AXIS`), the parameters replicated on each.

Where the rows go is where the parameters are: :func:`replicate` puts a model's parameters on every device
given (by default ``jax.local_devices()``), once, and every later call over those parameters splits its rows
over the same devices (:func:`row_devices`): :func:`tokdyn.models.vlm.generation.generate` (each device
encodes its rows' images and generates them, ``jax.shard_map``), and the teacher-forced analyses of
:mod:`tokdyn.diagnostics.vlm`, whose batch :func:`place_rows` shards along its rows (XLA partitions the program
along them). Parameters on one device, or split over devices by a checkpoint's ``mesh`` (model parallelism),
split no rows: the call runs as before. A row's result never depends on the split: every draw is keyed by the
row's own key (its instance's), and a batch whose rows do not divide over the devices is padded by repeating
its last row (:func:`pad_rows`), the padding cut from the results.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "rows"
"""The name of the mesh axis the rows are split over."""


@functools.lru_cache(maxsize=16)
def mesh_of(devices: tuple) -> Mesh:
    """The one-axis mesh (:data:`AXIS`) over ``devices`` (a tuple of JAX devices, in order)."""
    return Mesh(np.array(devices), (AXIS,))


def replicated(devices: tuple) -> NamedSharding:
    """The sharding that puts a whole array on every device of ``devices``."""
    return NamedSharding(mesh_of(tuple(devices)), PartitionSpec())


def rows_sharding(devices: tuple, axis: int = 0) -> NamedSharding:
    """The sharding that splits an array's axis ``axis`` (its rows) in equal shares over ``devices``."""
    return NamedSharding(mesh_of(tuple(devices)), PartitionSpec(*([None] * axis), AXIS))


def check_devices(devices) -> tuple:
    """``devices`` as a tuple of distinct JAX devices of this process (``jax.local_devices()``), at least one;
    ``ValueError`` / ``TypeError`` naming ``devices`` otherwise."""
    if isinstance(devices, (str, bytes)) or not hasattr(devices, "__iter__"):
        raise TypeError(f"devices must be a sequence of JAX devices (jax.local_devices()), got {devices!r}")
    devices = tuple(devices)
    local = set(jax.local_devices())
    bad = [d for d in devices if d not in local]
    if not devices or bad or len(set(devices)) != len(devices):
        raise ValueError(
            f"devices must be distinct devices of this process, at least one (jax.local_devices(): "
            f"{list(jax.local_devices())}), got {list(devices)}"
        )
    return devices


def replicate(model, devices=None):
    """``model`` (a family's ``Model``: a dataclass with ``params``) with its parameters replicated on every
    device of ``devices`` (default ``jax.local_devices()``), so that the calls over it split their rows over
    them (:func:`row_devices`). A copy of the weights per device (on the CPU backend each host device's copy is
    in the host's memory); nothing is copied where they are so already. One device: ``model`` as it is."""
    devices = check_devices(jax.local_devices() if devices is None else devices)
    if len(devices) == 1:
        return model
    params = jax.device_put(model.params, replicated(devices))
    return dataclasses.replace(model, params=params)


def one_device(model):
    """``model`` with each parameter as its copy on the first device it is replicated on (:func:`replicate`;
    nothing is copied), for a program that does not split rows over devices: run over replicated parameters it
    would be one program over every device, which XLA:CPU's host devices can leave waiting on each other (the
    perception tower's token dynamics did). ``model`` as it is where its parameters are on one device."""
    if not row_devices(model.params):
        return model
    params = jax.tree_util.tree_map(lambda a: a.addressable_shards[0].data, model.params)
    return dataclasses.replace(model, params=params)


def row_devices(params, devices=None) -> tuple:
    """The devices a call over ``params`` splits its rows over: ``devices`` when given (the parameters are then
    put on each, :func:`replicate`'s placement); otherwise the devices every leaf of ``params`` is replicated on
    when that is one set of several (:func:`replicate`), in its mesh's order; otherwise ``()``: the rows are not
    split (parameters on one device, or split over devices by a checkpoint's mesh)."""
    if devices is not None:
        return check_devices(devices)
    found = None
    for leaf in jax.tree_util.tree_leaves(params):
        sharding = getattr(leaf, "sharding", None)
        if sharding is None or not sharding.is_fully_replicated or len(sharding.device_set) < 2:
            return ()
        if found is None:
            mesh = getattr(sharding, "mesh", None)
            found = tuple(mesh.devices.flat) if mesh is not None else tuple(sorted(sharding.device_set, key=id))
        elif set(found) != sharding.device_set:
            return ()
    return found or ()


def padded(n: int, devices) -> int:
    """``n`` rows rounded up to a multiple of the number of ``devices`` (at least one)."""
    d = max(len(devices), 1)
    return -(-n // d) * d


def pad_rows(tree, rows: int, axis: int = 0):
    """Every array of ``tree`` with its axis ``axis`` (``n`` rows) extended to ``rows`` by repeating its last
    row (NumPy arrays stay NumPy; JAX arrays, typed keys included, stay JAX). ``rows == n``: ``tree`` as it
    is."""

    def one(a):
        n = a.shape[axis]
        if n == rows:
            return a
        take = np.minimum(np.arange(rows), n - 1)
        if isinstance(a, jax.Array):  # typed keys too
            return a[(slice(None),) * axis + (jnp.asarray(take),)]
        return np.take(np.asarray(a), take, axis=axis)

    return jax.tree_util.tree_map(one, tree)


def place_rows(tree, devices, axis: int = 0):
    """Every array of ``tree`` put on ``devices`` with its axis ``axis`` split in equal shares
    (:func:`rows_sharding`) when its length divides over them; whole on each (replicated) otherwise. One
    device, or none: ``tree`` as it is."""
    devices = tuple(devices)
    if len(devices) < 2:
        return tree

    def one(a):
        if np.ndim(a) > axis and np.shape(a)[axis] % len(devices) == 0:
            return jax.device_put(a, rows_sharding(devices, axis))
        return jax.device_put(a, replicated(devices))

    return jax.tree_util.tree_map(one, tree)


__all__ = [
    "AXIS",
    "check_devices",
    "mesh_of",
    "one_device",
    "pad_rows",
    "padded",
    "place_rows",
    "replicate",
    "replicated",
    "row_devices",
    "rows_sharding",
]
