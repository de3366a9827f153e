"""Confidence-driven latent optimisation at inference (after DMLR, "Reasoning Within the Mind:
Dynamic Multimodal Interleaving in Latent Space", arXiv 2512.12623), for any model with the
protocol ``apply(params, batch, *, latents=None, intervene=None) -> Outputs``
(:class:`tokdyn.models.protocol.ApplyFn`, checked by :func:`tokdyn.diagnostics.protocol.check_apply`
before anything runs).

With the model frozen, :func:`optimise` (jitted for one model and config by :func:`make`) moves each
instance's own latents to *maximise* a confidence reward (:data:`REWARDS`: ``"entropy"``, the
paper's; ``"logprob"``, the public code's; ``"answer"``) by evolution strategies or the exact
gradient (:mod:`tokdyn.es`), optionally injecting image patches (``inject="best"``, the paper's;
``"all"``), and answers with the most confident latents seen. :func:`random_latents` is the control.
``sigma`` and the learning rate are relative to the initial latents' RMS entry. All instances run in
one compiled call, and instance i's key is ``fold_in(key, index[i])``, so results do not depend on
batching.

The rewards, the search and the injection in detail: :ref:`latent-optimisation-dmlr`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from tokdyn import _checks, es
from tokdyn.diagnostics import protocol

REWARDS = ("entropy", "logprob", "answer")
ESTIMATORS = ("es", "exact")
INJECTIONS = ("none", "best", "all")


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of the optimiser.

    Attributes:
      reward: "entropy" (the paper's), "logprob" (the public code's) or "answer".
      top_k: the k of the top-k probabilities the latent rewards look at.
      n_iters: T, optimisation iterations.
      n_pairs: antithetic pairs per ES estimate (2 * n_pairs reward evaluations).
      estimator: "es" (REINFORCE / ES estimate) or "exact" (the true gradient).
      inject: visual injection, "none", "best" (the paper's best patches) or "all" (every patch).
      top_m: image patches per latent that are candidates for injection (inject="best").
    """

    reward: str = "entropy"
    top_k: int = 10
    n_iters: int = 15
    n_pairs: int = 8
    estimator: str = "es"
    inject: str = "none"
    top_m: int = 2

    def validate(self, vocab_size: Optional[int] = None) -> "Config":
        """Check every field (``top_k`` against ``vocab_size`` when it is given); raise
        ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        _checks.choice("reward", self.reward, REWARDS)
        _checks.positive_int("top_k", self.top_k)
        if vocab_size is not None and self.top_k > vocab_size:
            raise ValueError(f"top_k must be at most the vocabulary size {vocab_size}, got {self.top_k}")
        _checks.positive_int("n_iters", self.n_iters)
        _checks.positive_int("n_pairs", self.n_pairs)
        _checks.choice("estimator", self.estimator, ESTIMATORS)
        _checks.choice("inject", self.inject, INJECTIONS)
        _checks.positive_int("top_m", self.top_m)
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced knobs (sweepable without recompiling): the SGD ascent rate, the perturbation scale
    (both in units of the initial latents' RMS entry) and its decay per iteration."""

    learning_rate: float = 1e-3
    sigma: float = 0.1
    sigma_decay: float = 0.95

    def validate(self) -> "Hparams":
        """Check the knobs when they are host numbers (positive ``learning_rate`` and ``sigma``,
        ``sigma_decay`` in (0, 1]); raise ``ValueError`` naming the knob. Returns ``self``."""
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("sigma", self.sigma, low=0.0, low_open=True)
        _checks.real("sigma_decay", self.sigma_decay, low=0.0, high=1.0, low_open=True)
        return self


def confidence(logits: jax.Array, *, reward: str, top_k: int, latent_positions, answer_position: int) -> jax.Array:
    """The confidence reward of one sequence's logits (the rewards are defined in :ref:`latent-optimisation-dmlr`).

    Args:
      logits: (T, V) the sequence's next-token logits.
      reward: "entropy", "logprob" or "answer" (static).
      top_k: k in [1, V], the top-k probabilities "entropy" and "logprob" read (static).
      latent_positions: (L,) the latents' positions ("entropy" and "logprob").
      answer_position: the position whose distribution "answer" reads.

    Returns:
      A scalar reward, to be maximised.
    """
    _checks.choice("reward", reward, REWARDS)
    if reward != "answer" and not 1 <= top_k <= logits.shape[-1]:
        raise ValueError(f"top_k must be in [1, {logits.shape[-1]}] (the vocabulary size), got {top_k}")
    if reward == "answer":
        return jnp.max(jax.nn.softmax(logits[answer_position]))
    lp = jax.nn.log_softmax(logits[jnp.asarray(latent_positions)])  # (L, V)
    top, _ = jax.lax.top_k(lp, top_k)  # (L, k) log-probabilities, largest first
    if reward == "logprob":
        return jnp.mean(top)
    q = jax.nn.log_softmax(top)  # the top-k renormalised
    entropy = -jnp.sum(jnp.exp(q) * q, -1)  # (L,)
    return 1.0 - jnp.mean(entropy)


def attended_patches(attention: jax.Array, latent_positions, patch_positions, top_m: int) -> jax.Array:
    """The union over latents of each latent's ``top_m`` image patches by attention: a latent's attention
    to a patch is the mean over layers and heads of the weight from its position to the patch's.

    Args:
      attention: (depth, H, T, T) one sequence's attention weights.
      latent_positions: (L,) the latents' positions.
      patch_positions: (P,) the image patches' positions (a sequence: P is static).
      top_m: patches per latent (static).

    Returns:
      (P,) bool, True on the chosen patches.
    """
    return attended_rows(attention[:, :, jnp.asarray(latent_positions)], patch_positions, top_m)


def attended_rows(rows: jax.Array, patch_positions, top_m: int) -> jax.Array:
    """:func:`attended_patches` from the latents' attention rows alone: ``rows`` (depth, H, L, T), one
    sequence's weights at its L latent positions (what a model that takes ``select=`` computes for
    ``Select(attention=..., rows=latent_positions)``).

    Args:
      rows: (depth, H, L, T) attention weights at the latent positions.
      patch_positions: (P,) the image patches' positions (a sequence: P is static).
      top_m: patches per latent (static).

    Returns:
      (P,) bool, True on the chosen patches.
    """
    att = rows[..., jnp.asarray(patch_positions)]  # (depth, H, L, P)
    n = len(patch_positions)
    _, idx = jax.lax.top_k(jnp.mean(att, (0, 1)), min(top_m, n))  # (L, m)
    return jnp.zeros(n, bool).at[idx.ravel()].set(True)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Result:
    """Per instance (leading axis B): the starting and the most confident latents (B, L, D), their
    rewards and answers, the reward after every iteration (B, T), NaN rewards met (B,) and the
    patches injected with the most confident latents (B, P) (None when ``inject`` is "none")."""

    latents_before: jax.Array
    latents_best: jax.Array
    reward_before: jax.Array
    reward_best: jax.Array
    answer_before: jax.Array
    answer_best: jax.Array
    rewards: jax.Array
    n_nan: jax.Array
    injected: Optional[jax.Array]


def _one(
    key,
    apply_fn,
    params,
    inst,
    cfg: Config,
    hparams: Hparams,
    latent_positions,
    answer_position,
    patch_positions,
    n_layers: int,
):
    """Optimise the latents of one instance (a batch of one). The model is asked for its logits and, for
    ``inject="best"``, the attention rows at the latents alone (:func:`tokdyn.diagnostics.protocol.apply_selected`)."""
    score = lambda out: confidence(
        out.logits[0],
        reward=cfg.reward,
        top_k=cfg.top_k,
        latent_positions=latent_positions,
        answer_position=answer_position,
    )
    start = protocol.apply_selected(apply_fn, params, inst, protocol.Select())  # logits and latents alone
    lat0 = start.latents  # (1, L, D)
    s = jnp.sqrt(jnp.mean(lat0**2)) + 1e-12  # the embedding scale
    n_patch = len(patch_positions)

    rows = tuple(latent_positions) if cfg.inject == "best" else ()
    select = protocol.Select(attention=tuple(range(n_layers)) if rows else (), rows=rows)

    def run(u, v):  # u: latents in units of s, v: (P,) injected patches -> (reward, answer, outputs)
        extra = {} if cfg.inject == "none" else {"inject": v[None]}
        out = protocol.apply_selected(apply_fn, params, inst, select, latents=u * s, **extra)
        return score(out), jnp.argmax(out.logits[0, answer_position]), out

    candidates = lambda out: attended_rows(out.attention[0], patch_positions, cfg.top_m)

    opt = es.maximiser(
        lambda u, v: run(u, v)[0],
        optax.sgd(hparams.learning_rate),
        sigma=lambda t: hparams.sigma * hparams.sigma_decay**t,
        n_pairs=cfg.n_pairs,
        estimator=cfg.estimator,
    )

    def body(carry, k):
        state, v, best = carry
        state, info = opt.step(k, state, v)
        r, a, out = run(state.x, v)
        better = r > best[1]  # a NaN reward is never better
        best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), (state.x, r, a, v), best)
        if cfg.inject == "best":
            v = jnp.where(better, v | candidates(out), v)
        return (state, v, best), (r, jnp.sum(info.n_nan) + jnp.isnan(r))

    u0 = lat0 / s
    v0 = jnp.full(n_patch, cfg.inject == "all")
    reward0, answer0 = score(start), jnp.argmax(start.logits[0, answer_position])
    r0, a0 = (reward0, answer0) if cfg.inject != "all" else run(u0, v0)[:2]  # the start as first best
    (_, _, (u_best, r_best, a_best, v_best)), (rewards, nans) = jax.lax.scan(
        body, (opt.init(u0), v0, (u0, r0, a0, v0)), jax.random.split(key, cfg.n_iters)
    )
    return Result(
        latents_before=lat0[0],
        latents_best=u_best[0] * s,
        reward_before=reward0,
        reward_best=r_best,
        answer_before=answer0,
        answer_best=a_best,
        rewards=rewards,
        n_nan=jnp.sum(nans),
        injected=None if cfg.inject == "none" else v_best,
    )


def _checked_positions(apply_fn, cfg: Config, latent_positions, patch_positions) -> tuple:
    """``(latent positions, patch positions)`` as tuples of ints, checked against ``cfg`` (its reward
    and injection) and ``apply_fn`` (it must take ``inject=`` when ``cfg`` injects)."""
    if not callable(apply_fn):
        raise TypeError(
            f"apply_fn must be a model's apply(params, batch, *, latents=None), got {type(apply_fn).__name__}"
        )
    positions = tuple(int(p) for p in latent_positions)
    if not positions and cfg.reward != "answer":
        raise ValueError(f"latent_positions must name at least one position for reward={cfg.reward!r}, got ()")
    patches = tuple(int(p) for p in patch_positions)
    if cfg.inject != "none":
        if not patches:
            raise ValueError(f"patch_positions must name the image patches for inject={cfg.inject!r}, got ()")
        if cfg.inject == "best" and not positions:
            raise ValueError(
                "latent_positions must name at least one position for inject='best' (their "
                "attention picks the patches), got ()"
            )
        try:
            takes = "inject" in inspect.signature(apply_fn).parameters
        except (TypeError, ValueError):
            takes = True
        if not takes:
            raise TypeError(f"apply_fn must take inject= (a mask over the image patches) for inject={cfg.inject!r}")
    return positions, patches


def optimise(
    key: jax.Array,
    apply_fn: Callable,
    params,
    batch,
    cfg: Config = Config(),
    hparams: Hparams = Hparams(),
    *,
    latent_positions,
    answer_position: int,
    patch_positions=(),
    index=None,
    chunk: Optional[int] = 4,
) -> Result:
    """Optimise the latents of every instance of ``batch`` (leading axis B), vmapped.

    Args:
      key: root key; instance i uses ``fold_in(key, index[i])``.
      apply_fn: the protocol ``apply(params, batch, *, latents=None) -> Outputs`` (batched, as a
        model's ``apply``; each instance is passed as a batch of one).
      params: the frozen model weights.
      batch: a pytree of arrays with a leading instance axis B.
      cfg: :class:`Config` (static).
      hparams: :class:`Hparams` (traced).
      latent_positions: the sequence positions of the L latents (what "entropy"/"logprob" score).
      answer_position: the sequence position whose logits give the answer.
      patch_positions: the sequence positions of the P image patches, in the order of the model's
        ``inject`` mask (needed by ``cfg.inject`` "best" and "all").
      index: (B,) instance ids for the keys (default ``arange(B)``).
      chunk: instances vmapped at once, the chunks run one after another (``lax.map``: keeps each
        chunk's working set in cache on a CPU); None: all B at once (the choice for a GPU).

    Returns:
      :class:`Result`, leading axis B. To jit, hold ``apply_fn``, ``cfg`` and the positions static, as
      :func:`make` does.
    """
    _checks.prng_key("key", key)
    cfg.validate()
    hparams.validate()
    positions, patches = _checked_positions(apply_fn, cfg, latent_positions, patch_positions)
    uses = ("latents",) + ((("latents", "inject"),) if cfg.inject != "none" else ())
    dims = protocol.check_apply(
        apply_fn,
        params,
        batch,
        uses=uses,
        n_inject=len(patches),
        need_latents="the latent optimiser",
        positions={"latent_positions": positions, "answer_position": answer_position, "patch_positions": patches},
        arrays={} if index is None else {"index": (index, ("B",))},
    )
    cfg.validate(None if cfg.reward == "answer" else dims.vocab)
    n = dims.batch
    index = jnp.arange(n) if index is None else jnp.asarray(index)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
    one = lambda k, inst: _one(
        k,
        apply_fn,
        params,
        jax.tree_util.tree_map(lambda a: a[None], inst),
        cfg,
        hparams,
        positions,
        answer_position,
        patches,
        dims.layers,
    )
    if chunk is not None:
        _checks.positive_int("chunk", chunk)
        return jax.lax.map(lambda kb: one(*kb), (keys, batch), batch_size=min(chunk, n))
    return jax.vmap(one)(keys, batch)


def make(
    apply_fn: Callable,
    cfg: Config,
    *,
    latent_positions,
    answer_position: int,
    patch_positions=(),
    chunk: Optional[int] = 4,
) -> Callable:
    """``jit(optimise)`` for one model and config: ``f(key, params, batch, hparams, index) -> Result``,
    compiled once per batch shape, ``hparams`` traced, ``index`` (B,) the instances' ids (or None).

    Args:
      apply_fn: the model's ``apply`` (see :func:`optimise`).
      cfg: :class:`Config`.
      latent_positions: the sequence positions of the L latents.
      answer_position: the sequence position whose logits give the answer.
      patch_positions: the P image patches' positions (for ``cfg.inject`` "best" and "all").
      chunk: instances vmapped at once (see :func:`optimise`).

    Returns:
      The jitted ``f``.
    """
    cfg.validate()
    positions = tuple(int(p) for p in latent_positions)
    patches = tuple(int(p) for p in patch_positions)
    return jax.jit(
        lambda key, params, batch, hparams, index: optimise(
            key,
            apply_fn,
            params,
            batch,
            cfg,
            hparams,
            latent_positions=positions,
            answer_position=answer_position,
            patch_positions=patches,
            index=index,
            chunk=chunk,
        )
    )


def random_latents(key: jax.Array, latents: jax.Array) -> jax.Array:
    """The control: Gaussian directions with the norm of each latent (..., L, D)."""
    z = jax.random.normal(key, latents.shape, latents.dtype)
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True) * jnp.linalg.norm(latents, axis=-1, keepdims=True)
