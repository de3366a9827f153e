"""Drawing from a trained second-stage model (:func:`sample`: ancestral, DDIM, or token by token)
and scoring held-out sequences (:func:`nll_bound`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokdyn import _checks, diffusion
from tokdyn.models.sequence.config import SAMPLERS, Config
from tokdyn.models.sequence.network import apply


def _check_sample(key, params, cfg, n, sampler, ddim_steps):
    _checks.prng_key("key", key)
    cfg.validate()
    _checks.positive_int("n", n)
    _checks.choice("sampler", sampler, SAMPLERS)
    if sampler == "ddim":
        if not cfg.continuous:
            raise ValueError(f"sampler 'ddim' needs model='grid_ddpm', got model={cfg.model!r}")
        _checks.positive_int("ddim_steps", ddim_steps)
        if ddim_steps > cfg.T:
            raise ValueError(f"ddim_steps must be <= T={cfg.T}, got {ddim_steps}")


@_checks.checked_jit(_check_sample, static_argnames=("cfg", "n", "sampler", "ddim_steps"))
def sample(key, params, cfg: Config, n: int, sampler: str = "ancestral", ddim_steps: int = 50):
    """Draw sequences from a model. Jitted.

    ``grid_ddpm`` samples with T ancestral steps or ``ddim_steps`` DDIM steps, x_0 clipped to
    [-1, 1], then each cell takes its largest channel; D3PM models sample ancestrally, ``token_ar``
    token by token.

    Args:
      key: PRNG key.
      params: the network's parameters (traced).
      cfg: the model's :class:`Config` (static).
      n: the number of sequences, an int >= 1 (static).
      sampler: ``"ancestral"`` or ``"ddim"`` (static; ``"ddim"`` for ``grid_ddpm`` only).
      ddim_steps: DDIM steps, 1 <= ddim_steps <= T (static; used by ``"ddim"`` only).

    Returns:
      ``(n, *sample_shape)`` int32: colours for grid models, token ids otherwise.

    References:
      Ho, J., Jain, A. and Abbeel, P. (2020). Denoising diffusion probabilistic models. *NeurIPS
      2020*. arXiv:2006.11239 (``grid_ddpm``).

      Song, J., Meng, C. and Ermon, S. (2021). Denoising diffusion implicit models. *ICLR 2021*.
      arXiv:2010.02502 (``sampler="ddim"``).

      Austin, J., Johnson, D. D., Ho, J., Tarlow, D. and van den Berg, R. (2021). Structured
      denoising diffusion models in discrete state-spaces. *NeurIPS 2021*. arXiv:2107.03006 (the
      D3PM models).
    """
    proc = cfg.process()
    if cfg.model == "token_ar":

        def step(seq, args):
            i, k = args
            logits = apply(params, cfg, seq[:, :-1], jnp.zeros((n,), jnp.int32))[:, i]
            return seq.at[:, i + 1].set(jax.random.categorical(k, logits).astype(jnp.int32)), None

        seq = jnp.full((n, cfg.length + 1), cfg.vocab_size, jnp.int32)
        seq, _ = jax.lax.scan(step, seq, (jnp.arange(cfg.length), jax.random.split(key, cfg.length)))
        return seq[:, 1:]
    batched = lambda x, t: apply(params, cfg, x, jnp.full((n,), t, jnp.int32))
    if cfg.continuous:
        shape = (n, *cfg.sample_shape, cfg.colours)
        if sampler == "ddim":
            x = diffusion.ddim_sample(key, proc, batched, shape, ddim_steps, clip=1.0)
        else:
            x = diffusion.sample(key, proc, batched, shape, clip=1.0)
        return jnp.argmax(x, -1).astype(jnp.int32)
    return diffusion.sample_discrete(key, proc, batched, (n, *cfg.sample_shape))


def _check_nll(key, params, cfg, x0):
    _checks.prng_key("key", key)
    cfg.validate()
    if cfg.continuous:
        raise ValueError(
            "model 'grid_ddpm' has a density, not a probability: no likelihood comparable with the "
            "discrete models; use a D3PM or token model"
        )
    if tuple(np.shape(x0)[1:]) != cfg.sample_shape:
        raise ValueError(f"x0 must have shape (B, {', '.join(map(str, cfg.sample_shape))}), got {np.shape(x0)}")


@_checks.checked_jit(_check_nll, static_argnames=("cfg",))
def nll_bound(key, params, cfg: Config, x0):
    """Negative log-likelihood, or its bound, of sequences. Jitted. For grid models it bounds
    ``-log p`` of the grid sequence, hence of the token sequence the grids decode to; ``grid_ddpm``
    (a density) is refused with a ``ValueError``.

    Args:
      key: PRNG key of the bound's draws (unused by ``token_ar``).
      params: the network's parameters (traced).
      cfg: the model's :class:`Config` (static).
      x0: ``(B, *sample_shape)`` integer data.

    Returns:
      (B,) nats per sequence: the exact negative log-likelihood for ``token_ar``, the variational
      bound (:func:`tokdyn.diffusion.nll_bound`, one draw of x_t per t) for D3PM models.

    References:
      Austin, J., Johnson, D. D., Ho, J., Tarlow, D. and van den Berg, R. (2021). Structured
      denoising diffusion models in discrete state-spaces. *NeurIPS 2021*. arXiv:2107.03006 (the
      D3PM models).
    """
    b = x0.shape[0]
    if cfg.model == "token_ar":
        bos = jnp.full((b, 1), cfg.vocab_size, jnp.int32)
        logits = apply(params, cfg, jnp.concatenate([bos, x0[:, :-1]], 1), jnp.zeros((b,), jnp.int32))
        return optax.softmax_cross_entropy_with_integer_labels(logits, x0).sum(-1)
    proc = cfg.process()
    one = lambda k, x: diffusion.nll_bound(
        k, proc, lambda xt, t: apply(params, cfg, xt[None], jnp.reshape(t, (1,)))[0], x
    )
    return jax.vmap(one)(jax.random.split(key, b), x0)  # vmap batches the network calls of each t
