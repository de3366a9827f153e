"""The latent reasoner's protocol: causality, latent feedback, interventions, shape errors."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn.models.latent import model as latent_model
from tokdyn.data import grid_tasks as tasks

# the training tests' tasks (tests/test_latent_train.py's TINY): one compiled generator for the session
TASK = tasks.Config(grid_size=3, n_colours=2)
# two blocks (every pass reads a key/value cache per block) and two latents (the second reads the
# first's feedback): the feedback loop is n_latents + 2 passes of depth blocks, each compiled
CFG = latent_model.Config(
    task=TASK,
    width=32,
    depth=2,
    heads=2,
    latent_mode="feedback",
    n_latents=2,
    caption_len=TASK.caption_len,
    projection="linear",
)
# every model of this module has CFG's parameter shapes (one position table of CFG's text length):
# the models of other modes and projections run on the fixture's parameters (no other initialisation)
TEXT = CFG.layout.length - TASK.n_patches


@pytest.fixture(scope="module")
def batch5():
    """5 instances (host arrays: the tests edit and slice them without compiling); instance i of
    ``generate(key, n)`` is the same for every n >= i + 1, so the tests that need fewer take the
    first ones (one compilation of the generator)."""
    return jax.tree.map(np.asarray, tasks.generate(jax.random.key(1), 5, TASK))


@pytest.fixture(scope="module")
def setup(batch5):
    model = latent_model.Model(CFG)
    params = model.init(jax.random.key(0))
    return model, params, batch5


@functools.lru_cache(maxsize=None)
def japply(model):
    """``jax.jit(model.apply)``, one object per model: the tests that apply one model share its
    traces and compilations (a new ``jax.jit`` of the method would trace again)."""
    return jax.jit(model.apply)


def _first(batch, n):
    return jax.tree.map(lambda a: a[:n], batch)


def host(out):
    """Every field of ``out`` as a host array (no eager indexing of device arrays: each compiles)."""
    return jax.tree.map(np.asarray, out)


def _params_for(params, proj):
    """CFG's initial parameters (projection "linear": a LayerNorm then a Dense) for a model of the
    same shapes with projection ``proj``: "none" has no projection, "layernorm" the LayerNorm alone
    (the Sequential's first layer: unit scale and zero bias, as a fresh initialisation)."""
    p = dict(params["params"])
    if proj == "none":
        del p["proj"]
    elif proj == "layernorm":
        p["proj"] = p["proj"]["layers_0"]
        np.testing.assert_array_equal(np.asarray(p["proj"]["scale"]), 1.0)
    return {"params": p}


def test_layout_and_shapes(setup):
    model, params, batch = setup
    lay = model.layout
    assert lay.length == 9 + 5 + 1 + 2 + 1 + 4 + 1
    out = host(japply(model)(params, batch))
    assert out.logits.shape == (5, lay.length, TASK.vocab.size)
    assert out.hidden.shape == (5, 3, lay.length, 32)
    assert out.attention.shape == (5, 2, 2, lay.length, lay.length)
    assert out.latents.shape == (5, 2, 32)
    a = out.attention
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(a, 1) == 0)  # causal weights
    assert np.all(np.isfinite(out.logits))


def test_causal_masking(setup):
    """Changing a caption token changes nothing before it, including the latents."""
    model, params, batch = setup
    lay = model.layout
    caption = batch.caption.copy()
    caption[:, 2] = TASK.vocab.number0 + 3
    other = dataclasses.replace(batch, caption=caption)
    a, b = host(japply(model)(params, batch)), host(japply(model)(params, other))
    cut = lay.caption.start + 2
    np.testing.assert_allclose(a.logits[:, :cut], b.logits[:, :cut], atol=1e-5)
    np.testing.assert_allclose(a.latents, b.latents, atol=1e-5)
    assert not np.allclose(a.logits[:, cut:], b.logits[:, cut:], atol=1e-4)
    # a changed image changes the latents (they read the image)
    c = host(japply(model)(params, dataclasses.replace(batch, image=(batch.image + 1) % (TASK.n_colours + 1))))
    assert not np.allclose(a.latents, c.latents, atol=1e-4)


def test_latent_feedback_matches_manual_unroll(setup):
    """Full-length passes, writing project(last hidden at s+i-1) into slot i, one at a time."""
    model, params, batch = setup
    net, lay = model.net, model.layout
    s = lay.latents.start

    @jax.jit
    def manual_unroll(params, batch):  # one compilation of the reference's passes
        x = model.embed(params, batch)
        manual = []
        for i in range(CFG.n_latents):
            out = net.apply(params, x, method=latent_model.Network.backbone)[0]
            manual.append(out[:, s + i - 1])
            x = x.at[:, s + i].set(net.apply(params, out[:, s + i - 1], method=latent_model.Network.project))
        final = net.apply(
            params, net.apply(params, x, method=latent_model.Network.backbone)[0], method=latent_model.Network.unembed
        )
        return jnp.stack(manual, 1), final

    manual, final = host(manual_unroll(params, batch))
    got = host(japply(model)(params, batch))
    np.testing.assert_allclose(got.latents, manual, atol=1e-5)
    np.testing.assert_allclose(got.logits, final, atol=1e-4)
    # feeding the latents back in explicitly gives the same outputs in one pass
    again = host(japply(model)(params, batch, latents=got.latents))
    np.testing.assert_allclose(again.logits, got.logits, atol=1e-4)


@pytest.mark.full
def test_projection_matches_norms(setup):
    """Raw feedback has norm ~sqrt(width); the LayerNorm projection is learnable, 'none' is the raw state."""
    _, params, batch = setup
    for proj in latent_model.PROJECTIONS:
        m = latent_model.Model(dataclasses.replace(CFG, projection=proj))
        out = host(japply(m)(_params_for(params, proj), batch))
        emb = out.hidden[:, 0]  # input embeddings, latent slots hold the fed-back vectors
        lat = emb[:, m.layout.latents]
        if proj == "none":
            np.testing.assert_allclose(lat, out.latents, atol=1e-6)
            np.testing.assert_allclose(np.linalg.norm(lat, axis=-1), np.sqrt(32), rtol=1e-3)
        if proj == "layernorm":  # LayerNorm of a LayerNorm output with unit scale: the same vector
            np.testing.assert_allclose(lat, out.latents, atol=1e-3)


def test_intervene_identity_replace_and_propagation(setup):
    model, params, batch = setup
    lay = model.layout
    new = np.random.default_rng(5).standard_normal((1, CFG.width)).astype(np.float32)
    latents = list(range(*lay.latents.indices(lay.length)))

    @jax.jit
    def run(params, k):  # every pass below in one compilation; k: a traced factor
        base = model.apply(params, batch)
        same = model.apply(params, batch, intervene=lambda x: x)
        ed = model.apply(params, batch, intervene=latent_model.replace([lay.latent_start], new))
        # scale by one (a traced factor) at the latent slots and add zero at two patches, in one
        # pass: the positions are disjoint, so an edit that were no no-op would show
        scale_k, add0 = latent_model.scale(latents, k), latent_model.add([0, 3], jnp.zeros(CFG.width))
        noop = model.apply(params, batch, intervene=lambda x: add0(scale_k(x))).logits
        return base, same, ed, noop

    base, same, ed, noop = host(run(params, 1.0))
    for f in base._fields:
        np.testing.assert_array_equal(getattr(base, f), getattr(same, f))
    # replacing the <latent_start> embedding changes the first latent and everything after it
    np.testing.assert_allclose(
        ed.hidden[:, 0, lay.latent_start], np.broadcast_to(np.asarray(new), (5, CFG.width)), atol=1e-6
    )
    np.testing.assert_allclose(ed.logits[:, : lay.latent_start], base.logits[:, : lay.latent_start], atol=1e-5)
    assert not np.allclose(ed.latents[:, 0], base.latents[:, 0], atol=1e-4)
    # add zero and scale by one (a traced factor) are no-ops
    np.testing.assert_allclose(noop, base.logits, atol=1e-5)


def _inserted_reference(model, params, batch, mask):
    """Instance by instance: the selected patches' embeddings really inserted after the question
    (a longer sequence, no masking), latent feedback by full passes as in the manual unroll
    (``mask`` a host array: traceable in ``params`` and ``batch``)."""
    net, lay = model.net, model.layout
    at, s = lay.question.stop, lay.latents.start
    logits, latents = [], []
    for b in range(mask.shape[0]):
        x = model.embed(params, jax.tree_util.tree_map(lambda a: a[b : b + 1], batch))
        idx = np.flatnonzero(mask[b])
        x = jnp.concatenate([x[:, :at], x[:, idx], x[:, at:]], 1)
        k, fed = len(idx), []
        for i in range(CFG.n_latents):
            out = net.apply(params, x, method=latent_model.Network.backbone)[0]
            fed.append(out[:, s + k + i - 1])
            x = x.at[:, s + k + i].set(net.apply(params, fed[-1], method=latent_model.Network.project))
        lg = net.apply(
            params, net.apply(params, x, method=latent_model.Network.backbone)[0], method=latent_model.Network.unembed
        )
        logits.append(jnp.concatenate([lg[0, :at], lg[0, at + k :]]))
        latents.append(jnp.concatenate(fed))
    return jnp.stack(logits), jnp.stack(latents)


def test_inject_matches_really_inserted_patches(setup):
    model, params, batch = setup
    f = japply(model)
    mask = np.random.default_rng(3).random((5, 9)) < 0.3
    mask[0] = False
    mask[1] = True
    assert 0 < mask[2].sum() < 9  # some patches
    got = host(f(params, batch, inject=mask))
    want_logits, want_latents = host(
        jax.jit(lambda p, b: _inserted_reference(model, p, b, mask[2:3]))(
            params, jax.tree_util.tree_map(lambda a: a[2:3], batch)
        )
    )  # some patches (the reference's passes in one compilation)
    np.testing.assert_allclose(got.logits[2:3], want_logits, atol=1e-4)
    np.testing.assert_allclose(got.latents[2:3], want_latents, atol=1e-4)
    # no copy seen: exactly the plain forward pass; the layout's shapes are kept
    base = host(f(params, batch))
    np.testing.assert_allclose(got.logits[0], base.logits[0], atol=1e-5)
    assert not np.allclose(got.logits[1], base.logits[1], atol=1e-3)
    assert got.attention.shape == base.attention.shape and got.hidden.shape == base.hidden.shape
    np.testing.assert_allclose(got.attention.sum(-1), 1.0, atol=1e-5)  # a copy's attention is folded into its patch
    # given latents (one pass) agrees with the feedback loop under injection too
    again = host(f(params, batch, latents=got.latents, inject=mask))
    np.testing.assert_allclose(again.logits, got.logits, atol=1e-4)
    with pytest.raises(ValueError, match="inject"):
        model.apply(params, batch, inject=np.zeros((5, 8), bool))
    with pytest.raises(TypeError, match="inject"):
        model.apply(params, batch, inject=np.zeros((5, 9)))


@pytest.mark.full
def test_drop_equals_deleting_the_positions(setup):
    """Dropped positions are deleted: the kept positions' outputs equal a shorter sequence's
    (latent feedback unrolled by full passes over it); the shapes keep the layout."""
    model, params, batch = setup
    net, lay = model.net, model.layout
    gone = [lay.question.start + 1, lay.latent_end]
    drop = np.zeros((5, lay.length), bool)
    drop[:, gone] = True
    got = host(japply(model)(params, batch, drop=drop))
    kept = np.setdiff1d(np.arange(lay.length), gone)
    slot = [int(np.flatnonzero(kept == p)[0]) for p in range(lay.latents.start, lay.latents.stop)]

    @jax.jit
    def shorter(params, one):  # the shorter sequence's passes, in one compilation
        x = model.embed(params, one)[:, kept]
        fed = []
        for i in slot:
            out = net.apply(params, x, method=latent_model.Network.backbone)[0]
            fed.append(out[:, i - 1])
            x = x.at[:, i].set(net.apply(params, fed[-1], method=latent_model.Network.project))
        want = net.apply(
            params, net.apply(params, x, method=latent_model.Network.backbone)[0], method=latent_model.Network.unembed
        )
        return want, jnp.stack(fed, 1)

    want, fed = host(shorter(params, jax.tree_util.tree_map(lambda a: a[:1], batch)))
    np.testing.assert_allclose(got.logits[:1, kept], want, atol=1e-4)
    np.testing.assert_allclose(got.latents[:1], fed, atol=1e-4)
    assert np.all(got.attention[..., gone] == 0)  # nothing attends to a dropped position
    with pytest.raises(ValueError, match="drop"):
        model.apply(params, batch, drop=np.zeros((5, 3), bool))


def test_pause_and_direct_modes(setup):
    _, p, batch5 = setup  # CFG's parameters (the position table of CFG's text length, TEXT)
    batch = _first(batch5, 3)
    m = latent_model.Model(dataclasses.replace(CFG, latent_mode="pause", caption_len=0, text_positions=TEXT))
    out = host(japply(m)(p, batch))
    lay = m.layout
    tok = np.asarray(p["params"]["tok"]["embedding"])[TASK.vocab.pause]
    pos = np.asarray(p["params"]["pos"]["embedding"])[lay.latents.start - 9]
    np.testing.assert_allclose(out.hidden[0, 0, lay.latents.start], tok + pos, atol=1e-6)
    assert out.latents.shape == (3, 0, 32)
    d = latent_model.Model(latent_model.Config(task=TASK, width=32, heads=2, projection="linear", text_positions=TEXT))
    assert d.layout.length == 9 + 5 + 1
    assert japply(d)(p, batch).logits.shape == (3, 15, TASK.vocab.size)


def test_no_image_ignores_the_image(setup):
    _, p, batch5 = setup  # CFG's parameters, as above
    m = latent_model.Model(
        latent_model.Config(task=TASK, width=32, heads=2, use_image=False, projection="linear", text_positions=TEXT)
    )
    b = _first(batch5, 3)
    f = japply(m)
    a = f(p, b).logits
    c = f(p, dataclasses.replace(b, image=(b.image + 1) % (TASK.n_colours + 1))).logits
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


def test_shape_and_config_errors(setup):
    model, params, batch = setup
    with pytest.raises(ValueError, match="batch.image"):
        model.apply(params, dataclasses.replace(batch, image=batch.image[:, :2]))
    with pytest.raises(ValueError, match="batch.question"):
        model.apply(params, dataclasses.replace(batch, question=batch.question[:, :4]))
    with pytest.raises(ValueError, match="batch.caption"):
        model.apply(params, dataclasses.replace(batch, caption=batch.caption[:, :2]))
    with pytest.raises(ValueError, match="latents"):
        model.apply(params, batch, latents=np.zeros((5, CFG.n_latents + 1, 32)))
    with pytest.raises(ValueError, match="n_latents"):
        latent_model.Model(dataclasses.replace(CFG, n_latents=0))
    with pytest.raises(ValueError, match="latent_mode"):
        latent_model.Model(dataclasses.replace(CFG, latent_mode="dream"))
    with pytest.raises(ValueError, match="width must be a multiple"):
        latent_model.Model(dataclasses.replace(CFG, width=33))
    with pytest.raises(ValueError, match="grid_size"):
        latent_model.Model(dataclasses.replace(CFG, task=tasks.Config(grid_size=0)))
