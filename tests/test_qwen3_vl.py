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


def published_config(size: str) -> dict:
    """config.json of the published Qwen3-VL Instruct checkpoints (2B, 4B, 8B), in their layout: the decoder's
    rotary settings as rope_scaling with rope_theta beside it, the vision tower's model_type the old
    'qwen3_vl', tie_word_embeddings at the top level and in text_config."""
    text = {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "dtype": "bfloat16",
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 12288,
        "max_position_embeddings": 262144,
        "model_type": "qwen3_vl_text",
        "num_attention_heads": 32,
        "num_hidden_layers": 36,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
        "rope_theta": 5000000,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": 151936,
    }
    vision = {
        "deepstack_visual_indexes": [8, 16, 24],
        "depth": 27,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "in_channels": 3,
        "initializer_range": 0.02,
        "intermediate_size": 4304,
        "model_type": "qwen3_vl",
        "num_heads": 16,
        "num_position_embeddings": 2304,
        "out_hidden_size": 4096,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if size in ("2B", "4B"):
        vision.update(deepstack_visual_indexes=[5, 11, 17], depth=24, hidden_size=1024, intermediate_size=4096)
        text.update(tie_word_embeddings=True, num_key_value_heads=8)
    if size == "2B":
        text.update(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16)
    if size == "4B":
        text.update(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32)
    vision["out_hidden_size"] = text["hidden_size"]
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "image_token_id": 151655,
        "model_type": "qwen3_vl",
        "text_config": text,
        "tie_word_embeddings": text["tie_word_embeddings"],
        "transformers_version": "4.57.0.dev0",
        "video_token_id": 151656,
        "vision_config": vision,
        "vision_end_token_id": 151653,
        "vision_start_token_id": 151652,
    }


def test_published_configs_parse():
    """The published configurations parse to their structure: the 4B's heads are wider than its width per head
    (head_dim 128, hidden 2560 / 32 heads), the 2B and 4B tie their output head, every tensor name is the
    published one (model.language_model, model.visual), and the older names map to them."""
    eight = qwen3_vl.config.from_dict(published_config("8B"))
    assert eight.text.mrope_section == (24, 20, 20) and eight.text.rope_theta == 5e6
    assert eight.vision.deepstack_visual_indexes == (8, 16, 24) and eight.vision.grid_side == 48
    assert eight.vision.patch_dim == 1536 and eight.dtype == "bfloat16" and eight.eos_token_id == (151645,)
    assert qwen3_vl.params.block_runs(eight.vision) == [9, 8, 8, 2]
    four = qwen3_vl.config.from_dict(published_config("4B"))
    assert four.text.head_dim * four.text.num_attention_heads == 4096 != four.text.hidden_size
    assert four.text.tie_word_embeddings and four.vision.out_hidden_size == 2560
    names = {e.name for e in qwen3_vl.params.layout(four)}
    assert "lm_head.weight" not in names and "model.language_model.embed_tokens.weight" in names
    assert "model.visual.deepstack_merger_list.2.linear_fc2.bias" in names
    assert (
        qwen3_vl.params.canonical("model.layers.3.mlp.up_proj.weight")
        == "model.language_model.layers.3.mlp.up_proj.weight"
    )
    assert qwen3_vl.params.canonical("visual.pos_embed.weight") == "model.visual.pos_embed.weight"
    assert qwen3_vl.params.canonical("lm_head.weight") == "lm_head.weight"
    two = qwen3_vl.config.from_dict(published_config("2B"))
    assert qwen3_vl.ImageProcessor().target_size(480, 640) == (480, 640)  # multiples of 32 kept
    assert two.text.num_hidden_layers == 28 and two.vision.depth == 24


def test_random_parameters_have_the_checkpoints_tree(model):
    """``params.init`` (traced abstractly: nothing is drawn) gives the tree the loader builds from the
    checkpoint, leaf for leaf, shape for shape, in the dtype asked for."""
    import jax
    import jax.numpy as jnp

    made = jax.eval_shape(lambda key: qwen3_vl.params.init(key, model.config, jnp.bfloat16), jax.random.key(0))
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: a.shape, tree)  # noqa: E731
    assert shapes(made) == shapes(model.params)
    assert {a.dtype for a in jax.tree_util.tree_leaves(made)} == {jnp.dtype(jnp.bfloat16)}


def test_fixture_records_what_made_it(ref):
    """The reference names the libraries that made it (a remade fixture is compared only under the same ones)."""
    versions = json.loads(str(ref["versions"]))
    assert set(versions) == {"transformers", "torch", "Pillow"}
    assert tuple(int(v) for v in versions["transformers"].split(".")[:2]) >= (4, 57)  # the first with Qwen3-VL


def installed_or_refused(ref) -> None:
    """Skip, in one line, unless torch and transformers are installed at the versions that made ``ref``."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    made = json.loads(str(ref["versions"]))
    have = {"transformers": transformers.__version__, "torch": torch.__version__}
    differ = {k: (made[k], v) for k, v in have.items() if made[k] != v}
    if differ:
        pytest.skip(
            f"reference.npz was made with {differ} (made, installed): install those versions to compare, or remake "
            "it with tests/fixtures/make_qwen3_vl.py"
        )


def maker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_qwen3_vl", FIXTURE.parent / "make_qwen3_vl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_against(model, ref):
    """Every logits reference of ``ref``, the vision tower's features, and transformers' greedy tokens (the
    most likely token after each position of the prompt and its greedy continuation)."""
    import jax

    from tokdyn.models.qwen3_vl import inputs

    cfg = model.config
    assert_logits_close(model(ref["text_ids"]), ref["text_logits"])
    pixels, grid = images(ref, 0, 1)
    assert_logits_close(model(ref["image_ids"], pixels, grid), ref["image_logits"])
    feats, deep = jax.jit(inputs.image_features, static_argnums=0)(
        cfg, model.params, pixels, qwen3_vl.vision.plan(cfg.vision, grid)
    )
    assert_logits_close(feats, ref["vision_features"])
    assert_logits_close(deep, ref["vision_deepstack"])
    mask = ref["batch_mask"].astype(bool)
    assert_logits_close(model(ref["batch_ids"], attention_mask=ref["batch_mask"]), ref["batch_logits"], mask)
    mixed_pixels, mixed_grid = images(ref, 0, 2)
    got = model(ref["mixed_ids"], mixed_pixels, mixed_grid, ref["mixed_mask"])
    assert_logits_close(got, ref["mixed_logits"], ref["mixed_mask"].astype(bool))
    for name, extra in (("text", ()), ("image", (pixels, grid))):
        prompt, new = ref[f"{name}_ids"], ref[f"{name}_greedy"]
        logits = np.asarray(model(np.concatenate([prompt, new], axis=1), *extra))
        np.testing.assert_array_equal(logits[:, prompt.shape[1] - 1 : -1].argmax(-1), new)


@pytest.mark.full
def test_all_references(model, ref):
    """Every committed reference (the mixed batch is the default check, test_mixed_batch_and_greedy_tokens_...):
    text, two images, a padded text batch, the vision tower's features and deepstack features, greedy tokens."""
    check_against(model, ref)


@pytest.mark.full
def test_regenerated_fixtures_equal(tmp_path, ref):
    """With the torch and transformers that made the fixture: the fixture remade from scratch, tokdyn against
    it, and the image processor over many image sizes against transformers' (the committed images are the
    default check, test_image_processor_equals_transformers)."""
    installed_or_refused(ref)
    make = maker()
    fresh = make.make(tmp_path)
    model = qwen3_vl.load(tmp_path, dtype="float32")
    check_against(model, fresh)
    theirs, ours = make.image_processor(), qwen3_vl.ImageProcessor.read(tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(8, 400, size=2)
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        want, got = theirs(images=[image], return_tensors="np"), ours(image)
        np.testing.assert_array_equal(got["image_grid_thw"], want["image_grid_thw"])
        np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])


@pytest.mark.full
@pytest.mark.parametrize("size", ["2B", "4B", "8B"])
def test_layout_matches_transformers_state_dict(size):
    """Every tensor name and shape the loader expects for the published configurations is exactly the state
    dict of transformers' model built from the same config.json (on the meta device, no memory); the
    published configs parse to transformers' reading (test_published_configs_parse is the default check)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    raw = published_config(size)
    theirs_cfg = Qwen3VLConfig(**raw)
    with torch.device("meta"):
        reference = Qwen3VLForConditionalGeneration(theirs_cfg)
    theirs = {qwen3_vl.params.canonical(k): tuple(v.shape) for k, v in reference.state_dict().items()}
    cfg = qwen3_vl.config.from_dict(raw)
    if cfg.text.tie_word_embeddings:
        theirs.pop("lm_head.weight")
    assert {e.name: e.shape for e in qwen3_vl.params.layout(cfg)} == theirs
    assert cfg.text.rope_theta == theirs_cfg.text_config.rope_parameters["rope_theta"]
    assert list(cfg.text.mrope_section) == theirs_cfg.text_config.rope_parameters["mrope_section"]
    assert cfg.vision.rope_theta == theirs_cfg.vision_config.rope_parameters["rope_theta"]


@pytest.mark.full
def test_another_configuration_equals_transformers(tmp_path):
    """What the fixture does not hold (the default checks cover the rest): tied embeddings, attention biases,
    no deepstack, a vision tower of four heads with the rotary theta of the published checkpoints, images larger
    than the learned position grid, an attention mask with a gap. Logits equal transformers' in float32, and
    the tied head is the embedding."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(1)
    vision = dict(depth=2, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=64)
    vision.update(num_position_embeddings=16, deepstack_visual_indexes=[], patch_size=16)
    text = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3, head_dim=8)
    text.update(num_attention_heads=8, num_key_value_heads=2, attention_bias=True)
    text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 5e6}
    ids = dict(image_token_id=250, video_token_id=251, vision_start_token_id=252, vision_end_token_id=253)
    config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    reference = Qwen3VLForConditionalGeneration(config)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.1 if p.ndim < 2 else 0.12)
    reference.eval().save_pretrained(tmp_path)
    processor = qwen3_vl.ImageProcessor(min_pixels=32 * 32 * 4, max_pixels=32 * 32 * 30)
    rng = np.random.default_rng(1)
    pictures = [rng.integers(0, 256, (150, 220, 3), dtype=np.uint8), rng.integers(0, 256, (70, 60, 3), np.uint8)]
    inputs = processor(pictures)
    counts = [int(g.prod()) // 4 for g in inputs["image_grid_thw"]]
    assert inputs["image_grid_thw"][0].tolist() == [1, 8, 12]  # larger than the 4 x 4 learned grid
    prompt = [1, 252] + [250] * counts[0] + [253, 7, 8, 252] + [250] * counts[1] + [253, 9, 10, 11]
    input_ids = np.array([prompt])
    mask = np.ones_like(input_ids)
    mask[0, 3 + counts[0]] = 0  # a masked token inside the prompt
    with torch.no_grad():
        want = reference(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(mask),
            pixel_values=torch.from_numpy(inputs["pixel_values"]),
            image_grid_thw=torch.from_numpy(inputs["image_grid_thw"]),
            mm_token_type_ids=torch.from_numpy((input_ids == 250).astype(np.int32)),
        ).logits.numpy()
    model = qwen3_vl.load(tmp_path, dtype="float32")
    assert model.config.text.tie_word_embeddings and "lm_head" not in model.params["text"]
    assert_logits_close(
        model(input_ids, inputs["pixel_values"], inputs["image_grid_thw"], mask), want, mask.astype(bool)
    )


@pytest.mark.full
def test_bfloat16_close_to_float32_reference(ref):
    """In bfloat16 the logits stay within bfloat16's rounding of the float32 reference (a few % of the scale)."""
    model = qwen3_vl.load(FIXTURE)
    assert model.dtype == np.dtype("bfloat16")  # config.json's dtype
    pixels, grid = images(ref, 0, 1)
    got = np.asarray(model(ref["image_ids"], pixels, grid), np.float32)
    assert np.isfinite(got).all()
    assert_logits_close(got, ref["image_logits"], rtol=0.05)


@pytest.mark.full
def test_sharded_over_a_mesh_equals_reference():
    """Loaded over a mesh of two (host) devices, the weights are split and the logits are unchanged (a child
    process, so that XLA starts with two devices)."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import numpy as np, jax
        from jax.sharding import Mesh
        from tokdyn.models import qwen3_vl
        assert len(jax.devices()) == 2
        mesh = Mesh(np.array(jax.devices()), ("model",))
        model = qwen3_vl.load({str(FIXTURE)!r}, dtype="float32", mesh=mesh)
        assert len(model.params["text"]["embed"].sharding.device_set) == 2
        assert len(model.params["text"]["layers"]["mlp"]["up"]["kernel"].sharding.device_set) == 2
        ref = np.load({str(FIXTURE / "reference.npz")!r})
        pixels = np.concatenate([ref["proc0_pixels"], ref["proc2_pixels"]])
        grid = np.concatenate([ref["proc0_grid"], ref["proc2_grid"]])
        got = np.asarray(model(ref["mixed_ids"], pixels, grid, ref["mixed_mask"]))
        mask = ref["mixed_mask"].astype(bool)
        assert np.abs(got - ref["mixed_logits"])[mask].max() <= 1e-4 * np.abs(ref["mixed_logits"]).max()
        print("ok")
        """
    )
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
