"""Qwen2.5-VL under the diagnostics' ``apply`` protocol (``tokdyn.models.qwen2_5_vl.adapter``) and the protocol's
``select`` (``tokdyn.diagnostics.protocol.Select``), on the tiny random checkpoint: logits equal the model's own
forward pass (itself equal to ``transformers``'), the selected hidden entries and attention rows equal the full
ones and a NumPy recomputation of each layer from them, latents land at their slots and move only what comes
after them; ``check_apply`` passes this model and the tiny reasoner (which knows nothing of ``select``) and
refuses a bad ``select`` and a model whose ``select`` returns other shapes."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("safetensors")

from test_apply_protocol import Toy  # noqa: E402
from tokdyn.diagnostics import protocol  # noqa: E402
from tokdyn.models import qwen2_5_vl  # noqa: E402
from tokdyn.models.qwen2_5_vl import adapter as qa  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
START, END, FILL = 100, 101, 102


@pytest.fixture(scope="module")
def setup():
    model = qwen2_5_vl.load(FIXTURE, dtype="float32")
    with np.load(FIXTURE / "reference.npz") as f:
        px0, grid = f["proc0_pixels"], f["proc0_grid"]
    n_image = int(grid[0].prod()) // 4
    row = qa.prompt([1, 5, 118, *[120] * n_image, 119, 40], [41, 42, 9], 3, START, END, FILL)
    ids = np.stack([row, row])
    pixels = np.stack([px0, px0[::-1]])  # two images of one grid
    lay = qa.layout(model.config, ids, START, END)
    batch = qa.make_batch(model.config, ids, pixels, grid)
    apply = jax.jit(qa.make_apply(model.config, grid, lay), static_argnames=("select",))
    full = apply(model.params, batch)
    return dict(model=model, ids=ids, pixels=pixels, grid=grid, lay=lay, batch=batch, apply=apply, full=full)


def test_layout(setup):
    lay = setup["lay"]
    assert lay.markers == (11, 15) and lay.latents == (12, 13, 14) and lay.answer == 18
    assert lay.image == tuple(range(3, 9))
    with pytest.raises(ValueError, match="marker"):
        qa.layout(setup["model"].config, setup["ids"][:, ::-1], START, END)


def test_logits_equal_the_model(setup):
    """Without latents, the protocol's logits are the model's (per-row images, M-RoPE positions)."""
    ids, pixels, grid = setup["ids"], setup["pixels"], setup["grid"]
    want = np.asarray(setup["model"](ids, pixels.reshape(-1, pixels.shape[-1]), np.repeat(grid, 2, 0)))
    got = np.asarray(setup["full"].logits)
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    out = setup["full"]
    assert out.hidden.shape == (2, 3, ids.shape[1], 64) and out.attention.shape == (2, 2, 4, ids.shape[1], ids.shape[1])


def numpy_layer(model, layer, x, weights, rows):
    """Layer ``layer``'s output at ``rows`` from its input ``x`` (B, T, D) and its attention ``weights``
    (B, H, R, T) at those rows, in float64 NumPy: x + o(weights @ v(norm(x))), then the gated MLP."""
    cfg = model.config.text
    layers = model.params["text"]["layers"]  # stacked along a leading layer axis
    p = jax.tree_util.tree_map(lambda v: np.asarray(v[layer], np.float64), layers)

    def rms(v, w):
        return v / np.sqrt(np.mean(v**2, -1, keepdims=True) + cfg.rms_norm_eps) * w

    def lin(v, q):
        return v @ q["kernel"] + q.get("bias", 0.0)

    b, t, _ = x.shape
    v = lin(rms(x, p["input_norm"]), p["attn"]["v"]).reshape(b, t, cfg.num_key_value_heads, cfg.head_dim)
    v = np.repeat(v, cfg.num_attention_heads // cfg.num_key_value_heads, axis=2)  # (B, T, H, hd)
    out = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, len(rows), -1)
    y = x[:, rows] + lin(out, p["attn"]["o"])
    h = rms(y, p["post_norm"])
    gate = lin(h, p["mlp"]["gate"])
    return y + lin(gate / (1 + np.exp(-gate)) * lin(h, p["mlp"]["up"]), p["mlp"]["down"])


def test_select_equals_full_and_numpy(setup):
    """Selected entries and rows equal the full call's (``narrow``); each layer's output at the rows follows in
    NumPy from its input and the returned attention rows, which are causal distributions."""
    lay, model = setup["lay"], setup["model"]
    rows = (lay.answer, *lay.latents)
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
    for j, layer in enumerate((0, 1)):
        again = numpy_layer(model, layer, hidden[:, layer], w[:, j], list(rows))
        scale = np.abs(hidden[:, layer + 1]).max()
        np.testing.assert_allclose(again, hidden[:, layer + 1, list(rows)], atol=1e-4 * scale)


# a four-layer model built for it (about 3 s): the default run has test_select_equals_full_and_numpy
# (a selection against the full call and NumPy on the fixture's layers)
@pytest.mark.full
def test_select_spans_of_scanned_layers(setup):
    """With four layers, a selection that skips layers runs them as scanned spans (several layers in one
    ``text.decode``): the selected entries and rows equal the full call's, which runs every layer alone."""
    import dataclasses

    model, lay = setup["model"], setup["lay"]
    cfg = dataclasses.replace(model.config, text=dataclasses.replace(model.config.text, num_hidden_layers=4))
    params = qwen2_5_vl.params.init(jax.random.key(1), cfg, scale=0.1)
    apply = jax.jit(qa.make_apply(cfg, setup["grid"], lay), static_argnames=("select",))
    full = apply(params, setup["batch"])
    assert full.hidden.shape[1] == 5 and full.attention.shape[1] == 4
    for sel in (
        protocol.Select(hidden=(-1,), attention=(), rows=(lay.answer,)),  # layers 0-3 in one span
        protocol.Select(hidden=(0, 4), attention=(2,), rows=(lay.answer, 3)),  # spans 0-1, then 3
    ):
        got, want = apply(params, setup["batch"], select=sel), protocol.narrow(full, sel)
        for f in ("logits", "hidden", "attention"):
            a, b = np.asarray(getattr(got, f)), np.asarray(getattr(want, f))
            np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max(initial=1.0))


def test_latents_at_their_slots(setup):
    """Given latents are the input embeddings at the slots; they move the answer's logits and nothing before
    the block (causal attention); the default latents are the fill token's embedding."""
    lay, model = setup["lay"], setup["model"]
    emb = np.asarray(model.params["text"]["embed"])
    np.testing.assert_allclose(np.asarray(setup["full"].latents), np.broadcast_to(emb[FILL], (2, 3, 64)))
    lat = np.random.default_rng(0).normal(size=(2, 3, 64)).astype(np.float32)
    out = setup["apply"](model.params, setup["batch"], latents=jnp.asarray(lat))
    np.testing.assert_array_equal(np.asarray(out.latents), lat)
    np.testing.assert_array_equal(np.asarray(out.hidden[:, 0, list(lay.latents)]), lat)
    before = slice(0, lay.markers[0] + 1)
    np.testing.assert_allclose(
        np.asarray(out.logits[:, before]), np.asarray(setup["full"].logits[:, before]), atol=1e-5
    )
    assert np.abs(np.asarray(out.logits[:, lay.answer] - setup["full"].logits[:, lay.answer])).max() > 1e-3


def test_drop_removes_positions_from_attention(setup):
    """Dropped markers get no attention weight from any later query (rows sum to 1 over the rest); positions
    before them keep their logits, the answer's move."""
    lay, model = setup["lay"], setup["model"]
    drop = np.zeros(setup["ids"].shape, bool)
    drop[:, list(lay.markers)] = True
    sel = protocol.Select(hidden=(), attention=(0, 1), rows=(lay.answer, lay.latents[-1]))
    out = setup["apply"](model.params, setup["batch"], drop=jnp.asarray(drop), select=sel)
    w = np.asarray(out.attention)
    assert np.all(w[..., list(lay.markers)] == 0.0)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    before = slice(0, lay.markers[0])
    np.testing.assert_allclose(
        np.asarray(out.logits[:, before]), np.asarray(setup["full"].logits[:, before]), atol=1e-5
    )
    assert np.abs(np.asarray(out.logits[:, lay.answer] - setup["full"].logits[:, lay.answer])).max() > 1e-3
    protocol.check_apply(
        qa.make_apply(model.config, setup["grid"], lay), model.params, setup["batch"], uses=("drop",), select=sel
    )


@pytest.mark.full
def test_check_apply_both_models(setup):
    """The Qwen model (which takes ``select``) and the tiny reasoner (which does not) both pass; the reasoner
    is answered by the plain call, narrowed; bad selections and wrong shapes are refused, named."""
    lay, model = setup["lay"], setup["model"]
    apply = qa.make_apply(model.config, setup["grid"], lay)
    sel = protocol.Select(hidden=(-1,), attention=(1,), rows=(lay.answer,))
    dims = protocol.check_apply(
        apply, model.params, setup["batch"], select=sel, uses=("latents", "intervene"), reads_hidden=True
    )
    assert (dims.layers, dims.heads, dims.latents, dims.length) == (2, 4, 3, 19)
    toy = Toy()
    params = toy.init(jax.random.key(0))
    batch = {"image": jnp.zeros((3, 4), int), "question": jnp.ones((3,), int)}
    tsel = protocol.Select(hidden=(0, 2), attention=(1,), rows=(9, 6))
    protocol.check_apply(toy.apply, params, batch, select=tsel, reads_hidden=True)
    assert not protocol.takes_select(toy.apply) and protocol.takes_select(apply)
    got = protocol.apply_selected(toy.apply, params, batch, tsel)
    full = toy.apply(params, batch)
    np.testing.assert_array_equal(np.asarray(got.attention), np.asarray(full.attention)[:, [1]][:, :, :, [9, 6]])
    np.testing.assert_array_equal(np.asarray(got.hidden), np.asarray(full.hidden)[:, [0, 2]])
    with pytest.raises(ValueError, match=r"select.rows"):
        protocol.check_apply(toy.apply, params, batch, select=protocol.Select(rows=(10,)))
    with pytest.raises(ValueError, match=r"select.hidden"):
        protocol.check_apply(apply, model.params, setup["batch"], select=protocol.Select(hidden=(3,)))
    with pytest.raises(TypeError, match="Select"):
        protocol.check_apply(apply, model.params, setup["batch"], select=(0,))

    def wrong(params, batch, *, latents=None, intervene=None, select=None):
        out = apply(params, batch, latents=latents, intervene=intervene)  # ignores select: full shapes
        return out

    with pytest.raises(ValueError, match=r"select=\.\.\.\)\.hidden"):
        protocol.check_apply(wrong, model.params, setup["batch"], select=sel)


def log_softmax_np(logits):
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_noised_pixels():
    """Gaussian noise of the asked level on the [0, 1] pixel scale, clipped, the same for both frames; blank is
    black; bad kinds and levels are refused."""
    proc = qwen2_5_vl.ImageProcessor()
    rng = np.random.default_rng(0)
    image = rng.uniform(0.3, 0.7, (3, 28, 28)).astype(np.float32)  # far from the clip edges at level 0.05
    mean = np.asarray(proc.image_mean, np.float32)[:, None, None]
    std = np.asarray(proc.image_std, np.float32)[:, None, None]
    rows, _ = proc.patchify((image - mean) / std)
    got = np.asarray(qa.noised_pixels(jax.random.key(0), rows, proc, "gaussian", 0.05), np.float64)
    pix = lambda r: r.reshape(-1, 3, 2, 14, 14) * std[None, :, None] + mean[None, :, None]  # noqa: E731
    diff = pix(got) - pix(rows.astype(np.float64))
    np.testing.assert_allclose(diff[:, :, 0], diff[:, :, 1], atol=1e-6)  # one draw for the repeated frame
    assert abs(diff.std() - 0.05) < 0.005 and abs(diff.mean()) < 0.005
    black = pix(np.asarray(qa.noised_pixels(jax.random.key(0), rows, proc, "blank")))
    np.testing.assert_allclose(black, 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        qa.noised_pixels(jax.random.key(0), rows, proc, "blur")
    with pytest.raises(ValueError, match="level"):
        qa.noised_pixels(jax.random.key(0), rows, proc, "gaussian", -1.0)


@pytest.mark.full
def test_grounding_score_equals_two_forward_passes(setup):
    """DMLR's S_t through tokdyn.diagnostics.grounding on this model equals the difference of the model's own
    log-probabilities with the image and with its noised copy (NumPy log-softmax); it is zero before the image
    (causal: those positions never see it) and not zero after it."""
    from tokdyn.diagnostics import grounding

    model, lay, ids, pixels, grid = (setup[k] for k in ("model", "lay", "ids", "pixels", "grid"))
    proc = qwen2_5_vl.ImageProcessor.read(FIXTURE)
    noised = np.asarray(qa.noised_pixels(jax.random.key(5), pixels, proc, "gaussian", 0.5))
    batch, noised_batch = setup["batch"], qa.make_batch(model.config, ids, noised, grid)
    apply = jax.jit(qa.make_apply(model.config, grid, lay))  # one program for both batches
    positions = np.arange(ids.shape[1] - 1)
    tokens = ids[:, 1:]  # teacher-forced: each position predicts the next id
    s = np.asarray(grounding.scores(apply, model.params, batch, noised_batch, positions=positions, tokens=tokens))
    flat = lambda p: p.reshape(-1, p.shape[-1])  # noqa: E731
    both = np.repeat(grid, 2, 0)
    lp = log_softmax_np(model(ids, flat(pixels), both))
    lq = log_softmax_np(model(ids, flat(noised), both))
    pick = lambda l: np.take_along_axis(l[:, :-1], tokens[..., None], -1)[..., 0]  # noqa: E731
    want = pick(lp) - pick(lq)
    np.testing.assert_allclose(s, want, atol=1e-4)
    first = lay.image[0]
    assert np.abs(s[:, :first]).max() <= 1e-6
    assert np.abs(s[:, first:]).max() > 1e-3
