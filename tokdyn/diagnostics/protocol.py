"""The ``apply`` protocol of the latent-reasoner diagnostics, and the one check of it.

A model the diagnostics can probe is a function of the type
:class:`tokdyn.models.protocol.ApplyFn` (re-exported here)::

    apply(params, batch, *, latents=None, intervene=None[, drop=None][, inject=None]) -> Outputs

returning :class:`tokdyn.models.protocol.Outputs`: ``logits`` (B, T, V), ``hidden``
(B, n_layers + 1, T, D) with ``hidden[:, 0]`` the input embeddings, ``attention``
(B, n_layers, H, T, T), ``latents`` (B, L, D).

At real sizes the full ``attention`` does not fit (a 7B model at 1,500 tokens: 28 layers x 28 heads x
1,500^2 floats per instance). A model may therefore also take ``select=`` a :class:`Select`, and then
returns only what it names: ``hidden`` (B, len(select.hidden), T, D), the chosen entries of the full
``hidden``, and ``attention`` (B, len(select.attention), H, len(select.rows), T), the chosen layers' rows at
the chosen query positions (:func:`narrow` says what each equals). :func:`apply_selected` is how a
diagnostic asks: with ``select=`` where the model takes it, else the plain call narrowed, so a model that
never heard of ``select`` (a model of one's own) works unchanged.

:func:`check_apply` is the check every public diagnostic that takes a model runs at its entry:
one :func:`jax.eval_shape` of the model (no device work, no compile, cached per ``apply_fn``,
shapes and keywords), raising a ``ValueError``/``TypeError`` that names what is wrong; with
``reads_hidden=True`` one probe call also checks that ``hidden[:, 0]`` holds the input
embeddings. What it checks, and how the probe runs inside a user's ``jit``:
:doc:`/concepts/diagnostics`.
"""

from __future__ import annotations

import collections
from typing import Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.models.protocol import ApplyFn, Outputs

__all__ = [
    "PROBE_STAND_IN_LIMIT",
    "ApplyFn",
    "Outputs",
    "Dims",
    "KEYWORDS",
    "Select",
    "narrow",
    "takes_select",
    "apply_selected",
    "check_apply",
    "as_positions",
]

KEYWORDS = ("latents", "intervene", "drop", "inject")
FIELDS = Outputs._fields  # ("logits", "hidden", "attention", "latents")
_PROTOCOL = "apply(params, batch, *, latents=None, intervene=None) -> Outputs (tokdyn.models.protocol.ApplyFn)"


class Dims(NamedTuple):
    """The sizes of a model's outputs on a batch: B, T, V, n_layers, H, D and L."""

    batch: int
    length: int
    vocab: int
    layers: int
    heads: int
    width: int
    latents: int


class Select(NamedTuple):
    """What a diagnostic needs of a model's outputs, so that a large model computes only that.

    Attributes:
      hidden: entries of ``hidden`` (indices into its n_layers + 1 entries; 0 the input embeddings,
        negative from the end); ``()`` for none.
      attention: layers of ``attention`` (indices into its n_layers; negative from the end); ``()`` for none.
      rows: query positions of the attention rows, in [0, T); ``()`` for none.
    """

    hidden: tuple = ()
    attention: tuple = ()
    rows: tuple = ()


def narrow(out: Outputs, select: Select) -> Outputs:
    """``out`` (a full call's :class:`Outputs`) cut to ``select``: ``hidden[:, select.hidden]`` and
    ``attention[:, select.attention][:, :, :, select.rows]``; logits and latents unchanged. The reference
    a model's own ``select=`` must equal."""
    hidden = out.hidden[:, jnp.asarray(select.hidden, jnp.int32)]
    attention = out.attention[:, jnp.asarray(select.attention, jnp.int32)][:, :, :, jnp.asarray(select.rows, jnp.int32)]
    return out._replace(hidden=hidden, attention=attention)


def takes_select(apply_fn) -> bool:
    """Whether ``apply_fn`` takes the ``select`` keyword (by name; a ``**kwargs`` alone does not count)."""
    import inspect

    try:
        return "select" in inspect.signature(apply_fn).parameters
    except (TypeError, ValueError):
        return False


def apply_selected(apply_fn, params, batch, select: Select, **kwargs) -> Outputs:
    """``apply_fn(params, batch, select=select, **kwargs)`` when the model takes ``select`` (it computes only
    what ``select`` names), else :func:`narrow` of the plain call: the same :class:`Outputs` either way."""
    if takes_select(apply_fn):
        return apply_fn(params, batch, select=select, **kwargs)
    return narrow(apply_fn(params, batch, **kwargs), select)


def _check_select(select, dims: "Dims") -> Select:
    if not isinstance(select, Select):
        raise TypeError(f"select must be a tokdyn.diagnostics.protocol.Select, got {type(select).__name__}")
    bounds = {"hidden": dims.layers + 1, "attention": dims.layers, "rows": dims.length}
    what = {
        "hidden": "entries of hidden (n_layers + 1)",
        "attention": "layers of attention (n_layers)",
        "rows": "positions (the sequence length T)",
    }
    for field, n in bounds.items():
        values = getattr(select, field)
        ok = isinstance(values, tuple) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
        )
        low = 0 if field == "rows" else -n
        if not ok or any(not low <= v < n for v in values):
            raise ValueError(
                f"select.{field} must be a tuple of ints in [{low}, {n}) ({what[field]} = {n}), got {values!r}"
            )
    return select


def _check_selected(apply_fn, params, batch, select: Select, dims: "Dims") -> None:
    """One abstract call with ``select=``: its shapes must be those :func:`narrow` gives."""
    want_h = (dims.batch, len(select.hidden), dims.length, dims.width)
    want_a = (dims.batch, len(select.attention), dims.heads, len(select.rows), dims.length)
    what = "apply_fn(params, batch, select=...)"

    def run(p, x):
        out = _apply(apply_fn, p, x, {"select": select}, what)
        missing = [f for f in FIELDS if not hasattr(out, f)]
        if missing:
            raise TypeError(f"{what} must return Outputs(logits, hidden, attention, latents), without {missing}")
        return out

    out = jax.eval_shape(run, params, batch)
    got = {f: tuple(getattr(out, f).shape) for f in FIELDS}
    want = {
        "logits": (dims.batch, dims.length, dims.vocab),
        "hidden": want_h,
        "attention": want_a,
        "latents": (dims.batch, dims.latents, dims.width),
    }
    for f in FIELDS:
        if got[f] != want[f]:
            raise ValueError(
                f"{what}.{f} must have shape {want[f]} for {select} (hidden (B, len(select.hidden), T, D), "
                f"attention (B, len(select.attention), H, len(select.rows), T)), got {got[f]}"
            )


def as_positions(name: str, value, length: Optional[int] = None) -> tuple:
    """``value`` (an int or ints) as a tuple of ints, each in [0, ``length``) when given."""
    try:
        out = tuple(int(p) for p in np.atleast_1d(np.asarray(value)).ravel())
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be sequence positions (Python ints: static), got {value!r}") from None
    if length is not None and any(not 0 <= p < length for p in out):
        raise ValueError(
            f"{name} must name positions in [0, {length}) (the sequence length T), "
            f"got {list(out) if np.ndim(value) else out[0]}"
        )
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
        raise TypeError(
            f"{what} must return Outputs(logits, hidden, attention, latents) "
            f"(tokdyn.models.protocol.Outputs), got {type(out).__name__} without {missing}"
        )
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
        raise ValueError(
            f"{what}.logits must be (B, T, V) with B = {b_batch} (the batch's leading axis), got shape {lg}"
        )
    # the attention's layer count, when it is otherwise well formed, says how many entries hidden needs
    n_att = at[1] if len(at) == 5 and at[0] == b and at[3] == t and at[4] == t else None
    entries = "n_layers + 1 >= 2" if n_att is None else f"n_layers + 1 = {n_att + 1}"
    layers = "" if n_att is None else f"; n_layers = {n_att} from attention {at}"
    if len(hd) != 4 or hd[0] != b or hd[2] != t or hd[1] < 2 or (n_att is not None and hd[1] in (n_att, n_att + 2)):
        hint = ""
        if len(hd) == 4 and n_att is not None and hd[1] == n_att:
            hint = ": n_layers entries, one short (is the input embeddings' entry hidden[:, 0] missing?)"
        elif len(hd) == 4 and n_att is not None and hd[1] == n_att + 2:
            hint = (
                ": one entry too many (hidden[:, -1] is the last block's output; the final LayerNorm state "
                "is no entry of hidden)"
            )
        raise ValueError(
            f"{what}.hidden must be (B, n_layers + 1, T, D) = ({b}, {entries}, {t}, D): hidden[:, 0] "
            f"the input embeddings, then the output of each block (B and T those of the logits "
            f"{lg}{layers}), got shape {hd}{hint}"
        )
    n, d = hd[1] - 1, hd[3]
    if n_att is not None and n_att != n:
        raise ValueError(
            f"{what}.hidden (B, n_layers + 1, T, D) and {what}.attention (B, n_layers, H, T, T) must "
            f"have the same n_layers, got hidden {hd} (n_layers = {n}: the input embeddings and {n} "
            f"blocks) and attention {at} (n_layers = {n_att})"
        )
    if n_att is None:
        raise ValueError(
            f"{what}.attention must be (B, n_layers, H, T, T) = ({b}, {n}, H, {t}, {t}) "
            f"(n_layers from hidden {hd}), got shape {at}"
        )
    if len(lt) != 3 or lt[0] != b or lt[2] != d:
        raise ValueError(
            f"{what}.latents must be (B, L, D) = ({b}, L, {d}) (D from hidden {hd}; L = 0 for a "
            f"model without latents), got shape {lt}"
        )
    return Dims(b, t, v, n, at[2], d, lt[1])


def _apply(apply_fn, params, batch, kwargs: dict, what: str):
    try:
        return apply_fn(params, batch, **kwargs)
    except TypeError as e:
        if kwargs and "keyword" in str(e):
            raise TypeError(
                f"apply_fn must take {', '.join(f'{k}=' for k in kwargs)} for this diagnostic "
                f"(the protocol {_PROTOCOL}); {what} raised: {e}"
            ) from e
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
            raise ValueError(
                f"apply_fn(params, batch).latents must be (B, L, D) with L >= 1 for {need_latents}, "
                f"got L = 0 (a model without latents)"
            )
        for combo in calls:
            seen = []

            def record(z):
                seen.append(tuple(jnp.shape(z)))
                return z

            kw = {
                "latents": lambda: jnp.zeros(out.latents.shape, out.latents.dtype),
                "intervene": lambda: record,
                "drop": lambda: jnp.zeros((base.batch, base.length), bool),
                "inject": lambda: jnp.zeros((base.batch, n_inject), bool),
            }
            what = _call_text(combo)
            got = _layout(_apply(apply_fn, p, x, {k: kw[k]() for k in combo}, what), b_batch, what)
            if got != base:
                raise ValueError(f"{what} must return the shapes of apply_fn(params, batch) {base}, got {got}")
            want = (base.batch, base.length, base.width)
            if "intervene" in combo and (not seen or any(s != want for s in seen)):
                raise ValueError(
                    f"apply_fn must call intervene on the input embeddings (B, T, D) = {want} (those "
                    f"of hidden[:, 0]), got calls on {seen or 'nothing (never called)'}"
                )

    jax.eval_shape(run, params, batch)
    return found[0]


_CACHE: "collections.OrderedDict" = collections.OrderedDict()
_CACHE_SIZE = 64
PROBE_STAND_IN_LIMIT = 1 << 26
"""The most weight entries (64 Mi: 256 MB in float32) the embedding probe draws stand-in values for when the
weights it is given are traced (a diagnostic inside a ``jit``): a larger model (a real checkpoint's) is checked
by its shapes alone there, as drawing and running it on the host would cost its size in memory and a compile.
The probe runs in full on concrete weights (:func:`check_apply` called outside any ``jit``)."""


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


# --- the one value check: a probe intervention --------------------------------------------------------

_VERIFIED: "collections.OrderedDict" = collections.OrderedDict()


def _has_value(leaf) -> bool:
    return not isinstance(leaf, jax.core.Tracer) and isinstance(
        leaf, (jax.Array, np.ndarray, np.generic, int, float, bool)
    )


def _stand_in(leaf, rng, rows: Optional[int], scale: float, spread: str):
    """``leaf`` itself when it has a value; else a host value of its shape (its first ``rows`` rows
    when given) and dtype drawn from ``rng`` (for a tracer, a shape struct); None where no stand-in
    can be drawn (a key, a string)."""
    if _has_value(leaf):
        return leaf
    shape, dtype = tuple(jnp.shape(leaf)), _checks.dtype_of(leaf)
    shape = (rows,) + shape[1:] if rows is not None else shape
    if jnp.issubdtype(dtype, jnp.floating):
        draw = rng.uniform(0.0, 1.0, shape) if spread == "uniform" else scale * rng.standard_normal(shape)
        return np.asarray(draw).astype(dtype)
    if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
        return np.zeros(shape, dtype)  # id 0, False: valid for any table or mask
    return None


def _close(a: np.ndarray, b: np.ndarray, eps: float) -> bool:
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= 4 * eps * (1.0 + np.abs(b))))


def _refuse_embeddings(hidden, given, want: np.ndarray, eps: float, dims: Dims, call: str, stand_ins: bool):
    """The ``ValueError`` of a probe that did not find ``want`` (the probe ``intervene`` returned) at
    ``hidden[:, 0]``, saying where the embeddings are instead (``given``: those it was given)."""
    hidden, before = np.asarray(hidden, np.float32), np.asarray(given, np.float32)
    at = [k for k in range(1, hidden.shape[1]) if _close(hidden[:, k], want, eps)]
    if at:
        hint = f"the input embeddings are at hidden[:, {at[0]}], not hidden[:, 0]"
    elif _close(hidden[:, 0], before, eps):
        hint = "hidden[:, 0] holds the embeddings intervene was given, not those it returned"
    else:
        hint = (
            "no entry of hidden holds them (block outputs, or the final LayerNorm state, in place of the input "
            "embeddings?)"
        )
    err = float(np.nanmax(np.abs(hidden[:, 0] - want))) if np.isfinite(hidden[:, 0]).any() else float("nan")
    raise ValueError(
        f"apply_fn(params, batch).hidden must hold the input embeddings at hidden[:, 0] (B, T, D) = "
        f"({dims.batch}, {dims.length}, {dims.width}), the array intervene returned, as the blocks read it, then the "
        f"output of each of the n_layers = {dims.layers} blocks; a probe, {call} with probe ~ N(0, 1) of shape "
        f"{want.shape}, found hidden[:, 0] off the probe by up to {err:.3g}: {hint}"
        + (" (params and batch are traced here: the probe ran on stand-in values of their shapes)" if stand_ins else "")
    )


def _check_embeddings(apply_fn, params, batch, dims: Dims) -> bool:
    """One probe intervention on one instance: ``intervene`` replaces the input embeddings by a probe
    (fixed normal draws) and ``hidden[:, 0]`` must be that probe. Runs on ``params`` and ``batch``'s
    values, or on stand-in values of their shapes where they have none (inside a user's ``jit``).
    Returns whether the probe ran (False: no stand-in could be drawn, or the model refused one)."""
    rows = 1 if _leading(batch) is not None else None
    p_leaves, p_def = jax.tree_util.tree_flatten(params)
    b_leaves, b_def = jax.tree_util.tree_flatten(batch)
    stand_ins = not all(_has_value(x) for x in p_leaves + b_leaves)
    drawn = sum(int(np.prod(jnp.shape(x))) for x in p_leaves if not _has_value(x))
    if drawn > PROBE_STAND_IN_LIMIT:
        return False  # traced weights of a large model: shapes only (PROBE_STAND_IN_LIMIT)

    def draw(shape, dtype):  # the same host draws at every call: every pass reads one probe sequence
        return np.random.default_rng(1).standard_normal(shape).astype(dtype)

    def run(p, b, full: bool):
        seen = []

        def probe(x):
            seen.append(x)
            return jnp.asarray(draw(jnp.shape(x), x.dtype))

        b = b if rows is None else jax.tree_util.tree_map(lambda x: x[:rows], b)  # one instance
        out = apply_fn(p, b, intervene=probe)
        if not seen:
            return None
        # hidden[:, 0] alone: for a model that keeps it, the compiler drops the blocks from the program
        return (out.hidden, seen[-1]) if full else (out.hidden[:, 0], jnp.zeros(0, seen[-1].dtype))

    def compiled(full: bool):
        # compiled ahead of time from the shapes, then called on values: one program, run now even inside
        # a user's jit (an eager model would compile op by op, far slower to start)
        spec = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), _checks.dtype_of(x))  # noqa: E731
        lowered = jax.jit(run, static_argnums=2).lower(
            jax.tree_util.tree_map(spec, p_in), jax.tree_util.tree_map(spec, b_in), full
        )
        return lowered.compile()(p_in, b_in)

    call = f"apply_fn(params, batch{'[:1]' if rows else ''}, intervene=lambda x: probe)"
    rng = np.random.default_rng(0)
    p_in = [_stand_in(x, rng, None, 0.5, "normal") for x in p_leaves]
    b_in = [_stand_in(x, rng, rows, 1.0, "uniform") for x in b_leaves]
    if any(x is None for x in p_in + b_in):
        return False  # a leaf of a dtype no stand-in is drawn for: only the shapes are checked
    p_in, b_in = jax.tree_util.tree_unflatten(p_def, p_in), jax.tree_util.tree_unflatten(b_def, b_in)
    try:
        first = compiled(False)
    except Exception as e:
        if stand_ins:  # the values were ours, not the user's: the real call reports any real error
            return False
        e.add_note(f"(raised by {call} while tokdyn.diagnostics checked that hidden[:, 0] holds the input embeddings)")
        raise
    if first is None:
        return False  # intervene never called: the shape check names it when the diagnostic uses intervene
    got = np.asarray(first[0], np.float32)  # (1, T, D): one instance, copied to the host once per model
    eps = max(float(jnp.finfo(first[0].dtype).eps), float(jnp.finfo(first[1].dtype).eps))
    want = draw(got.shape, first[1].dtype).astype(np.float32)
    if _close(got, want, eps):
        return True
    hidden, given = compiled(True)  # refused: look closer, to say why
    _refuse_embeddings(hidden, given, want, eps, dims, call, stand_ins)


def _embeddings_once(apply_fn, params, batch, dims: Dims) -> None:
    try:
        key = (apply_fn, _signature(params), _signature(batch))
        hash(key)
    except TypeError:  # an unhashable apply_fn: probe it every time
        _check_embeddings(apply_fn, params, batch, dims)
        return
    if key in _VERIFIED:
        _VERIFIED.move_to_end(key)
        return
    if _check_embeddings(apply_fn, params, batch, dims):
        _VERIFIED[key] = True
        while len(_VERIFIED) > _CACHE_SIZE:
            _VERIFIED.popitem(last=False)


def _calls(uses) -> tuple:
    out = []
    for combo in uses:
        combo = (combo,) if isinstance(combo, str) else tuple(combo)
        for k in combo:
            _checks.choice("uses", k, KEYWORDS)
        out.append(combo)
    return tuple(out)


def check_apply(
    apply_fn,
    params,
    batch,
    *,
    uses: Sequence = (),
    n_inject: int = 0,
    positions: Optional[Mapping] = None,
    layer: Optional[int] = None,
    length: Optional[int] = None,
    need_latents: str = "",
    arrays: Optional[Mapping] = None,
    batches: Optional[Mapping] = None,
    reads_hidden: bool = False,
    select: Optional[Select] = None,
) -> Dims:
    """Check that ``apply_fn`` implements the protocol on ``params`` and ``batch``, and that a
    diagnostic's arguments fit it, before anything runs.

    Args:
      apply_fn: the model (:class:`ApplyFn`).
      params: the weights the diagnostic will call it with (arrays, tracers or shape structs).
      batch: the batch it will call it with (arrays, tracers or shape structs).
      uses: the keywords the diagnostic will pass (from :data:`KEYWORDS`): each entry, a name or a
        tuple of names passed together, is one more abstract call, which must return the plain call's
        shapes (``intervene`` must be called on (B, T, D), the shape of ``hidden[:, 0]``).
      n_inject: P, the ``inject`` mask's width.
      positions: ``{name: position or positions}``, each in [0, T).
      layer: an index into the ``hidden`` layers (negative from the end).
      length: a sequence length the diagnostic was given, which must equal T.
      need_latents: why the diagnostic needs L >= 1 latents ("" when it does not).
      arrays: ``{name: (value, shape)}`` or ``(value, shape, why)``: arguments that must be given with
        that shape, whose entries are ints or the letters B, T, V, D, L, H (the model's sizes).
      batches: ``{name: batch}``: other batches that must have ``batch``'s structure and shapes.
      reads_hidden: the diagnostic reads ``Outputs.hidden``: check its contents too (see the module
        docstring), once per model and shapes; ``apply_fn`` must then take ``intervene``.
      select: the :class:`Select` the diagnostic will ask for (through :func:`apply_selected`): its
        indices must lie within the model's layers and sequence; a model that takes ``select=`` is traced
        once more with it (``jax.eval_shape``), and its outputs must have the shapes :func:`narrow` gives.

    Returns:
      The :class:`Dims` of the model's outputs.

    Raises:
      TypeError, ValueError: naming the output field, keyword, position or argument at fault.
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be a model's {_PROTOCOL}, got {type(apply_fn).__name__}")
    for name, other in (batches or {}).items():
        if _signature(other) != _signature(batch):
            raise ValueError(
                f"{name} must have batch's structure and shapes {_signature(batch)[1]}, got {_signature(other)[1]}"
            )
    calls = _calls(uses)
    if reads_hidden and ("intervene",) not in calls:
        calls += (("intervene",),)
    if any("inject" in c for c in calls):
        _checks.positive_int("n_inject", n_inject)
    dims = _dims(apply_fn, params, batch, calls, int(n_inject), str(need_latents))
    if length is not None and int(length) != dims.length:
        raise ValueError(
            f"length must be the model's sequence length T = {dims.length} (that of its logits), got {length}"
        )
    for name, value in (positions or {}).items():
        as_positions(name, value, dims.length)
    if layer is not None:
        n = dims.layers + 1
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -n <= layer < n:
            raise ValueError(
                f"layer must be an int in [-{n}, {n}) (hidden has n_layers + 1 = {n} layers), got {layer!r}"
            )
    letters = {"B": dims.batch, "T": dims.length, "V": dims.vocab, "D": dims.width, "L": dims.latents, "H": dims.heads}
    for name, spec in (arrays or {}).items():
        value, shape, why = (tuple(spec) + ("",))[:3]
        want = tuple(letters[s] if isinstance(s, str) else int(s) for s in shape)
        text = (
            "("
            + ", ".join(f"{s}={letters[s]}" if isinstance(s, str) else str(s) for s in shape)
            + ("," if len(shape) == 1 else "")
            + ")"
        )
        if value is None:
            raise ValueError(f"{name} must be given, an array of shape {text}{' ' + why if why else ''}, got None")
        if tuple(jnp.shape(value)) != want:
            raise ValueError(f"{name} must have shape {text}{' ' + why if why else ''}, got {tuple(jnp.shape(value))}")
    if select is not None:
        _check_select(select, dims)
        if takes_select(apply_fn):
            _check_selected(apply_fn, params, batch, select, dims)
    if reads_hidden:
        _embeddings_once(apply_fn, params, batch, dims)
    return dims
