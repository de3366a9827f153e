"""Training with the latent mode (tokdyn.models.vlm.training) on the tiny latent Qwen2.5-VL checkpoint: the
teacher-forced pass over a prompt, a block of fed-back states and a tail gives the latents and the tail's
log-probabilities that generation with the block forced after the prompt gives (the same rule, the same
positions), its gradient flows through the fed-back states, and the losses are their closed forms."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("safetensors")

from tokdyn.models import qwen2_5_vl, vlm  # noqa: E402
from tokdyn.models.vlm import training  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_latent"
SIZE, TAIL = 3, 5


@pytest.fixture(scope="module")
def setup():
    model = qwen2_5_vl.load(FIXTURE, dtype="float32")
    chat = vlm.Chat.load(FIXTURE)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (56, 56, 3), np.uint8) for _ in range(3)]
    texts = ["How many?", "What colour is the top left cell of the grid?", "Which?"]
    convs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}] for t in texts]
    enc = chat.encode_batch(convs, images)
    mode = vlm.LatentMode("<|latent_start|>", "<|latent_end|>", "<|latent_pad|>", SIZE).resolve(chat)
    vocab = model.config.text.vocab_size
    gen = model.generate(
        enc["input_ids"],
        enc["pixel_values"],
        enc["image_grid_thw"][:1],
        enc["attention_mask"],
        max_new_tokens=SIZE + 2 + TAIL,
        latent=mode,
        block_at=0,
        do_sample=False,
        repetition_penalty=1.0,
        eos_token_id=(),
        score_ids=tuple(range(vocab)),
    )
    cfg = model.config
    grid = enc["image_grid_thw"][:1]
    ids, mask = enc["input_ids"], enc["attention_mask"].astype(bool)
    pos, nxt = qwen2_5_vl.model.rope_index(cfg, ids, np.repeat(grid, 3, 0), mask)
    tail = gen.tokens[:, SIZE + 2 :]
    batch = training.Batch(
        jnp.asarray(ids, jnp.int32),
        jnp.asarray(mask),
        jnp.asarray(pos, jnp.int32),
        jnp.asarray(nxt, jnp.int32),
        jnp.asarray(enc["pixel_values"], jnp.float32),
        jnp.asarray(tail, jnp.int32),
        jnp.ones(tail.shape, jnp.float32),
        jnp.asarray(np.arange(TAIL)[None].repeat(3, 0) >= 2),  # two caption tokens, then the answer's
        jnp.asarray([mode.start, mode.end, mode.pad], jnp.int32),
        jnp.asarray(enc["pixel_values"][::-1], jnp.float32),
    )
    lay = training.Layout(qwen2_5_vl, cfg, tuple(int(g) for g in grid[0]), ids.shape[1], SIZE, TAIL)
    out = jax.jit(training.forward, static_argnums=0)(lay, model.params, batch)  # the training pass, once
    return dict(model=model, gen=gen, batch=batch, lay=lay, mode=mode, out=out)


def test_the_training_pass_is_generation_with_the_block_forced(setup):
    """The fed-back latents and each tail token's log-probabilities equal the generation's (block forced at the
    first step, greedy, its tokens teacher-forced), within float32 rounding of two programs."""
    gen, batch, out = setup["gen"], setup["batch"], setup["out"]
    want = np.asarray(gen.latents[:, 0], np.float64)
    scale = np.abs(want).max()
    assert np.abs(np.asarray(out.latents, np.float64) - want).max() <= 1e-4 * scale
    lp = np.asarray(jax.nn.log_softmax(out.logits), np.float64)  # (B, K, V)
    ref = np.asarray(gen.scores, np.float64)[:, SIZE + 2 :]  # the steps that wrote the tail
    assert np.abs(lp - ref).max() <= 1e-4 * np.abs(ref).max()
    np.testing.assert_array_equal(np.argmax(lp, -1), np.asarray(batch.tail))  # greedy: each its most likely


def test_the_pause_block_is_its_tokens_teacher_forced(setup):
    """The markers-only block (``feed="pause"``) is the sequence start, L pads, end, tail read as plain tokens:
    its tail logits and the start marker's equal a block-free pass with those tokens as the tail, within
    float32 rounding of two programs."""
    import dataclasses

    lay, batch, model = setup["lay"], setup["batch"], setup["model"]
    start, end, pad = (int(t) for t in batch.markers)
    b = batch.tail.shape[0]
    marked = np.concatenate([np.tile([start] + [pad] * SIZE + [end], (b, 1)), np.asarray(batch.tail)], axis=1).astype(
        np.int32
    )
    plain = dataclasses.replace(
        batch,
        tail=jnp.asarray(marked),
        tail_weight=jnp.ones(marked.shape, jnp.float32),
        is_answer=jnp.ones(marked.shape, bool),
    )
    fwd = jax.jit(training.forward, static_argnums=0)
    paused = fwd(dataclasses.replace(lay, feed="pause"), model.params, batch)
    ref = fwd(dataclasses.replace(lay, n_latents=0, tail=TAIL + SIZE + 2), model.params, plain)
    want = np.asarray(ref.logits, np.float64)  # want[:, i + 1]: the logits after tail token i
    scale = np.abs(want).max()
    got = np.asarray(paused.logits, np.float64)
    assert np.abs(got - want[:, SIZE + 2 :]).max() <= 1e-4 * scale
    assert np.abs(np.asarray(paused.opening, np.float64) - want[:, 0]).max() <= 1e-4 * scale
    fill = np.asarray(lay.fam.model.embed_tokens(lay.cfg, model.params, pad))  # each slot: the pad's embedding
    np.testing.assert_array_equal(np.asarray(paused.latents), np.broadcast_to(fill, paused.latents.shape))


# compiles the backward pass twice (about 45 s on two cores): the default run holds the forward pass to
# generation (test_the_training_pass_is_generation_with_the_block_forced), the losses to their closed forms,
# and a training run through tokdyn.train to a lower loss (tests/test_organism_training.py)
@pytest.mark.full
def test_the_gradient_flows_through_the_fed_back_latents(setup):
    """The answer's loss moves with the first latent step's input: the gradient with respect to the parameters,
    through the feedback, differs from the one with the latents' path cut (the pause feed), and a finite
    difference along it agrees with it."""
    lay, batch, model = setup["lay"], setup["batch"], setup["model"]

    def loss(params, feed):
        import dataclasses

        return training.losses(dataclasses.replace(lay, feed=feed), params, batch)[0]

    g = jax.jit(jax.grad(loss), static_argnums=1)
    norm_g, pause_g = g(model.params, "norm"), g(model.params, "pause")
    a, b = jax.tree_util.tree_leaves(norm_g), jax.tree_util.tree_leaves(pause_g)
    assert all(np.isfinite(np.asarray(x)).all() for x in a)
    assert max(float(jnp.abs(x - y).max()) for x, y in zip(a, b)) > 1e-6
    direction = jax.tree_util.tree_map(lambda x: x / (jnp.linalg.norm(x.ravel()) + 1e-12), norm_g)
    eps = 1e-3
    up = jax.tree_util.tree_map(lambda p, d: p + eps * d, model.params, direction)
    down = jax.tree_util.tree_map(lambda p, d: p - eps * d, model.params, direction)
    f = jax.jit(loss, static_argnums=1)
    fd = (float(f(up, "norm")) - float(f(down, "norm"))) / (2 * eps)
    dot = float(sum(jnp.vdot(x, y) for x, y in zip(a, jax.tree_util.tree_leaves(direction))))
    assert fd == pytest.approx(dot, rel=5e-2)


def test_the_losses_are_their_closed_forms(setup):
    """The answer's and the caption's cross-entropies are optax's over their tokens, the start marker's is
    generation's log-probability of it after the prompt, the answer's accuracy the share of rows with every
    answer token most likely; the mirage and lvr alignments equal their NumPy forms
    on the latents and the helper images' features."""
    lay, batch, model, out = setup["lay"], setup["batch"], setup["model"], setup["out"]
    losses = jax.jit(training.losses, static_argnums=0, static_argnames=("align",))
    total, parts = losses(lay, model.params, batch, align="mirage", align_weight=0.5, caption_weight=2.0)
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(out.logits, batch.tail), np.float64)
    ans = np.asarray(batch.is_answer)
    assert float(parts["answer_ce"]) == pytest.approx(ce[ans].mean(), rel=1e-5)
    assert float(parts["caption_ce"]) == pytest.approx(ce[~ans].mean(), rel=1e-5)
    assert float(parts["answer_acc"]) == 1.0  # the generated answer is the greedy one
    plan = lay.plan
    helper = np.asarray(
        jax.jit(jax.vmap(lambda px: qwen2_5_vl.model.image_features(lay.cfg, model.params, px, plan)))(batch.helper),
        np.float64,
    )
    lat = np.asarray(out.latents, np.float64)
    u, v = lat.mean(1), helper.mean(1)
    mirage = np.mean(1 - (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1))
    assert float(parts["align"]) == pytest.approx(mirage, rel=1e-4, abs=1e-6)
    # the start marker after the prompt: generation's log-probability of it at its first step
    start = -np.asarray(setup["gen"].scores, np.float64)[:, 0, setup["mode"].start].mean()
    assert float(parts["start_ce"]) == pytest.approx(start, rel=1e-4)
    assert float(total) == pytest.approx(ce[ans].mean() + 2.0 * ce[~ans].mean() + 0.5 * mirage + start, rel=1e-4)
    _, lvr = losses(lay, model.params, batch, align="lvr")
    p = helper.shape[1]
    edges = [round(p * i / SIZE) for i in range(SIZE + 1)]
    g = np.stack([helper[:, a : max(b, a + 1)].mean(1) for a, b in zip(edges[:-1], edges[1:])], 1)
    assert float(lvr["align"]) == pytest.approx(((lat - g) ** 2).mean(), rel=1e-4)

    # one's own alignment: a callable of (layout, params, batch, forward), its value added with its weight
    def norm(lay_, params, batch_, out_):
        return jnp.mean(out_.latents.astype(jnp.float32) ** 2)

    total2, own = losses(lay, model.params, batch, align=norm, align_weight=3.0, start_weight=None)
    assert float(own["align"]) == pytest.approx((lat**2).mean(), rel=1e-4) and "start_ce" not in own
    assert float(total2) == pytest.approx(ce[ans].mean() + ce[~ans].mean() + 3.0 * (lat**2).mean(), rel=1e-4)
    with pytest.raises(ValueError, match="align must be one of"):
        training.check_alignment("mirrage")


@pytest.mark.full
def test_the_monet_alignment_reads_the_models_own_states_over_the_helper(setup):
    """monet: 1 - cos between each latent and the mean of the model's final-norm states over its group of the
    helper image's tokens (read as a prompt of the image alone, causal)."""

    lay, batch, model = setup["lay"], setup["batch"], setup["model"]
    cfg, params = lay.cfg, model.params
    out = jax.jit(training.forward, static_argnums=0)(lay, params, batch)
    _, monet = jax.jit(training.losses, static_argnums=0, static_argnames=("align",))(lay, params, batch, align="monet")
    plan = lay.plan
    helper = jax.vmap(lambda px: qwen2_5_vl.model.image_features(cfg, params, px, plan))(batch.helper)
    b, f, _ = helper.shape
    pos = jnp.broadcast_to(jnp.arange(f)[None, None], (3, b, f))
    mask = np.tril(np.ones((f, f), bool))[None].repeat(b, 0)
    h, _ = qwen2_5_vl.text.decode(cfg.text, params["text"], helper, pos, jnp.asarray(mask))
    teacher = np.asarray(qwen2_5_vl.text.final_norm(cfg.text, params["text"], h), np.float64)
    edges = [round(f * i / SIZE) for i in range(SIZE + 1)]
    g = np.stack([teacher[:, a : max(b_, a + 1)].mean(1) for a, b_ in zip(edges[:-1], edges[1:])], 1)
    lat = np.asarray(out.latents, np.float64)
    cos = (lat * g).sum(-1) / np.linalg.norm(lat, axis=-1) / np.linalg.norm(g, axis=-1)
    assert float(monet["align"]) == pytest.approx(np.mean(1 - cos), rel=1e-4)
