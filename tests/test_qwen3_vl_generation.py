"""Qwen3-VL's generation through the one loop of :mod:`tokdyn.models.vlm.generation` (the family's ``model``
functions, deepstack carried through the prefill) against references made by ``transformers`` and PyTorch:
greedy text-mode tokens of ``tests/fixtures/qwen3_vl_tiny`` (``make_qwen3_vl.py``: ``generate`` on a text
prompt, a prompt with two images and a left-padded batch of image and text rows), and latent-mode tokens and
latents of ``tests/fixtures/qwen3_vl_latent`` (``make_qwen3_vl_latent.py``: the latent loop written from the
method's description over ``transformers``' forward pass and key/value cache). The default tests need neither
torch nor transformers; the ``full`` ones check each reference alone, the latent loop, every intervention, and
remake the fixture when the versions that made it are installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("safetensors")

from tokdyn.models import qwen3_vl, vlm  # noqa: E402
from tokdyn.models.vlm import generation, interventions  # noqa: E402
from test_qwen3_vl import images, installed_or_refused, reference  # noqa: E402

TINY = Path(__file__).parent / "fixtures" / "qwen3_vl_tiny"
FIXTURE = Path(__file__).parent / "fixtures" / "qwen3_vl_latent"
SIZE, STEPS = 4, 40
MODE = vlm.LatentMode(125, 126, 127, SIZE)
KINDS = ("zeros", "swap", "mean", "drop_slots", "drop_block", "drop_markers")
LATENT_RTOL = 1e-4
"""Largest difference of a latent allowed, as a fraction of the reference latents' largest magnitude: float32
rounding of the two programs is ~1e-6 of it, compounded over the fed-back steps; a deepstack row left out or
put at the wrong token moves the latents by 1e-2 of it or more."""


@pytest.fixture(scope="module")
def tiny_ref():
    return reference(TINY)


@pytest.fixture(scope="module")
def tiny():
    return qwen3_vl.load(TINY, dtype="float32")


@pytest.fixture(scope="module")
def ref():
    return reference(FIXTURE)


@pytest.fixture(scope="module")
def model():
    return qwen3_vl.load(FIXTURE, dtype="float32")


def greedy(model, *args, **kw):
    """transformers' settings of the references: greedy, no stop token, 8 new tokens."""
    return model.generate(*args, max_new_tokens=8, do_sample=False, eos_token_id=(), **kw)


def combined(ref):
    """The text prompt, the prompt with two images and the three rows of the mixed batch as one batch of five
    rows, left-padded (the images' rows in the order of their rows): ``(ids, pixels, grid, mask, want)``."""
    rows = [ref["text_ids"][0], ref["image_ids"][0]]
    rows += [r[m.astype(bool)] for r, m in zip(ref["mixed_ids"], ref["mixed_mask"])]
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = r, True
    pixels, grid = images(ref, 0, 1, 0, 2)
    want = np.concatenate([ref["text_greedy"], ref["image_greedy"], ref["mixed_greedy"]])
    return ids, pixels, grid, mask, want


def test_greedy_generation_equals_transformers(tiny, tiny_ref):
    """One call of the loop over a text prompt, a prompt with two images, and a prompt with an image, a text
    prompt and a prompt with another image (transformers' left-padded batch), all five rows left-padded into one
    batch: each row's greedy tokens are transformers' ``generate``'s for its prompt (the deepstack features
    added in the prefill at every image's tokens)."""
    ids, pixels, grid, mask, want = combined(tiny_ref)
    np.testing.assert_array_equal(greedy(tiny, ids, pixels, grid, mask), want)


# three programs of the loop (about 15 s): the default run has test_greedy_generation_equals_transformers (the
# same prompts, one batch)
@pytest.mark.full
def test_each_greedy_reference_alone(tiny, tiny_ref):
    """Each reference as transformers ran it: the text prompt alone, the prompt with two images alone, and the
    left-padded batch of three rows."""
    r = tiny_ref
    np.testing.assert_array_equal(greedy(tiny, r["text_ids"]), r["text_greedy"])
    np.testing.assert_array_equal(greedy(tiny, r["image_ids"], *images(r, 0, 1)), r["image_greedy"])
    pixels, grid = images(r, 0, 2)
    np.testing.assert_array_equal(greedy(tiny, r["mixed_ids"], pixels, grid, r["mixed_mask"]), r["mixed_greedy"])


def assert_latents_close(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    assert scale > 0.5
    err = np.abs(got - want).max()
    assert err <= LATENT_RTOL * scale, f"largest difference {err:.3g} exceeds {LATENT_RTOL} x {scale:.3g}"


# the latent loop on the second family (about 3 CPU-s): the loop is one for every family; the default run holds
# it to its reference loop on Qwen2.5-VL (test_qwen2_5_vl_generation's test_latent_generation_equals_reference_loop,
# pre-norm feed included) and Qwen3-VL's own generation, deepstack prefill included, to transformers
# (test_greedy_generation_equals_transformers); the study runs Qwen3-VL's latent mode in the default run too
# (test_vlm_diagnostics_qwen3)
@pytest.mark.full
def test_latent_generation_equals_reference_loop(model, ref):
    """Three prompts of different lengths (two images, one text) in one left-padded batch, the checkpoint's
    latent_mode.json and generation_config.json (greedy, repetition penalty 1.05): 40 steps give the reference
    loop's ids token for token, each row opening at least two latent blocks by itself, the latents within float32
    rounding; feeding the pre-norm state back runs the same program (no second compile) and gives that run's."""
    versions = json.loads(str(ref["versions"]))
    assert set(versions) == {"transformers", "torch"}
    assert (ref["n_blocks"] >= 2).all() and (ref["margins"] > 1e-3).all()
    mode = vlm.LatentMode.read(FIXTURE)  # the checkpoint's own file, its strings resolved by its tokenizer
    assert mode == MODE
    args = (ref["ids"], ref["pixels"], ref["grid"], ref["mask"])
    got = model.generate(*args, max_new_tokens=STEPS, latent=mode)  # the checkpoint's decoding: greedy
    before = generation.run._cache_size()
    np.testing.assert_array_equal(got.tokens, ref["tokens"])
    np.testing.assert_array_equal(got.n_blocks, ref["n_blocks"])
    np.testing.assert_array_equal(got.block_steps, ref["block_steps"])
    assert_latents_close(got.latents, ref["latents"])
    pre = model.generate(*args, max_new_tokens=STEPS, latent=vlm.LatentMode(125, 126, 127, SIZE, "prenorm"))
    np.testing.assert_array_equal(pre.tokens, ref["prenorm_tokens"])
    assert_latents_close(pre.latents, ref["prenorm_latents"])
    assert generation.run._cache_size() == before


def test_programs_trace_abstractly_with_deepstack():
    """programs() gives the latent-generation kernel of Qwen3-VL and ShapeDtypeStruct arguments (the image
    features and the deepstack features, encode_images' pair) that trace without weights."""
    cfg = qwen3_vl.config.read(TINY)
    fn, args = generation.programs(qwen3_vl, cfg, 3, 20, 6, latent_size=2, image_tokens=8, n_scores=4)
    feats, deep = args[1].visual
    assert feats.shape == (64, 48) and deep.shape == (2, 64, 48)
    out = jax.eval_shape(fn, *args)
    assert out["tokens"].shape == (3, 6) and out["states"].shape == (3, 6, 48) and out["scores"].shape == (3, 6, 4)


def tiled(ref, times: int):
    """The reference batch repeated ``times`` times (rows, then their images, in order)."""
    ids, mask = np.tile(ref["ids"], (times, 1)), np.tile(ref["mask"], (times, 1))
    return ids, np.tile(ref["pixels"], (times, 1)), np.tile(ref["grid"], (times, 1)), mask


# a batch of 21 rows (about 10 s): the default run has test_latent_generation_equals_reference_loop (the loop
# and the deepstack prefill) and test_qwen2_5_vl_generation (the interventions, written once for every family)
@pytest.mark.full
def test_interventions_in_one_call_equal_reference(model, ref):
    """Three instances x (none + six interventions) as one batch of 21 rows, one call: each row equals the
    reference loop's tokens for its instance and kind (swap: the next instance's latents of the pre-norm run;
    mean: their mean over the instances; the drop kinds mask the block's slots, markers or both); and text mode
    equals transformers' ``generate`` under the checkpoint's generation configuration."""
    n = len(ref["ids"])
    kinds = ["none"] * n + [k for k in KINDS for _ in range(n)]
    source, counts = ref["prenorm_latents"], ref["prenorm_n_blocks"]
    mean = np.stack([source[counts > j, j].mean(axis=0) for j in range(source.shape[1])])  # the rows' mean
    order = np.arange(n)
    rows = np.concatenate([order] + [(order + 1) % n if k == "swap" else order for k in KINDS])
    src, blocks = source[rows], counts[rows]
    at = [(i + 1) * n + r for i, k in enumerate(KINDS) if k == "mean" for r in range(n)]
    src[at], blocks[at] = mean, len(mean)
    iv = interventions.Intervention.make(kinds, len(kinds), SIZE, source.shape[-1], source=src, source_blocks=blocks)
    got = model.generate(*tiled(ref, 1 + len(KINDS)), max_new_tokens=STEPS, latent=MODE, intervention=iv)
    np.testing.assert_array_equal(got.tokens[:n], ref["tokens"])
    for i, kind in enumerate(KINDS):
        np.testing.assert_array_equal(got.tokens[(i + 1) * n : (i + 2) * n], ref[f"iv_{kind}_tokens"], err_msg=kind)
    text = model.generate(ref["ids"], ref["pixels"], ref["grid"], ref["mask"], max_new_tokens=16)
    np.testing.assert_array_equal(text, ref["hf_greedy"])


@pytest.mark.full
def test_regenerated_reference_equal(tmp_path, ref):
    """With the torch and transformers that made the fixture: the fixture remade from scratch at the committed
    trigger gives the committed tokens, and tokdyn equals the fresh reference."""
    installed_or_refused(ref)
    spec = importlib.util.spec_from_file_location("make_latent", FIXTURE.parent / "make_qwen3_vl_latent.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    fresh = maker.make(tmp_path, trigger=int(ref["trigger"]))
    for name in ("tokens", "prenorm_tokens", "hf_greedy", *(f"iv_{k}_tokens" for k in KINDS)):
        np.testing.assert_array_equal(fresh[name], ref[name], err_msg=name)
    model = qwen3_vl.load(tmp_path, dtype="float32")
    got = model.generate(fresh["ids"], fresh["pixels"], fresh["grid"], fresh["mask"], max_new_tokens=STEPS, latent=MODE)
    np.testing.assert_array_equal(got.tokens, fresh["tokens"])
    assert_latents_close(got.latents, fresh["latents"])
