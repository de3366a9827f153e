"""Beyond Visual Memory's decomposition of a latent block, for any model with the protocol
``apply(params, batch, *, latents=None, intervene=None, drop=None) -> Outputs``
(:class:`tokdyn.models.protocol.ApplyFn`): which of the block's parts the answer needs, and how
narrowly the block attends to the image.

- :func:`decompose`: the answer's correctness under each setting of :data:`ALL_SETTINGS` (the block
  whole, its markers only, its slots only, its slots replaced, its format only, no block), all in one
  vmapped pass; :func:`check_decompose` checks its arguments before anything compiles.
- :func:`narrowness` and :func:`concentration`: how focused the attention over the image patches is at
  chosen query positions (:class:`Narrowness`: entropy, top-k mass, the share on the patches).

Every name is also an attribute of :mod:`tokdyn.diagnostics.mediation`, where they were first defined.
What each setting does: :doc:`/concepts/diagnostics`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.diagnostics import protocol

SETTINGS = ("full", "markers_only", "slots_noise", "slots_mean", "slots_zeros", "format_only", "no_block")
"""The settings of the decomposition table, in its order: the block whole, its markers only, its slots
replaced (noise, their mean, zeros), its format only, no block (what each does: :doc:`/concepts/diagnostics`)."""
ALL_SETTINGS = SETTINGS + ("slots_only",)
"""Every setting :func:`decompose` takes: :data:`SETTINGS` and ``"slots_only"`` (the markers removed from
attention, the slots kept: Beyond Visual Memory's slots-only arm)."""


def _names(name: str, kinds, allowed) -> tuple:
    if isinstance(kinds, str) or not len(kinds):
        raise ValueError(f"{name} must name at least one of {list(allowed)}, got {kinds!r}")
    for k in kinds:
        _checks.choice(name, k, allowed)
    return tuple(kinds)


def decompose(
    key: jax.Array,
    apply_fn: Callable,
    params,
    batch,
    *,
    slots,
    markers,
    answer_position: int,
    answers,
    length: int,
    settings=SETTINGS,
    format_embedding=None,
) -> jax.Array:
    """Correctness of the answer under each setting of :data:`ALL_SETTINGS` (pure; jit it with the positions
    static). The settings run as one pass of the model vmapped over them (each a ``drop`` mask and new inputs
    for some of the block's positions; ``full`` neither), so the program holds one copy of the model. The slots' inputs are read from ``Outputs.hidden[:, 0]``, the input embeddings.

    Args:
      key: PRNG key of ``slots_noise``.
      apply_fn: the model's ``apply``; it must take ``drop=`` for ``markers_only``, ``slots_only`` and
        ``no_block``.
      params: the model's weights.
      batch: a batch of B instances.
      slots: the latent block's L slot positions (Python ints).
      markers: the block's marker positions (Python ints).
      answer_position: the sequence position whose logits give the answer.
      answers: (B,) correct token ids.
      length: T, the sequence length (for the ``drop`` masks).
      settings: K names from :data:`ALL_SETTINGS`.
      format_embedding: (len(markers) + len(slots), D) the inputs of ``format_only``, markers first.

    Returns:
      (K, B) float32: 1 where the answer is correct.
    """
    settings = check_decompose(settings, slots, markers, length, format_embedding)
    uses = (("intervene",) if {"format_only", "slots_noise", "slots_mean", "slots_zeros"} & set(settings) else ()) + (
        ("drop",) if {"markers_only", "slots_only", "no_block"} & set(settings) else ()
    )
    uses_together = uses + ((uses,) if len(uses) == 2 else ())  # each alone, then both at once (one pass)
    arrays = {"answers": (answers, ("B",))}
    if "format_only" in settings:
        arrays["format_embedding"] = (
            format_embedding,
            (len(markers) + len(slots), "D"),
            "(the markers' then the slots' inputs) for 'format_only'",
        )
    protocol.check_apply(
        apply_fn,
        params,
        batch,
        uses=uses_together,
        length=length,
        arrays=arrays,
        positions={"slots": slots, "markers": markers, "answer_position": answer_position},
        reads_hidden="intervene" in uses,
    )
    # the input embeddings (a model that takes select= computes no attention map; the logits go unused)
    base = protocol.apply_selected(apply_fn, params, batch, protocol.Select(hidden=(0,)))
    nothing = protocol.Select()
    b = base.logits.shape[0]
    inputs = base.hidden[:, 0, jnp.asarray(slots)]  # (B, L, D) the slots' input embeddings (hidden entry 0)
    rms = jnp.sqrt(jnp.mean(inputs**2, (1, 2), keepdims=True))
    block = tuple(markers) + tuple(slots)

    d = inputs.shape[-1]
    n_m = len(markers)
    edits = list(settings)  # one pass of the model, vmapped over the settings
    drop_sets = {"markers_only": slots, "slots_only": markers, "no_block": block}
    fmt = None if format_embedding is None else jnp.asarray(format_embedding, inputs.dtype)
    values, replace, drops = [], [], []
    for x in edits:
        v = jnp.zeros((b, len(block), d), inputs.dtype)  # the block's new inputs, markers first
        r = np.zeros(len(block), bool)  # which of the block's positions take them
        if x == "format_only":
            v, r[:] = jnp.broadcast_to(fmt, v.shape), True
        elif x.startswith("slots_"):
            fill = {
                "slots_noise": lambda: jax.random.normal(key, inputs.shape, inputs.dtype) * rms,
                "slots_mean": lambda: jnp.broadcast_to(jnp.mean(inputs, 0, keepdims=True), inputs.shape),
                "slots_zeros": lambda: jnp.zeros_like(inputs),
            }.get(x)
            if fill is not None:
                v, r[n_m:] = v.at[:, n_m:].set(fill()), True
        values.append(v)
        replace.append(r)
        drops.append(np.isin(np.arange(length), drop_sets.get(x, ())))
    kw_uses = set(uses)

    def one(v, r, drop):  # one setting's pass -> (B,) correct
        kw = {}
        if "intervene" in kw_uses:
            idx = jnp.asarray(block)
            kw["intervene"] = lambda x: x.at[:, idx].set(jnp.where(r[None, :, None], v.astype(x.dtype), x[:, idx]))
        if "drop" in kw_uses:
            kw["drop"] = jnp.broadcast_to(drop, (b, length))
        out = protocol.apply_selected(apply_fn, params, batch, nothing, **kw)
        return jnp.argmax(out.logits[:, answer_position], -1) == answers

    correct = jax.vmap(one)(jnp.stack(values), jnp.asarray(np.stack(replace)), jnp.asarray(np.stack(drops)))
    return correct.astype(jnp.float32)  # (K, B)


def check_decompose(settings, slots, markers, length: int, format_embedding=None) -> tuple:
    """Check :func:`decompose`'s arguments in plain Python, before compiling.

    Args:
      settings: names from :data:`ALL_SETTINGS`, at least one.
      slots: the latent block's slot positions in [0, length), at least one.
      markers: its marker positions in [0, length).
      length: T, the sequence length.
      format_embedding: (len(markers) + len(slots), D), required by ``format_only``.

    Returns:
      The settings, as a tuple.

    Raises:
      ValueError, TypeError: naming the argument at fault.
    """
    settings = _names("settings", settings, ALL_SETTINGS)
    slots, markers = protocol.as_positions("slots", slots, length), protocol.as_positions("markers", markers, length)
    if not slots:
        raise ValueError(
            "slots must name the latent block's slot positions (a model without a latent block has "
            "nothing to decompose), got ()"
        )
    if "format_only" in settings:
        want = (len(markers) + len(slots),)
        if format_embedding is None or jnp.shape(format_embedding)[:1] != want:
            raise ValueError(
                f"format_embedding must have {want[0]} rows (markers then slots) for 'format_only', "
                f"got {None if format_embedding is None else jnp.shape(format_embedding)}"
            )
    return settings


# ---------------------------------------------------------------------------------------------- attention


class Narrowness(NamedTuple):
    """Per instance and query position (B, Q): entropy (nats) of the attention over the image
    patches renormalised to sum to 1, the mass of its top-k patches, and the share of the
    position's whole attention that goes to the patches. Where that share is 0 (the query attends
    to no patch) the renormalised attention is undefined: entropy and top-k mass are NaN there,
    never 0 (which would read as maximally narrow)."""

    entropy: jax.Array
    top_k_mass: jax.Array
    patch_share: jax.Array


def narrowness(attention: jax.Array, *, queries, patches, top_k: int = 3) -> Narrowness:
    """How focused the attention over the image patches is at given query positions, averaged over
    layers and heads.

    Args:
      attention: (B, n_layers, H, T, T) attention weights (``Outputs.attention``).
      queries: Q query positions in [0, T) (Python ints).
      patches: P >= 1 image-patch positions in [0, T) (Python ints).
      top_k: k in [1, P] (static).

    Returns:
      :class:`Narrowness`, each field (B, Q); a query with no attention on the patches gets NaN entropy
      and top-k mass.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.diagnostics import mediation
      >>> attention = jnp.zeros((1, 1, 1, 4, 4)).at[0, 0, 0, 3].set(jnp.array([0.5, 0.25, 0.25, 0.0]))
      >>> n = mediation.narrowness(attention, queries=[3], patches=[0, 1, 2], top_k=1)
      >>> print(np.asarray(n.entropy).round(3), np.asarray(n.top_k_mass), np.asarray(n.patch_share))
      [[1.04]] [[0.5]] [[1.]]
    """
    shape = jnp.shape(attention)
    if len(shape) != 5 or shape[3] != shape[4]:
        raise ValueError(f"attention must be (B, n_layers, H, T, T), got shape {shape}")
    queries, patches = (
        protocol.as_positions("queries", queries, shape[4]),
        protocol.as_positions("patches", patches, shape[4]),
    )
    _checks.positive_int("top_k", top_k)
    if not patches:
        raise ValueError("patches must name at least one position, got ()")
    if top_k > len(patches):
        raise ValueError(f"top_k must be at most the number of patches {len(patches)}, got {top_k}")
    return concentration(attention[:, :, :, jnp.asarray(queries)], patches=patches, top_k=top_k)


def concentration(rows: jax.Array, *, patches, top_k: int = 3) -> Narrowness:
    """:func:`narrowness` from attention rows alone: ``rows`` (B, n_layers, H, Q, T) the rows at Q query
    positions (``Outputs.attention`` of a call with ``select=Select(attention=..., rows=queries)``, so that a
    large model never holds (B, n_layers, H, T, T)), averaged over its layers and heads.

    Args:
      rows: (B, n_layers, H, Q, T) attention weights at Q query positions.
      patches: P >= 1 image-patch positions in [0, T) (Python ints).
      top_k: k in [1, P] (static).

    Returns:
      :class:`Narrowness`, each field (B, Q), as :func:`narrowness`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.diagnostics import mediation
      >>> rows = jnp.array([0.5, 0.25, 0.25, 0.0]).reshape(1, 1, 1, 1, 4)   # one row at some query
      >>> n = mediation.concentration(rows, patches=[0, 1, 2], top_k=1)
      >>> print(np.asarray(n.entropy).round(3), np.asarray(n.top_k_mass), np.asarray(n.patch_share))
      [[1.04]] [[0.5]] [[1.]]
    """
    shape = jnp.shape(rows)
    if len(shape) != 5:
        raise ValueError(f"rows must be (B, n_layers, H, Q, T) attention rows, got shape {shape}")
    patches = protocol.as_positions("patches", patches, shape[4])
    _checks.positive_int("top_k", top_k)
    if not patches:
        raise ValueError("patches must name at least one position, got ()")
    if top_k > len(patches):
        raise ValueError(f"top_k must be at most the number of patches {len(patches)}, got {top_k}")
    a = jnp.mean(rows, (1, 2))[..., jnp.asarray(patches)]  # (B, Q, P)
    share = jnp.sum(a, -1)
    none = ~(share > 0)
    p = a / jnp.where(none, 1.0, share)[..., None]
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1)
    top = jnp.sum(jax.lax.top_k(p, top_k)[0], -1)
    nan = jnp.asarray(jnp.nan, ent.dtype)
    return Narrowness(jnp.where(none, nan, ent), jnp.where(none, nan, top), share)
