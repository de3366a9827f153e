"""The latent-reasoning analyses on Qwen2.5-VL (``tokdyn.diagnostics.vlm``) and the protocol's
``inject`` on its ``apply``, on the tiny random checkpoint. Each analysis is compared with a direct computation
from the model's plain forward pass: the checkpoint's own ``Model`` call on token ids (itself equal to
``transformers``'), or its decoder (``text.decode``, ``text.head``) on embeddings built here, with NumPy on the
logits and hidden states. Planted cases: in a model whose layers write nothing to the residual stream each
position reads only its own input, so no latent or image can move the answer, while the answer read at a
latent slot must follow the latent written there. Bad input is refused before anything compiles."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("safetensors")

from conftest import jax_compilations  # noqa: E402
from tokdyn.diagnostics import dmlr, mediation, protocol  # noqa: E402
from tokdyn.models import qwen2_5_vl  # noqa: E402
from tokdyn.diagnostics import vlm as an  # noqa: E402
from tokdyn.models.qwen2_5_vl import adapter as qa  # noqa: E402
from tokdyn.models.qwen2_5_vl import model as model_lib  # noqa: E402
from tokdyn.models.qwen2_5_vl import text, vision  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
START, END, FILL = 100, 101, 102
PLAIN = jax.jit(model_lib.apply, static_argnums=0)  # the checkpoint's forward pass, under an attention mask
CAPTION = np.array([[30, 31, 32], [33, 34, 35], [36, 37, 38]])  # per-instance text "latents" (token ids)


@pytest.fixture(scope="module")
def setup():
    model = qwen2_5_vl.load(FIXTURE, dtype="float32")
    with np.load(FIXTURE / "reference.npz") as f:
        px0, grid = f["proc0_pixels"], f["proc0_grid"]
    n_image = int(grid[0].prod()) // 4
    row = qa.prompt([1, 5, 118, *[120] * n_image, 119, 40], [41, 42, 9], 3, START, END, FILL)
    ids = np.stack([row] * 3)
    pixels = np.stack([px0, px0[::-1], -px0]).astype(np.float32)  # three images of one grid
    lay = qa.layout(model.config, ids, START, END)
    batch = qa.make_batch(model.config, ids, pixels, grid)
    sub = an.subject(model.config, grid, lay)
    return dict(model=model, ids=ids, pixels=pixels, grid=grid, lay=lay, batch=batch, sub=sub)


def plain(setup, ids, pixels, params=None):
    """Logits (B, T, V) of the checkpoint's own forward pass on token ids (float64 NumPy)."""
    model = setup["model"] if params is None else qwen2_5_vl.Model(setup["model"].config, params)
    b = len(ids)
    logits = model(ids, pixels.reshape(-1, pixels.shape[-1]), np.repeat(setup["grid"], b, 0))
    return np.asarray(logits, np.float64)


def embeddings(setup, ids, pixels, params=None):
    """The input embeddings (B, T, D) of ``ids`` with the images' features at the image tokens, built from the
    embedding table and the vision tower (NumPy)."""
    cfg, params = setup["model"].config, setup["model"].params if params is None else params
    plan = vision.plan(cfg.vision, setup["grid"])
    x = np.asarray(params["text"]["embed"], np.float32)[ids]
    for i in range(len(ids)):
        feats = np.asarray(model_lib.image_features_jit(cfg, params, jnp.asarray(pixels[i]), plan))
        x[i, list(setup["lay"].image)] = feats
    return x


def decoder(setup, x, params=None, keys=None):
    """The decoder's last hidden states (before the final norm) and logits of embeddings ``x`` (B, T, D), at
    the batch's positions, causal attention over the ``keys`` (B, T) kept (all by default)."""
    cfg, params = setup["model"].config, setup["model"].params if params is None else params
    b, t, _ = x.shape
    keys = np.ones((b, t), bool) if keys is None else keys
    mask = np.tril(np.ones((t, t), bool))[None] & keys[:, None, :]
    mask |= np.eye(t, dtype=bool)[None]
    pos = jnp.swapaxes(setup["batch"]["positions"][:b], 0, 1)
    h, _ = text.decode(cfg.text, params["text"], jnp.asarray(x), pos, jnp.asarray(mask))
    return np.asarray(h, np.float64), np.asarray(text.head(cfg.text, params["text"], h), np.float64)


def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def clear(logits, frac=1e-3):
    """Where the top two logits are apart by more than ``frac`` of the logits' scale (no near tie)."""
    top = np.sort(logits, -1)
    return top[..., -1] - top[..., -2] > frac * np.abs(logits).max()


def injected_logits(setup, x, inject):
    """Logits (B, T, V) of the decoder on embeddings ``x`` (B, T, D) grown by copies of the image tokens'
    embeddings before the start marker, at their own rotary positions, each copy seen where ``inject`` (B, P)
    is True; the copies' rows cut (NumPy, float64)."""
    model, lay, batch = setup["model"], setup["lay"], setup["batch"]
    at, p, b = lay.markers[0], len(lay.image), len(x)
    grown = np.concatenate([x[:, :at], x[:, list(lay.image)], x[:, at:]], 1)
    pos = np.asarray(batch["positions"])[:b]
    pos = np.concatenate([pos[..., :at], pos[..., list(lay.image)], pos[..., at:]], -1)
    t = grown.shape[1]
    keys = np.concatenate([np.ones((b, at), bool), inject, np.ones((b, t - at - p), bool)], 1)
    mask = (np.tril(np.ones((t, t), bool))[None] & keys[:, None, :]) | np.eye(t, dtype=bool)[None]
    h, _ = text.decode(
        model.config.text, model.params["text"], jnp.asarray(grown), jnp.swapaxes(jnp.asarray(pos), 0, 1), mask
    )
    out = np.asarray(text.head(model.config.text, model.params["text"], h), np.float64)
    return np.concatenate([out[:, :at], out[:, at + p :]], 1)


@pytest.mark.full
def test_inject_inserts_the_image_tokens_before_the_block(setup):
    """``inject``: all False equals no injection; all True equals the decoder run on the sequence with the
    image tokens' embeddings copied before the start marker at their own rotary positions (built here); the
    attention paid to a copy is added to its image token; positions before the block do not move;
    ``check_apply`` passes every use of the protocol's keywords."""
    model, lay, batch = setup["model"], setup["lay"], setup["batch"]
    apply = jax.jit(setup["sub"].apply, static_argnames=("select",))
    p = len(lay.image)
    sel = protocol.Select(attention=(0, 1), rows=(lay.answer,))
    plain_out = apply(model.params, batch, select=protocol.Select())
    none = apply(model.params, batch, inject=jnp.zeros((3, p), bool), select=sel)  # one program for both masks
    np.testing.assert_allclose(np.asarray(none.logits), np.asarray(plain_out.logits), atol=1e-5)
    got = apply(model.params, batch, inject=jnp.ones((3, p), bool), select=sel)
    x = embeddings(setup, setup["ids"], setup["pixels"])
    at = lay.markers[0]
    want = injected_logits(setup, x, np.ones((3, p), bool))
    np.testing.assert_allclose(np.asarray(got.logits), want, atol=1e-4 * np.abs(want).max())
    assert np.abs(want[:, lay.answer] - np.asarray(plain_out.logits)[:, lay.answer]).max() > 1e-3
    np.testing.assert_allclose(np.asarray(got.logits)[:, :at], np.asarray(plain_out.logits)[:, :at], atol=1e-5)
    np.testing.assert_allclose(np.asarray(got.attention).sum(-1), 1.0, atol=1e-5)  # the copies' weight kept
    every = ("latents", "intervene", "drop", "inject", ("latents", "inject"), ("intervene", "drop"))
    protocol.check_apply(setup["sub"].apply, model.params, batch, uses=every, n_inject=p, select=sel)
    with pytest.raises(ValueError, match=r"inject must be a \(B, P\)"):
        apply(model.params, batch, inject=jnp.zeros((3, p + 1), bool))


def test_grounding_equals_two_forward_passes_per_noise(setup):
    """DMLR's S for every noise and seed equals the difference of the checkpoint's own log-probabilities of
    the tokens with the image and with that noised image (the perturbed images those of perturb_pixels)."""
    model, ids, pixels, sub = (setup[k] for k in ("model", "ids", "pixels", "sub"))
    proc = qwen2_5_vl.ImageProcessor.read(FIXTURE)
    noises = (("gaussian", 0.3), ("blank", 0.0))
    positions, tokens = list(range(ids.shape[1] - 1)), ids[:, 1:]
    s = np.asarray(
        an.grounding(
            jax.random.key(3),
            sub,
            model.params,
            setup["batch"],
            proc,
            positions=positions,
            tokens=tokens,
            noises=noises,
            n_seeds=2,
        )
    )
    assert s.shape == (2, 2, 3, len(positions))
    perturb = jax.jit(an.perturb_pixels, static_argnames=("processor", "noises", "n_seeds"))  # one program
    pert = np.asarray(perturb(jax.random.key(3), setup["batch"]["pixel_values"], proc, noises=noises, n_seeds=2))
    pick = lambda lp: np.take_along_axis(lp[:, :-1], tokens[..., None], -1)[..., 0]  # noqa: E731
    clean = pick(log_softmax(plain(setup, ids, pixels)))
    for j in range(2):
        for k in range(2):
            want = clean - pick(log_softmax(plain(setup, ids, pert[j * 2 + k])))
            np.testing.assert_allclose(s[j, k], want, atol=1e-4)
    assert np.abs(s[0, 0] - s[0, 1]).max() > 1e-4  # the seeds draw different noise
    assert np.abs(s[:, :, :, : setup["lay"].image[0]]).max() <= 1e-6  # before the image: nothing to lose


# DMLR's search compiled (about 6 s on a loaded 2-core machine): the default run has the grounding score and
# test_dmlr's checks of dmlr.optimise on a protocol Toy
@pytest.mark.full
def test_optimise_records_the_model_confidence(setup):
    """DMLR over instances and seeds: the starting and best rewards and answers equal DMLR's confidence and
    argmax computed in NumPy from the decoder's logits with those latents; seeds search differently; the
    best reward is never below the start."""
    model, lay, ids, pixels, sub = (setup[k] for k in ("model", "lay", "ids", "pixels", "sub"))
    cfg = dmlr.Config(reward="entropy", top_k=5, n_iters=3, n_pairs=2)
    r = an.optimise(
        jax.random.key(4),
        sub,
        model.params,
        setup["batch"],
        cfg,
        dmlr.Hparams(sigma=0.5, learning_rate=0.5),
        seeds=(0, 1),
    )
    assert np.asarray(r.latents_best).shape == (2, 3, 3, 64)

    def confidence(logits):  # DMLR's entropy reward over the top-5 at the latent positions
        lp = log_softmax(logits[:, list(lay.latents)])
        top = np.sort(lp, -1)[..., -5:]
        q = top - np.log(np.exp(top).sum(-1, keepdims=True))
        return 1 - (-(np.exp(q) * q).sum(-1)).mean(-1)

    x = embeddings(setup, ids, pixels)
    base = decoder(setup, x)[1]
    for s in range(2):
        np.testing.assert_allclose(np.asarray(r.reward_before)[s], confidence(base), atol=1e-4)
        xb = x.copy()
        xb[:, list(lay.latents)] = np.asarray(r.latents_best)[s]
        best = decoder(setup, xb)[1]
        np.testing.assert_allclose(np.asarray(r.reward_best)[s], confidence(best), atol=1e-4)
        ok = clear(best[:, lay.answer])
        np.testing.assert_array_equal(np.asarray(r.answer_best)[s][ok], np.argmax(best[:, lay.answer], -1)[ok])
    assert np.all(np.asarray(r.reward_best) >= np.asarray(r.reward_before) - 1e-6)
    assert np.abs(np.asarray(r.latents_best)[0] - np.asarray(r.latents_best)[1]).max() > 0
    # DMLR's visual injection: the best reward is the model's with the best latents and the patches injected
    cfg = dmlr.Config(reward="entropy", top_k=5, n_iters=3, n_pairs=2, inject="best", top_m=1)
    r = an.optimise(
        jax.random.key(5),
        sub,
        model.params,
        setup["batch"],
        cfg,
        dmlr.Hparams(sigma=0.5, learning_rate=0.5),
        seeds=(0,),
    )
    injected = np.asarray(r.injected)[0]  # (B, P) bool
    assert injected.shape == (3, len(lay.image)) and injected.dtype == bool and injected.any()
    xb = x.copy()
    xb[:, list(lay.latents)] = np.asarray(r.latents_best)[0]
    np.testing.assert_allclose(
        np.asarray(r.reward_best)[0], confidence(injected_logits(setup, xb, injected)), atol=1e-4
    )


def planted(setup):
    """The fixture's weights with every layer's attention output and MLP down projection zero (each position
    reads only its own input), norms one, the head the embedding table's transpose, and tokens 50 and 51
    large orthogonal embeddings: the logits at a position holding 50 (51) pick 50 (51)."""
    params = jax.tree_util.tree_map(lambda a: a, setup["model"].params)
    layers = dict(params["text"]["layers"])
    layers["attn"] = {**layers["attn"], "o": {"kernel": jnp.zeros_like(layers["attn"]["o"]["kernel"])}}
    layers["mlp"] = {**layers["mlp"], "down": {"kernel": jnp.zeros_like(layers["mlp"]["down"]["kernel"])}}
    embed = np.asarray(params["text"]["embed"]).copy()
    embed[50], embed[51] = 0.0, 0.0
    embed[50, 0], embed[51, 1] = 10.0, 10.0
    t = {**params["text"], "layers": layers, "embed": jnp.asarray(embed), "norm": jnp.ones_like(params["text"]["norm"])}
    t["lm_head"] = {"kernel": jnp.asarray(embed.T)}
    return {**params, "text": t}


@pytest.mark.full
def test_planted_latents_move_only_what_reads_them(setup):
    """With each position reading only itself: latent 50 replaced by latent 51 flips the answer read at the
    last slot from 50 to 51 (must change), and changes nothing at the answer position (must not: no flip,
    KL exactly 0); an image perturbation moves neither the text arm's block nor the answer."""
    lay, sub = setup["lay"], setup["sub"]
    params = planted(setup)
    emb = np.asarray(params["text"]["embed"])
    own = jnp.asarray(np.broadcast_to(emb[50], (3, 3, 64)))
    other = jnp.asarray(np.broadcast_to(emb[51], (3, 3, 64)))
    batch = an.with_latents(setup["batch"], own)
    at_slot = mediation.latent_to_answer(
        jax.random.key(0),
        sub.apply,
        params,
        batch,
        answer_position=lay.latents[-1],
        answers=np.full(3, 51),
        kinds=("other",),
        other=other,
    )
    np.testing.assert_array_equal(np.asarray(at_slot.flipped), 1.0)
    np.testing.assert_array_equal(np.asarray(at_slot.correct_before), 0.0)
    np.testing.assert_array_equal(np.asarray(at_slot.correct), 1.0)
    at_answer = mediation.latent_to_answer(
        jax.random.key(0), sub.apply, params, batch, answer_position=lay.answer, kinds=("other",), other=other
    )
    np.testing.assert_array_equal(np.asarray(at_answer.flipped), 0.0)
    np.testing.assert_array_equal(np.asarray(at_answer.kl), 0.0)


def test_bad_input_is_refused_before_compiling(setup):
    """A wrong subject, batch, layout, answers, arm, setting, noise, seed list or perturbation shape is a
    ValueError/TypeError naming it, and nothing compiles."""
    model, lay, batch, sub = (setup[k] for k in ("model", "lay", "batch", "sub"))
    key, params = jax.random.key(0), model.params
    ans = np.zeros(3, np.int32)
    proc = qwen2_5_vl.ImageProcessor.read(FIXTURE)
    an.subject(model.config, setup["grid"], qa.layout(model.config, setup["ids"]))
    pert = jnp.zeros((1,) + tuple(batch["pixel_values"].shape))
    {k: v[:1] for k, v in batch.items()}
    pert0, _pert1 = pert[0], pert[:, :1]
    short = {**batch, "input_ids": batch["input_ids"][:, :5]}
    few_pixels = {**batch, "pixel_values": batch["pixel_values"][:, :4]}
    bad_latents = an.with_latents(batch, jnp.zeros((3, 2, 64)))
    cases = [
        (lambda: an.concentration("qwen", params, batch), TypeError, "subject must be"),
        (
            lambda: an.concentration(sub, params, short),
            ValueError,
            r"input_ids'\] must be \(B, T\) with T = 19",
        ),
        (lambda: an.concentration(sub, params, few_pixels), ValueError, "pixel_values"),
        (
            lambda: an.concentration(sub, params, bad_latents),
            ValueError,
            r"latents'\] must be \(B, L, D\)",
        ),
        (lambda: an.concentration(sub, params, batch, top_k=7), ValueError, "top_k"),
        (
            lambda: an.grounding_scores(sub, params, batch, pert0, positions=[1], tokens=ans[:, None]),
            ValueError,
            "perturbed must be",
        ),
        (
            lambda: an.grounding(
                key, sub, params, batch, proc, positions=[1], tokens=ans[:, None], noises=(("blur", 1.0),)
            ),
            ValueError,
            "noise kind",
        ),
        (
            lambda: an.grounding(
                key, sub, params, batch, proc, positions=[1], tokens=ans[:, None], noises=(("gaussian", -1.0),)
            ),
            ValueError,
            "noise level",
        ),
        (
            lambda: an.grounding(key, sub, params, batch, proc, positions=[1], tokens=ans[:, None], n_seeds=0),
            ValueError,
            "n_seeds",
        ),
        (
            lambda: an.grounding(key, sub, params, batch, proc, positions=[40], tokens=ans[:, None]),
            ValueError,
            "positions",
        ),
        (
            lambda: an.grounding(key, sub, params, batch, "proc", positions=[1], tokens=ans[:, None]),
            TypeError,
            "processor",
        ),
        (lambda: an.optimise(key, sub, params, batch, seeds=()), ValueError, "seeds"),
        (lambda: an.optimise(key, sub, params, batch, dmlr.Config(top_k=500)), ValueError, "top_k"),
        (lambda: an.optimise(key, sub, params, batch, dmlr.Hparams()), TypeError, "cfg must be"),
        (lambda: an.gain_kept(np.zeros((2, 3)), ("full", "markers_only")), ValueError, "no_block"),
    ]
    with jax_compilations() as events:
        for call, error, match in cases:
            with pytest.raises(error, match=match):
                call()
    assert "/jax/core/compile/backend_compile_duration" not in events
