"""The full tier of Qwen2.5-VL's latent-mode generation (``test_qwen2_5_vl_generation.py`` holds the default
tier): the interventions of the reference loop in one batched call, each row alone equal to the batch, the
noise and drop kinds' rules, scores against the forward pass, the program's memory, and (with torch and
transformers installed) the reference loop remade from scratch."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("safetensors")

from tokdyn.models import qwen2_5_vl, vlm  # noqa: E402
from tokdyn.models.vlm import generation, interventions  # noqa: E402

pytestmark = pytest.mark.full

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_latent"
SIZE, STEPS = 4, 40
MODE = vlm.LatentMode(128, 129, 130, SIZE)
KINDS = ("zeros", "swap", "mean", "drop_slots", "drop_block", "drop_markers")


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE / "reference.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def model():
    return qwen2_5_vl.load(FIXTURE, dtype="float32")


def tiled(ref, times: int):
    """The reference batch repeated ``times`` times (rows, then their images, in order)."""
    ids, mask = np.tile(ref["ids"], (times, 1)), np.tile(ref["mask"], (times, 1))
    return ids, np.tile(ref["pixels"], (times, 1)), np.tile(ref["grid"], (times, 1)), mask


def test_interventions_in_one_call_equal_reference(model, ref):
    """Three instances x (none + six interventions) as one batch of 21 rows, one call: each row equals the
    reference loop's tokens for its instance and kind (swap: the next instance's latents of the pre-norm run;
    mean: their mean over the instances; the drop kinds mask the block's slots, markers or both in attention)."""
    n = len(ref["ids"])
    kinds = ["none"] * n + [k for k in KINDS for _ in range(n)]
    source, counts = ref["prenorm_latents"], ref["prenorm_n_blocks"]
    mean = np.stack([source[counts > j, j].mean(axis=0) for j in range(source.shape[1])])  # the rows' mean
    order = np.arange(n)
    src_rows = np.concatenate([order] + [(order + 1) % n if k == "swap" else order for k in KINDS])
    src, blocks = source[src_rows], counts[src_rows]
    at = [(i + 1) * n + r for i, k in enumerate(KINDS) if k == "mean" for r in range(n)]
    src[at], blocks[at] = mean, len(mean)  # mean: the reference fed the mean over the rows, block by block
    iv = interventions.Intervention.make(kinds, len(kinds), SIZE, source.shape[-1], source=src, source_blocks=blocks)
    got = model.generate(
        *tiled(ref, 1 + len(KINDS)), max_new_tokens=STEPS, do_sample=False, latent=MODE, intervention=iv
    )
    np.testing.assert_array_equal(got.tokens[:n], ref["tokens"])
    for i, kind in enumerate(KINDS):
        np.testing.assert_array_equal(got.tokens[(i + 1) * n : (i + 2) * n], ref[f"iv_{kind}_tokens"], err_msg=kind)


def test_rows_alone_equal_the_padded_batch(model, ref):
    """Each prompt alone gives its row of the padded batch; the two image rows as (B, patches, patch_dim)
    pixel values of one grid give theirs too."""
    pixels = np.split(ref["pixels"], 2)
    images = {0: 0, 2: 1}
    for row in range(len(ref["ids"])):
        ids = ref["ids"][row][ref["mask"][row].astype(bool)][None]
        img = images.get(row)
        kw = {} if img is None else dict(pixel_values=pixels[img], image_grid_thw=ref["grid"][img : img + 1])
        got = model.generate(ids, max_new_tokens=STEPS, do_sample=False, latent=MODE, **kw)
        np.testing.assert_array_equal(got.tokens[0], ref["tokens"][row])
        assert got.n_blocks[0] == ref["n_blocks"][row]
    two = model.generate(
        ref["ids"][[0, 2]],
        np.stack(pixels),
        ref["grid"][:1],
        ref["mask"][[0, 2]],
        max_new_tokens=STEPS,
        do_sample=False,
        latent=MODE,
    )
    np.testing.assert_array_equal(two.tokens, ref["tokens"][[0, 2]])


def test_noise_kinds_and_keys(model, ref):
    """Noise at scale 0 replaces by zeros and adds nothing; noise is drawn per row from fold_in(key, row), so
    a row's result does not depend on the batch it is in, and one key per row may be given; noisy latents
    change the answer."""
    ids, pixels, grid, mask = ref["ids"], ref["pixels"], ref["grid"], ref["mask"]
    args = (np.tile(ids, (2, 1)), np.tile(pixels, (2, 1)), np.tile(grid, (2, 1)), np.tile(mask, (2, 1)))
    hidden = ref["latents"].shape[-1]
    key = jax.random.key(7)

    def run(kinds, scale, key=key, batch=6, a=args):
        iv = interventions.Intervention.make(kinds, batch, SIZE, hidden, scale=scale)
        return model.generate(*a, max_new_tokens=STEPS, do_sample=False, latent=MODE, intervention=iv, key=key)

    zero_noise = run(["noise"] * 3 + ["add_noise"] * 3, 0.0)
    np.testing.assert_array_equal(zero_noise.tokens[:3], ref["iv_zeros_tokens"])
    np.testing.assert_array_equal(zero_noise.tokens[3:], ref["tokens"])
    noisy = run("add_noise", 2.0)
    assert not np.array_equal(noisy.tokens[:3], ref["tokens"])
    half = run("add_noise", 2.0, batch=3, a=(ids, pixels, grid, mask))
    np.testing.assert_array_equal(half.tokens, noisy.tokens[:3])  # rows 0-2 keep fold_in(key, row)
    keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(np.array([0, 1, 2, 0, 1, 2]))
    again = run("add_noise", 2.0, key=keys)
    np.testing.assert_array_equal(again.tokens[3:], noisy.tokens[:3])  # explicit per-row keys


def test_scores_equal_forward_pass(model, ref):
    """score_ids gives the model's log-probabilities at every step: those of the forward pass over the prompt
    and the tokens generated before the step (text mode, no penalty)."""
    ids = ref["ids"][1][ref["mask"][1].astype(bool)][None]
    want_ids = [5, 17, 40, 64]
    got = model.generate(ids, max_new_tokens=6, do_sample=False, repetition_penalty=1.0, score_ids=want_ids)
    seq = np.concatenate([ids, got.tokens[:, :5]], axis=1)
    logits = np.asarray(model(seq), np.float64)[0, ids.shape[1] - 1 :]
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    np.testing.assert_allclose(got.scores[0], logp[:, want_ids], atol=1e-4)


def test_program_memory_holds_no_square_attention():
    """At a 256-token prompt the compiled program holds no (B, heads, 256, slots) attention tensor: the prompt is
    prefilled in chunks (64 here), and the chunks bound the program's scratch memory (less than with one chunk
    of 256)."""
    from tokdyn.models.qwen2_5_vl.config import Config, TextConfig, VisionConfig

    cfg = Config(
        VisionConfig(
            depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=64, fullatt_block_indexes=(0,)
        ),
        TextConfig(
            vocab_size=100,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            mrope_section=(2, 3, 3),
        ),
        image_token_id=90,
    )
    b, width, new = 3, 256, 8
    slots = generation.round_up(width + new, 64)
    temp = {}
    for chunk in (64, 256):
        fn, args = generation.programs(
            qwen2_5_vl, cfg, b, width, new, latent_size=2, dtype="float32", prefill_chunk=chunk
        )
        compiled = fn.lower(*args).compile()
        sizes = [
            np.prod([int(n) for n in dims.split(",")]) for dims in re.findall(r"f32\[([0-9,]+)\]", compiled.as_text())
        ]
        square = max(sizes) >= b * 4 * width * slots  # scores of every prompt query against every slot
        assert square == (chunk == 256), chunk
        temp[chunk] = compiled.memory_analysis().temp_size_in_bytes
    assert temp[64] < temp[256] - 2 * b * 4 * (width - 64) * slots, temp


def test_regenerated_reference_equal(tmp_path, ref):
    """With torch and transformers at the versions the reference records: the fixture remade from scratch at
    the committed trigger gives the committed tokens (a loop run without the prompt's context would not), and
    tokdyn equals the fresh reference."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("make_latent", FIXTURE.parent / "make_qwen2_5_vl_latent.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    refusal = maker.version_refusal(maker.installed_versions())
    if refusal is not None:  # the script refuses them too: the committed tokens are those versions'
        pytest.skip(refusal)
    fresh = maker.make(tmp_path, trigger=int(ref["trigger"]))
    for name in ("tokens", "prenorm_tokens", "hf_greedy", "hf_stop", *(f"iv_{k}_tokens" for k in KINDS)):
        np.testing.assert_array_equal(fresh[name], ref[name], err_msg=name)
    model = qwen2_5_vl.load(tmp_path, dtype="float32")
    got = model.generate(
        fresh["ids"], fresh["pixels"], fresh["grid"], fresh["mask"], max_new_tokens=STEPS, do_sample=False, latent=MODE
    )
    np.testing.assert_array_equal(got.tokens, fresh["tokens"])
    np.testing.assert_allclose(got.latents, fresh["latents"], atol=1e-4 * np.abs(fresh["latents"]).max())
