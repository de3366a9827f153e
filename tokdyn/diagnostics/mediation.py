"""Mechanistic diagnostics of latent reasoning, for any model with the protocol
``apply(params, batch, *, latents=None, intervene=None[, drop=None]) -> Outputs``
(:class:`tokdyn.models.protocol.ApplyFn`; every field's shape in
:class:`tokdyn.models.protocol.Outputs`).

- Causal mediation, input -> latent: :func:`shift`, :func:`input_to_latent`, :func:`noise_at`.
- Causal mediation, latent -> answer: :func:`interventions` (the kinds of :data:`INTERVENTIONS`),
  :func:`latent_effects` (all of them in one vmapped pass) and :func:`latent_to_answer`.
- The decomposition of the latent block and the narrowness of its attention live in
  :mod:`tokdyn.diagnostics.decomposition` (:func:`~tokdyn.diagnostics.decomposition.decompose`,
  :func:`~tokdyn.diagnostics.decomposition.narrowness`, :func:`~tokdyn.diagnostics.decomposition.concentration`,
  :data:`~tokdyn.diagnostics.decomposition.ALL_SETTINGS`); their names are attributes of this module too.

Positions are Python ints (static). Each function that takes a model first checks it with
:func:`tokdyn.diagnostics.protocol.check_apply` (no device work, no compile), so a model of
another output layout, a position outside the sequence or a missing argument is a
``ValueError``/``TypeError`` naming it, before anything runs.

What each intervention and setting does: :doc:`/concepts/diagnostics`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.diagnostics import protocol
from tokdyn.diagnostics.decomposition import (  # noqa: F401 (their first home: kept as names of this module)
    ALL_SETTINGS,
    SETTINGS,
    Narrowness,
    check_decompose,
    concentration,
    decompose,
    narrowness,
)

INTERVENTIONS = ("zeros", "noise", "mean", "constant", "swap", "other")


_positions = protocol.as_positions


def _kinds(name: str, kinds, allowed) -> tuple:
    if isinstance(kinds, str) or not len(kinds):
        raise ValueError(f"{name} must name at least one of {list(allowed)}, got {kinds!r}")
    for k in kinds:
        _checks.choice(name, k, allowed)
    return tuple(kinds)


# ---------------------------------------------------------------------------------------------- input -> latent


class Shift(NamedTuple):
    """Per instance and step (B, S): cosine distance ``1 - cos`` and ``|a - b| / |a|``."""

    cosine_distance: jax.Array
    relative_l2: jax.Array


def shift(a: jax.Array, b: jax.Array) -> Shift:
    """How far states ``b`` (..., D) moved from ``a`` (same shape). Zero vectors count as
    unmoved when both are zero and as fully moved (distance 1, relative L2 1) otherwise.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.diagnostics import mediation
      >>> s = mediation.shift(jnp.array([[1.0, 0.0], [1.0, 0.0]]), jnp.array([[1.0, 0.0], [0.0, 2.0]]))
      >>> print(np.asarray(s.cosine_distance), np.asarray(s.relative_l2).round(3))   # unmoved, then turned
      [0. 1.] [0.    2.236]
    """
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(f"b must have a's shape {jnp.shape(a)}, got {jnp.shape(b)}")
    na, nb = jnp.linalg.norm(a, axis=-1), jnp.linalg.norm(b, axis=-1)
    dot = jnp.sum(a * b, -1)
    both = (na > 0) & (nb > 0)
    cos = jnp.where(both, dot / jnp.where(both, na * nb, 1.0), jnp.where((na == 0) & (nb == 0), 1.0, 0.0))
    diff = jnp.linalg.norm(a - b, axis=-1)
    rel = jnp.where(na > 0, diff / jnp.where(na > 0, na, 1.0), jnp.where(diff > 0, 1.0, 0.0))
    return Shift(1.0 - cos, rel)


def input_to_latent(
    apply_fn: Callable, params, batch, perturbed, *, positions=(), layer: int = -1, intervene: Optional[Callable] = None
) -> dict:
    """How far the fed-back latents, and the states at ``positions``, move when ``batch`` becomes
    ``perturbed``.

    Args:
      apply_fn: the model's ``apply`` (the protocol of :mod:`tokdyn.diagnostics.protocol`).
      params: the model's weights.
      batch: a batch of B instances.
      perturbed: the perturbed batch, of ``batch``'s shapes (e.g. :func:`tokdyn.diagnostics.vlm.perturb_pixels`).
      positions: sequence positions (Python ints) whose states are compared; () for the latents alone.
      layer: an index into ``Outputs.hidden`` (0: the input embeddings, -1: the last block's output).
      intervene: optional ``intervene`` for the perturbed pass (e.g. :func:`noise_at`).

    Returns:
      ``{"latents": Shift}`` with (B, L) fields, and ``"states"``, a :class:`Shift` with
      (B, len(positions)) fields, when ``positions`` is given.
    """
    positions = _positions("positions", positions)
    protocol.check_apply(
        apply_fn,
        params,
        batch,
        uses=() if intervene is None else ("intervene",),
        positions={"positions": positions},
        layer=layer,
        batches={"perturbed": perturbed},
        reads_hidden=bool(positions),
    )
    a = apply_fn(params, batch)
    b = apply_fn(params, perturbed) if intervene is None else apply_fn(params, perturbed, intervene=intervene)
    out = {"latents": shift(a.latents, b.latents)}
    if positions:
        idx = jnp.asarray(positions)
        out["states"] = shift(a.hidden[:, layer, idx], b.hidden[:, layer, idx])
    return out


def noise_at(key: jax.Array, positions, sigma) -> Callable:
    """An ``intervene`` adding Gaussian noise to the input embeddings at ``positions``, ``sigma``
    (traceable) times the RMS entry of those embeddings in each instance (the input-side
    perturbation of a continuous image: "Gaussian noise at several sigma").

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.diagnostics import mediation
      >>> edit = mediation.noise_at(jax.random.key(0), [1], 0.5)   # position 1 of each instance
      >>> x = jnp.ones((2, 3, 4))   # (B, T, D) input embeddings
      >>> moved = np.asarray(edit(x) != x).any(-1)
      >>> moved.tolist()
      [[False, True, False], [False, True, False]]
    """
    idx = jnp.asarray(_positions("positions", positions))
    if not _checks.is_traced(sigma):
        _checks.real("sigma", sigma, low=0.0, low_open=True)

    def edit(x):
        e = x[:, idx]
        rms = jnp.sqrt(jnp.mean(e**2, (1, 2), keepdims=True))
        return x.at[:, idx].add(sigma * rms * jax.random.normal(key, e.shape, e.dtype))

    return edit


# ---------------------------------------------------------------------------------------------- latent -> answer


def swap_permutation(key: jax.Array, n: int) -> jax.Array:
    """(n,) source index of each instance for ``swap``: a random cycle through all n instances, so
    ``perm[i] != i`` for n >= 2. ``n``: a static int >= 1 (``TypeError`` / ``ValueError`` naming it
    otherwise, before anything is traced).

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from tokdyn.diagnostics import mediation
      >>> perm = np.asarray(mediation.swap_permutation(jax.random.key(0), 5))
      >>> sorted(perm.tolist()), bool((perm != np.arange(5)).all())   # a permutation that moves everyone
      ([0, 1, 2, 3, 4], True)
    """
    _checks.prng_key("key", key)
    _checks.positive_int("n", n)
    _checks.elements_fit("the permutation (n,)", dict(n=n))
    order = jax.random.permutation(key, n)
    return jnp.zeros(n, int).at[order].set(jnp.roll(order, -1))


def interventions(key: jax.Array, latents: jax.Array, kinds=INTERVENTIONS, *, other=None) -> jax.Array:
    """Replacement latents for ``kinds`` (:doc:`/concepts/diagnostics` says what each does), built from the model's own,
    the batch standing for the whole set. ``zeros``, ``noise`` (N(0, 1) times each latent vector's own RMS),
    ``mean`` (the mean of the other instances' latents) and ``swap`` (a keyed cycle through the instances) are
    the kinds of the one table, :data:`tokdyn.models.vlm.interventions.TABLE`, with its rules; ``constant`` (one
    random vector at the latents' overall RMS for every instance and slot) and ``other`` (latents one gives,
    e.g. another variant's: the table's ``swap`` from another source) are this protocol's own.

    Args:
      key: PRNG key; ``noise``, ``swap`` and ``constant`` draw from ``jax.random.split(key, 3)`` in that
        order (``swap``: :func:`swap_permutation` of the second key).
      latents: (B, L, D) the model's own latents.
      kinds: K names from :data:`INTERVENTIONS` (static).
      other: (B, L, D) latents for ``"other"`` (e.g. another variant's).

    Returns:
      (K, B, L, D) replacement latents, in the order of ``kinds``.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.diagnostics import mediation
      >>> latents = jnp.arange(12.0).reshape(3, 2, 2)   # (B, L, D)
      >>> out = mediation.interventions(jax.random.key(0), latents, ("zeros", "mean", "swap"))
      >>> out.shape
      (3, 3, 2, 2)
      >>> print(np.asarray(out[1, 0]))   # "mean" for instance 0: the mean of instances 1 and 2
      [[6. 7.]
       [8. 9.]]
    """
    kinds = _kinds("kinds", kinds, INTERVENTIONS)
    if jnp.ndim(latents) != 3:
        raise ValueError(f"latents must be (B, L, D), got shape {jnp.shape(latents)}")
    if "other" in kinds and (other is None or jnp.shape(other) != jnp.shape(latents)):
        raise ValueError(
            f"other must be latents of the latents' shape {jnp.shape(latents)} for the 'other' "
            f"intervention, got {None if other is None else jnp.shape(other)}"
        )
    k_noise, k_swap, k_const = jax.random.split(key, 3)
    rms = jnp.sqrt(jnp.mean(latents**2, -1, keepdims=True))  # (B, L, 1): each latent vector's own
    n = latents.shape[0]
    # the mean of the OTHER instances (the table's rule); an instance alone keeps its own
    others = (jnp.sum(latents, 0, keepdims=True) - latents) / max(n - 1, 1) if n > 1 else latents
    make = {
        "zeros": lambda: jnp.zeros_like(latents),
        "noise": lambda: jax.random.normal(k_noise, latents.shape, latents.dtype) * rms,
        "mean": lambda: others,
        "constant": lambda: jnp.broadcast_to(
            jax.random.normal(k_const, latents.shape[-1:], latents.dtype) * jnp.sqrt(jnp.mean(latents**2)),
            latents.shape,
        ),
        "swap": lambda: latents[swap_permutation(k_swap, latents.shape[0])],
        "other": lambda: jnp.asarray(other, latents.dtype),
    }
    return jnp.stack([make[k]() for k in kinds])


class Effects(NamedTuple):
    """Per intervention and instance (K, B): the answer flipped (vs. the model's own latents), it is
    correct (NaN without ``answers``), KL(P_original || P_intervened) of the answer distribution,
    and the replacement differs from the original latents; ``correct_before`` (B,)."""

    flipped: jax.Array
    correct: jax.Array
    kl: jax.Array
    changed: jax.Array
    correct_before: jax.Array


def latent_effects(
    key: jax.Array,
    apply_fn: Callable,
    params,
    batch,
    *,
    answer_position: int,
    answers=None,
    kinds=INTERVENTIONS,
    other=None,
    chunk: Optional[int] = 16,
) -> Effects:
    """The effects on the answer of replacing the model's latents by each intervention. Pure: jit or vmap
    it with ``apply_fn``, ``answer_position``, ``kinds`` and ``chunk`` static. The reference pass feeds
    the model its own latents through the same program, so an answer that ignores its latents shows
    exactly zero effect.

    Args:
      key: PRNG key of the replacements (:func:`interventions`, built from the whole batch).
      apply_fn: the model's ``apply`` (the protocol of :mod:`tokdyn.diagnostics.protocol`).
      params: the model's weights.
      batch: a batch of B instances.
      answer_position: the sequence position whose logits give the answer.
      answers: optional (B,) correct token ids (None: correctness is NaN).
      kinds: K names from :data:`INTERVENTIONS`.
      other: (B, L, D) latents for ``"other"``.
      chunk: instances per latent-fed pass, the chunks run one after another (``lax.map``: each
        chunk's working set stays in cache on a CPU); None: all at once.

    Returns:
      :class:`Effects`: (K, B) flips, correctness, KL and ``changed``; (B,) ``correct_before``.
    """
    kinds = _kinds("kinds", kinds, INTERVENTIONS)
    _check_effects(apply_fn, params, batch, answer_position, answers, kinds, other)
    nothing = protocol.Select()  # logits and latents alone: a model that takes select= computes no attention map
    base = protocol.apply_selected(apply_fn, params, batch, nothing)
    repl = interventions(key, base.latents, kinds, other=other)
    # the reference is the model's own latents given back through the same program, so an answer
    # that ignores the latents shows exactly zero effect, not compiler round-off
    zs = jnp.concatenate([base.latents[None], repl])  # (K + 1, B, L, D)

    def fed(inst, z):  # a batch of instances, z (K + 1, b, L, D) -> (K + 1, b, V)
        def answer(zk):
            out = protocol.apply_selected(apply_fn, params, inst, nothing, latents=zk)
            return jax.nn.log_softmax(out.logits[:, answer_position])

        return jax.vmap(answer)(z)

    if chunk is None:
        lp = fed(batch, zs)
    else:
        _checks.positive_int("chunk", chunk)
        one = lambda a: fed(jax.tree_util.tree_map(lambda x: x[None], a[0]), a[1][:, None])[:, 0]  # (K + 1, V)
        n = base.latents.shape[0]
        lp = jnp.swapaxes(jax.lax.map(one, (batch, jnp.swapaxes(zs, 0, 1)), batch_size=min(chunk, n)), 0, 1)
    lp0, lp = lp[0], lp[1:]
    a0, a = jnp.argmax(lp0, -1), jnp.argmax(lp, -1)  # (B,), (K, B)
    kl = jnp.sum(jnp.exp(lp0) * (lp0 - lp), -1)
    if answers is None:
        correct, before = jnp.full(a.shape, jnp.nan), jnp.full(a0.shape, jnp.nan)
    else:
        correct, before = (a == answers).astype(lp.dtype), (a0 == answers).astype(lp.dtype)
    changed = jnp.any(repl != base.latents[None], (2, 3))
    return Effects(
        flipped=(a != a0).astype(lp.dtype),
        correct=correct,
        kl=jnp.maximum(kl, 0.0),
        changed=changed,
        correct_before=before,
    )


def _check_effects(apply_fn, params, batch, answer_position, answers, kinds, other):
    arrays = {} if answers is None else {"answers": (answers, ("B",))}
    if "other" in kinds:
        arrays["other"] = (other, ("B", "L", "D"), "(latents) for the 'other' intervention")
    protocol.check_apply(
        apply_fn,
        params,
        batch,
        uses=("latents",),
        positions={"answer_position": answer_position},
        need_latents="latent interventions",
        arrays=arrays,
    )


def latent_to_answer(
    key: jax.Array,
    apply_fn: Callable,
    params,
    batch,
    *,
    answer_position: int,
    answers=None,
    kinds=INTERVENTIONS,
    other=None,
) -> Effects:
    """:func:`latent_effects`, compiled, after checking the arguments.

    Args:
      key: PRNG key of the replacements.
      apply_fn: the model's ``apply`` (the protocol of :mod:`tokdyn.diagnostics.protocol`).
      params: the model's weights.
      batch: a batch of B instances.
      answer_position: the sequence position whose logits give the answer.
      answers: optional (B,) correct token ids (None: correctness is NaN).
      kinds: K names from :data:`INTERVENTIONS`.
      other: (B, L, D) latents, required by ``"other"``.

    Returns:
      :class:`Effects`, as :func:`latent_effects`.

    Raises:
      ValueError: an intervention left every instance's latents as they were (it would measure nothing).
    """
    _checks.prng_key("key", key)
    if not callable(apply_fn):
        raise TypeError(
            f"apply_fn must be a model's apply(params, batch, *, latents=None), got {type(apply_fn).__name__}"
        )
    kinds = _kinds("kinds", kinds, INTERVENTIONS)
    if "other" in kinds and other is None:
        raise ValueError("other must be given (latents (B, L, D)) for the 'other' intervention, got None")
    _check_effects(apply_fn, params, batch, answer_position, answers, kinds, other)
    f = jax.jit(
        lambda k, p, b, a, o: latent_effects(
            k, apply_fn, p, b, answer_position=int(answer_position), answers=a, kinds=kinds, other=o
        )
    )
    eff = f(key, params, batch, answers, other)
    idle = [k for k, c in zip(kinds, np.asarray(eff.changed).any(-1)) if not c]
    if idle:
        raise ValueError(
            f"interventions {idle} left every instance's latents unchanged: they would measure "
            "nothing (does the model have latents? are they all zero or all equal?)"
        )
    return eff
