"""Gradients of the diffusion losses and of every model's loss against central finite differences in
float64 (``jax.enable_x64``): the Gaussian epsilon loss (and the Gaussian variational term through
``predict_x0`` and ``posterior_mean_var``) in the model's output, the D3PM hybrid loss in the x_0
logits (both kernels, t = 1 and t >= 2), and the losses of the slot autoencoder, the visual-token
autoencoder and the sequence models (DDPM and D3PM through the network) in
their parameters: a directional derivative along a random direction over all parameters, and one
over a single parameter block, to a relative 1e-6. Each comparison is shown able to fail: the
same comparison of a gradient scaled by 1 + 1e-4, or with one parameter block's gradient
dropped, is refused.

The losses of the slot autoencoder and the sequence models through their
networks are full executions (``-m full``, run by CI after the default run): each compiles a model
and its float64 derivatives. The default run checks every model's gradient through the
transformation table (tests/test_transformations.py: reverse mode against forward mode)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import diffusion, train
from tokdyn.models import sequence, slots, vtae
from tokdyn.models.vtae import training as vtae_training

RTOL = 1e-6  # float64: the derivative is right to many more digits; a wrong one is off by far more


def _f64(tree):
    """The float leaves of ``tree`` in float64, converted on the host (nothing compiles)."""
    return jax.tree_util.tree_map(
        lambda a: np.asarray(a, np.float64) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree
    )


def _direction(tree, seed, only=None):
    """A random direction of unit norm over the float leaves of ``tree`` (or over the leaves whose
    path contains ``only``)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    rng = np.random.default_rng(seed)
    u = []
    for path, v in leaves:
        on = jnp.issubdtype(jnp.result_type(v), jnp.floating) and (only is None or only in jax.tree_util.keystr(path))
        u.append(rng.normal(size=np.shape(v)) if on else np.zeros(np.shape(v)))
    norm = np.sqrt(sum(float(np.sum(x * x)) for x in u))
    assert norm > 0, f"no parameter matches {only!r}"
    return jax.tree_util.tree_unflatten(treedef, [(x / norm).astype(np.float64) for x in u])


def _vdot(x, y) -> float:
    """<x, y> in float64 on the host (NumPy: nothing compiles)."""
    return float(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)))


def _dot(a, b):
    return sum(_vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _axpy(a, u, x):
    """x + a u, leaf by leaf on the host in float64 (each leaf keeps its dtype)."""
    return jax.tree_util.tree_map(lambda p, d: (np.asarray(p) + a * np.asarray(d)).astype(np.asarray(p).dtype), x, u)


def _central(f, x, u, h):
    """Fourth-order central difference of ``f`` at ``x`` along ``u`` (float64)."""
    g = lambda a: float(f(_axpy(a, u, x)))  # noqa: E731
    return (8 * (g(h) - g(-h)) - (g(2 * h) - g(-2 * h))) / (12 * h)


_PROGRAMS = {}  # loss -> its program, for the test that made it


@pytest.fixture(autouse=True)
def _programs_of_one_test():
    yield
    _PROGRAMS.clear()


def _value_and_grad(loss):
    """``jax.jit(jax.value_and_grad(loss))``, made once per loss: one program gives the loss at the
    finite-difference points and its gradient, for every direction checked."""
    if loss not in _PROGRAMS:
        _PROGRAMS[loss] = jax.jit(jax.value_and_grad(loss))
    return _PROGRAMS[loss]


def check_gradient(loss, params, *, seed=0, only=None, h=1e-4, rtol=RTOL, value_and_grad=None):
    """``jax.grad(loss)`` at ``params`` (float64) along a random direction equals the central
    difference of ``loss``; a gradient scaled by 1 + 1e-4 fails the same comparison, and so does
    one missing the block of parameters that contributes most to the directional derivative.
    ``value_and_grad``: the program of ``(loss, gradient)`` where several tests share one (default:
    made from ``loss``)."""
    assert all(
        leaf.dtype == jnp.float64
        for leaf in jax.tree_util.tree_leaves(params)
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    ), "compare in float64"
    value_and_grad = value_and_grad or _value_and_grad(loss)
    value, grad = value_and_grad(params)
    assert value.dtype == jnp.float64, f"the loss is computed in {value.dtype}, not float64"
    loss = lambda p: value_and_grad(p)[0]  # noqa: E731 (the same program at the finite-difference points)
    u = _direction(params, seed, only)
    got, fd = _dot(grad, u), _central(loss, params, u, h)
    # the finite difference is itself accurate: halving the step changes it by far less than RTOL
    fd_half = _central(loss, params, u, h / 2)
    np.testing.assert_allclose(fd_half, fd, rtol=rtol / 10, atol=1e-12, err_msg="finite differences not converged")
    np.testing.assert_allclose(got, fd, rtol=rtol, atol=1e-12, err_msg="gradient vs central differences")
    assert abs(got) > 1e-8, "a vanishing directional derivative proves nothing: pick another direction"
    # the comparison can fail: a slightly wrong gradient is refused
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(got * (1 + 1e-4), fd, rtol=rtol, atol=1e-12)
    leaves = jax.tree_util.tree_leaves(grad)
    if len(leaves) > 1:  # a gradient missing one block of parameters
        ulv = jax.tree_util.tree_leaves(u)
        k = max(range(len(leaves)), key=lambda i: abs(_vdot(leaves[i], ulv[i])))
        wrong = _dot(grad, u) - _vdot(leaves[k], ulv[k])
        with pytest.raises(AssertionError):
            np.testing.assert_allclose(wrong, fd, rtol=rtol, atol=1e-12)
    return got


# ---------------------------------------------------------------------------------------------- diffusion losses


@pytest.mark.parametrize("t", [1, 2, 5, 12])
def test_gaussian_eps_loss_and_variational_term(t):
    """The DDPM losses as functions of the model's epsilon prediction: the simple loss
    ``mean((eps_hat - eps)^2)`` at x_t = q_sample(x0), and the variational term, the squared
    distance of the posterior means of the predicted and the true x_0 over the posterior variance
    (``predict_x0`` then ``posterior_mean_var``; t >= 2)."""
    with jax.enable_x64(True):
        proc = diffusion.gaussian("linear", 12)
        rng = np.random.default_rng(t)
        x0 = jnp.asarray(rng.normal(size=(3, 4)))
        x_t, eps = diffusion.q_sample(jax.random.key(t), proc, x0, t)
        eps_hat = jnp.asarray(eps + 0.3 * rng.normal(size=eps.shape))

        def simple(e):
            return jnp.mean((e - eps) ** 2)

        check_gradient(simple, eps_hat, seed=t)
        np.testing.assert_allclose(jax.grad(simple)(eps_hat), 2 * (eps_hat - eps) / eps.size, rtol=1e-12)
        if t >= 2:

            def variational(e):
                mean, var = diffusion.posterior_mean_var(proc, diffusion.predict_x0(proc, x_t, t, e), x_t, t)
                true, _ = diffusion.posterior_mean_var(proc, x0, x_t, t)
                return 0.5 * jnp.sum((mean - true) ** 2) / var

            check_gradient(variational, eps_hat, seed=t + 1)


@functools.cache
def _hybrid_value_and_grad(kernel):
    """(loss, gradient) of the summed hybrid loss in (logits, lam), the states and t traced."""
    proc = diffusion.discrete(kernel, 4, T=10)

    def loss(params, x0, x_t, t):
        lg, lam = params
        return jnp.sum(diffusion.hybrid_loss(proc, x0, x_t, t, lg, lam)[0])

    return jax.jit(jax.value_and_grad(loss))


@pytest.mark.parametrize("kernel", diffusion.KERNELS)
@pytest.mark.parametrize("t", [1, 2, 7, 10])
def test_d3pm_hybrid_loss_in_the_logits(kernel, t):
    """``hybrid_loss`` (vb + lam ce, summed over cells) in the x_0 logits and in lam, both kernels,
    t = 1 (the x_0 likelihood) and t >= 2 (the KL); float64 logits give a float64 loss."""
    with jax.enable_x64(True):
        proc = diffusion.discrete(kernel, 4, T=10)
        rng = np.random.default_rng(10 * t + len(kernel))
        x0 = jnp.asarray(rng.integers(0, 4, size=(3, 5)), jnp.int32)
        x_t = diffusion.q_sample_discrete(jax.random.key(t), proc, x0, t)
        logits = jnp.asarray(rng.normal(size=(3, 5, 4)))

        program = _hybrid_value_and_grad(kernel)  # one per kernel: the states and t are traced
        value_and_grad = lambda params: program(params, x0, x_t, jnp.int32(t))  # noqa: E731
        check_gradient(None, (logits, np.float64(0.05)), seed=t, value_and_grad=value_and_grad)


# ---------------------------------------------------------------------------------------------- models


SLOTS = slots.Config(
    size=6,
    slots=3,
    iterations=2,
    slot_size=8,
    mlp_hidden=8,
    encoder_channels=(4, 4),
    encoder_kernel=3,
    decoder="mlp",
    decoder_hidden=8,
    train=train.Config(steps=10, steps_per_call=10),
)


@pytest.mark.full
def test_slot_autoencoder_loss():
    """The reconstruction loss of Slot Attention's autoencoder (the slot noise fixed by the key),
    along all parameters and along Slot Attention's own."""
    with jax.enable_x64(True):
        params = _f64(slots.init(jax.random.key(0), SLOTS))
        images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 6, 6, 3)))
        key = jax.random.key(1)
        loss = lambda p: slots.loss_fn(key, p, SLOTS, images)[0]  # noqa: E731
        check_gradient(loss, params, seed=0, h=1e-5)
        check_gradient(loss, params, seed=1, only="slot_attention", h=1e-5)


@pytest.mark.parametrize("decoder", ["mlp", pytest.param("cnn", marks=pytest.mark.full)])
def test_visual_token_autoencoder_loss(decoder):
    """The autoencoder's training loss with its relaxed quantiser (``gumbel_soft``, the noise fixed)
    and every extra term: sensitivity (the hinge active), batch entropy and semantic alignment."""
    cfg = vtae.Config(
        vocab_size=5,
        grid=2,
        colours=3,
        mode="gumbel_soft",
        decoder=decoder,
        hidden=8,
        channels=4,
        losses=("sensitivity", "batch_entropy", "semantic"),
        embed_dim=3,
    )
    with jax.enable_x64(True):
        params = _f64(vtae.init(jax.random.key(0), cfg))
        rng = np.random.default_rng(1)
        embeddings = jnp.asarray(rng.normal(size=(5, 3)))
        tokens = jnp.asarray([0, 1, 2, 3, 4, 1], jnp.int32)
        hp = _f64(vtae.Hparams(sens_min=10.0))  # the hinge max(0, sens_min - KL) is active
        loss = lambda p: vtae_training.loss_fn(jax.random.key(2), p, cfg, hp, tokens, 0.7, embeddings)[0]  # noqa: E731
        check_gradient(loss, params, seed=0)
        check_gradient(loss, params, seed=1, only="encoder")


@pytest.mark.full
@pytest.mark.parametrize("model", ["grid_ddpm", "grid_d3pm_absorbing", "token_d3pm_uniform", "token_ar"])
def test_sequence_model_loss(model):
    """The sequence models' losses through the network: DDPM's epsilon loss, D3PM's hybrid loss
    (the draws of t and x_t fixed by the key) and the autoregressive cross-entropy."""
    cfg = sequence.Config(
        model=model,
        length=2,
        cells=3,
        colours=3,
        vocab_size=5,
        T=6,
        width=8,
        depth=1,
        heads=2,
        train=train.Config(steps=10, steps_per_call=10, warmup=1),
    )
    with jax.enable_x64(True):
        params = _f64(sequence.init(jax.random.key(0), cfg))
        x0 = jnp.asarray(np.random.default_rng(0).integers(0, cfg.classes, (3, *cfg.sample_shape)), jnp.int32)
        hp = _f64(sequence.Hparams(lam=0.1))
        loss = lambda p: sequence.loss_fn(jax.random.key(1), p, cfg, hp, x0)[0]  # noqa: E731
        check_gradient(loss, params, seed=0)
        check_gradient(loss, params, seed=1, only="block0")
