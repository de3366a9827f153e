"""The ``apply`` protocol of the latent-reasoner diagnostics, and the one check of it.

A model the diagnostics can probe is a function of the type
:class:`tokdyn.models.latent.model.ApplyFn` (re-exported here)::

    apply(params, batch, *, latents=None, intervene=None[, drop=None][, inject=None]) -> Outputs

returning :class:`tokdyn.models.latent.model.Outputs`: ``logits`` (B, T, V), ``hidden``
(B, n_layers + 1, T, D) with ``hidden[:, 0]`` the input embeddings, ``attention``
(B, n_layers, H, T, T), ``latents`` (B, L, D).

:func:`check_apply` is the check every public diagnostic that takes a model runs at its entry. It
traces the model once with :func:`jax.eval_shape` (abstract values only: no device work, no
compile), calling ``apply_fn(params, batch)`` and each keyword the diagnostic will use, and raises a
``ValueError``/``TypeError`` that names what is wrong: an output of another layout (ranks and
shapes against the batch and the protocol), ``intervene`` not called on (B, T, D) input
embeddings, a keyword the model does not take, positions outside [0, T), a layer outside the
hidden states, a missing or misshapen argument. Inside a user's ``jit``/``vmap`` it runs once per
trace, on the traced shapes; the model's trace is cached per (``apply_fn``, shapes of ``params``
and ``batch``, keywords), so repeated eager calls trace the model once.
"""

from __future__ import annotations

import collections
from typing import Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.models.latent.model import ApplyFn, Outputs

__all__ = ["ApplyFn", "Outputs", "Dims", "KEYWORDS", "check_apply", "as_positions"]

KEYWORDS = ("latents", "intervene", "drop", "inject")
FIELDS = Outputs._fields  # ("logits", "hidden", "attention", "latents")
_PROTOCOL = "apply(params, batch, *, latents=None, intervene=None) -> Outputs (tokdyn.models.latent.model.ApplyFn)"


class Dims(NamedTuple):
    """The sizes of a model's outputs on a batch: B, T, V, n_layers, H, D and L."""

    batch: int
    length: int
    vocab: int
    layers: int
    heads: int
    width: int
    latents: int


def as_positions(name: str, value, length: Optional[int] = None) -> tuple:
    """``value`` (an int or ints) as a tuple of ints, each in [0, ``length``) when given."""
    try:
        out = tuple(int(p) for p in np.atleast_1d(np.asarray(value)).ravel())
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be sequence positions (Python ints: static), got {value!r}") from None
    if length is not None and any(not 0 <= p < length for p in out):
        raise ValueError(f"{name} must name positions in [0, {length}) (the sequence length T), "
                         f"got {list(out) if np.ndim(value) else out[0]}")
    return out


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(jnp.shape(x)), str(_checks.dtype_of(x))) for x in leaves)


def _leading(batch) -> Optional[int]:
    """The leading axis every leaf of ``batch`` shares (None when they do not share one)."""
    sizes = {jnp.shape(x)[0] if len(jnp.shape(x)) else None for x in jax.tree_util.tree_leaves(batch)}
    return sizes.pop() if len(sizes) == 1 else None


def _call_text(combo) -> str:
    return "apply_fn(params, batch" + "".join(f", {k}=..." for k in combo) + ")"


def _layout(out, b_batch: Optional[int], what: str) -> Dims:
    """The dims of one output, after checking it against the protocol."""
    missing = [f for f in FIELDS if not hasattr(out, f)]
    if missing:
        raise TypeError(f"{what} must return Outputs(logits, hidden, attention, latents) "
                        f"(tokdyn.models.latent.model.Outputs), got {type(out).__name__} without {missing}")
    for f in FIELDS:
        v = getattr(out, f)
        if not (hasattr(v, "shape") and hasattr(v, "dtype")):
            raise TypeError(f"{what}.{f} must be an array, got {type(v).__name__}")
        if not jnp.issubdtype(v.dtype, jnp.floating):
            raise TypeError(f"{what}.{f} must be floating-point, got dtype {v.dtype}")
    lg, hd, at, lt = (tuple(getattr(out, f).shape) for f in FIELDS)
    if len(lg) != 3:
        raise ValueError(f"{what}.logits must be (B, T, V), got shape {lg}")
    b, t, v = lg
    if b_batch is not None and b != b_batch:
        raise ValueError(f"{what}.logits must be (B, T, V) with B = {b_batch} (the batch's leading axis), "
                         f"got shape {lg}")
    if len(hd) != 4 or hd[0] != b or hd[2] != t or hd[1] < 2:
        raise ValueError(f"{what}.hidden must be (B, n_layers + 1, T, D) = ({b}, n_layers + 1 >= 2, {t}, D) "
                         f"with hidden[:, 0] the input embeddings (B and T those of the logits {lg}), got shape {hd}")
    n, d = hd[1] - 1, hd[3]
    if len(at) != 5 or at[0] != b or at[1] != n or at[3] != t or at[4] != t:
        raise ValueError(f"{what}.attention must be (B, n_layers, H, T, T) = ({b}, {n}, H, {t}, {t}) "
                         f"(n_layers from hidden {hd}), got shape {at}")
    if len(lt) != 3 or lt[0] != b or lt[2] != d:
        raise ValueError(f"{what}.latents must be (B, L, D) = ({b}, L, {d}) (D from hidden {hd}; L = 0 for a "
                         f"model without latents), got shape {lt}")
    return Dims(b, t, v, n, at[2], d, lt[1])


def _apply(apply_fn, params, batch, kwargs: dict, what: str):
    try:
        return apply_fn(params, batch, **kwargs)
    except TypeError as e:
        if kwargs and "keyword" in str(e):
            raise TypeError(f"apply_fn must take {', '.join(f'{k}=' for k in kwargs)} for this diagnostic "
                            f"(the protocol {_PROTOCOL}); {what} raised: {e}") from e
        e.add_note(f"(raised by {what} while tokdyn.diagnostics checked the apply protocol with jax.eval_shape)")
        raise
    except Exception as e:
        e.add_note(f"(raised by {what} while tokdyn.diagnostics checked the apply protocol with jax.eval_shape)")
        raise


def _probe(apply_fn, params, batch, calls: tuple, n_inject: int, need_latents: str) -> Dims:
    """Trace the model (``jax.eval_shape``) on ``batch`` and on each keyword combination of
    ``calls``; the dims of its outputs."""
    found, b_batch = [], _leading(batch)

    def run(p, x):
        out = _apply(apply_fn, p, x, {}, "apply_fn(params, batch)")
        base = _layout(out, b_batch, "apply_fn(params, batch)")
        found.append(base)
        if need_latents and base.latents == 0:
            raise ValueError(f"apply_fn(params, batch).latents must be (B, L, D) with L >= 1 for {need_latents}, "
                             f"got L = 0 (a model without latents)")
        for combo in calls:
            seen = []

            def record(z):
                seen.append(tuple(jnp.shape(z)))
                return z

            kw = {"latents": lambda: jnp.zeros(out.latents.shape, out.latents.dtype),
                  "intervene": lambda: record,
                  "drop": lambda: jnp.zeros((base.batch, base.length), bool),
                  "inject": lambda: jnp.zeros((base.batch, n_inject), bool)}
            what = _call_text(combo)
            got = _layout(_apply(apply_fn, p, x, {k: kw[k]() for k in combo}, what), b_batch, what)
            if got != base:
                raise ValueError(f"{what} must return the shapes of apply_fn(params, batch) {base}, got {got}")
            want = (base.batch, base.length, base.width)
            if "intervene" in combo and (not seen or any(s != want for s in seen)):
                raise ValueError(f"apply_fn must call intervene on the input embeddings (B, T, D) = {want} (those "
                                 f"of hidden[:, 0]), got calls on {seen or 'nothing (never called)'}")

    jax.eval_shape(run, params, batch)
    return found[0]


_CACHE: "collections.OrderedDict" = collections.OrderedDict()
_CACHE_SIZE = 64


def _dims(apply_fn, params, batch, calls, n_inject, need_latents) -> Dims:
    try:
        key = (apply_fn, _signature(params), _signature(batch), calls, n_inject, need_latents)
        hash(key)
    except TypeError:  # an unhashable apply_fn: trace it every time
        return _probe(apply_fn, params, batch, calls, n_inject, need_latents)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    dims = _probe(apply_fn, params, batch, calls, n_inject, need_latents)
    _CACHE[key] = dims
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return dims


def _calls(uses) -> tuple:
    out = []
    for combo in uses:
        combo = (combo,) if isinstance(combo, str) else tuple(combo)
        for k in combo:
            _checks.choice("uses", k, KEYWORDS)
        out.append(combo)
    return tuple(out)


def check_apply(apply_fn, params, batch, *, uses: Sequence = (), n_inject: int = 0,
                positions: Optional[Mapping] = None, layer: Optional[int] = None, length: Optional[int] = None,
                need_latents: str = "", arrays: Optional[Mapping] = None, batches: Optional[Mapping] = None) -> Dims:
    """Check that ``apply_fn`` implements the protocol on ``params`` and ``batch`` and that a
    diagnostic's arguments fit it, before anything runs; returns the :class:`Dims` of its outputs.

    Args:
      apply_fn: the model (:class:`ApplyFn`).
      params, batch: what the diagnostic will call it with (arrays, tracers or shape structs).
      uses: the keywords the diagnostic will pass (from :data:`KEYWORDS`): each entry, a name or a
        tuple of names passed together, is one more abstract call, which must return the shapes of
        the plain call (``intervene`` must be called on (B, T, D), the shape of ``hidden[:, 0]``).
      n_inject: P, the ``inject`` mask's width.
      positions: ``{name: position or positions}``, each in [0, T).
      layer: an index into the ``hidden`` layers (negative from the end).
      length: a sequence length the diagnostic was given, which must equal T.
      need_latents: why the diagnostic needs L >= 1 latents ("" when it does not).
      arrays: ``{name: (value, shape)}`` (or ``(value, shape, why)``): arguments that must be given
        with that shape, whose entries are ints or the letters B, T, V, D, L, H (the model's sizes).
      batches: ``{name: batch}``: other batches that must have ``batch``'s structure and shapes.

    Raises:
      TypeError, ValueError: naming the output field, keyword, position or argument at fault.
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be a model's {_PROTOCOL}, got {type(apply_fn).__name__}")
    for name, other in (batches or {}).items():
        if _signature(other) != _signature(batch):
            raise ValueError(f"{name} must have batch's structure and shapes {_signature(batch)[1]}, "
                             f"got {_signature(other)[1]}")
    calls = _calls(uses)
    if any("inject" in c for c in calls):
        _checks.positive_int("n_inject", n_inject)
    dims = _dims(apply_fn, params, batch, calls, int(n_inject), str(need_latents))
    if length is not None and int(length) != dims.length:
        raise ValueError(f"length must be the model's sequence length T = {dims.length} (that of its logits), "
                         f"got {length}")
    for name, value in (positions or {}).items():
        as_positions(name, value, dims.length)
    if layer is not None:
        n = dims.layers + 1
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -n <= layer < n:
            raise ValueError(f"layer must be an int in [-{n}, {n}) (hidden has n_layers + 1 = {n} layers), "
                             f"got {layer!r}")
    letters = {"B": dims.batch, "T": dims.length, "V": dims.vocab, "D": dims.width, "L": dims.latents,
               "H": dims.heads}
    for name, spec in (arrays or {}).items():
        value, shape, why = (tuple(spec) + ("",))[:3]
        want = tuple(letters[s] if isinstance(s, str) else int(s) for s in shape)
        text = "(" + ", ".join(f"{s}={letters[s]}" if isinstance(s, str) else str(s) for s in shape) + \
            ("," if len(shape) == 1 else "") + ")"
        if value is None:
            raise ValueError(f"{name} must be given, an array of shape {text}{' ' + why if why else ''}, got None")
        if tuple(jnp.shape(value)) != want:
            raise ValueError(f"{name} must have shape {text}{' ' + why if why else ''}, got {tuple(jnp.shape(value))}")
    return dims
