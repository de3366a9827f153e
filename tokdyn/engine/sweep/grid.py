"""Grids of conditions x seeds: :class:`Grid` (named axes x seeds with stable run indices, nothing
materialised), :func:`parse_axis` (an axis from its text form) and :func:`device_columns` (a grid's
columns in the dtypes the runs compute in)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

MAX_RUNS = 2**32 - 1  # run indices, seeds and strides are uint32 on the device (fold_in takes 32 bits)
MAX_AXIS_VALUES = 10**7  # the most values parse_axis builds for one axis (80 MB of float64)


def parse_axis(name: str, text: str) -> np.ndarray:
    """Axis values from their text form: ``"0.3,0.6,0.9"`` (a comma list), ``"linspace:a:b:n"``
    (n evenly spaced values from a to b, n at most :data:`MAX_AXIS_VALUES`) or ``"logspace:a:b:n"``
    (n values from a to b, evenly spaced in log, so a and b must be > 0). An empty value between
    commas (``"1,,2"``) and ``nan`` are refused. ``name`` is used in error messages only. An axis is a
    set of conditions: a value given twice (``"0.3,0.3"``, ``"linspace:1:1:3"``) is refused
    (``ValueError`` naming ``name`` and the value), since its runs would count as extra seeds."""
    text = text.strip()
    if text.startswith(("linspace:", "logspace:")):
        kind, *parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"axis {name!r}: {kind} takes exactly a:b:n, got {text!r}")
        try:
            a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"axis {name!r}: {kind} needs numbers a:b and an integer n, got {text!r}") from None
        if n < 1:
            raise ValueError(f"axis {name!r}: {kind} needs n >= 1 values, got n={n} in {text!r}")
        if n > MAX_AXIS_VALUES:
            raise ValueError(
                f"axis {name!r}: {text!r} asks for n={n:,} values; an axis holds at most {MAX_AXIS_VALUES:,} "
                "(every value is a condition, run for every seed): give a smaller n"
            )
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"axis {name!r}: {kind} endpoints must be finite, got {text!r}")
        if kind == "logspace" and (a <= 0 or b <= 0):
            raise ValueError(f"axis {name!r}: logspace endpoints must be > 0, got {text!r}")
        values = np.linspace(a, b, n) if kind == "linspace" else np.geomspace(a, b, n)
        try:
            _checks.distinct(name, values)
        except ValueError as e:
            raise ValueError(
                f"axis {name!r}: {text!r} gives one value several times ({e}); give endpoints that differ, or n=1"
            ) from None
        return values
    items = text.split(",")
    if any(v.strip() for v in items) and not all(v.strip() for v in items):
        raise ValueError(
            f"axis {name!r}: {text!r} has an empty value between commas (or at an end): write each value once, "
            "separated by single commas"
        )
    try:
        values = [float(v) for v in items if v.strip()]
    except ValueError:
        raise ValueError(
            f"axis {name!r}: expected a comma list, linspace:a:b:n or logspace:a:b:n, got {text!r}"
        ) from None
    if not values:
        raise ValueError(f"axis {name!r} has no values: got {text!r}")
    if any(math.isnan(v) for v in values):
        raise ValueError(f"axis {name!r}: {text!r} holds nan, which is no condition: give numbers")
    _checks.distinct(name, values)  # a repeated value would count its runs twice
    return np.asarray(values)


def _distinct_on_device(name: str, arr: np.ndarray) -> None:
    """``ValueError`` naming the axis when two of its values become one in the dtype the runs
    compute in (:func:`device_columns`: float32 or int32 with x64 off)."""
    # the dtypes of device_columns, without initialising a backend (a Grid may be built before
    # jax.distributed.initialize)
    dev = arr.astype(jax.dtypes.canonicalize_dtype(np.float64 if arr.dtype.kind == "f" else np.int64))
    if np.unique(dev).size < arr.size:
        _, first, counts = np.unique(dev, return_index=True, return_counts=True)
        i = first[np.argmax(counts > 1)]
        same = arr[dev == dev[i]].tolist()
        raise ValueError(
            f"axis {name!r} lists {same}, which are one value ({dev[i].item()!r}) in {dev.dtype}, the "
            "dtype the runs compute in: list every condition once"
        )


def _axes(axes: dict) -> dict:
    """``{name: 1-D array}`` of a :class:`Grid`'s axes, each checked for its name, shape, dtype and
    NaN (``ValueError`` / ``TypeError`` naming the axis)."""
    out = {}
    for name, values in axes.items():
        if name in Grid.RESERVED:
            raise ValueError(f"axis name {name!r} is reserved (reserved: {list(Grid.RESERVED)})")
        arr = np.asarray(values)
        if arr.ndim == 0:
            arr = arr[None]
        if arr.ndim != 1:
            raise ValueError(f"axis {name!r} must be a 1-D list of values, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"axis {name!r} has no values")
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"axis {name!r} must hold numbers, got dtype {arr.dtype}")
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            raise ValueError(
                f"axis {name!r} holds nan (at position {int(np.argmax(np.isnan(arr)))}), which is no condition: give numbers"
            )
        out[name] = arr
    return out


class Grid:
    """The product of named axes x ``seeds`` seeds, with stable run indices.

    Run ``i`` is the condition at mixed-radix position ``i`` over ``(*axes, seed)``: axes in the
    order given, the seed fastest, exactly like ``itertools.product(*axes.values(), range(seeds))``.
    Nothing is materialised: :meth:`rows` builds the columns of any index range on demand, so a
    10^8-run grid costs only its axis values.

    Args:
      seeds: the number of seeds, an int >= 1.
      seed_major: put the seed slowest instead (``product(range(seeds), *axes)``): all conditions
        of seed 0, then of seed 1, ... With common random numbers that keeps a seed's runs
        together, so a function that draws its data once per seed (see :func:`~tokdyn.engine.sweep.run`) shares each
        draw across a whole chunk however many seeds there are.
      **axes: name -> 1-D numbers (a scalar is one value). Each axis is a set of conditions: a
        value given twice (or two values that are one in the dtype the runs compute in, float32
        or int32) is refused with a ``ValueError`` naming the axis and the value (its runs would
        count as extra seeds); NaN is refused. The names ``seed`` and ``index`` are reserved. A
        grid holds at most :data:`MAX_RUNS` runs (``ValueError`` naming its size, before anything
        is allocated).

    Attributes:
      shape: ``(*axis sizes, seeds)``, whatever ``seed_major``.
      strides: the step of each entry of ``shape`` in the run index.

    >>> g = Grid(temperature=[0.5, 1.0], momentum=[0.0, 0.5], seeds=3)
    >>> len(g), g.shape
    (12, (2, 2, 3))
    >>> g[4]
    {'temperature': 0.5, 'momentum': 0.5, 'seed': 1, 'index': 4}
    >>> Grid(temperature=[0.5, 1.0], momentum=[0.0, 0.5], seeds=3, seed_major=True)[4]
    {'temperature': 0.5, 'momentum': 0.0, 'seed': 1, 'index': 4}
    """

    RESERVED = ("seed", "index")

    def __init__(self, seeds: int = 1, *, seed_major: bool = False, **axes):
        if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
            raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
        if not isinstance(seed_major, (bool, np.bool_)):
            raise TypeError(f"seed_major must be a bool, got {seed_major!r}")
        self.seeds = int(seeds)
        self.seed_major = bool(seed_major)
        self.axes = _axes(axes)
        runs = math.prod(a.size for a in self.axes.values()) * self.seeds  # Python ints: never overflow
        if runs > MAX_RUNS:
            sizes = " x ".join(f"{a.size:,}" for a in self.axes.values())
            raise ValueError(
                f"the grid would hold {runs:,} runs ({sizes}{' x ' if sizes else ''}{self.seeds:,} seeds: axes x "
                f"seeds); run indices and seeds are folded into keys as uint32, so at most {MAX_RUNS:,}: fewer "
                "seeds or values"
            )
        for name, arr in self.axes.items():
            _checks.distinct(f"axis {name!r}", arr)  # a repeated value would count its runs as extra seeds
            _distinct_on_device(name, arr)
        self.shape = tuple(a.size for a in self.axes.values()) + (self.seeds,)
        self.n_conditions = int(np.prod(self.shape[:-1], dtype=np.int64))
        # stride of each axis (and of the seed, last) in the flat run index
        inner = 1 if self.seed_major else self.seeds
        axis_strides = tuple(
            int(np.prod(self.shape[i + 1 : -1], dtype=np.int64)) * inner for i in range(len(self.shape) - 1)
        )
        self.strides = axis_strides + (self.n_conditions if self.seed_major else 1,)

    def condition(self, index):
        """The condition number (0 .. n_conditions - 1, the axes' mixed-radix position) of run
        ``index`` (int or array), in either order."""
        index = np.asarray(index, np.int64)
        return index % self.n_conditions if self.seed_major else index // self.seeds

    def __len__(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def names(self) -> tuple:
        """The axis names, in grid order (``seed`` and ``index`` are not axes)."""
        return tuple(self.axes)

    def __repr__(self) -> str:
        axes = ", ".join(f"{k}={v.tolist() if v.size <= 6 else f'<{v.size} values>'}" for k, v in self.axes.items())
        major = ", seed_major=True" if self.seed_major else ""
        return f"Grid({axes}{', ' if axes else ''}seeds={self.seeds}{major})"

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Grid)
            and self.seeds == other.seeds
            and self.names == other.names
            and self.seed_major == other.seed_major
            and all(np.array_equal(a, b) for a, b in zip(self.axes.values(), other.axes.values()))
        )

    def rows(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Columns for runs ``start..stop-1``: every axis's value, ``seed`` and ``index`` (int64)."""
        n = len(self)
        stop = n if stop is None else stop
        if not (0 <= start <= stop <= n):
            raise IndexError(f"run range [{start}, {stop}) is outside the grid's {n} runs")
        index = np.arange(start, stop, dtype=np.int64)
        out = {}
        for (name, values), stride, size in zip(self.axes.items(), self.strides, self.shape):
            out[name] = values[(index // stride) % size]
        out["seed"] = (index // self.strides[-1]) % self.seeds
        out["index"] = index
        return out

    def __getitem__(self, item):
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            if step != 1:
                raise ValueError(f"Grid slices must have step 1, got {step}")
            return self.rows(start, max(start, stop))
        i = int(item)
        if i < 0:
            i += len(self)
        row = self.rows(i, i + 1)
        return {k: v[0].item() for k, v in row.items()}

    def chunks(self, size: int, start: int = 0):
        """Yield ``(start, stop, rows)`` for consecutive chunks of at most ``size`` runs."""
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"chunk size must be an int >= 1, got {size!r}")
        n = len(self)
        for lo in range(start, n, int(size)):
            hi = min(lo + int(size), n)
            yield lo, hi, self.rows(lo, hi)

    def to_dict(self) -> dict:
        """JSON-ready description (axis values as lists); ``Grid.from_dict`` inverts it."""
        out = {"axes": {k: v.tolist() for k, v in self.axes.items()}, "seeds": self.seeds}
        if self.seed_major:  # absent: the seed fastest (every manifest written before the option)
            out["seed_major"] = True
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        """The grid a :meth:`to_dict` description holds (a description without ``seed_major``: the
        seed fastest)."""
        return cls(
            seeds=d["seeds"],
            seed_major=bool(d.get("seed_major", False)),
            **{k: np.asarray(v) for k, v in d["axes"].items()},
        )


def device_columns(rows: dict) -> dict:
    """Grid columns as the dtypes JAX computes in (x64 off: float32, int32; the index uint32)."""
    out = {}
    for k, v in rows.items():
        if k == "index":
            out[k] = v.astype(np.uint32)
        elif v.dtype.kind == "f":
            out[k] = v.astype(jnp.zeros((), float).dtype)
        else:
            out[k] = v.astype(jnp.zeros((), int).dtype)
    return out
