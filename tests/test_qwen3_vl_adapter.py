"""Qwen3-VL under the diagnostics' ``apply`` protocol (``tokdyn.models.qwen3_vl.adapter``, the shared adapter of
``tokdyn.models.vlm.adapter`` bound to Qwen3-VL's forward pass) and its vision probes, on the tiny random
checkpoint ``tests/fixtures/qwen3_vl_tiny``: the protocol's logits equal the model's own forward pass (itself
equal to ``transformers``', ``test_qwen3_vl.py``), with the images encoded once or in every call (full tier);
selected attention rows and hidden entries equal the full call's and a NumPy recomputation of each layer from
them, deepstack addition included (full tier); ``inject`` equals the image tokens really inserted before the
block with their deepstack features; the probes' merged features equal ``transformers``' image features and their
patches are in raster order."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("safetensors")

from test_qwen2_5_vl_apply import numpy_layer  # noqa: E402
from tokdyn.diagnostics import protocol  # noqa: E402
from tokdyn.diagnostics import vlm as dvlm  # noqa: E402
from tokdyn.models import qwen3_vl  # noqa: E402
from tokdyn.models.blocks import attention  # noqa: E402
from tokdyn.models.qwen3_vl import adapter as qa  # noqa: E402
from tokdyn.models.qwen3_vl import text  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen3_vl_tiny"
START, END, FILL = 125, 126, 127
RTOL = 1e-5
"""Largest difference allowed between two float32 programs, as a fraction of the values' largest magnitude."""


def assert_close(got, want, rtol=RTOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    assert scale > 0.1
    assert np.abs(got - want).max() <= rtol * scale, (np.abs(got - want).max(), scale)


@pytest.fixture(scope="module")
def setup():
    model = qwen3_vl.load(FIXTURE, dtype="float32")
    with np.load(FIXTURE / "reference.npz") as f:
        px0, grid, feats = f["proc0_pixels"], f["proc0_grid"], f["vision_features"]
    n_image = int(grid[0].prod()) // 4
    row = qa.prompt([1, 5, 118, *[120] * n_image, 119, 40], [41, 42, 9], 3, START, END, FILL)
    ids = np.stack([row, row])
    pixels = np.stack([px0, px0[::-1]])  # two images of one grid
    lay = qa.layout(model.config, ids, START, END)
    batch = qa.make_batch(model.config, ids, pixels, grid)
    apply = jax.jit(qa.make_apply(model.config, grid, lay), static_argnames=("select",))
    full = apply(model.params, batch)
    return dict(model=model, ids=ids, pixels=pixels, grid=grid, lay=lay, batch=batch, apply=apply, full=full, hf=feats)


def test_logits_equal_the_model(setup):
    """Without latents, the protocol's logits are the model's forward pass (per-row images, deepstack, M-RoPE);
    a batch holding image features without their deepstack features is refused."""
    model, ids, pixels, grid = (setup[k] for k in ("model", "ids", "pixels", "grid"))
    want = np.asarray(model(ids, pixels.reshape(-1, pixels.shape[-1]), np.repeat(grid, 2, 0)))
    assert np.abs(want).max() > 0.5
    assert_close(setup["full"].logits, want)
    feats = jnp.zeros((2, len(setup["lay"].image), 48))
    with pytest.raises(ValueError, match="image_extra"):
        setup["apply"](model.params, {**setup["batch"], "image_features": feats})


# a second program of apply and the vision tower's (about 5 s): the default run has
# test_logits_equal_the_model (the images encoded in the call); the study's full run encodes once too
@pytest.mark.full
def test_an_encoded_batch_gives_the_same_logits(setup):
    """A batch encoded once (image_features and their deepstack features, image_extra: the subject's
    ``encoded``) gives the logits of the call that encodes its images itself."""
    model, grid, lay = setup["model"], setup["grid"], setup["lay"]
    sub = dvlm.subject(model.config, grid, lay)
    assert sub.family is qwen3_vl
    encoded = dvlm.encoded(sub, model.params, setup["batch"])
    assert encoded["image_extra"].shape == (2, 2, len(lay.image), 48)
    assert_close(setup["apply"](model.params, encoded).logits, setup["full"].logits)


# the shared adapter's selection on the second family (about 3 CPU-s): the default run has it on Qwen2.5-VL
# (test_qwen2_5_vl_apply's test_select_equals_full_and_numpy: the full call and NumPy), and Qwen3-VL's deepstack
# rows in its full call (test_logits_equal_the_model) and its inserted copies (test_inject_is_the_image_tokens_
# inserted_with_their_deepstack)
@pytest.mark.full
def test_select_equals_full_and_numpy(setup):
    """Selected entries and rows (an image token's, the latent slots', the answer's) equal the full call's; each
    layer's output at the rows follows in NumPy from its input and the returned attention rows, plus the layer's
    deepstack feature at the image token (layers 0 and 1 both get one here)."""
    lay, model = setup["lay"], setup["model"]
    image_row = lay.image[2]
    rows = (image_row, *lay.latents, lay.answer)
    sel = protocol.Select(hidden=(0, 1, -1), attention=(0, -1), rows=rows)
    got = setup["apply"](model.params, setup["batch"], select=sel)
    want = protocol.narrow(setup["full"], sel)
    for f in ("logits", "hidden", "attention", "latents"):
        np.testing.assert_allclose(np.asarray(getattr(got, f)), np.asarray(getattr(want, f)), atol=1e-5)
    w = np.asarray(got.attention, np.float64)  # (B, 2, H, R, T)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    for r, q in enumerate(rows):
        assert np.all(w[..., r, q + 1 :] == 0.0)  # no weight on later positions
    hidden = np.asarray(setup["full"].hidden, np.float64)
    extra = np.asarray(qa.image_features(model.config, model.params, setup["batch"], setup["grid"])["image_extra"])
    for layer in (0, 1):
        again = numpy_layer(model, layer, hidden[:, layer], w[:, layer], list(rows))
        again[:, 0] += extra[:, layer, 2]  # the image token's deepstack feature (its third image token)
        assert_close(again, hidden[:, layer + 1, list(rows)], rtol=1e-4)
        without = again.copy()
        without[:, 0] -= extra[:, layer, 2]
        assert np.abs(without - hidden[:, layer + 1, list(rows)]).max() > 1e-2  # the deepstack row is seen


def inserted(setup, inject, deep_copies=True):
    """Logits (B, T, V) of one plain forward pass over the prompts with each image token's copy really inserted
    before the block's start marker as an image token (its feature and, with ``deep_copies``, its deepstack
    features), at the image token's positions, the copies where ``inject`` is False hidden from every other
    query; the copies' rows cut."""
    model, lay, batch = setup["model"], setup["lay"], setup["batch"]
    cfg, params = model.config, model.params
    enc = qa.image_features(cfg, params, batch, setup["grid"])
    feats, extra = np.asarray(enc["image_features"]), np.asarray(enc["image_extra"])  # (B, N, D), (B, K, N, D)
    ids, at, n = np.asarray(batch["input_ids"]), lay.markers[0], len(lay.image)
    img = list(lay.image)
    grown = np.concatenate([ids[:, :at], ids[:, img], ids[:, at:]], 1)
    pos = np.swapaxes(np.asarray(batch["positions"]), 0, 1)
    pos = np.concatenate([pos[..., :at], pos[..., img], pos[..., at:]], -1)
    keys = np.concatenate([np.ones((len(ids), at), bool), inject, np.ones((len(ids), ids.shape[1] - at), bool)], 1)
    copies = extra if deep_copies else np.zeros_like(extra)
    rows = np.concatenate([np.concatenate([feats[b], feats[b]]) for b in range(len(ids))])  # the batch's order
    deep = np.concatenate([np.concatenate([extra[b], copies[b]], 1) for b in range(len(ids))], 1)  # (K, 2BN, D)
    logits = np.asarray(_plain_pass(cfg, params, grown, rows, deep, pos, keys))
    return np.concatenate([logits[:, :at], logits[:, at + n :]], 1)


@functools.partial(jax.jit, static_argnums=0)
def _plain_pass(cfg, params, ids, rows, deep, pos, keys):
    """Logits of one plain forward pass of the text model over ``ids`` with image rows ``rows`` and deepstack
    features ``deep``, each query seeing the earlier ``keys`` and itself (one program for every call)."""
    x = text.embed(params["text"], ids, rows, cfg.image_token_id)
    ds = text.deepstack_embeddings(ids, deep, cfg.image_token_id)
    order = jnp.arange(ids.shape[1])
    mask = attention.causal_mask(jnp.broadcast_to(order, ids.shape), order, keys)
    mask = mask | jnp.eye(ids.shape[1], dtype=bool)[None]
    h, _ = text.decode(cfg.text, params["text"], x, pos, mask, ds)
    return text.head(cfg.text, params["text"], h)


def test_inject_is_the_image_tokens_inserted_with_their_deepstack(setup):
    """inject with every entry False gives the call without it; with some True it gives one plain forward pass
    over the prompt with those image tokens really inserted before the block, each copy with its image token's
    feature and deepstack features (the copies of a deepstack-less insertion give other logits after them)."""
    model, lay = setup["model"], setup["lay"]
    n = len(lay.image)
    none = setup["apply"](model.params, setup["batch"], inject=jnp.zeros((2, n), bool))
    assert_close(none.logits, setup["full"].logits)
    inject = np.zeros((2, n), bool)
    inject[0, [0, 3]] = True
    inject[1, :] = True
    got = np.asarray(setup["apply"](model.params, setup["batch"], inject=jnp.asarray(inject)).logits)
    want = inserted(setup, inject)
    assert_close(got, want)
    assert np.abs(got[:, lay.answer] - np.asarray(setup["full"].logits)[:, lay.answer]).max() > 1e-2  # it moves
    plain_copies = inserted(setup, inject, deep_copies=False)
    assert np.abs(plain_copies[:, lay.answer] - got[:, lay.answer]).max() > 1e-3


def test_probes_merged_equal_transformers_and_patches_in_raster_order(setup):
    """vision_taps of the first image: merged equals transformers' image features of that image; the patches,
    read back from raster order into the merger's 2 x 2 blocks, give the merged features again."""
    model, grid = setup["model"], setup["grid"]
    cfg = model.config
    plan = qwen3_vl.vision.plan(cfg.vision, grid)
    raster = qwen3_vl.probes.raster_order(cfg, grid)
    taps = jax.jit(qwen3_vl.probes.vision_taps, static_argnums=0)(
        cfg, model.params, jnp.asarray(setup["pixels"][0]), plan, jnp.asarray(raster)
    )
    n = int(grid[0].prod()) // 4
    assert_close(taps["merged"], setup["hf"][:n], rtol=1e-4)
    _, h, w = grid[0]
    blocks = np.asarray(taps["patches"]).reshape(h // 2, 2, w // 2, 2, -1).transpose(0, 2, 1, 3, 4).reshape(h * w, -1)
    again = qwen3_vl.vision.merge(cfg.vision, model.params["vision"]["merger"], jnp.asarray(blocks), False)
    assert_close(again, taps["merged"])
    with pytest.raises(ValueError, match="one image of one frame"):
        qwen3_vl.probes.raster_order(cfg, np.repeat(grid, 2, 0))


def test_noised_pixels_with_qwen3_processor():
    """The shared noised_pixels under Qwen3-VL's processor (patches of 16, mean and deviation 0.5): blank rows
    are black (-1 normalised), Gaussian noise of level 0 leaves the rows as they are."""
    proc = qwen3_vl.ImageProcessor.read(FIXTURE)
    with np.load(FIXTURE / "reference.npz") as f:
        rows = f["proc0_pixels"]
    black = np.asarray(qa.noised_pixels(jax.random.key(0), rows, proc, "blank"))
    np.testing.assert_allclose(black, -1.0, atol=1e-6)
    same = np.asarray(qa.noised_pixels(jax.random.key(0), rows, proc, "gaussian", 0.0))
    np.testing.assert_allclose(same, rows, atol=1e-5)
