"""Image perturbations and grounding scores of generated tokens."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn.diagnostics import grounding, perturb
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import model as latent_model

# the training tests' tasks (tests/test_latent_train.py's TINY): one compiled generator for the session
TASK = tasks.Config(grid_size=3, n_colours=2)
TEXT = latent_model.Config(task=TASK, width=16, depth=1, heads=2, caption_len=TASK.caption_len)


@pytest.fixture(scope="module")
def batch():
    return tasks.generate(jax.random.key(1), 16, TASK)


@pytest.mark.parametrize("name", sorted(perturb.PERTURBATIONS))
def test_perturbations_change_the_image_only(batch, name):
    out = perturb.perturb(jax.random.key(0), batch, TASK, name)
    for f in dataclasses.fields(batch):
        if f.name != "image":
            np.testing.assert_array_equal(getattr(out, f.name), getattr(batch, f.name))
    img, new = np.asarray(batch.image), np.asarray(out.image)
    assert new.shape == img.shape and new.dtype == img.dtype
    assert new.min() >= 0 and new.max() <= TASK.n_colours
    if name == "blank":
        assert not new.any()
    if name == "swap":
        np.testing.assert_array_equal(new, np.roll(img, -1, 0))
    if name == "shuffle":  # the same cells, elsewhere
        np.testing.assert_array_equal(np.sort(new.reshape(16, -1), 1), np.sort(img.reshape(16, -1), 1))
    assert (new != img).any()


def test_resample_redraws_the_share_of_cells_it_is_asked_to(batch):
    big = jax.tree.map(lambda a: np.tile(a, (125,) + (1,) * (a.ndim - 1)), batch)  # 2000 instances
    same = perturb.perturb(jax.random.key(0), big, TASK, "resample", rate=0.0)
    np.testing.assert_array_equal(same.image, big.image)
    out = perturb.perturb(jax.random.key(0), big, TASK, "resample", rate=0.6)
    changed = np.mean(np.asarray(out.image) != np.asarray(big.image))
    # a redrawn cell keeps its colour with probability 1 / (C + 1)
    expect, n = 0.6 * TASK.n_colours / (TASK.n_colours + 1), big.image.size
    assert abs(changed - expect) < 4 * np.sqrt(expect * (1 - expect) / n)


def test_token_logprobs_equal_a_numpy_gather(batch):
    model = latent_model.Model(TEXT)
    params = model.init(jax.random.key(0))
    pos = grounding.generated_positions(model.layout)
    assert pos.tolist() == list(range(model.layout.caption.start - 1, model.layout.caption.stop - 1)) + [
        model.layout.answer
    ]
    tokens = np.concatenate([np.asarray(batch.caption), np.asarray(batch.answer)[:, None]], 1)
    apply = jax.jit(model.apply)
    got = grounding.token_logprobs(apply, params, batch, positions=pos, tokens=tokens)
    logits = np.asarray(apply(params, batch).logits, np.float64)[:, pos]  # (B, n, V)
    ref = logits - logits.max(-1, keepdims=True)
    ref = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
    np.testing.assert_allclose(got, np.take_along_axis(ref, tokens[..., None], -1)[..., 0], rtol=1e-4, atol=1e-5)


def test_grounding_is_zero_for_a_model_that_ignores_its_image(batch):
    """The no-image control reads an empty grid whatever the image: S = 0 exactly; a model that
    reads the image gets S != 0 under the same perturbation."""
    tokens = np.asarray(batch.answer)[:, None]
    for use_image, zero in ((False, True), (True, False)):
        model = latent_model.Model(dataclasses.replace(TEXT, use_image=use_image))
        params = model.init(jax.random.key(0))
        pos = [model.layout.answer]
        s = grounding.scores(
            jax.jit(model.apply),
            params,
            batch,
            perturb.perturb(jax.random.key(0), batch, TASK, "shuffle"),
            positions=pos,
            tokens=tokens,
        )
        assert s.shape == (16, 1)
        assert np.all(np.asarray(s) == 0) == zero


def test_bad_input_is_named(batch):
    with pytest.raises(ValueError, match="perturbation must be one of"):
        perturb.perturb(jax.random.key(0), batch, TASK, "blur")
    with pytest.raises(ValueError, match="rate must be in \\[0, 1\\]"):
        perturb.perturb(jax.random.key(0), batch, TASK, "resample", rate=1.5)
    with pytest.raises(ValueError, match="tokens must have one column per position"):
        grounding.token_logprobs(None, None, batch, positions=[1, 2], tokens=jnp.zeros((16, 3), int))
