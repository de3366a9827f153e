"""Scaled dot-product attention with grouped key/value heads (GQA) and boolean masks.

Query head ``h`` reads key/value head ``h // (H // Hkv)`` without a copy of the keys and values: the
queries are grouped as (B, Tq, Hkv, H // Hkv, D) against the (B, Tk, Hkv, D) keys, so a decode step reads
its cache once (``jax.nn.dot_product_attention``'s XLA form). The scores are accumulated in float32 and
the softmax is taken in float32, its weights cast back to the inputs' dtype for the values' product. A
masked score is a large finite negative number, never ``-inf``, so a query whose every key is masked (a
padding position) gets the uniform average of the values instead of NaN.

On a GPU, half-precision inputs (bfloat16, float16) whose head width cuDNN's fused attention takes run
there (``implementation="cudnn"``: no (B, H, Tq, Tk) scores in device memory), once a probe on the device
(:func:`cudnn_ok`) has found it equal to the XLA form on a small case, a query with no visible key
included; elsewhere, and where cuDNN refuses the case when it is traced, the XLA form runs.

Attention within segments of one sequence (a vision tower's images or frames, packed one after another):
:class:`Segments` lays them out as padded rows (:func:`segments_of`, on the host) so that
:func:`attend_within` costs each segment the square of its own length, not of the whole sequence's.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = (None, "xla", "cudnn")
"""The values of ``attend``'s ``implementation``: None (the best available: :func:`choose`), or one named."""


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None = None,
    scale: float | None = None,
    implementation: str | None = None,
) -> jax.Array:
    """Attention of queries (B, Tq, H, D) over keys and values (B, Tk, Hkv, D), H a multiple of Hkv.

    ``mask`` broadcasts to (B, Tq, Tk) (or (B, H, Tq, Tk)); True where a query may attend a key. Query head
    ``h`` reads key/value head ``h // (H // Hkv)``. ``implementation``: None (:func:`choose`), ``"xla"`` or
    ``"cudnn"`` (a GPU's fused attention; an error where cuDNN does not take the case). Returns
    (B, Tq, H, D) in the queries' dtype.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"attend takes q (B, Tq, H, D) and k, v (B, Tk, Hkv, D); got q {q.shape}, k {k.shape}, v {v.shape}"
        )
    h, hkv = q.shape[2], k.shape[2]
    if h % hkv:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({hkv})")
    dtype = q.dtype
    k, v = k.astype(dtype), v.astype(dtype)
    scale = q.shape[3] ** -0.5 if scale is None else float(scale)
    mask4 = None
    if mask is not None:
        mask4 = jnp.asarray(mask, bool)
        if mask4.ndim == 3:
            mask4 = mask4[:, None]
        if mask4.ndim != 4:
            raise ValueError(f"mask must broadcast to (B, Tq, Tk) or (B, H, Tq, Tk), got shape {mask4.shape}")
    impl = choose(q, k) if implementation is None else implementation
    if impl == "cudnn":
        try:
            return _cudnn(q, k, v, mask4, scale)
        except (NotImplementedError, RuntimeError, ValueError, TypeError):
            if implementation == "cudnn":
                raise
    return _xla(q, k, v, mask4, scale)


def _xla(q, k, v, mask4, scale):
    if mask4 is not None:  # broadcast every axis but the heads' to the scores' own
        b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
        mask4 = jnp.broadcast_to(mask4, (b, mask4.shape[1], tq, tk))
    return jax.nn.dot_product_attention(q, k, v, mask=mask4, scale=scale, implementation="xla")


def _cudnn(q, k, v, mask4, scale):
    b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
    if mask4 is None:
        return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation="cudnn")
    mask4 = jnp.broadcast_to(mask4, (b, mask4.shape[1], tq, tk))
    out = jax.nn.dot_product_attention(q, k, v, mask=mask4, scale=scale, implementation="cudnn")
    # a query with no visible key: the uniform average of the values, as in the XLA form
    seen = jnp.any(mask4, axis=-1)  # (B, 1 or H, Tq)
    seen = jnp.broadcast_to(jnp.swapaxes(seen, 1, 2), (b, tq, q.shape[2]))[..., None]  # (B, Tq, H, 1)
    g = q.shape[2] // k.shape[2]
    mean = jnp.repeat(jnp.mean(v.astype(jnp.float32), axis=1), g, axis=1).astype(q.dtype)  # (B, H, D): tiny
    return jnp.where(seen, out, mean[:, None])


def choose(q: jax.Array, k: jax.Array) -> str:
    """The implementation :func:`attend` runs when none is named: ``"cudnn"`` on a GPU backend for
    bfloat16 or float16 inputs of a head width cuDNN's fused attention takes (a multiple of 8, at most
    128) once :func:`cudnn_ok` holds there, else ``"xla"``. Decided when the program is traced, from the
    default backend (a program lowered on a CPU host for CUDA takes the XLA form)."""
    d = q.shape[3]
    if q.dtype not in (jnp.bfloat16, jnp.float16) or d % 8 or d > 128:
        return "xla"
    if jax.default_backend() != "gpu":
        return "xla"
    return "cudnn" if cudnn_ok() else "xla"


@functools.lru_cache(maxsize=1)
def cudnn_ok() -> bool:
    """Whether cuDNN's fused attention runs on this process's GPU and equals the XLA form (bfloat16
    tolerance) on a small grouped case with a padded key, a causal mask and a query that sees no key:
    checked once per process, on the device, outside any trace."""
    if jax.default_backend() != "gpu":
        return False
    try:
        with jax.ensure_compile_time_eval():
            rng = np.random.default_rng(0)
            shape_q, shape_k = (2, 64, 4, 64), (2, 64, 2, 64)
            q = jnp.asarray(rng.normal(size=shape_q), jnp.bfloat16)
            k = jnp.asarray(rng.normal(size=shape_k), jnp.bfloat16)
            v = jnp.asarray(rng.normal(size=shape_k), jnp.bfloat16)
            pos = np.arange(64)
            valid = np.ones((2, 64), bool)
            valid[1, :5] = False  # row 1's first 5 keys are padding: its queries 0-4 see no key
            mask = jnp.asarray((pos[None, None, :] <= pos[None, :, None]) & valid[:, None, :])
            got = jax.jit(lambda *a: _cudnn(*a, 0.125))(q, k, v, mask[:, None])
            ref = jax.jit(lambda *a: _xla(*a, 0.125))(q, k, v, mask[:, None])
            got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
        return bool(np.isfinite(got).all() and np.abs(got - ref).max() <= 0.05 * max(np.abs(ref).max(), 1.0))
    except Exception:  # noqa: BLE001 -- any failure of the fused form: the XLA form runs
        return False


def causal_mask(query_positions: jax.Array, key_positions: jax.Array, key_valid: jax.Array) -> jax.Array:
    """(B, Tq, Tk) mask: key slot ``j`` visible to query slot ``i`` when ``j <= i`` in slot order and the key
    is valid. ``query_positions`` (B, Tq) and ``key_positions`` (Tk,) are slot indices, ``key_valid`` (B, Tk)."""
    return (key_positions[None, None, :] <= query_positions[:, :, None]) & key_valid[:, None, :]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Segments:
    """Consecutive segments of a sequence laid out as padded rows, so attention within each segment costs
    the square of its own length, not of the sequence's.

    Attributes:
        gather: (segments, longest) the sequence position of each slot (0 in padding slots).
        valid: (segments, longest) whether a slot holds a position.
        scatter: (positions,) each position's flat slot, ``segment * longest + offset``.
    """

    gather: jax.Array
    valid: jax.Array
    scatter: jax.Array


def segments_of(lengths) -> Segments:
    """The :class:`Segments` of consecutive segments of ``lengths`` (host-side; every length >= 1)."""
    lengths = np.asarray(lengths, np.int64)
    if lengths.ndim != 1 or not len(lengths) or (lengths < 1).any():
        raise ValueError(f"segment lengths must be a non-empty list of positive integers, got {lengths.tolist()}")
    longest = int(lengths.max())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    offsets = np.arange(longest)
    valid = offsets[None, :] < lengths[:, None]
    gather = np.where(valid, starts[:, None] + offsets[None, :], 0)
    return Segments(
        gather=jnp.asarray(gather, jnp.int32),
        valid=jnp.asarray(valid),
        scatter=jnp.asarray(np.flatnonzero(valid.reshape(-1)), jnp.int32),
    )


def attend_within(q: jax.Array, k: jax.Array, v: jax.Array, seg: Segments) -> jax.Array:
    """Attention of each position's queries (N, heads, head_dim) over the keys and values (N, kv_heads,
    head_dim) of its own segment of ``seg`` only (no causal order): (N, heads, head_dim)."""
    rows = lambda x: x[seg.gather]  # (segments, longest, heads, head_dim)
    mask = seg.valid[:, None, :] & seg.valid[:, :, None]
    out = attend(rows(q), rows(k), rows(v), mask)
    return out.reshape(-1, *out.shape[2:])[seg.scatter]
