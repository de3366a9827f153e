"""Fixed-shape batches from a stream of examples: sharded over hosts, shuffled by seed, prefetched.

:func:`batches` turns a reader's stream of examples (dicts of NumPy arrays of fixed shapes, as
:func:`tokdyn.datasets.multi_object.read` yields, or the rows of
:func:`tokdyn.datasets.clevr.scene_arrays`, whose objects are padded to a maximum count with a
``present`` mask) into batches of ``batch_size`` with a ``valid`` mask for a short last batch.

Why not ``grain``: grain's deterministic, sharded shuffling reads a random-access source (a length
and an item by index), and the published files are single GZIP-compressed TFRecord streams that
have no random access short of decompressing from the start. A stream needs a streaming design:
example ``i`` of the stream belongs to process ``i % process_count`` (every process reads, and
CRC-checks, the whole file and keeps its share: the shards are disjoint and together cover every
example), then a shuffle buffer drawn from ``numpy.random.default_rng([seed, epoch,
process_index])``, so the batches are a function of the seed, the epoch and the process alone. A
background thread prepares the next ``prefetch`` batches while the caller computes; no extra
dependency.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np

_DONE = object()


def _check(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def shard(examples: Iterable, process_index: int = 0, process_count: int = 1) -> Iterator:
    """The share of ``examples`` of process ``process_index`` of ``process_count``: example ``i``
    when ``i % process_count == process_index``."""
    for i, ex in enumerate(examples):
        if i % process_count == process_index:
            yield ex


def shuffle(examples: Iterable, buffer: int, rng: np.random.Generator) -> Iterator:
    """``examples`` through a shuffle buffer of ``buffer`` slots (0 or 1: in order): once the buffer
    is full, each new example replaces a slot drawn by ``rng``, whose example is yielded; the rest
    come out in a random order at the end."""
    if buffer <= 1:
        yield from examples
        return
    slots = []
    for ex in examples:
        if len(slots) < buffer:
            slots.append(ex)
            continue
        j = int(rng.integers(buffer))
        slots[j], ex = ex, slots[j]
        yield ex
    for j in rng.permutation(len(slots)):
        yield slots[j]


def stack(examples: list, batch_size: int) -> dict:
    """``examples`` (dicts with the same keys and shapes) stacked to ``batch_size`` rows, zeros
    below the last example, and ``valid`` ``(batch_size,)`` bool marking the examples. A
    ``ValueError`` names a key whose shapes differ."""
    first = examples[0]
    out = {}
    for key in first:
        values = [np.asarray(ex[key]) for ex in examples]
        shape = values[0].shape
        for i, v in enumerate(values):
            if v.shape != shape:
                raise ValueError(
                    f"example {i} of a batch has {key!r} of shape {v.shape}, the first {shape}: batches need "
                    "fixed shapes (pad the objects to a maximum count)"
                )
        array = np.zeros((batch_size, *shape), values[0].dtype)
        array[: len(values)] = values
        out[key] = array
    out["valid"] = np.arange(batch_size) < len(examples)
    return out


def _batches(source, batch_size, seed, buffer, process_index, process_count, epochs, drop_remainder):
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch, process_index])
        pending = []
        for ex in shuffle(shard(source(), process_index, process_count), buffer, rng):
            pending.append(ex)
            if len(pending) == batch_size:
                yield stack(pending, batch_size)
                pending = []
        if pending and not drop_remainder:
            yield stack(pending, batch_size)


def batches(
    source: Callable[[], Iterable[dict]],
    batch_size: int,
    *,
    seed: int,
    shuffle_buffer: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    epochs: int = 1,
    drop_remainder: bool = True,
    prefetch: int = 2,
) -> Iterator[dict]:
    """Batches of ``batch_size`` examples of ``source``, deterministic by ``seed`` and sharded over
    processes.

    Args:
      source: called once an epoch, returns the stream of examples (dicts of arrays of fixed
        shapes), e.g. ``lambda: multi_object.read(path)``.
      batch_size: examples a batch.
      seed: the shuffle's seed (keyword only: there is no default seed).
      shuffle_buffer: slots of the shuffle buffer (0: the stream's order).
      process_index: this process's index (``jax.process_index()``).
      process_count: the number of processes (``jax.process_count()``).
      epochs: passes over the stream, each shuffled by ``(seed, epoch, process_index)``.
      drop_remainder: drop a short last batch of an epoch; else it is padded with zeros and its
        ``valid`` mask says which rows are examples.
      prefetch: batches prepared ahead by a background thread (0: none, all in the caller's thread).

    Yields:
      ``{key: (batch_size, ...) array}`` for every key of the examples, and ``valid``
      ``(batch_size,)`` bool.

    Raises:
      ValueError: a count out of range (naming it), or examples whose shapes differ. An error of
        the source (a bad CRC, a wrong feature spec) is raised in the caller's thread.
    """
    for name, value, minimum in (
        ("batch_size", batch_size, 1),
        ("shuffle_buffer", shuffle_buffer, 0),
        ("process_count", process_count, 1),
        ("epochs", epochs, 0),
        ("prefetch", prefetch, 0),
        ("seed", seed, 0),
    ):
        _check(name, value, minimum)
    _check("process_index", process_index, 0)
    if process_index >= process_count:
        raise ValueError(f"process_index must be below process_count={process_count}, got {process_index}")
    made = _batches(source, batch_size, seed, shuffle_buffer, process_index, process_count, epochs, drop_remainder)
    return made if prefetch == 0 else _prefetched(made, prefetch)


def _prefetched(made: Iterator, depth: int) -> Iterator:
    """``made``'s items, produced ``depth`` ahead by a daemon thread; its error re-raised here; the
    thread stops when the consumer closes the generator."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in made:
                if not put(("item", item)):
                    return
            put(("done", _DONE))
        except BaseException as e:  # handed to the consumer, raised there
            put(("error", e))

    thread = threading.Thread(target=work, name="tokdyn-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
