"""Qwen2.5-VL in JAX against ``transformers``' ``Qwen2_5_VLForConditionalGeneration``, on the tiny random
checkpoint and the reference outputs committed under ``tests/fixtures/qwen2_5_vl_tiny`` (made by
``tests/fixtures/make_qwen2_5_vl.py``). The default tests need neither torch nor transformers; the ``full``
test remakes the fixtures with them, when they are installed, and checks again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")

from tokdyn.models import qwen2_5_vl  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
RTOL = 1e-4
"""Largest difference allowed, as a fraction of the reference logits' largest magnitude: float32 rounding
of the two programs is ~1e-6 of it; a wrong rotary position, mask or scattered feature moves logits by
1e-2 of it or more."""


def reference(directory: Path = FIXTURE) -> dict:
    with np.load(directory / "reference.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def ref():
    return reference()


@pytest.fixture(scope="module")
def model():
    return qwen2_5_vl.load(FIXTURE, dtype="float32")


def assert_logits_close(got, want, mask=None):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    if mask is not None:
        got, want = got[mask], want[mask]
    scale = np.abs(want).max()
    assert scale > 0.5  # the reference is far from uniform logits, so the comparison can fail
    err = np.abs(got - want).max()
    assert err <= RTOL * scale, f"largest difference {err:.3g} exceeds {RTOL} x {scale:.3g}"


def images(ref):
    pixels = np.concatenate([ref["proc0_pixels"], ref["proc1_pixels"]])
    grid = np.concatenate([ref["proc0_grid"], ref["proc1_grid"]])
    return pixels, grid


def check_against(model, ref):
    assert_logits_close(model(ref["text_ids"]), ref["text_logits"])
    pixels, grid = images(ref)
    assert_logits_close(model(ref["image_ids"], pixels, grid), ref["image_logits"])
    mask = ref["batch_mask"].astype(bool)
    assert_logits_close(model(ref["batch_ids"], attention_mask=ref["batch_mask"]), ref["batch_logits"], mask)
    mask = ref["mixed_mask"].astype(bool)
    got = model(ref["mixed_ids"], ref["proc0_pixels"], ref["proc0_grid"], attention_mask=ref["mixed_mask"])
    assert_logits_close(got, ref["mixed_logits"], mask)


def test_logits_equal_transformers(model, ref):
    """Two images with text, and a text batch with a left-padded row: logits equal the reference's in float32
    (the text-only single prompt is checked by the full tier, ``test_all_references``)."""
    versions = json.loads(str(ref["versions"]))
    assert set(versions) == {"transformers", "torch"}  # the fixtures record what made them
    pixels, grid = images(ref)
    assert_logits_close(model(ref["image_ids"], pixels, grid), ref["image_logits"])
    mask = ref["batch_mask"].astype(bool)
    assert_logits_close(model(ref["batch_ids"], attention_mask=ref["batch_mask"]), ref["batch_logits"], mask)


def test_mixed_batch_equals_transformers(model, ref):
    """An image prompt beside a left-padded text prompt: positions per row (get_rope_index under the mask)."""
    mask = ref["mixed_mask"].astype(bool)
    got = model(ref["mixed_ids"], ref["proc0_pixels"], ref["proc0_grid"], attention_mask=ref["mixed_mask"])
    assert_logits_close(got, ref["mixed_logits"], mask)


def test_greedy_generation_equals_transformers(model, ref):
    """Greedy decoding with the key/value cache gives transformers' tokens for a batch of an image prompt and a
    left-padded text prompt (the other prompts: ``test_all_references``)."""
    got = model.generate(
        ref["mixed_ids"], ref["proc0_pixels"], ref["proc0_grid"], ref["mixed_mask"], max_new_tokens=8, eos_token_id=()
    )
    np.testing.assert_array_equal(got, ref["mixed_greedy"])


@pytest.mark.full
def test_all_references(model, ref):
    """Every committed reference: the logits of each prompt and the greedy tokens of each."""
    check_against(model, ref)
    pixels, grid = images(ref)
    run = lambda *a, **kw: model.generate(*a, max_new_tokens=8, eos_token_id=(), **kw)
    np.testing.assert_array_equal(run(ref["text_ids"]), ref["text_greedy"])
    np.testing.assert_array_equal(run(ref["image_ids"], pixels, grid), ref["image_greedy"])
    np.testing.assert_array_equal(run(ref["batch_ids"], attention_mask=ref["batch_mask"]), ref["batch_greedy"])


def test_generation_stops_and_filters(model, ref):
    """Sampling from the top 1 token is greedy; a stop token ends the row (padding after it); bad options are
    refused before compiling."""
    import jax

    greedy = ref["text_greedy"][0]
    stop = int(greedy[2])
    key = jax.random.key(3)
    got = model.generate(
        ref["text_ids"], max_new_tokens=8, temperature=0.7, top_k=1, key=key, eos_token_id=stop, pad_token_id=0
    )[0]
    first = int(np.flatnonzero(greedy == stop)[0])
    np.testing.assert_array_equal(got[: first + 1], greedy[: first + 1])
    assert (got[first + 1 :] == 0).all()
    with pytest.raises(ValueError, match="key"):
        model.generate(ref["text_ids"], temperature=1.0)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(ref["text_ids"], temperature=1.0, key=key, top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ref["text_ids"], max_new_tokens=0)


@pytest.mark.full
def test_sampling_reproducible_and_filtered(model, ref):
    """Sampling is reproducible from its key, differs across keys, and never leaves the top-k / nucleus."""
    import jax

    from tokdyn.models.vlm import decoding

    kw = dict(attention_mask=ref["batch_mask"], temperature=1.0, eos_token_id=(), max_new_tokens=16)
    a = model.generate(ref["batch_ids"], key=jax.random.key(3), **kw)
    b = model.generate(ref["batch_ids"], key=jax.random.key(3), **kw)
    c = model.generate(ref["batch_ids"], key=jax.random.key(4), **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    logits = jax.numpy.asarray(np.random.default_rng(0).normal(size=(3, 50)), "float32")
    kept = np.isfinite(np.asarray(decoding.filter_logits(logits, 5, None)))
    assert (kept.sum(axis=1) == 5).all()
    probs = np.asarray(jax.nn.softmax(logits))
    kept = np.isfinite(np.asarray(decoding.filter_logits(logits, None, 0.5)))
    for row in range(3):
        order = np.argsort(-probs[row])
        n = int(kept[row].sum())
        assert set(np.flatnonzero(kept[row])) == set(order[:n])  # the most likely tokens
        assert probs[row, order[: n - 1]].sum() < 0.5 <= probs[row, order[:n]].sum()  # the smallest such set


@pytest.mark.full
def test_bfloat16_close_to_float32_reference(ref):
    """In bfloat16 the logits stay within bfloat16's rounding of the float32 reference (a few % of the scale)."""
    model = qwen2_5_vl.load(FIXTURE, dtype="bfloat16")
    assert model.dtype == np.dtype("bfloat16")
    pixels, grid = images(ref)
    got = np.asarray(model(ref["image_ids"], pixels, grid), np.float32)
    want = ref["image_logits"]
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()
    assert np.isfinite(got).all()


def test_image_processor_equals_transformers(ref):
    """Resize within the pixel bounds (one image up, one down), normalise, patchify: equal to transformers'."""
    from tokdyn.models.qwen2_5_vl.processor import ImageProcessor

    processor = ImageProcessor.read(FIXTURE)
    for i in range(2):
        got = processor(ref[f"proc{i}_image"])
        np.testing.assert_array_equal(got["image_grid_thw"], ref[f"proc{i}_grid"])
        np.testing.assert_allclose(got["pixel_values"], ref[f"proc{i}_pixels"], rtol=0, atol=1e-6)
    both = processor([ref["proc0_image"], ref["proc1_image"]])
    np.testing.assert_array_equal(both["pixel_values"], np.concatenate([ref["proc0_pixels"], ref["proc1_pixels"]]))


def test_rope_index_rule():
    """Text after an image continues from the image's start plus its larger merged side, per row."""
    from tokdyn.models.qwen2_5_vl import positions

    cfg = qwen2_5_vl.config.read(FIXTURE)
    img = cfg.image_token_id
    ids = np.array([[7, img, img, img, img, img, img, 8, 9]])
    pos, nxt = positions.rope_index(cfg, ids, np.array([[1, 4, 6]]), np.ones_like(ids, bool))
    np.testing.assert_array_equal(pos[0, 0], [0, 1, 1, 1, 1, 1, 1, 4, 5])  # time
    np.testing.assert_array_equal(pos[1, 0], [0, 1, 1, 1, 2, 2, 2, 4, 5])  # rows (2 merged)
    np.testing.assert_array_equal(pos[2, 0], [0, 1, 2, 3, 1, 2, 3, 4, 5])  # columns (3 merged)
    assert nxt.tolist() == [6]


def test_loader_errors(tmp_path):
    """Missing directory, missing weights, a tensor of the wrong shape, a missing tensor: clear errors."""
    with pytest.raises(FileNotFoundError, match="config.json"):
        qwen2_5_vl.load(tmp_path / "absent")
    (tmp_path / "config.json").write_text((FIXTURE / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        qwen2_5_vl.load(tmp_path)
    raw = json.loads((FIXTURE / "config.json").read_text())
    raw["text_config"]["intermediate_size"] = 80
    (tmp_path / "config.json").write_text(json.dumps(raw))
    shutil.copy(FIXTURE / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight.*\(96, 64\).*\(80, 64\)"):
        qwen2_5_vl.load(tmp_path)
    raw["text_config"]["num_hidden_layers"] = 3
    raw["text_config"]["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"lacks 12 tensor\(s\) config.json implies.*model\.layers\.2"):
        qwen2_5_vl.load(tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        qwen2_5_vl.load(FIXTURE, dtype="int8")
    raw["text_config"]["num_hidden_layers"] = 2
    raw["text_config"]["use_sliding_window"] = True
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="use_sliding_window"):
        qwen2_5_vl.load(tmp_path)


def test_sharded_and_published_layouts(tmp_path, ref):
    """Shards with an index, and config.json in the published (flat) layout, load to the same logits."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    import ml_dtypes

    with safe_open(str(FIXTURE / "model.safetensors"), framework="flax") as f:
        tensors = {k: np.asarray(f.get_tensor(k)).astype(ml_dtypes.bfloat16) for k in f.keys()}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / shard))
    index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    raw = json.loads((FIXTURE / "config.json").read_text())
    flat = {**raw.pop("text_config"), **raw}
    rope = flat.pop("rope_parameters")
    flat["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    flat["rope_theta"] = rope["rope_theta"]
    (tmp_path / "config.json").write_text(json.dumps(flat))
    model = qwen2_5_vl.load(tmp_path, dtype="float32")
    assert model.config == qwen2_5_vl.config.read(FIXTURE)
    assert_logits_close(model(ref["text_ids"]), ref["text_logits"])


def test_input_errors(model, ref):
    """Inputs that do not fit each other are refused before anything compiles, naming the argument."""
    pixels, grid = images(ref)
    with pytest.raises(ValueError, match="image tokens"):
        model(ref["image_ids"][:, :10], pixels, grid)
    with pytest.raises(ValueError, match="pixel_values"):
        model(ref["image_ids"], pixels[:-1], grid)
    with pytest.raises(ValueError, match="no pixel_values"):
        model(ref["image_ids"])
    with pytest.raises(ValueError, match="input_ids"):
        model(np.array([[1, 500]]))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ref["text_ids"], attention_mask=np.ones((1, 3)))


@pytest.mark.full
def test_regenerated_fixtures_equal(tmp_path):
    """With torch and transformers installed: the fixtures remade from scratch, and tokdyn against them, and
    the image processor over many image sizes against transformers'."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_qwen2_5_vl", FIXTURE.parent / "make_qwen2_5_vl.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    fresh = maker.make(tmp_path)
    model = qwen2_5_vl.load(tmp_path, dtype="float32")
    check_against(model, fresh)
    pixels, grid = images(fresh)
    got = model.generate(fresh["image_ids"], pixels, grid, max_new_tokens=8, eos_token_id=())
    np.testing.assert_array_equal(got, fresh["image_greedy"])

    from tokdyn.models.qwen2_5_vl.processor import ImageProcessor

    theirs = maker.image_processor()
    ours = ImageProcessor.read(tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(8, 400, size=2)
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        want = theirs(images=[image], return_tensors="np")
        got = ours(image)
        np.testing.assert_array_equal(got["image_grid_thw"], want["image_grid_thw"])
        np.testing.assert_allclose(got["pixel_values"], want["pixel_values"], rtol=0, atol=1e-6)


def test_chat_template_and_tokenizer_equal_transformers(ref):
    """The checkpoint's chat template and tokenizer (tokenizers, jinja2) give transformers' text and token ids
    for a user turn with an image, placeholders expanded per the image's grid; decoding drops the specials."""
    pytest.importorskip("jinja2")
    pytest.importorskip("tokenizers")
    from tokdyn.models.vlm.chat import Chat

    chat = Chat.load(FIXTURE)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
    assert chat.render(messages) == str(ref["chat_text"])
    inputs = chat.encode(messages, [ref["proc0_image"]])
    np.testing.assert_array_equal(inputs["input_ids"], ref["chat_ids"])
    np.testing.assert_array_equal(inputs["pixel_values"], ref["proc0_pixels"])
    assert chat.decode(inputs["input_ids"][0]) == str(ref["chat_decoded"])
    with pytest.raises(ValueError, match="placeholders"):
        chat.encode(messages, [])


@pytest.mark.full
def test_sharded_over_a_mesh_equals_reference():
    """Loaded over a mesh of two (host) devices, the weights are split and the logits and greedy tokens are
    unchanged (a child process, so that XLA starts with two devices)."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import numpy as np, jax
        from jax.sharding import Mesh
        from tokdyn.models import qwen2_5_vl
        assert len(jax.devices()) == 2
        mesh = Mesh(np.array(jax.devices()), ("model",))
        model = qwen2_5_vl.load({str(FIXTURE)!r}, dtype="float32", mesh=mesh)
        assert len(model.params["text"]["embed"].sharding.device_set) == 2
        ref = np.load({str(FIXTURE / "reference.npz")!r})
        got = np.asarray(model(ref["mixed_ids"], ref["proc0_pixels"], ref["proc0_grid"], ref["mixed_mask"]))
        mask = ref["mixed_mask"].astype(bool)
        assert np.abs(got - ref["mixed_logits"])[mask].max() <= 1e-4 * np.abs(ref["mixed_logits"]).max()
        tokens = model.generate(ref["mixed_ids"], ref["proc0_pixels"], ref["proc0_grid"], ref["mixed_mask"],
                                max_new_tokens=8, eos_token_id=())
        assert (tokens == ref["mixed_greedy"]).all(), tokens
        print("ok")
        """
    )
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


@pytest.mark.full
def test_index_arithmetic_equals_transformers():
    """Window order, window lengths, vision positions and the decoder's M-RoPE positions equal transformers'
    functions over grids of several shapes (frames, uneven windows) and padded batches."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import vision_utils
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    from tokdyn.models.qwen2_5_vl import positions

    grids = np.array([[1, 4, 6], [2, 6, 4], [1, 10, 14], [1, 8, 8], [3, 2, 2]])
    for window, patch in ((56, 14), (112, 14)):
        want_index, want_cu = vision_utils.get_vision_window_index(torch.from_numpy(grids), 2, window, patch)
        index, lengths = positions.window_order(grids, 2, window, patch)
        np.testing.assert_array_equal(index, want_index.numpy())
        np.testing.assert_array_equal(np.concatenate([[0], np.cumsum(lengths)]), want_cu.numpy())
    want = vision_utils.get_vision_position_ids(torch.from_numpy(grids), 2)
    np.testing.assert_array_equal(positions.vision_positions(grids, 2), want.numpy())

    import importlib.util

    spec = importlib.util.spec_from_file_location("make_qwen2_5_vl", FIXTURE.parent / "make_qwen2_5_vl.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    cfg_t = maker.tiny_config()
    holder = Qwen2_5_VLModel.__new__(Qwen2_5_VLModel)
    holder.config = cfg_t
    cfg = qwen2_5_vl.config.read(FIXTURE)
    img = cfg.image_token_id
    row0 = [0, 0, 5, 118] + [img] * 6 + [119, 7, 118] + [img] * 4 + [119, 9]
    row1 = [3, 118] + [img] * 6 + [119, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    ids = np.array([row0, row1])
    mask = np.ones_like(ids, bool)
    mask[0, :2] = False
    grid = np.array([[1, 4, 6], [1, 4, 4], [1, 6, 4]])
    want_pos, want_delta = holder.get_rope_index(
        torch.from_numpy(ids),
        mm_token_type_ids=torch.from_numpy((ids == img).astype(np.int32)),
        image_grid_thw=torch.from_numpy(grid),
        attention_mask=torch.from_numpy(mask.astype(np.int64)),
    )
    pos, nxt = positions.rope_index(cfg, ids, grid, mask)
    np.testing.assert_array_equal(pos[:, mask], want_pos.numpy()[:, mask])
    np.testing.assert_array_equal(nxt, want_delta.numpy()[:, 0] + mask.sum(axis=1))


def test_docs_example_runs_on_the_tiny_checkpoint(tmp_path, capsys):
    """The docs page's example (answer a question about an image), pointed at the tiny checkpoint and a
    random picture, runs as written."""
    pytest.importorskip("jinja2")
    from PIL import Image

    page = (Path(__file__).parents[1] / "docs" / "concepts" / "qwen2-5-vl.md").read_text()
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'path = "Qwen2.5-VL-7B-Instruct"' in code and '"photo.jpg"' in code
    picture = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(picture)
    code = code.replace('"Qwen2.5-VL-7B-Instruct"', repr(str(FIXTURE))).replace('"photo.jpg"', repr(str(picture)))
    code = code.replace("max_new_tokens=64", "max_new_tokens=4")
    exec(compile(code, "qwen2-5-vl.md", "exec"), {})
    assert capsys.readouterr().out.endswith("\n")  # the answer was printed (a random model's text may be empty)


def published_config(size: str) -> dict:
    """config.json of the published Qwen2.5-VL checkpoints (3B and 7B Instruct), in their flat layout."""
    vision = {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    }
    raw = {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "hidden_act": "silu",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "max_position_embeddings": 128000,
        "max_window_layers": 28,
        "num_attention_heads": 28,
        "num_hidden_layers": 28,
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": vision,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vocab_size": 152064,
    }
    if size == "3B":
        raw.update(
            hidden_size=2048,
            intermediate_size=11008,
            num_attention_heads=16,
            num_hidden_layers=36,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            vocab_size=151936,
        )
        vision["out_hidden_size"] = 2048
    return raw


def test_published_configs_parse():
    """The published 7B and 3B configurations parse to their structure (the 3B ties its output head)."""
    seven = qwen2_5_vl.config.from_dict(published_config("7B"))
    assert (seven.text.num_hidden_layers, seven.text.num_key_value_heads, seven.text.head_dim) == (28, 4, 128)
    assert seven.text.mrope_section == (16, 24, 24) and seven.text.rope_theta == 1e6
    assert seven.vision.fullatt_block_indexes == (7, 15, 23, 31) and seven.vision.patch_dim == 1176
    assert seven.dtype == "bfloat16" and seven.eos_token_id == (151645,)
    three = qwen2_5_vl.config.from_dict(published_config("3B"))
    assert three.text.tie_word_embeddings and three.vision.out_hidden_size == 2048
    names = {e.name for e in qwen2_5_vl.params.layout(three)}
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names


@pytest.mark.full
@pytest.mark.parametrize("size", ["3B", "7B"])
def test_layout_matches_transformers_state_dict(size):
    """Every tensor name and shape the loader expects for the published configurations is exactly the
    state dict of transformers' model built from the same config.json (on the meta device, no memory)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    raw = published_config(size)
    with torch.device("meta"):
        reference = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**raw))
    theirs = {qwen2_5_vl.params.canonical(k): tuple(v.shape) for k, v in reference.state_dict().items()}
    cfg = qwen2_5_vl.config.from_dict(raw)
    if cfg.text.tie_word_embeddings:
        theirs.pop("lm_head.weight")
    ours = {e.name: e.shape for e in qwen2_5_vl.params.layout(cfg)}
    assert ours == theirs
    n = sum(int(np.prod(s)) for s in ours.values())
    print(f"Qwen2.5-VL-{size}: {n:,} parameters")


@pytest.mark.full
def test_larger_image_and_windows_equal_transformers(tmp_path):
    """A configuration with the published patch, window and merge sizes (windows of 4 x 4 merged tokens,
    full attention in two of four vision blocks) on a 250 x 330 image (a 9 x 12 merged grid, clipped
    windows) and on a second, smaller image in the same prompt: logits equal transformers' in float32."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from tokdyn.models.qwen2_5_vl.processor import ImageProcessor

    torch.manual_seed(1)
    vision = dict(depth=4, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=96)
    vision.update(window_size=112, fullatt_block_indexes=[1, 3])
    text = dict(vocab_size=256, hidden_size=96, intermediate_size=160, num_hidden_layers=2)
    text.update(num_attention_heads=6, num_key_value_heads=2)
    text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6}
    ids = dict(image_token_id=250, video_token_id=251, vision_start_token_id=252, vision_end_token_id=253)
    reference = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids))
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if "norm" in name or "ln_q" in name:
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.12 if p.ndim >= 2 else 0.05)
    reference.eval().save_pretrained(tmp_path)
    rng = np.random.default_rng(1)
    pictures = [rng.integers(0, 256, (250, 330, 3), dtype=np.uint8), rng.integers(0, 256, (90, 60, 3), np.uint8)]
    inputs = ImageProcessor()(pictures)
    counts = [int(g.prod()) // 4 for g in inputs["image_grid_thw"]]
    assert counts[0] == 9 * 12
    prompt = [1, 252] + [250] * counts[0] + [253, 7, 8, 252] + [250] * counts[1] + [253, 9, 10, 11]
    input_ids = np.array([prompt])
    with torch.no_grad():
        want = reference(
            input_ids=torch.from_numpy(input_ids),
            pixel_values=torch.from_numpy(inputs["pixel_values"]),
            image_grid_thw=torch.from_numpy(inputs["image_grid_thw"]),
            mm_token_type_ids=torch.from_numpy((input_ids == 250).astype(np.int32)),
        ).logits.numpy()
    model = qwen2_5_vl.load(tmp_path, dtype="float32")
    assert_logits_close(model(input_ids, inputs["pixel_values"], inputs["image_grid_thw"]), want)


@pytest.mark.full
def test_gradients_equal_torch(model, ref):
    """``jax.grad`` through the pure ``apply`` (images included) equals PyTorch's backward through
    transformers' model, for a weight of the decoder, of a vision block and of the merger."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import jax
    import jax.numpy as jnp
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tokdyn.models.qwen2_5_vl import positions, vision

    pixels, grid = images(ref)
    ids = ref["image_ids"]
    weights = np.linspace(-1.0, 1.0, ref["image_logits"].size).reshape(ref["image_logits"].shape)

    theirs = Qwen2_5_VLForConditionalGeneration.from_pretrained(FIXTURE, dtype=torch.float32)
    out = theirs(
        input_ids=torch.from_numpy(ids),
        pixel_values=torch.from_numpy(pixels),
        image_grid_thw=torch.from_numpy(grid),
        mm_token_type_ids=torch.from_numpy((ids == model.config.image_token_id).astype(np.int32)),
    ).logits
    (out * torch.from_numpy(weights).float()).sum().backward()
    named = dict(theirs.named_parameters())

    cfg = model.config
    mask = np.ones_like(ids, bool)
    pos, _ = positions.rope_index(cfg, ids, grid, mask)
    plan = vision.plan(cfg.vision, grid)

    def loss(params):
        logits = qwen2_5_vl.apply(cfg, params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos), pixels, plan)
        return jnp.sum(logits * weights)

    grads = jax.jit(jax.grad(loss))(model.params)
    pairs = [
        (grads["text"]["layers"]["mlp"]["gate"]["kernel"][1], "model.language_model.layers.1.mlp.gate_proj.weight"),
        (grads["vision"]["blocks"][0]["attn"]["qkv"]["kernel"][0], "model.visual.blocks.0.attn.qkv.weight"),
        (grads["vision"]["merger"]["fc1"]["kernel"], "model.visual.merger.mlp.0.weight"),
    ]
    for ours, name in pairs:
        want = named[name].grad.numpy().T
        scale = np.abs(want).max()
        assert scale > 0
        assert np.abs(np.asarray(ours) - want).max() <= 1e-3 * scale, name
