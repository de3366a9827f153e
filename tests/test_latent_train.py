"""Training variants, alignment losses, checkpoints/resume and the study, at a tiny size."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import report
from tokdyn.latent import model as M
from tokdyn.latent import tasks
from tokdyn.latent import train as T

TINY = T.TrainConfig(task=tasks.TaskConfig(grid_size=3, n_colours=2), width=16, depth=1, heads=2, n_latents=2,
                     steps=4, steps_per_call=2, batch_size=8, n_train=200, n_test=20, seeds=2, warmup=1)


@pytest.fixture(scope="module")
def pools():
    return T.data(TINY)


def test_coconut_schedule():
    cfg = dataclasses.replace(TINY, steps=60, steps_per_call=10, n_latents=4, curriculum_stages=2)
    st = T.stages(cfg, "coconut")
    assert [s[0] for s in st] == [0, 2, 4] and [s[1] for s in st] == [0, 2, 3]
    assert sum(s[2] for s in st) == 60 and all(s[2] % 10 == 0 for s in st)
    assert T.stages(cfg, "direct") == [(0, 0, 60)] and T.stages(cfg, "pause") == [(4, 0, 60)]
    # every stage's model has the same parameter shapes (the curriculum continues one model)
    shapes = [jax.tree.map(jnp.shape, M.Model(T.model_config(cfg, "coconut", s)).init(jax.random.key(0)))
              for s in range(3)]
    assert shapes[0] == shapes[1] == shapes[2]


def test_alignment_losses_match_numpy():
    cfg = T.model_config(TINY, "latent_mirage")
    model = M.Model(cfg)
    params = model.init(jax.random.key(0))
    batch = tasks.generate(jax.random.key(1), 4, TINY.task)
    out = jax.jit(model.apply)(params, batch)
    loss = jax.jit(lambda kind: T.alignment_loss(model, params, batch, out, kind), static_argnums=0)
    tgt = np.asarray(model.net.apply(params, batch.helper, method=M.Network.embed_patches), np.float64)  # (B, 9, D)
    lat = np.asarray(out.latents, np.float64)
    cos = lambda a, b: (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)  # noqa: E731
    mirage = np.mean(1 - cos(lat.mean(1), tgt.mean(1)))
    np.testing.assert_allclose(float(loss("mirage")), mirage, rtol=1e-4)
    groups = np.stack([tgt[:, 0:4].mean(1), tgt[:, 4:9].mean(1)], 1)  # 9 patches into 2 groups: edges 0, 4 (round 4.5), 9
    fed = np.asarray(out.hidden[:, 0, model.layout.latents], np.float64)
    lvr = np.mean((fed - groups) ** 2)
    np.testing.assert_allclose(float(loss("lvr")), lvr, rtol=1e-4)
    teacher = np.asarray(model.net.apply(params, jnp.asarray(tgt, jnp.float32), method=M.Network.backbone)[0],
                         np.float64)
    tg = np.stack([teacher[:, 0:4].mean(1), teacher[:, 4:9].mean(1)], 1)
    np.testing.assert_allclose(float(loss("monet")),
                               np.mean(1 - cos(lat, tg)), rtol=1e-4)
    # gradients flow to the latents, not into the targets
    g = jax.jit(jax.grad(lambda p: T.alignment_loss(model, p, batch, model.apply(p, batch), "lvr")))(params)
    assert float(jnp.abs(g["params"]["colour"]["embedding"]).sum()) > 0  # via the latents' input, not the target
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(T.VARIANTS))
def test_every_variant_trains_and_evaluates(name, pools):
    pool, test = pools
    state, done = T.train(TINY, name, pool)
    assert done and state.step == TINY.steps
    leaves = jax.tree.leaves(state.params)
    assert all(x.shape[0] == TINY.seeds and np.all(np.isfinite(np.asarray(x))) for x in leaves)
    acc = T.evaluate(TINY, name, state.params, test, chunk=8)
    assert acc["all"].shape == (TINY.seeds,) and np.all((acc["all"] >= 0) & (acc["all"] <= 1))
    # seeds differ (own init and batches)
    first = np.asarray(leaves[0])
    assert not np.allclose(first[0], first[1])


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, pools):
    pool, _ = pools
    full, _ = T.train(TINY, "latent_lvr", pool)
    ck = str(tmp_path / "c.npz")
    part, done = T.train(TINY, "latent_lvr", pool, checkpoint=ck, max_calls=1)
    assert not done and part.step == 2 and os.path.exists(ck)
    loaded = T.load_checkpoint(ck, T.init_state(TINY, "latent_lvr"))
    for a, b in zip(jax.tree.leaves(part.params), jax.tree.leaves(loaded.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    resumed, done = T.train(TINY, "latent_lvr", pool, checkpoint=ck)
    assert done and resumed.step == 4
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_study_writes_outputs_and_resumes(tmp_path):
    from tokdyn.studies import latent_reasoning as L

    out = str(tmp_path / "s")
    names = ("direct", "no_image")
    assert L.main(TINY, out, variants=names, quiet=True, plots=False)
    acc = report.read_csv(os.path.join(out, "accuracy.csv"))
    assert len(acc["variant"]) == 2 * 5 * TINY.seeds
    assert set(acc["family"]) == set(tasks.FAMILIES) | {"all"}
    curves = report.read_csv(os.path.join(out, "curves", "direct.csv"))
    assert curves["step"].tolist() == [2, 2, 4, 4]
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["train"]["steps"] == TINY.steps
    mtime = os.path.getmtime(os.path.join(out, "results", "direct.json"))
    assert L.main(TINY, out, variants=names, quiet=True, plots=False)  # finished variants are skipped
    assert os.path.getmtime(os.path.join(out, "results", "direct.json")) == mtime
    with pytest.raises(ValueError, match="different configuration"):
        L.main(dataclasses.replace(TINY, steps=6), out, variants=names, quiet=True, plots=False)


def test_bad_arguments(pools):
    pool, _ = pools
    with pytest.raises(ValueError, match="variant"):
        T.train(TINY, "telepathy", pool)
    with pytest.raises(ValueError, match="n_latents"):
        T.train(dataclasses.replace(TINY, n_latents=0), "latent", pool)
    with pytest.raises(ValueError, match="steps must be a multiple"):
        T.train(dataclasses.replace(TINY, steps=5), "direct", pool)
    with pytest.raises(ValueError, match="learning_rate"):
        dataclasses.replace(TINY, learning_rate=0.0).validate()
