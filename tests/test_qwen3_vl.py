"""Qwen3-VL in JAX against ``transformers``' ``Qwen3VLForConditionalGeneration``, on the tiny random checkpoint and
the reference outputs committed under ``tests/fixtures/qwen3_vl_tiny`` (made by
``tests/fixtures/make_qwen3_vl.py``). The default tests need neither torch nor transformers; the ``full`` tests
check every committed reference and remake the fixtures with them, when they are installed, and check again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")

from tokdyn.models import qwen3_vl  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen3_vl_tiny"
RTOL = 1e-4
"""Largest difference allowed, as a fraction of the reference logits' largest magnitude: float32 rounding of the
two programs is ~1e-6 of it; a wrong rotary layout, mask, deepstack row or scattered feature moves logits by
1e-2 of it or more."""
CHUNK = 7
"""Tokens per prefill chunk in the cached check: the mixed prompt (14 tokens) in two chunks."""


def reference(directory: Path = FIXTURE) -> dict:
    with np.load(directory / "reference.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def ref():
    return reference()


@pytest.fixture(scope="module")
def model():
    return qwen3_vl.load(FIXTURE, dtype="float32")


def assert_logits_close(got, want, mask=None, rtol=RTOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    if mask is not None:
        got, want = got[mask], want[mask]
    scale = np.abs(want).max()
    assert scale > 0.5  # the reference is far from uniform logits, so the comparison can fail
    err = np.abs(got - want).max()
    assert err <= rtol * scale, f"largest difference {err:.3g} exceeds {rtol} x {scale:.3g}"


def images(ref, *which):
    pixels = np.concatenate([ref[f"proc{i}_pixels"] for i in which])
    grid = np.concatenate([ref[f"proc{i}_grid"] for i in which])
    return pixels, grid


def mixed_run(ref):
    """The mixed batch (an image row, a left-padded text row, a left-padded image row) followed by
    transformers' greedy tokens: ids, mask and positions of the 14 + 8 tokens, the images, and where the
    prompt ends."""
    cfg = qwen3_vl.config.read(FIXTURE)
    pixels, grid = images(ref, 0, 2)
    prompt, mask = ref["mixed_ids"], ref["mixed_mask"].astype(bool)
    new = ref["mixed_greedy"]
    pos, nxt = qwen3_vl.positions.rope_index(cfg, prompt, grid, mask)
    steps = nxt[:, None] + np.arange(new.shape[1])  # generated tokens count on from the next position
    ids = np.concatenate([prompt, new], axis=1)
    full_mask = np.concatenate([mask, np.ones(new.shape, bool)], axis=1)
    full_pos = np.concatenate([pos, np.broadcast_to(steps, (3, *steps.shape))], axis=2)
    return cfg, ids, full_mask, full_pos, pixels, grid, prompt.shape[1]


@pytest.fixture(scope="module")
def mixed(model, ref):
    """The uncached forward over the mixed batch and its greedy continuation: (run, logits)."""
    import jax.numpy as jnp

    run = mixed_run(ref)
    cfg, ids, mask, pos, pixels, grid, _ = run
    plan = qwen3_vl.vision.plan(cfg.vision, grid)
    logits = qwen3_vl.model.apply_jit(
        cfg, model.params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos), jnp.asarray(pixels), plan
    )
    return run, np.asarray(logits)


def test_mixed_batch_and_greedy_tokens_equal_transformers(mixed, ref):
    """One uncached forward over a batch of an image prompt, a left-padded text prompt and a left-padded prompt
    with another image, followed by transformers' greedy tokens: the prompt's logits equal transformers'
    (float32), and the most likely token after each position is the one transformers' ``generate`` chose."""
    (_, _, mask, _, _, _, n), logits = mixed
    assert_logits_close(logits[:, :n], ref["mixed_logits"], ref["mixed_mask"].astype(bool))
    chosen = logits[:, n - 1 : -1].argmax(-1)
    np.testing.assert_array_equal(chosen, ref["mixed_greedy"])


def test_cached_decode_equals_uncached_forward(model, mixed):
    """The prompt prefilled into the key/value cache in two chunks (each with its slice of the deepstack
    features), then the generated tokens one step at a time (no deepstack): every position's logits equal the
    uncached forward's."""
    import jax
    import jax.numpy as jnp

    from tokdyn.models.blocks import attention
    from tokdyn.models.qwen3_vl import inputs, text

    (cfg, ids, mask, pos, pixels, grid, n), want = mixed
    tc = cfg.text
    b, total = ids.shape
    slots, key_valid = jnp.arange(total), jnp.asarray(mask)

    def chunk(p, x, positions, deepstack, cache, start):
        query = start + jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
        m = attention.causal_mask(query, slots, key_valid)
        h, cache = text.decode_cached(tc, p["text"], x, positions, m, cache, start, deepstack)
        return text.head(tc, p["text"], h), cache

    @jax.jit
    def prefill(p, pixels, plan, prompt, valid, positions):
        feats, deep = inputs.image_features(cfg, p, pixels, plan)
        x = text.embed(p["text"], prompt, feats, cfg.image_token_id, valid)
        ds = text.deepstack_embeddings(prompt, deep, cfg.image_token_id, valid)
        assert ds.shape == (cfg.n_deepstack, b, n, tc.hidden_size)
        cache, out = text.new_cache(tc, b, total, jnp.float32), []
        for start in range(0, n, CHUNK):  # the deepstack rows of this chunk's tokens
            sl = slice(start, start + CHUNK)
            logits, cache = chunk(p, x[:, sl], positions[:, :, sl], ds[:, :, sl], cache, start)
            out.append(logits)
        return jnp.concatenate(out, axis=1), cache

    @jax.jit
    def step(p, token, positions, cache, start):
        return chunk(p, p["text"]["embed"][token], positions, None, cache, start)

    plan = qwen3_vl.vision.plan(cfg.vision, grid)
    logits, cache = prefill(model.params, pixels, plan, ids[:, :n], mask[:, :n], pos[:, :, :n])
    got = [logits]
    for t in range(n, total):
        logits, cache = step(model.params, ids[:, t : t + 1], pos[:, :, t : t + 1], cache, t)
        got.append(logits)
    assert_logits_close(np.concatenate(got, axis=1), want, mask)


def test_image_processor_equals_transformers(ref):
    """Images resized up, down, to an aspect ratio of 8 and from 17 x 23 pixels (factor 32, Qwen3-VL's mean and
    standard deviation): pixel values and grids bit-equal to transformers' (Pillow as recorded)."""
    from PIL import Image

    processor = qwen3_vl.ImageProcessor.read(FIXTURE)
    made = json.loads(str(ref["versions"]))["Pillow"]
    for i in range(4):
        got = processor(ref[f"proc{i}_image"])
        np.testing.assert_array_equal(got["image_grid_thw"], ref[f"proc{i}_grid"])
        same = np.array_equal(got["pixel_values"], ref[f"proc{i}_pixels"])
        assert same, f"proc{i}: pixel values differ (reference made with Pillow {made}, installed {Image.__version__})"
    both = processor([ref["proc0_image"], ref["proc2_image"]])
    np.testing.assert_array_equal(both["pixel_values"], images(ref, 0, 2)[0])
    assert processor.target_size(50, 90) == (64, 96)


def test_positions_equal_get_rope_index(ref):
    """The decoder's positions and each row's next position equal get_rope_index's (image rows left-padded or
    not, a text row); text after an image continues from its start plus its larger merged side."""
    cfg = qwen3_vl.config.read(FIXTURE)
    mask = ref["mixed_mask"].astype(bool)
    pos, nxt = qwen3_vl.positions.rope_index(cfg, ref["mixed_ids"], images(ref, 0, 2)[1], mask)
    np.testing.assert_array_equal(pos[:, mask], ref["mixed_positions"][:, mask])
    np.testing.assert_array_equal(nxt, ref["mixed_next"])
    img = cfg.image_token_id
    ids = np.array([[7, img, img, img, img, img, img, 8, 9]])
    pos, nxt = qwen3_vl.positions.rope_index(cfg, ids, np.array([[1, 4, 6]]), np.ones_like(ids, bool))
    np.testing.assert_array_equal(
        pos[:, 0], [[0, 1, 1, 1, 1, 1, 1, 4, 5], [0, 1, 1, 1, 2, 2, 2, 4, 5], [0, 1, 2, 3, 1, 2, 3, 4, 5]]
    )
    assert nxt.tolist() == [6]
    with pytest.raises(ValueError, match="does not match its image's grid"):
        qwen3_vl.positions.rope_index(cfg, ids, np.array([[1, 4, 4]]), np.ones_like(ids, bool))


def test_interleaved_rotary_layout():
    """Frequency j follows the height when j % 3 == 1, the width when j % 3 == 2, each for its section's
    count, and the time otherwise (transformers' recomposition of Qwen3-VL's M-RoPE), at the published size."""
    import jax
    import jax.numpy as jnp

    from tokdyn.models.blocks import rotary

    axes = rotary.interleaved_axes((24, 20, 20), 64)
    assert axes[:9].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2] and axes[60:].tolist() == [0, 0, 0, 0]
    assert [(axes == a).sum() for a in range(3)] == [24, 20, 20]
    inv = rotary.inverse_frequencies(16, 10000.0)
    pos = jnp.asarray(np.array([[[3]], [[5]], [[11]]]))  # one token at t=3, h=5, w=11
    cos, _ = jax.jit(rotary.interleaved_mrope_tables, static_argnums=2)(pos, inv, (4, 2, 2))
    want = np.array([3, 5, 11, 3, 5, 11, 3, 3]) * np.asarray(inv)
    np.testing.assert_allclose(np.asarray(cos)[0, 0], np.cos(np.concatenate([want, want])), rtol=0, atol=1e-6)


def bad_config(tmp_path, edit) -> Path:
    raw = json.loads((FIXTURE / "config.json").read_text())
    edit(raw)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return tmp_path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["text_config"].update(head_dim=15), r"text_config\.head_dim is 15; expected an even"),
        (lambda r: r["text_config"].update(num_key_value_heads=3), r"text_config\.num_key_value_heads is 3"),
        (
            lambda r: r["text_config"]["rope_parameters"].update(mrope_section=[2, 3, 3]),
            r"text_config\.mrope_section is \[2, 3, 3\].*time, height and width \[3, 3, 2\]",
        ),
        (
            lambda r: r["text_config"]["rope_parameters"].update(mrope_interleaved=False),
            r"rope_parameters\.mrope_interleaved is false",
        ),
        (lambda r: r["text_config"]["rope_parameters"].update(rope_type="yarn"), r"rope_type is 'yarn'"),
        (lambda r: r["text_config"].update(hidden_size="48"), r"text_config\.hidden_size is '48' \(str\)"),
        (lambda r: r["vision_config"].update(num_position_embeddings=35), r"num_position_embeddings is 35; .*square"),
        (
            lambda r: r["vision_config"].update(deepstack_visual_indexes=[1, 0]),
            r"deepstack_visual_indexes is \[1, 0\]; expected increasing",
        ),
        (
            lambda r: r["vision_config"].update(deepstack_visual_indexes=[0, 1, 2]),
            r"lists 3 blocks .*num_hidden_layers=2",
        ),
        (lambda r: r["vision_config"].update(out_hidden_size=32), r"out_hidden_size \(32\) must equal"),
        (lambda r: r.update(tie_word_embeddings="yes"), r"tie_word_embeddings is 'yes'; expected true or false"),
        (lambda r: r.update(model_type="qwen3_vl_moe"), r"model_type is 'qwen3_vl_moe'"),
        (lambda r: r.pop("vision_config"), r"vision_config is missing"),
    ],
)
def test_config_refusals(tmp_path, edit, message):
    """A config.json with a wrong field is refused in one line naming the file, the field and its value."""
    directory = bad_config(tmp_path, edit)
    with pytest.raises(ValueError, match=message) as info:
        qwen3_vl.config.read(directory)
    assert str(directory / "config.json") in str(info.value) and "\n" not in str(info.value)


def fixture_tensors() -> dict:
    """The fixture's tensors by name, as NumPy arrays (bfloat16 kept)."""
    from tokdyn.models.blocks import weights

    return {name: np.array(weights.array(t)) for name, t in qwen3_vl.checkpoint.tensors(FIXTURE).items()}


def test_checkpoint_refusals(tmp_path):
    """Weights config.json does not describe, a missing or an unknown tensor, a 16-bit format other than the
    stated one, a truncated file: each refused from the headers alone, naming the tensor (or the file)."""
    from safetensors.numpy import save_file

    def inspect(directory):
        return qwen3_vl.checkpoint.inspect(directory, qwen3_vl.config.read(directory))

    shutil.copy(FIXTURE / "model.safetensors", tmp_path / "model.safetensors")
    bad_config(tmp_path, lambda r: r["text_config"].update(head_dim=8, rope_parameters={"mrope_section": [2, 1, 1]}))
    with pytest.raises(ValueError, match=r"q_proj\.weight' .*\(64, 48\); config.json implies \(32, 48\).*head_dim"):
        inspect(tmp_path)
    bad_config(tmp_path, lambda r: r["text_config"].update(num_hidden_layers=3))
    with pytest.raises(ValueError, match=r"lacks 11 tensor\(s\) config.json implies: \['model.language_model.layers.2"):
        inspect(tmp_path)
    bad_config(tmp_path, lambda r: None)
    tensors = fixture_tensors()
    save_file({**tensors, "model.visual.extra.weight": tensors["lm_head.weight"]}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"1 tensor\(s\) that map to no parameter of Qwen3-VL: \['model.visual.extra"):
        inspect(tmp_path)
    cfg = qwen3_vl.config.read(tmp_path)
    assert qwen3_vl.checkpoint.inspect(tmp_path, cfg, unknown="ignore").unknown == ("model.visual.extra.weight",)
    with pytest.raises(ValueError, match="unknown='maybe' is not allowed"):
        qwen3_vl.checkpoint.inspect(tmp_path, cfg, unknown="maybe")
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"stored as F16 but config.json's dtype is 'bfloat16'"):
        inspect(tmp_path)
    data = (FIXTURE / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match=r"model.safetensors is truncated: tensor"):
        inspect(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="a Qwen3-VL checkpoint directory in the Hugging Face layout"):
        inspect(tmp_path)
    with pytest.raises(ValueError, match=r"dtype='int8' is not supported"):
        qwen3_vl.load(FIXTURE, dtype="int8")
