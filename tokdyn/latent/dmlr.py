"""Confidence-driven latent optimisation at inference (after DMLR, "Reasoning Within the Mind:
Dynamic Multimodal Interleaving in Latent Space", arXiv 2512.12623), for any model with the
protocol ``apply(params, batch, *, latents=None, intervene=None) -> Outputs``.

An instance's starting latents are the model's own (``apply(params, batch).latents``: what its
trained feedback loop produces). With the model frozen, the optimiser changes them to *maximise*
a confidence reward of the model's output distributions and answers with the most confident
latents it has seen (the starting ones included). Rewards (:data:`REWARDS`), over the next-token
distributions ``P_i`` at the scored positions:

- ``"entropy"`` (the paper's): ``R = 1 - (1/L) sum_i H_k(P_i)`` over the L latent positions,
  ``H_k`` the entropy of the top-k probabilities of ``P_i`` renormalised to sum to 1;
- ``"logprob"`` (the public code's): ``R = (1/L) sum_i mean_{top k} log P_i(j)``, the negative of
  the code's "-mean log of the top-k probabilities". It is largest when the top k share the mass
  evenly: it does not reward a peaked distribution, and the two rewards can disagree;
- ``"answer"``: the largest probability at the answer position.

The search runs in units of the initial latents' scale: ``latents = s * u``, ``s`` the
root-mean-square entry of the instance's initial latents, so ``sigma`` and the learning rate are
relative to the embedding scale. Iteration t (0-based) perturbs with ``sigma * sigma_decay ** t``.
``estimator="es"`` estimates the gradient with :func:`tokdyn.es.es_grad` (antithetic pairs), and
``"exact"`` takes the true gradient of the same reward (the model is differentiable); both step by
SGD ascent through :func:`tokdyn.es.maximiser`. :func:`random_latents` is the control: random
directions with each latent's norm, no search.

All instances run in one compiled call: chunks of ``chunk`` instances vmapped, one chunk after
another (``lax.map``; ``chunk=None``: one wide vmap). Instance i's key is ``fold_in(key, index[i])``,
so results do not depend on how instances are batched. Not here: the paper's best-patch injection (it
inserts image-patch embeddings before the latents, which needs a model that takes extra input
positions).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from tokdyn import _checks, es

REWARDS = ("entropy", "logprob", "answer")
ESTIMATORS = ("es", "exact")


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of the optimiser.

    Attributes:
      reward: "entropy" (the paper's), "logprob" (the public code's) or "answer".
      top_k: the k of the top-k probabilities the latent rewards look at.
      n_iters: T, optimisation iterations.
      n_pairs: antithetic pairs per ES estimate (2 * n_pairs reward evaluations).
      estimator: "es" (REINFORCE / ES estimate) or "exact" (the true gradient).
    """

    reward: str = "entropy"
    top_k: int = 10
    n_iters: int = 15
    n_pairs: int = 8
    estimator: str = "es"

    def validate(self, vocab_size: Optional[int] = None) -> "Config":
        _checks.choice("reward", self.reward, REWARDS)
        _checks.positive_int("top_k", self.top_k)
        if vocab_size is not None and self.top_k > vocab_size:
            raise ValueError(f"top_k must be at most the vocabulary size {vocab_size}, got {self.top_k}")
        _checks.positive_int("n_iters", self.n_iters)
        _checks.positive_int("n_pairs", self.n_pairs)
        _checks.choice("estimator", self.estimator, ESTIMATORS)
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
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("sigma", self.sigma, low=0.0, low_open=True)
        _checks.real("sigma_decay", self.sigma_decay, low=0.0, high=1.0, low_open=True)
        return self


def confidence(logits: jax.Array, *, reward: str, top_k: int, latent_positions, answer_position: int) -> jax.Array:
    """The reward of one sequence's logits (T, V) (see the module docstring); a scalar."""
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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Result:
    """Per instance (leading axis B): the starting and the most confident latents (B, L, D), their
    rewards and answers, the reward after every iteration (B, T) and NaN rewards met (B,)."""

    latents_before: jax.Array
    latents_best: jax.Array
    reward_before: jax.Array
    reward_best: jax.Array
    answer_before: jax.Array
    answer_best: jax.Array
    rewards: jax.Array
    n_nan: jax.Array


def _one(key, apply_fn, params, inst, cfg: Config, hparams: Hparams, latent_positions, answer_position):
    """Optimise the latents of one instance (a batch of one)."""
    score = lambda out: confidence(out.logits[0], reward=cfg.reward, top_k=cfg.top_k,
                                   latent_positions=latent_positions, answer_position=answer_position)
    start = apply_fn(params, inst)
    lat0 = start.latents  # (1, L, D)
    s = jnp.sqrt(jnp.mean(lat0 ** 2)) + 1e-12  # the embedding scale

    def run(u):  # u: latents in units of s -> (reward, answer)
        out = apply_fn(params, inst, latents=u * s)
        return score(out), jnp.argmax(out.logits[0, answer_position])

    reward0 = score(start)
    answer0 = jnp.argmax(start.logits[0, answer_position])
    opt = es.maximiser(lambda u: run(u)[0], optax.sgd(hparams.learning_rate),
                       sigma=lambda t: hparams.sigma * hparams.sigma_decay ** t, n_pairs=cfg.n_pairs,
                       estimator=cfg.estimator)

    def body(carry, k):
        state, best = carry
        state, info = opt.step(k, state)
        r, a = run(state.x)
        better = r > best[1]  # a NaN reward is never better
        best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), (state.x, r, a), best)
        return (state, best), (r, jnp.sum(info.n_nan) + jnp.isnan(r))

    u0 = lat0 / s
    (_, (u_best, r_best, a_best)), (rewards, nans) = jax.lax.scan(
        body, (opt.init(u0), (u0, reward0, answer0)), jax.random.split(key, cfg.n_iters))
    return Result(latents_before=lat0[0], latents_best=u_best[0] * s, reward_before=reward0, reward_best=r_best,
                  answer_before=answer0, answer_best=a_best, rewards=rewards, n_nan=jnp.sum(nans))


def optimise(key: jax.Array, apply_fn: Callable, params, batch, cfg: Config = Config(), hparams: Hparams = Hparams(),
             *, latent_positions, answer_position: int, index=None, chunk: Optional[int] = 4) -> Result:
    """Optimise the latents of every instance of ``batch`` (leading axis B), vmapped.

    Args:
      key: root key; instance i uses ``fold_in(key, index[i])``.
      apply_fn: the protocol ``apply(params, batch, *, latents=None) -> Outputs`` (batched, as a
        model's ``apply``; each instance is passed as a batch of one).
      params: the frozen model weights.
      batch: a pytree of arrays with a leading instance axis.
      cfg, hparams: :class:`Config` (static) and :class:`Hparams` (traced).
      latent_positions: the sequence positions of the L latents (what "entropy"/"logprob" score).
      answer_position: the sequence position whose logits give the answer.
      index: (B,) instance ids for the keys (default ``arange(B)``).
      chunk: instances vmapped at once; the chunks run one after another (``lax.map``), which keeps
        each chunk's working set in cache on a CPU (None: all B at once, the choice for a GPU).

    Jit it with ``apply_fn``, ``cfg``, ``latent_positions`` and ``answer_position`` static (see
    :func:`make`).
    """
    _checks.prng_key("key", key)
    cfg.validate()
    hparams.validate()
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be a model's apply(params, batch, *, latents=None), got {type(apply_fn).__name__}")
    positions = tuple(int(p) for p in latent_positions)
    if not positions and cfg.reward != "answer":
        raise ValueError(f"latent_positions must name at least one position for reward={cfg.reward!r}, got ()")
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    index = jnp.arange(n) if index is None else jnp.asarray(index)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
    one = lambda k, inst: _one(k, apply_fn, params, jax.tree_util.tree_map(lambda a: a[None], inst), cfg,
                               hparams, positions, answer_position)
    if chunk is not None:
        _checks.positive_int("chunk", chunk)
        return jax.lax.map(lambda kb: one(*kb), (keys, batch), batch_size=min(chunk, n))
    return jax.vmap(one)(keys, batch)


def make(apply_fn: Callable, cfg: Config, *, latent_positions, answer_position: int,
         chunk: Optional[int] = 4) -> Callable:
    """``jit(optimise)`` for one model and config: ``f(key, params, batch, hparams, index) -> Result``
    (compiled once per batch shape; ``hparams`` traced)."""
    cfg.validate()
    positions = tuple(int(p) for p in latent_positions)
    return jax.jit(lambda key, params, batch, hparams, index: optimise(
        key, apply_fn, params, batch, cfg, hparams, latent_positions=positions, answer_position=answer_position,
        index=index, chunk=chunk))


def random_latents(key: jax.Array, latents: jax.Array) -> jax.Array:
    """The control: Gaussian directions with the norm of each latent (..., L, D)."""
    z = jax.random.normal(key, latents.shape, latents.dtype)
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True) * jnp.linalg.norm(latents, axis=-1, keepdims=True)
