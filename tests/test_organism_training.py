"""The organism trained as a Qwen2.5-VL (tokdyn.models.organism.training): the recipes' sequences (the caption
and the answer in the tail, a curriculum's stages dropping the caption's first tokens for latents, a black image
without one), every seed of a recipe trained in one program through tokdyn.train with its loss falling, and a
trained organism saved as a checkpoint that tokdyn loads back equal and runs in latent mode."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_same_floats

pytest.importorskip("tokenizers")

from tokdyn.models import qwen2_5_vl, vlm  # noqa: E402
from tokdyn.data import grid_tasks as latent_tasks  # noqa: E402
from tokdyn.models.organism import tokenizer as tokenizer_lib  # noqa: E402
from tokdyn.models.organism import training as T  # noqa: E402
from tokdyn.train import optim  # noqa: E402

CFG = T.Config(
    tasks=T.tasks_lib.Config(task=latent_tasks.Config(grid_size=4, n_colours=4, families=("read", "gravity"))),
    hidden_size=32,
    heads=2,
    kv_heads=1,
    intermediate_size=48,
    vision_depth=1,
    vision_width=16,
    n_latents=2,
    train=optim.Config(steps=6, steps_per_call=3, warmup=0, decay="constant", clip_norm=1.0),
    batch_size=4,
    curriculum_stages=2,
    n_train=16,
    n_test=8,
    seeds=2,
)


@pytest.fixture(scope="module")
def two_models():
    """Two organisms' initial weights (leading axis 2), one program for the tests that need weights."""
    init = T.trainer(CFG, "latent").stages[0][1].init
    return jax.jit(jax.vmap(lambda k: init(k, None)))(jax.random.split(jax.random.key(3), 2))


def test_the_recipes_sequences():
    """Every recipe's tail and weights: the answer's letter and <|im_end|> alone; the caption's tokens then the
    answer (text); a curriculum stage the caption less its first dropped tokens; no image a black one; the
    stages' latents and dropped tokens as the curriculum's rule gives them."""
    pool, _ = T.data(CFG)
    tok = T.tokenizer()
    eos = tok.token_to_id(tokenizer_lib.EOS_TOKEN)
    index = jnp.arange(4)
    direct = T.batch_of(CFG, "direct", 0, pool, index)
    np.testing.assert_array_equal(np.asarray(direct.tail), np.asarray(pool.answer[:4]))
    assert (np.asarray(direct.tail)[:, 1] == eos).all() and np.asarray(direct.is_answer).all()
    letters = [tok.decode([int(i)]) for i in np.asarray(pool.answer[:4, 0])]
    assert set(letters) <= set("ABCD")
    text = T.batch_of(CFG, "text", 0, pool, index)
    for r in range(4):
        n = int(pool.caption_len[r])
        got = np.asarray(text.tail[r])
        np.testing.assert_array_equal(got[:n], np.asarray(pool.caption[r, :n]))
        np.testing.assert_array_equal(got[n : n + 2], np.asarray(pool.answer[r]))
        assert np.asarray(text.tail_weight[r]).sum() == n + 2 and np.asarray(text.is_answer[r]).sum() == 2
    # 2 calls of 3 steps over 3 stages: the boundaries at round(2 i / 3) calls (a stage may get none)
    assert T.stages(CFG, "coconut") == [(0, 0, 3), (1, 12, 0), (2, 24, 3)]
    (_, d1, _), (n2, d2, _) = T.stages(CFG, "coconut")[1:]
    later = T.batch_of(CFG, "coconut", 1, pool, index)
    for r in range(4):
        n = int(pool.caption_len[r])
        kept = max(n - d1, 0)
        np.testing.assert_array_equal(np.asarray(later.tail[r, :kept]), np.asarray(pool.caption[r, d1:n]))
    assert n2 == CFG.n_latents and d2 == T.CAPTION_TOKENS
    blank = T.batch_of(CFG, "no_image", 0, pool, index)
    assert np.allclose(np.asarray(blank.pixels), np.asarray(T.pixel_rows(pool.blank))[None])
    assert T.layout(CFG, "pause", 0, pool).feed == "pause" and T.layout(CFG, "latent", 0, pool).n_latents == 2


def test_a_pool_keeps_the_grids_and_its_batches_rows_are_the_processors():
    """A pool holds each image's grid (a byte a cell); a batch's pixel rows, rendered in its program, are the rows
    the processor makes of the instance's image, of its helper image and of the black image (``no_image``);
    :func:`pixel_rows` of any uint8 image is the processor's; a pool encoded a few instances at a time is the
    pool encoded at once."""
    key, g = jax.random.key(6), CFG.tasks.task.grid_size
    whole, parts = T.make_pool(CFG, key, 7), T.make_pool(CFG, key, 7, chunk=3)
    for name in ("ids", "mask", "positions", "next_pos", "grid", "helper_grid", "caption", "answer", "letter"):
        np.testing.assert_array_equal(np.asarray(getattr(parts, name)), np.asarray(getattr(whole, name)), name)
    assert whole.grid.dtype == jnp.int8 and whole.grid.shape == whole.helper_grid.shape == (7, g, g)
    examples = T.tasks_lib.examples(T.tasks_lib.generate(key, 7, CFG.tasks), CFG.tasks)
    processor = T.chat().processor
    got, black = (
        T.batch_of(CFG, "direct", 0, whole, jnp.arange(7)),
        T.batch_of(CFG, "no_image", 0, whole, jnp.arange(2)),
    )
    for i, e in enumerate(examples):
        assert_same_floats(np.asarray(got.pixels[i]), processor([e.image])["pixel_values"], f"image {i}")
        assert_same_floats(np.asarray(got.helper[i]), processor([e.helper])["pixel_values"], f"helper {i}")
    assert_same_floats(np.asarray(black.pixels[1]), processor([np.zeros_like(examples[0].image)])["pixel_values"])
    noise = np.random.default_rng(0).integers(0, 256, (2,) + examples[0].image.shape, dtype=np.uint8)
    for i, rows in enumerate(np.asarray(T.pixel_rows(noise))):  # every patch differs
        assert_same_floats(rows, processor([noise[i]])["pixel_values"], f"noise {i}")
    with pytest.raises(ValueError, match="chunk"):
        T.make_pool(CFG, key, 7, chunk=0)


def test_the_rotary_base_and_initial_scale_reach_the_model(two_models):
    """rope_theta is the decoder's (the saved config.json's); init_scale the initial weights' deviation; both
    refused at 0 before anything is built."""
    import dataclasses

    assert T.model_config(CFG).text.rope_theta == CFG.rope_theta == 2.0
    w = np.asarray(two_models["text"]["layers"]["mlp"]["up"]["kernel"])  # 2 models x 2 x 32 x 48 normal draws
    assert abs(float(w.std()) - CFG.init_scale) < 0.1 * CFG.init_scale
    for field in ("rope_theta", "init_scale"):
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(CFG, **{field: 0.0}).validate()


def test_answers_are_the_teacher_forced_letters_scored_per_family(two_models):
    """answer_tokens (chunked, the last chunk padded, vmapped over models) equal the argmax of one unchunked
    forward pass per model at the answer's first position; option_of maps the options' letters to their index
    and every other token to -1; accuracy per family and the majority baseline equal NumPy's counts."""
    from tokdyn.models.organism import evaluation
    from tokdyn.models.vlm import training as vlm_training

    _, test = T.data(CFG)
    params = two_models
    got = T.answer_tokens(CFG, "latent", params, test, chunk=3)  # 8 instances: chunks of 3, 3 and 2 (padded)
    lay = T.layout(CFG, "latent", 0, test)

    @jax.jit
    def forward(params, m):  # model m's logits (N, 2, vocab) over the whole test set at once: the letter first
        one = jax.tree_util.tree_map(lambda x: x[m], params)
        return vlm_training.forward(lay, one, T.batch_of(CFG, "latent", 0, test, jnp.arange(8))).logits

    for m in range(2):  # two programs: the argmax is held only where the top two logits are apart by more than
        # float32 rounding at their scale (a near-tie may fall either way on another CPU)
        first = np.asarray(forward(params, m))[:, 0].astype(np.float64)
        top2 = np.sort(first, -1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-4 * np.abs(first).max(-1)
        assert clear.sum() >= 6, clear
        np.testing.assert_array_equal(got[m][clear], first.argmax(-1)[clear])
    tok = T.tokenizer()
    ids = [tok.token_to_id(c) for c in "ABCDE"] + [T.pad_id()]
    np.testing.assert_array_equal(T.option_of(CFG, np.array([ids])), [[0, 1, 2, 3, -1, -1]])  # 4 options
    answers = np.array([[0, 1, 2, 3, 0, 1, 2, 3], [-1, -1, 0, 0, 1, 1, 2, 2]])
    letter, family = np.asarray(test.letter), np.asarray(test.family)
    acc = evaluation.accuracy(answers, test)
    for f in ("read", "gravity"):
        want = [
            np.mean([a[j] == letter[j] for j in range(8) if family[j] == latent_tasks.FAMILIES.index(f)])
            for a in answers
        ]
        np.testing.assert_allclose(acc[f], want)
    np.testing.assert_allclose(acc["all"], (answers == letter).mean(1))
    train_pool, _ = T.data(CFG)
    base = evaluation.majority_baseline(train_pool, test)
    for f in ("read", "gravity"):
        i = latent_tasks.FAMILIES.index(f)
        counts = np.bincount(np.asarray(train_pool.letter)[np.asarray(train_pool.family) == i], minlength=4)
        assert base[f] == np.mean(letter[family == i] == counts.argmax())
    with pytest.raises(ValueError, match="answers must be"):
        evaluation.accuracy(answers[:, :5], test)


def test_a_recipe_is_a_value():
    """A Variant is taken wherever a recipe's name is (the same sequences as its named twin, its name in
    messages); a new one (a callable alignment) is checked before anything is traced: fields and their
    combination named in the error."""
    pool, _ = T.data(CFG)
    index = jnp.arange(2)
    same = T.Variant(block="feedback", align="lvr")
    assert T.recipe_name(same) == "latent_lvr" and T.stages(CFG, same) == T.stages(CFG, "latent_lvr")
    assert T.layout(CFG, same, 0, pool) == T.layout(CFG, "latent_lvr", 0, pool)
    a, b = T.batch_of(CFG, same, 0, pool, index), T.batch_of(CFG, "latent_lvr", 0, pool, index)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    own = T.Variant(block="feedback", align=lambda lay, params, batch, out: jnp.mean(out.latents**2))
    assert T.recipe_name(own) == "custom" and T.trainer(CFG, own).stages[0][1].name == "custom"
    with pytest.raises(ValueError, match="align needs block='feedback'"):
        T.trainer(CFG, T.Variant(align="mirage"))
    with pytest.raises(ValueError, match="curriculum needs caption=True"):
        T.trainer(CFG, T.Variant(block="feedback", curriculum=True))
    with pytest.raises(ValueError, match="block"):
        T.variant(T.Variant(block="latent"))
    with pytest.raises(ValueError, match="recipe"):
        T.variant("latnt")
    with pytest.raises(TypeError, match="recipe must be"):
        T.variant(3)


# compiles the training step through the feedback (about 40 s on two cores): the default run holds the training
# pass to generation and its losses to their closed forms (tests/test_vlm_training.py) and the recipes'
# sequences here; tokdyn.train's vmap over seeds is the default run's elsewhere (tests/test_train.py)
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    res = T.train_models(CFG, "latent", T.Hparams(learning_rate=3e-3))
    first = jax.tree_util.tree_map(lambda x: x[0], res.state.params)
    return res, first, T.save(tmp_path_factory.mktemp("organism") / "latent-0", CFG, "latent", first)


@pytest.mark.full
def test_every_seed_trains_in_one_program_and_a_saved_organism_loads_back(trained):
    """Two seeds of the latent recipe trained together (one program a stage): finite, falling losses, seeds
    that differ; seed 0 saved as a Hugging Face checkpoint reads back through qwen2_5_vl.load with its
    parameters equal and its latent_mode.json, and generates a block in latent mode."""
    res, a, out = trained
    loss = np.asarray(res.curves["loss"])
    assert loss.shape == (2, 2) and np.isfinite(loss).all() and (loss[:, -1] < loss[:, 0]).all()
    p = res.state.params
    b = jax.tree_util.tree_map(lambda x: x[1], p)
    assert float(jnp.abs(a["text"]["embed"] - b["text"]["embed"]).max()) > 0
    model = qwen2_5_vl.load(out, dtype="float32")
    for x, y in zip(jax.tree_util.tree_leaves(model.params), jax.tree_util.tree_leaves(a)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    mode = vlm.LatentMode.read(out)
    assert mode.size == CFG.n_latents and mode.start == T.latent_mode(CFG).start
    _, test = T.data(CFG)
    gen = model.generate(
        np.asarray(test.ids[:2]),
        np.asarray(T.pixel_rows(T.images(CFG, test, slice(0, 2)))),
        np.array([T.layout(CFG, "latent", 0, test).grid]),
        np.asarray(test.mask[:2]),
        max_new_tokens=CFG.n_latents + 4,
        latent=mode,
        block_at=0,
        do_sample=False,
    )
    assert (gen.block_steps[:, 0] == 0).all() and gen.latents.shape[2] == CFG.n_latents
    acc = T.answer_accuracy(CFG, "latent", p, test, chunk=4)
    assert acc.shape == (2, CFG.n_test) and set(np.unique(acc)) <= {0.0, 1.0}


@pytest.mark.full
def test_transformers_runs_a_trained_organism_in_latent_mode_as_tokdyn_does(trained):
    """A trained, saved organism opened by transformers' ``Qwen2_5_VLForConditionalGeneration`` and run by the
    latent-mode reference loop (tests/fixtures/make_qwen2_5_vl_latent.py, a block forced first, the markers
    and size from the checkpoint's latent_mode.json): tokdyn's generation of the same rows gives its tokens,
    and its latents within float32 rounding (the loop's own check against tokdyn on a fixture:
    test_qwen2_5_vl_generation's reference tests)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import importlib.util
    import sys
    from pathlib import Path

    here = Path(__file__).parent / "fixtures"
    sys.path.insert(0, str(here))
    try:
        spec = importlib.util.spec_from_file_location("make_qwen2_5_vl_latent", here / "make_qwen2_5_vl_latent.py")
        maker = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(maker)
    finally:
        sys.path.remove(str(here))
    problem = maker.version_refusal(maker.installed_versions())
    if problem:
        pytest.skip(problem)
    from transformers import Qwen2_5_VLForConditionalGeneration

    _, _, path = trained
    mode = vlm.LatentMode.read(path).resolve(T.tokenizer())
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(path), dtype="float32").eval()
    tok = T.tokenizer()
    eos = [tok.token_to_id(tokenizer_lib.EOS_TOKEN), T.pad_id()]
    loop = maker.Reference(
        hf, 1.0, eos, T.pad_id(), (mode.start, mode.end, mode.pad), mode.size, tok.token_to_id("<|image_pad|>")
    )
    _, test = T.data(CFG)
    grid = np.array([T.layout(CFG, "latent", 0, test).grid])
    steps = CFG.n_latents + 6
    model = qwen2_5_vl.load(path, dtype="float32")
    got = model.generate(
        np.asarray(test.ids[:2]),
        np.asarray(T.pixel_rows(T.images(CFG, test, slice(0, 2)))),
        np.repeat(grid, 2, 0),
        np.asarray(test.mask[:2]),
        max_new_tokens=steps,
        latent=mode,
        block_at=0,
        do_sample=False,
    )
    for r in range(2):
        ids = np.asarray(test.ids[r])[np.asarray(test.mask[r])].astype(np.int64)
        tokens, blocks, _ = loop.run(ids, np.array(T.pixel_rows(T.images(CFG, test, r))), grid, steps, force=True)
        np.testing.assert_array_equal(np.asarray(got.tokens[r]), tokens)
        want = np.asarray(blocks[0], np.float64)
        err = np.abs(np.asarray(got.latents[r, 0], np.float64) - want).max()
        assert err <= 1e-4 * np.abs(want).max(), err
