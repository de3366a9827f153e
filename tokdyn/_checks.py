"""Argument validation shared by every module, and the decorator that puts it in front of a kernel.

The public functions of tokdyn are the traced kernels themselves: pure, jitted, callable inside a
user's own ``jit``/``vmap``/``scan``/``shard_map``. In front of each sits a thin check
(:func:`checked_jit`) that runs in plain Python before JAX traces or compiles anything:

* shapes, dtypes and static arguments are always checked (they are known even for tracers);
* *values* are checked only when they are host data -- Python numbers and NumPy arrays, where
  looking costs nothing. Values held in JAX arrays (device buffers, or tracers inside a user's
  ``jit``) are never inspected: that would copy them to the host on every call.

Every error is a ``ValueError``/``TypeError`` that names the argument, the value and what is
allowed.

A kernel whose point axis may be padded (it takes a ``mask``, or pads with a neutral value) can
declare :class:`Buckets` on its decorator: an eager call on host arrays (NumPy, Python) then pads
that axis to one of a few lengths (:func:`bucket_size`: powers of two from 32), so that calls on
labelings or point sets of many lengths compile a few programs, not one a length. JAX arrays and
tracers are passed as they are.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable
from numbers import Integral
from typing import Any

import jax
import numpy as np


def is_traced(value) -> bool:
    """True when some leaf of ``value`` is a tracer (we are inside a user's ``jit``/``vmap``)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def on_host(value) -> bool:
    """True when every leaf of ``value`` is host data (Python numbers, NumPy arrays): its values
    can be checked for free. False for JAX arrays and tracers."""
    return not any(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(value))


BUCKET_FLOOR = 32  # the shortest padded length
BUCKET_LIMIT = 2**22  # longer point axes are not padded (padding may double an array's memory)


def bucket_size(n: int) -> int:
    """The length an eager call on host arrays of ``n`` points is padded to: the least power of two
    ``>= max(n, 32)``, or ``n`` itself past ``2**22`` (4,194,304) points. Lengths 10 to 10,000
    fall in 10 buckets (32 ... 16,384); padding at most doubles the work."""
    n = int(n)
    if n > BUCKET_LIMIT:
        return n
    return max(BUCKET_FLOOR, 1 << max(n - 1, 0).bit_length())


@dataclasses.dataclass(frozen=True)
class Buckets:
    """How :func:`checked_jit` pads the point axis of an eager call on host arrays to a few
    lengths (:func:`bucket_size`), so that calls on many lengths compile a few programs.

    The call is padded only when no argument is a tracer (an eager call, not one inside a user's
    ``jit``/``vmap``), every argument named in ``points`` (and the mask) is host data (NumPy
    arrays, Python numbers: no JAX array), and ``when`` (if given) says so.
    Padded entries must count for nothing: the kernel gets a ``mask`` that is False on them (made
    all True on the real entries when the caller gave none), or, without a mask argument, a
    ``fill`` value that the kernel leaves out (the background id 0 of a scene). Results equal the
    unpadded call's up to float rounding (a different program sums in another order).

    Attributes:
      points: names of the arguments whose axis ``axis`` is the point axis.
      mask: name of the kernel's ``(..., N)`` boolean mask argument (padded with False, made when
        ``None``), or ``None`` when the fill values alone make padded entries neutral.
      axis: the point axis of every argument in ``points`` and of the mask.
      flatten: ravel the ``points`` arguments first (ids of any shape, e.g. ``(H, W)`` images).
      fill: ``{name: value}`` the padded entries of an argument hold (default 0).
      when: optional ``fn(arguments) -> bool`` over the checked arguments by name: pad only if True.
      trim: optional ``fn(result, n) -> result`` that cuts outputs with a point axis back to ``n``.
    """

    points: tuple[str, ...]
    mask: str | None = None
    axis: int = 0
    flatten: bool = False
    fill: dict = dataclasses.field(default_factory=dict)
    when: Callable[[dict], bool] | None = None
    trim: Callable[[Any, int], Any] | None = None

    def pad(self, arguments: dict) -> int | None:
        """Pad ``arguments`` (a dict by name, changed in place) when the call qualifies; returns the
        unpadded length, or ``None`` (arguments left as they are)."""
        names = self.points + ((self.mask,) if self.mask is not None else ())
        if not all(on_host(arguments[name]) for name in names):
            return None
        if self.when is not None and not self.when(arguments):
            return None
        arrays = {name: np.asarray(arguments[name]) for name in self.points}
        if self.flatten:
            arrays = {name: a.ravel() for name, a in arrays.items()}
        n = arrays[self.points[0]].shape[self.axis]
        size = bucket_size(n)
        if size == n and self.mask is None:
            return None
        if any(a.shape[self.axis] != n for a in arrays.values()):  # the kernel's check names it
            return None

        def padded(a, value):
            width = [(0, 0)] * a.ndim
            width[self.axis] = (0, size - n)
            return np.pad(a, width, constant_values=value)

        for name, a in arrays.items():
            arguments[name] = padded(a, self.fill.get(name, 0))
        if self.mask is not None:
            mask = arguments[self.mask]
            if mask is None:
                shape = list(arrays[self.points[0]].shape[: self.axis + 1])
                mask = np.ones(shape, bool)
            arguments[self.mask] = padded(np.asarray(mask), False)
        return n


def checked_jit(check=None, *, static_argnames=(), buckets: Buckets | None = None, host=None):
    """Decorator: ``fn`` becomes ``jax.jit(fn, static_argnames=...)`` with ``check`` run first.

    ``check`` receives every argument by name (defaults filled in) and raises on bad input; it
    may return a dict of arguments to replace (normalised forms, e.g. a resolved default). It runs
    on every call from Python and once per trace inside a user's transformation, so it must only
    look at shapes, dtypes, static arguments and host values (see the module docstring).
    ``buckets``: optional :class:`Buckets`; after the check, an eager call on host arrays has its
    point axis padded to :func:`bucket_size` (results as unpadded; one program a bucket).
    ``host``: optional ``fn(arguments) -> result or None``, the same numbers computed on the host
    (NumPy) where the work is small: called after the check with every argument by name, on eager
    calls only (no argument a tracer); ``None`` hands the call on to the kernel. It must return
    only for host data (no JAX array).
    The undecorated function stays reachable as ``fn.__wrapped__`` for reading, not for calling;
    ``fn.jitted`` is the jitted function without the check, the host form and the padding.
    """

    def wrap(fn):
        jitted = jax.jit(fn, static_argnames=static_argnames)
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if check is None and buckets is None and host is None:
                return jitted(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if check is not None:
                changed = check(**bound.arguments)
                if changed:
                    bound.arguments.update(changed)
            if is_traced(bound.arguments):  # inside a user's transformation: the kernel as it is
                return jitted(*bound.args, **bound.kwargs)
            if host is not None:
                result = host(bound.arguments)
                if result is not None:
                    return result
            n = None if buckets is None else buckets.pad(bound.arguments)
            result = jitted(*bound.args, **bound.kwargs)
            if n is not None and buckets.trim is not None:
                result = buckets.trim(result, n)
            return result

        call.jitted = jitted
        call.buckets = buckets
        call.host = host
        return call

    return wrap


def dtype_of(value) -> np.dtype:
    """The dtype of an array, tracer, NumPy value or Python number (without copying data)."""
    dtype = getattr(value, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.asarray(value).dtype


def host_arrays(**values) -> dict:
    """The values given as Python lists or tuples, as NumPy arrays (so a kernel receives one array,
    not a pytree of scalars); others are left out. Return it from a check to pass the arrays on."""
    return {k: np.asarray(v) for k, v in values.items() if isinstance(v, (list, tuple))}


def _describe(value) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(arr.item())
    return f"array of shape {arr.shape} (first values {arr.ravel()[:3].tolist()})"


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` when it is an integer (not a bool) ``>= minimum``; ``TypeError`` /
    ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


MAX_SEED = 2**32 - 1  # jax.random.key keeps the low 32 bits of a larger seed: two seeds would alias


def seed(name: str, value) -> int:
    """A root PRNG seed: an int in ``[0, 2**32 - 1]`` (a PRNG key keeps 32 bits of it, so a larger
    seed would silently repeat a smaller one's draws)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int in [0, {MAX_SEED}], got {value!r} of type {type(value).__name__}")
    if not 0 <= value <= MAX_SEED:
        raise ValueError(
            f"{name} must be an int in [0, {MAX_SEED}] (a PRNG key keeps 32 bits of it: a larger seed "
            f"would repeat a smaller one's draws), got {value!r}"
        )
    return int(value)


def _interval(low, high, low_open, high_open) -> str:
    return (
        ("(" if low_open else "[")
        + ("-inf" if low is None else f"{low:g}")
        + ", "
        + ("inf" if high is None else f"{high:g}")
        + (")" if high_open else "]")
    )


def real(name: str, value, *, low=None, high=None, low_open=False, high_open=False):
    """Check a scalar or array of reals against an interval, if it is host data."""
    if not on_host(value):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real number, got {value!r}")
    interval = _interval(low, high, low_open, high_open)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite and in {interval}, got {_describe(value)}")
    bad = np.zeros(arr.shape, bool)
    if low is not None:
        bad |= (arr <= low) if low_open else (arr < low)
    if high is not None:
        bad |= (arr >= high) if high_open else (arr > high)
    if bad.any():
        shown = arr[bad].ravel()[0].item()
        where = "" if arr.ndim == 0 else f" (offending entry {shown!r})"
        raise ValueError(f"{name} must be in {interval}, got {_describe(value)}{where}")
    return value


def whole(name: str, value, meaning: str):
    """Check that a real (host) value is a whole number; ``meaning`` says what it counts."""
    if on_host(value):
        arr = np.asarray(value)
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be a whole number ({meaning}), got {value!r}")
    return value


def finite_array(name: str, value, *, ndim=None):
    """Check an array's rank (always) and that it is real and finite (host data only)."""
    if ndim is not None and np.ndim(value) not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {np.shape(value)}")
    dtype = dtype_of(value)
    if dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real-valued array, got dtype {dtype}")
    if on_host(value) and dtype.kind == "f":
        arr = np.asarray(value)
        if not np.all(np.isfinite(arr)):
            n_bad = int(np.size(arr) - np.isfinite(arr).sum())
            raise ValueError(f"{name} must be finite: it holds {n_bad} NaN or infinite value(s)")
    return value


MAX_ELEMENTS = 2**31 - 1  # XLA indexes an array's elements with 32-bit integers on many paths


def elements_fit(what: str, sizes: dict, count: int | None = None) -> int:
    """Check that an array made from the arguments ``sizes`` (``{name: value}``) fits XLA's 32-bit
    element indexing (past it the process aborts once the array is made, instead of raising): a
    ``ValueError`` naming every argument with its value, the element count and the limit. ``what``
    names the array (``"the tokens (n_tokens, dim)"``); ``count``: its element count, where it is
    not the product of ``sizes``. Returns the element count."""
    n = 1
    for v in sizes.values():
        n *= int(v)
    n = n if count is None else int(count)
    if n > MAX_ELEMENTS:
        named = [f"{k}={int(v)}" for k, v in sizes.items()]
        names = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
        raise ValueError(
            f"{names} make {what} an array of {n:,} elements, more than the {MAX_ELEMENTS:,} (2**31 - 1) "
            f"one array may hold (XLA indexes elements with 32-bit integers): make "
            f"{'it' if len(sizes) == 1 else 'them'} smaller"
        )
    return n


def available_memory() -> tuple[int, str]:
    """``(bytes, where)``: the memory available to a new allocation on JAX's first local device
    (``bytes_limit - bytes_in_use`` of its ``memory_stats()``), or, on the CPU backend and where
    the device reports no statistics, the host's (``MemAvailable`` of ``/proc/meminfo``, else the
    physical memory); ``where`` names it for a message. A host function."""
    device = jax.local_devices()[0]
    if getattr(device, "platform", "cpu") != "cpu":
        try:
            stats = device.memory_stats() or {}
        except (AttributeError, NotImplementedError, RuntimeError):
            stats = {}
        if stats.get("bytes_limit"):
            free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
            return max(0, free), f"free on the device {device.platform}:{device.id}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available on the host (MemAvailable)"
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "of the host's physical memory"
    except (ValueError, OSError, AttributeError):
        return 2**62, "(unknown)"


def gib(n: float) -> str:
    """``n`` bytes in GiB, for messages (``"12.3 GiB"``)."""
    return f"{n / 2**30:,.1f} GiB"


def choice(name: str, value, allowed) -> str:
    """``value`` when it is one of ``allowed``; ``ValueError`` naming ``name`` and the choices
    otherwise."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


def mask_for(name: str, mask, n: int):
    """Check an optional (n,) boolean mask (shape and dtype; always)."""
    if mask is None:
        return None
    if np.shape(mask) != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one entry per point), got {np.shape(mask)}")
    dtype = dtype_of(mask)
    if dtype != np.bool_:
        raise TypeError(f"{name} must be boolean, got dtype {dtype}")
    return mask


def prng_key(name: str, key):
    """Check that ``key`` is a PRNG key (new-style ``jax.random.key`` or a raw uint32 (2,) key)."""
    dtype = getattr(key, "dtype", None)
    if dtype is None or not (
        jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or (dtype == np.uint32 and np.shape(key)[-1:] == (2,))
    ):
        raise TypeError(
            f"{name} must be a PRNG key (jax.random.key(seed)), got {type(key).__name__}"
            + (f" of dtype {dtype}" if dtype is not None else "")
        )
    return key


def distinct(name: str, values) -> tuple:
    """Check that a list of conditions holds each value once (a repeated value would count its
    runs twice: more runs per condition than seeds, and statistics that look stronger than they
    are); returns ``values`` as a tuple. ``ValueError`` naming ``name`` and the first repeated
    value. Values are compared as they are given (``0.3`` and ``0.30`` are one value)."""
    seen, out = set(), tuple(np.asarray(values).tolist()) if isinstance(values, np.ndarray) else tuple(values)
    for v in out:
        k = tuple(v) if isinstance(v, list) else v
        if k in seen:
            raise ValueError(
                f"{name} lists {v!r} more than once ({list(out)[:8]}{' ...' if len(out) > 8 else ''}): "
                "each value is one condition, so list every value once (seeds set the repeats)"
            )
        seen.add(k)
    return out


def interval_pair(name: str, value, *, low=0.0, high=1.0, low_open: bool = False):
    """Check a ``(low, high)`` pair: shape (2,) always; when host data, both ends in ``[low, high]``
    (``(low, high]`` with ``low_open``) and in order (first <= second)."""
    if np.shape(value) != (2,):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    real(name, value, low=low, high=high, low_open=low_open)
    if on_host(value):
        lo, hi = (float(x) for x in np.asarray(value))
        if lo > hi:
            raise ValueError(f"{name} must be a pair (low, high) with low <= high, got {value!r}")
    return value


def start_index(name: str, value, what: str):
    """Check the index of a batch's first item (an integer scalar >= 0, may be traced); ``what``
    names the item (``"scene"``)."""
    if np.ndim(value) != 0 or dtype_of(value).kind not in "iu":
        raise TypeError(f"{name} must be an integer scalar (the index of the first {what}), got {value!r}")
    if on_host(value) and int(value) < 0:
        raise ValueError(f"{name} must be >= 0 (the index of the first {what}), got {value!r}")
    return value
