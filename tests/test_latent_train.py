"""Training variants, losses, the optimiser schedule, sweeps, checkpoints/resume, at a tiny size."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tokdyn import train
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import evaluation, losses, training, variants
from tokdyn.models.latent import model as latent_model

TINY = training.Config(
    task=tasks.Config(grid_size=3, n_colours=2),
    width=16,
    depth=1,
    heads=2,
    n_latents=2,
    train=train.Config(steps=40, steps_per_call=20, warmup=5),
    batch_size=16,
    n_train=400,
    n_test=40,
    n_val=40,  # = n_test: a study's validation and test evaluations are one compiled program
    seeds=2,
)
FAST = training.Hparams(learning_rate=1e-2)


@pytest.fixture(scope="module")
def pools():
    return training.data(TINY)


def _train(cfg, name, hparams=FAST, *, checkpoint=None, **kw):
    """Variant ``name`` trained through the training layer, as the study does (``checkpoint``: a
    path, kept under the variant's stamp)."""
    checkpointing = None if checkpoint is None else train.Checkpointing(checkpoint, training.stamp(cfg, name))
    return train.train_many(
        training.trainer(cfg, name),
        training.data(cfg).train,
        *training.models(cfg, hparams),
        checkpointing=checkpointing,
        **kw,
    )


@functools.lru_cache(maxsize=None)
def _trained(name):
    """The uninterrupted run of ``name`` on TINY (shared by the tests that need it)."""
    logs = []
    res = _train(TINY, name, on_log=lambda step, lg: logs.append((step, lg)))
    return res.state, res.finished, logs


def test_coconut_schedule():
    cfg = dataclasses.replace(
        TINY, train=train.Config(steps=60, steps_per_call=10, warmup=5), n_latents=4, curriculum_stages=2
    )
    st = variants.stages(cfg, "coconut")
    assert [s[0] for s in st] == [0, 2, 4] and [s[1] for s in st] == [0, 2, 4]  # caption_len max(3, 4)
    assert sum(s[2] for s in st) == 60 and all(s[2] % 10 == 0 for s in st)
    assert variants.stages(cfg, "direct") == [(0, 0, 60)] and variants.stages(cfg, "pause") == [(4, 0, 60)]
    # every stage's model has the same parameter shapes (the curriculum continues one model)
    shapes = [
        jax.eval_shape(latent_model.Model(variants.model_config(cfg, "coconut", s)).init, jax.random.key(0))
        for s in range(3)
    ]
    assert shapes[0] == shapes[1] == shapes[2]


def test_alignment_losses_match_numpy(pools):
    cfg = variants.model_config(TINY, "latent_mirage")
    model = latent_model.Model(cfg)
    params = model.init(jax.random.key(0))
    batch = jax.tree.map(lambda a: np.asarray(a)[:4], pools[1])
    kinds = ("mirage", "monet", "lvr")

    def three(p):  # the three losses of one forward pass (and, as auxiliary output, them and the pass)
        out = model.apply(p, batch)
        values = jnp.stack([losses.alignment_loss(model, p, batch, out, k) for k in kinds])
        return values, (values, out)

    @jax.jit
    def run(params):  # one compilation for every quantity below
        # each loss's gradient: the rows of the Jacobian of the three (one forward pass, its
        # backward pass vmapped over the three)
        jac, (values, out) = jax.jacrev(three, has_aux=True)(params)
        tgt = model.net.apply(params, batch.helper, method=latent_model.Network.embed_patches)  # (B, 9, D)
        teacher = model.net.apply(params, tgt, method=latent_model.Network.backbone)[0]
        grad = {k: jax.tree.map(lambda j, i=i: j[i], jac) for i, k in enumerate(kinds)}
        return out, dict(zip(kinds, values)), tgt, teacher, grad

    out, loss, tgt, teacher, g = jax.tree.map(np.asarray, run(params))
    tgt, teacher, lat = (np.asarray(x, np.float64) for x in (tgt, teacher, out.latents))
    cos = lambda a, b: (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)  # noqa: E731
    mirage = np.mean(1 - cos(lat.mean(1), tgt.mean(1)))
    np.testing.assert_allclose(float(loss["mirage"]), mirage, rtol=1e-4)
    groups = np.stack([tgt[:, 0:4].mean(1), tgt[:, 4:9].mean(1)], 1)  # 9 patches, 2 groups: edges 0, 4 (round 4.5), 9
    fed = np.asarray(out.hidden[:, 0, model.layout.latents], np.float64)
    lvr = np.mean((fed - groups) ** 2)
    np.testing.assert_allclose(float(loss["lvr"]), lvr, rtol=1e-4)
    tg = np.stack([teacher[:, 0:4].mean(1), teacher[:, 4:9].mean(1)], 1)
    np.testing.assert_allclose(float(loss["monet"]), np.mean(1 - cos(lat, tg)), rtol=1e-4)
    # gradients flow to the latents, not into the targets
    for k in kinds:
        assert float(np.abs(g[k]["params"]["colour"]["embedding"]).sum()) > 0, k  # via the latents' input
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g[k])), k
    with pytest.raises(ValueError, match="alignment must be one of"):
        losses.alignment_loss(model, params, batch, out, "telepathy")


def test_caption_ce_masks_dropped_tokens(pools):
    model = latent_model.Model(variants.model_config(TINY, "text"))
    params = model.init(jax.random.key(0))
    batch = jax.tree.map(lambda a: np.asarray(a)[:6], pools[1])
    mask = np.asarray([0.0, 1.0, 1.0, 1.0], np.float32)  # K = max(G, 4)
    logits, ce = jax.jit(
        lambda p, b: (lambda out: (out.logits, losses.caption_ce(model, b, out, mask)))(model.apply(p, b))
    )(params, batch)
    k = model.layout.caption
    z = np.asarray(logits, np.float64)[:, k.start - 1 : k.stop - 1]  # (B, K, V)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, batch.caption[..., None], -1)[..., 0]  # (B, K)
    np.testing.assert_allclose(float(ce), nll[:, 1:].mean(), rtol=1e-5)


def test_schedule_is_optax_warmup_cosine_with_a_traced_peak():
    cfg = dataclasses.replace(TINY, train=train.Config(steps=100, steps_per_call=10, warmup=10))
    counts = jnp.arange(0, 120, 7)
    traced = jax.jit(lambda p, c: train.schedule(cfg.train, p)(c))  # one compilation for both peaks
    for peak in (2e-3, 0.5):
        ref = jax.jit(optax.warmup_cosine_decay_schedule(0.0, peak, 10, 100, peak * 0.05))(counts)  # concrete peak
        got = traced(jnp.float32(peak), counts)
        # a traced peak against optax's concrete one: two programs, equal up to float32 rounding
        # (atol: a millionth of the peak, for the cosine's end near peak * 0.05)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6, atol=1e-6 * peak)
    many = jax.jit(jax.vmap(lambda p: train.schedule(cfg.train, p)(jnp.int32(10))))(jnp.asarray([1e-3, 1e-2]))
    np.testing.assert_allclose(np.asarray(many), [1e-3, 1e-2], rtol=1e-6)  # the peak, at the end of warm-up


@pytest.mark.full
def test_train_step_is_adamw_with_the_traced_hparams(pools):
    """Two steps of two settings at once (vmapped, traced hyper-parameters) equal optax's AdamW with
    its own warm-up cosine schedule (concrete numbers) on the objective with those weights."""
    pool = pools.train
    name = "text"
    settings = [(1e-2, 0.0, 1.0), (3e-3, 5.0, 0.25)]  # learning rate, weight decay, caption weight
    lr, wd, cw = (jnp.asarray(v) for v in zip(*settings))
    hp = training.Hparams(learning_rate=lr, weight_decay=wd, caption_weight=cw)
    key = training.seed_keys(TINY)[0]
    keys = jnp.repeat(key[None], 2)
    tr = training.trainer(TINY, name)
    states = train.init_states(tr, keys, train.broadcast(hp, 2))[0]  # train_many's compiled initialisation
    step = jax.jit(jax.vmap(train.make_step(tr.first), in_axes=(0, None, 0)))
    new, logs = step(states, pool, keys)
    new, logs = step(new, pool, keys)  # the first warm-up step has learning rate 0
    assert np.all(np.asarray(new.step) == 2) and np.all(np.asarray(new.nan_step) == -1)
    assert set(logs) == {"answer_ce", "answer_acc", "caption_ce", "loss", "grad_norm"}
    model = latent_model.Model(variants.model_config(TINY, name, 0))
    lr, wd, cw = settings[1]  # model 1 (model 0, the defaults but the learning rate, is the contrast)
    opt = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, 5, TINY.train.steps, lr * 0.05), weight_decay=wd),
    )

    @jax.jit
    def ref(params, o, t):  # step t's update, on the batch train_step draws for it
        batch = training.draw_batch(jax.random.fold_in(key, t), pool, TINY.batch_size)
        g = jax.grad(
            lambda p: losses.objective(
                model,
                p,
                batch,
                align=None,
                caption_mask=jnp.ones(TINY.task.caption_len),
                align_weight=1.0,
                caption_weight=cw,
            )[0]
        )(params)
        u, o = opt.update(g, o, params)
        return optax.apply_updates(params, u), o

    params = jax.tree.map(lambda a: np.asarray(a)[1], states.params)
    o = jax.jit(opt.init)(params)
    for t in range(2):
        params, o = ref(params, o, t)
    # a wrong learning rate, weight decay or loss weight (e.g. model 0's) moves parameters by 1e-4 and more
    got = [_no_key_bias(jax.tree.map(lambda a, i=i: np.asarray(a)[i], new.params)) for i in (0, 1)]
    params = _no_key_bias(jax.tree.map(np.asarray, params))
    chex.assert_trees_all_close(got[1], params, atol=1e-5, rtol=0)
    assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(params))) > 1e-4


def _no_key_bias(params):
    """``params`` (host arrays) with the key bias zeroed: attention is invariant to it, so its
    gradient is rounding noise, which Adam's normalised update turns into steps of any size up to
    the learning rate."""
    params = jax.tree.map(np.array, params)  # new containers and copies
    params["params"]["block0"]["qkv"]["bias"][..., TINY.width : 2 * TINY.width] = 0.0
    return params


@pytest.mark.parametrize(
    "name",
    [
        # coconut: 2-3x the others' time; latent_mirage and latent_monet differ from latent_lvr (kept
        # here) by their alignment loss only, whose values and gradients test_alignment_losses_match_numpy
        # checks in the default run; no_image differs from direct (kept here) by its blank image only,
        # which test_latent_model.py checks, and test_latent_study.py trains and evaluates it end to end
        pytest.param(
            n,
            marks=pytest.mark.slow
            if n in ("coconut", "latent_mirage", "latent_monet", "no_image")
            else pytest.mark.full,
        )
        for n in sorted(variants.VARIANTS)
    ],
)
def test_every_variant_learns_and_evaluates(name, pools):
    test = pools.test
    state, done, logs = _trained(name)
    assert done and np.all(np.asarray(state.step) == TINY.train.steps) and train.nan_report(state) == []
    leaves = jax.tree.leaves(state.params)
    assert all(x.shape[0] == TINY.seeds and np.all(np.isfinite(np.asarray(x))) for x in leaves)
    # learning: the answer cross-entropy of the last call's steps is well below the first call's
    # (an untrained model's stays put: batch noise on 320 answers is ~0.05 nats)
    assert [s for s, _ in logs] == [20, 40]
    first, last = logs[0][1]["answer_ce"], logs[-1][1]["answer_ce"]
    assert np.all(last < first - 0.2), (first, last)
    acc = evaluation.evaluate(TINY, name, state.params, test, chunk=24)  # 24 + 16 (padded)
    assert acc["all"].shape == (TINY.seeds,) and np.all((acc["all"] >= 0) & (acc["all"] <= 1))
    assert ("caption_exact" in acc) == (name == "text")
    first = np.asarray(leaves[0])
    assert not np.allclose(first[0], first[1])  # seeds differ (own init and batches)


@pytest.mark.full
def test_sweep_is_one_compilation_and_a_nan_stops_no_other_model(pools, monkeypatch):
    """4 learning rates x 3 seeds in one call: one trace of the objective for both chunks; the
    diverging setting skips its non-finite steps, is reported per model and leaves the others
    exactly as without it."""
    cfg = dataclasses.replace(TINY, seeds=3)  # a configuration no other test uses: its trainer is built anew
    monkeypatch.setattr(losses, "objective", chex.assert_max_traces(losses.objective, n=1))
    lrs = np.asarray([1e-2, 3e-3, 1e30, 1e-2])  # settings 0 and 3 are the same
    res = _train(cfg, "direct", training.Hparams(learning_rate=lrs))
    monkeypatch.undo()
    state = res.state
    assert res.finished and state.step.shape == (12,)
    bad = train.nan_report(state)
    assert [i for i, *_ in bad] == [6, 7, 8] and all(1 <= t < cfg.train.steps and 1 <= n for _, t, n in bad)
    np.testing.assert_allclose(np.asarray(state.hparams.learning_rate), np.repeat(lrs, 3).astype(np.float32))
    for leaf in jax.tree.leaves(state.params):
        x = np.asarray(leaf)
        assert np.all(np.isfinite(x[[0, 1, 2, 3, 4, 5, 9, 10, 11]]))
        np.testing.assert_array_equal(x[0:3], x[9:12])  # model (setting, seed) depends on nothing else
    first = np.asarray(jax.tree.leaves(state.params)[0])
    assert not np.allclose(first[0], first[3]) and not np.allclose(first[0], first[1])  # settings, seeds differ


@pytest.mark.full
def test_resume_equals_uninterrupted(tmp_path, pools):
    """coconut, interrupted after its first curriculum stage, resumes to the same models."""
    name = "coconut"
    full, _, full_logs = _trained(name)
    ck = str(tmp_path / "c.npz")
    logs = []
    res = _train(TINY, name, checkpoint=ck, max_calls=1, on_log=lambda step, lg: logs.append((step, lg)))
    part = res.state
    assert not res.finished and np.all(np.asarray(part.step) == 20)
    loaded = training.load(ck, TINY, name, FAST)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, part), jax.tree.map(np.asarray, loaded))
    with pytest.raises(ValueError, match="other hyper-parameters"):
        training.load(ck, TINY, name, training.Hparams())
    other = str(tmp_path / "latent.npz")  # latent and latent_lvr have the same shapes
    _train(TINY, "latent", checkpoint=other, max_calls=1)
    with pytest.raises(ValueError, match="another configuration"):
        training.load(other, TINY, "latent_lvr", FAST)
    res = _train(TINY, name, checkpoint=ck, on_log=lambda step, lg: logs.append((step, lg)))
    resumed = res.state
    assert res.finished and np.all(np.asarray(resumed.step) == TINY.train.steps)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, full.params), jax.tree.map(np.asarray, resumed.params))
    assert [s for s, _ in logs] == [20, 40]
    for (_, a), (_, b) in zip(full_logs, logs):
        chex.assert_trees_all_equal(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        training.trainer(TINY, "telepathy")
    with pytest.raises(ValueError, match="n_latents"):
        training.trainer(dataclasses.replace(TINY, n_latents=0), "latent")
    with pytest.raises(ValueError, match="train.steps must be a multiple"):
        training.trainer(dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, steps=50)), "direct")
    with pytest.raises(ValueError, match="learning_rate"):
        training.Hparams(learning_rate=0.0).validate()
    with pytest.raises(ValueError, match="learning_rate"):
        training.models(TINY, training.Hparams(learning_rate=np.asarray([1e-3, -1.0])))
    with pytest.raises(ValueError, match="one common length"):
        training.models(TINY, training.Hparams(learning_rate=np.ones(2), weight_decay=np.ones(3)))
    with pytest.raises(TypeError, match="hparams must be"):
        training.models(TINY, {"learning_rate": 1e-3})
    with pytest.raises(TypeError, match="cfg must be"):
        training.trainer(dataclasses.asdict(TINY), "direct")


@pytest.mark.full
def test_a_curriculum_stage_answers_from_the_pads_it_was_trained_with(pools):
    """A caption token a curriculum stage has replaced by latents is <pad> at test time, as in its
    training, not generated; only the caption tokens after it are, and the true caption is never
    seen. At the last coconut stage (every caption token dropped) the greedy answer is an argmax
    of the forward pass on the padded batch."""
    cfg = TINY  # curriculum_stages=2: caption tokens 0, 2 and 4 of 4 dropped, by 0, 1 and 2 latents
    assert cfg.curriculum_stages == 2 and cfg.task.caption_len == 4
    pad = cfg.task.vocab.pad
    params = training.init_states(cfg, "coconut").params  # (seeds, ...) untrained: arbitrary but fixed
    batch = jax.tree.map(lambda a: np.asarray(a)[:24], pools.test)  # host arrays: edited without compiling
    k = variants.model_config(cfg, "coconut", -1).caption_len
    assert variants.dropped_captions(cfg, "coconut", -1) == k == 4
    answers, caps = evaluation.answers(cfg, "coconut", params, jax.tree.map(jnp.asarray, batch))
    assert np.all(caps == pad)
    model = latent_model.Model(variants.model_config(cfg, "coconut", -1))
    logits = np.asarray(
        jax.jit(
            jax.vmap(
                lambda p, b: model.apply(p, variants.stage_batch(b, k, pad)).logits[:, model.layout.answer], (0, None)
            )
        )(params, batch)
    )
    chosen = np.take_along_axis(logits, np.asarray(answers)[..., None], -1)[..., 0]
    assert np.all(chosen >= logits.max(-1) - 1e-5 * np.abs(logits).max())  # an argmax, up to rounding
    # a middle stage (2 of 4 dropped): positions 0-1 keep the batch's pads, 2-3 are generated, and
    # what the batch holds at 2-3 (the true caption, or anything) changes nothing
    mid = latent_model.Model(variants.model_config(cfg, "coconut", 1))
    assert variants.dropped_captions(cfg, "coconut", 1) == 2
    one = jax.tree.map(lambda a: np.asarray(a)[0], params)
    caption = batch.caption.copy()
    caption[:, 2:] = (caption[:, 2:] + 1) % cfg.task.vocab.size
    b2 = dataclasses.replace(batch, caption=caption)
    f = jax.jit(lambda p, b: evaluation.predict(mid, p, variants.stage_batch(b, 2, pad), dropped=2))
    (a1, c1), (a2, c2) = f(one, batch), f(one, b2)
    np.testing.assert_array_equal(np.asarray(c1[:, :2]), pad)
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))
    np.testing.assert_array_equal(np.asarray(c1), np.asarray(c2))


def test_a_curriculum_stage_edits_a_host_batch_as_it_edits_a_device_one(pools):
    """stage_batch takes a batch of NumPy arrays (what ``tasks.splits`` returns) as it takes JAX
    arrays: the first ``dropped`` caption tokens become the pad, the rest stay."""
    device = jax.tree.map(lambda a: jnp.asarray(a[:3]), pools.test)
    host = jax.tree.map(lambda a: np.asarray(a[:3]), pools.test)
    pad = TINY.task.vocab.pad
    a, b = variants.stage_batch(device, 2, pad), variants.stage_batch(host, 2, pad)
    np.testing.assert_array_equal(np.asarray(a.caption), np.asarray(b.caption))
    assert np.all(np.asarray(b.caption)[:, :2] == pad)
    np.testing.assert_array_equal(np.asarray(b.caption)[:, 2:], np.asarray(host.caption)[:, 2:])
