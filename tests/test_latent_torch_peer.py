"""The PyTorch peer of the latent reasoner (benchmarks/torch_latent.py) computes the same logits
as tokdyn's model on the same weights (skipped where PyTorch is not installed)."""

import os
import sys

import jax
import numpy as np
import pytest

from tokdyn.models.latent import model as latent_model
from tokdyn.data import grid_tasks as tasks

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import torch_latent  # noqa: E402

TASK = tasks.Config(grid_size=3, n_colours=3)


@pytest.mark.parametrize("mode, caption", [("none", 0), ("none", 4), ("feedback", 0)])
def test_same_logits_on_the_same_weights(mode, caption):
    cfg = latent_model.Config(
        task=TASK,
        width=32,
        depth=2,
        heads=4,
        latent_mode=mode,
        n_latents=3 if mode != "none" else 0,
        caption_len=caption,
    )
    model = latent_model.Model(cfg)
    params = model.init(jax.random.key(0))
    params = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape), params)  # not the init
    batch = tasks.generate(jax.random.key(2), 6, TASK)
    ours = np.asarray(model.apply(params, batch).logits)
    net = torch_latent.TorchReasoner.from_flax(cfg, params)
    args = [torch.from_numpy(np.asarray(a)).long() for a in (batch.image, batch.question)]
    if caption:
        args.append(torch.from_numpy(np.asarray(batch.caption)).long())
    with torch.no_grad():
        theirs = net(*args).numpy()
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["direct", "latent"])
def test_same_training_steps_on_the_same_batches(name):
    """Three optimiser steps of tokdyn's ``train_step`` and of the peer's (clipping, AdamW with
    decoupled weight decay, warm-up) from the same weights on the same batches end at the same
    weights. A large learning rate and weight decay make every part of the update visible."""
    from tokdyn import train
    from tokdyn.models.latent import training, variants

    tc = training.Config(
        task=TASK,
        width=32,
        depth=2,
        heads=4,
        n_latents=3,
        train=train.Config(steps=10, steps_per_call=10, warmup=2),
        batch_size=8,
    )
    hp = training.Hparams(learning_rate=1e-2, weight_decay=0.5)
    trainer = training.trainer(tc, name)
    first = trainer.first  # the variant's first stage: the answer's cross-entropy alone for these two
    key = jax.random.key(0)
    state = train.init_state(trainer, key, hp)
    run_key = first.keys(key)[1]
    cfg = variants.model_config(tc, name)
    net = torch_latent.TorchReasoner.from_flax(cfg, state.params)
    opt, sched = torch_latent.optimizer(
        net, learning_rate=1e-2, weight_decay=0.5, warmup=tc.train.warmup_steps, steps=tc.train.steps
    )
    step = jax.jit(train.make_step(first))
    pool = tasks.generate(jax.random.key(10), 64, TASK)
    for i in range(3):
        # the batch the training layer's step draws at step i (fold_in(run key, step)), handed to the peer
        batch = first.batch(jax.random.fold_in(run_key, i), pool, i)
        state, _ = step(state, pool, run_key)
        torch_latent.train_step(
            net,
            opt,
            sched,
            *(torch.from_numpy(np.asarray(a)).long() for a in (batch.image, batch.question, batch.answer)),
        )
    start = torch_latent.TorchReasoner.from_flax(cfg, train.init_state(trainer, key, hp).params)
    ours, theirs, start = (
        m.state_dict() for m in (torch_latent.TorchReasoner.from_flax(cfg, state.params), net, start)
    )
    assert max(float((ours[k] - start[k]).abs().max()) for k in ours) > 1e-2  # far above the tolerance below
    for k in ours:
        if name == "direct" and k.startswith("proj."):  # unused without latents: torch's AdamW skips
            continue  # parameters without a gradient, optax decays them; neither changes the function
        a, b = ours[k].numpy(), theirs[k].numpy()
        if k.endswith("qkv.bias"):  # the key bias: its gradient is 0 in exact arithmetic (softmax ignores
            a, b = np.delete(a, np.s_[32:64]), np.delete(b, np.s_[32:64])  # it), Adam scales rounding noise
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=k)
