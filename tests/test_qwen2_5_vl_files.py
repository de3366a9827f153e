"""A Qwen2.5-VL checkpoint's files as users bring them, broken in the ways files break: every one refused by
``qwen2_5_vl.load``, ``Chat.load``, ``config.read`` or the image loading with a named error (the file, the
field, the value and what is allowed), and by ``tokdyn study vlm-diagnostics --model`` with exit 2 and one
line before any work. Each broken checkpoint is the tiny fixture (``tests/fixtures/qwen2_5_vl_tiny``) copied
into ``tmp_path`` and edited. Images are checked against ``transformers``' conversion through the files and
the reference made by ``tests/fixtures/make_qwen2_5_vl_images.py``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

from tokdyn.models import qwen2_5_vl, vlm  # noqa: E402
from tokdyn.models.vlm import chat as chat_lib  # noqa: E402
from tokdyn.models.qwen2_5_vl import processor as processor_lib  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
IMAGES = Path(__file__).parent / "fixtures" / "qwen2_5_vl_images"
WEIGHTS = "model.safetensors"


def copy(tmp_path) -> Path:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, ckpt, ignore=shutil.ignore_patterns("reference.npz"))
    return ckpt


def edit_json(path: Path, edit) -> None:
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def read_raw(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def write_raw(path: Path, header: dict, data: bytes) -> None:
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


def add_tensors(path: Path, names) -> None:
    header, data = read_raw(path)
    for name in names:
        header[name] = {"dtype": "BF16", "shape": [4], "data_offsets": [len(data), len(data) + 8]}
        data += bytes(8)
    write_raw(path, header, data)


# ---- images (issue item 5): transformers' conversion, EXIF, 16 bits, decompression bombs ----------------------


@pytest.fixture(scope="module")
def image_ref():
    with np.load(IMAGES / "reference.npz") as f:
        return {k: f[k] for k in f.files}


TRANSPARENT = ("rgba", "palette", "la", "grey_trns", "exif3_rgba")
OPAQUE = ("exif6", "exif8", "cmyk")


def image_path(name: str) -> Path:
    return IMAGES / (f"{name}.tiff" if name == "cmyk" else f"{name}.png")


@pytest.mark.parametrize("name", TRANSPARENT + OPAQUE)
def test_images_are_converted_as_transformers_converts_them(name, image_ref):
    """Transparency composited on white, EXIF orientation applied, CMYK converted: equal to transformers'
    image processor's RGB image, byte for byte; the opaque files equal transformers' load_image too."""
    from PIL import Image

    got = processor_lib.load_image(image_path(name))
    np.testing.assert_array_equal(got, image_ref[f"{name}_rgb"])
    if name in OPAQUE:
        np.testing.assert_array_equal(got, image_ref[f"{name}_loaded"])
    if name in TRANSPARENT:  # dropping the alpha channel (Pillow's convert) gives other pixels
        with Image.open(image_path(name)) as im:
            dropped = np.asarray(im.convert("RGB")).astype(int)
        if name.startswith("exif"):
            dropped = np.rot90(dropped, 2)  # orientation 3
        assert np.abs(dropped - got).max() > 100


def test_processor_output_and_arrays_equal_transformers(image_ref):
    """The image processor over a transparent image equals transformers' pixel_values; an (H, W, 4) array is
    composited on white as transformers' convert_to_rgb does."""
    from PIL import Image

    lo, hi = image_ref["settings"].tolist()
    processor = qwen2_5_vl.ImageProcessor(min_pixels=int(lo), max_pixels=int(hi))
    with Image.open(IMAGES / "rgba.png") as im:
        got = processor(im)
    np.testing.assert_array_equal(got["image_grid_thw"], image_ref["rgba_grid"])
    np.testing.assert_allclose(got["pixel_values"], image_ref["rgba_pixels"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(processor_lib.as_rgb(image_ref["rgba_array"]), image_ref["rgba_array_rgb"])


def test_sixteen_bit_images_are_refused_naming_file_and_mode():
    from PIL import Image

    path = IMAGES / "grey16.png"
    with Image.open(path) as im:
        assert im.mode == "I;16" and np.asarray(im).max() > 255  # Pillow's convert("RGB") would clip these
    with pytest.raises(ValueError, match=r"grey16\.png.*mode 'I;16'.*clips it to 8 bits"):
        processor_lib.load_image(path)
    with Image.open(path) as im, pytest.raises(ValueError, match=r"images\[0\] has Pillow mode 'I;16'"):
        qwen2_5_vl.ImageProcessor()([im])


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` pixels (and holds none)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow's warning (89.5 M pixels) and its error (twice that)
def test_decompression_bombs_and_unreadable_images_are_named(tmp_path, side):
    bomb = tmp_path / "bomb.png"
    png_header(bomb, side, side)
    with pytest.raises(ValueError, match=r"bomb\.png.*decompression bomb.*MAX_IMAGE_PIXELS"):
        processor_lib.load_image(bomb)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"text\.png.*cannot be read as an image"):
        processor_lib.load_image(tmp_path / "text.png")
    with pytest.raises(FileNotFoundError, match="absent.png"):
        processor_lib.load_image(tmp_path / "absent.png")


# ---- config.json and generation_config.json (items 8 and 13) -------------------------------------------------


def _set(*keys, value):
    def edit(raw):
        node = raw
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return edit


CONFIG_CASES = [
    (("text_config", "hidden_size"), "64", r"text_config\.hidden_size is '64' \(str\); expected an integer >= 1"),
    (("vision_config",), None, r"vision_config is null; expected an object"),
    (
        ("text_config", "rope_parameters", "mrope_section"),
        [-2, 5, 5],
        r"mrope_section\[0\] is -2; expected an integer >= 0",
    ),
    (
        ("text_config", "rope_parameters", "mrope_section"),
        [2, 3, 4],
        r"mrope_section is \[2, 3, 4\]; expected .* summing to half the head width, 8",
    ),
    (("vision_config", "num_heads"), 3, r"vision_config\.hidden_size=32 and num_heads=3: the width must split"),
    (("text_config", "num_attention_heads"), 3, r"text_config\.hidden_size=64 and num_attention_heads=3"),
    (
        ("text_config", "num_key_value_heads"),
        3,
        r"num_key_value_heads is 3; expected a divisor of num_attention_heads=4",
    ),
    (("text_config", "eos_token_id"), "2", r"text_config\.eos_token_id is '2' \(str\); expected an integer >= 0"),
    (("text_config", "eos_token_id"), [2, 2.5], r"text_config\.eos_token_id is 2\.5 \(float\)"),
    (
        ("text_config", "rope_parameters", "rope_theta"),
        0,
        r"text_config\.rope_theta is 0; expected a finite number > 0",
    ),
    (("text_config", "rope_parameters", "rope_theta"), -1.0, r"rope_theta is -1\.0; expected a finite number > 0"),
    (("text_config", "rms_norm_eps"), -1e-6, r"text_config\.rms_norm_eps is -1e-06; expected a finite number > 0"),
    (("vision_config", "patch_size"), 0, r"vision_config\.patch_size is 0; expected an integer >= 1"),
    (("vision_config", "fullatt_block_indexes"), [2], r"fullatt_block_indexes is \[2\]; expected indexes .* depth=2"),
    (("image_token_id",), -1, r"image_token_id is -1; expected an integer >= 0"),
    (("dtype",), "int8", r"torch_dtype is 'int8'; expected one of \('float32', 'bfloat16', 'float16', 'float64'\)"),
    (("text_config", "hidden_act"), "swish", r"text_config\.hidden_act is 'swish'; expected one of"),
    (("vision_config", "window_size"), 14, r"window_size is 14; expected at least .* = 28 pixels"),
]


@pytest.mark.parametrize("keys, value, match", CONFIG_CASES)
def test_config_fields_are_named_with_value_and_what_is_allowed(tmp_path, keys, value, match):
    ckpt = copy(tmp_path)
    edit_json(ckpt / "config.json", _set(*keys, value=value))
    with pytest.raises(ValueError, match=match) as e:
        qwen2_5_vl.load(ckpt)
    assert str(ckpt / "config.json") in str(e.value)


def test_published_layout_names_top_level_fields_and_files_that_are_not_json(tmp_path):
    ckpt = copy(tmp_path)
    raw = json.loads((ckpt / "config.json").read_text())
    flat = {**raw.pop("text_config"), **raw}
    flat["hidden_size"] = 64.0
    (ckpt / "config.json").write_text(json.dumps(flat))
    with pytest.raises(ValueError, match=r"config\.json: hidden_size is 64\.0 \(float\); expected an integer"):
        qwen2_5_vl.config.read(ckpt)
    (ckpt / "config.json").write_text('{"model_type": "qwen2_5_vl", ')
    with pytest.raises(ValueError, match=r"config\.json: not a JSON file"):
        qwen2_5_vl.load(ckpt)
    shutil.copy(FIXTURE / "config.json", ckpt / "config.json")
    (ckpt / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7.5]}))
    with pytest.raises(ValueError, match=r"generation_config\.json: eos_token_id is 7\.5 \(float\)"):
        qwen2_5_vl.load(ckpt)
    (ckpt / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 900]}))  # past the vocabulary: kept
    assert qwen2_5_vl.config.read(ckpt).eos_token_id == (2, 900)


def test_configs_built_in_code_are_checked_too():
    cfg = qwen2_5_vl.config.read(FIXTURE)
    with pytest.raises(ValueError, match=r"TextConfig\.rope_theta is -5; expected a finite number > 0"):
        qwen2_5_vl.TextConfig(**{**cfg.text.__dict__, "rope_theta": -5})
    with pytest.raises(ValueError, match=r"TextConfig\.rms_norm_eps is nan"):
        qwen2_5_vl.TextConfig(**{**cfg.text.__dict__, "rms_norm_eps": float("nan")})


# ---- the weights' files (items 8, 12, 13; unknown modules) ------------------------------------------------------


def test_a_float16_label_on_bfloat16_weights_is_refused(tmp_path):
    """The same bytes read as float16 are other numbers: the header's dtype must agree with torch_dtype."""
    ckpt = copy(tmp_path)
    header, data = read_raw(ckpt / WEIGHTS)
    for name, info in header.items():
        if name != "__metadata__":
            info["dtype"] = "F16"
    write_raw(ckpt / WEIGHTS, header, data)
    with pytest.raises(ValueError, match=r"stored as F16 but config\.json's torch_dtype is 'bfloat16'"):
        qwen2_5_vl.load(ckpt)
    edit_json(ckpt / "config.json", _set("dtype", value="float16"))  # labels that agree pass
    cfg = qwen2_5_vl.config.read(ckpt)
    assert cfg.dtype == "float16" and len(qwen2_5_vl.checkpoint.inspect(ckpt, cfg).entries) == 57


def test_safetensors_headers_are_checked_before_any_weight_is_read(tmp_path):
    ckpt = copy(tmp_path)
    original = (ckpt / WEIGHTS).read_bytes()
    (ckpt / WEIGHTS).write_bytes(struct.pack("<Q", 2**63) + original[8:])
    with pytest.raises(ValueError, match=r"model\.safetensors: its header claims 9,223,372,036,854,775,808 bytes"):
        qwen2_5_vl.load(ckpt)
    (ckpt / WEIGHTS).write_bytes(original[:-100])
    with pytest.raises(ValueError, match=r"model\.safetensors is truncated: tensor '.*' ends at byte"):
        qwen2_5_vl.load(ckpt)
    (ckpt / WEIGHTS).write_bytes(original[:5])
    with pytest.raises(ValueError, match="too short for a safetensors file"):
        qwen2_5_vl.load(ckpt)
    header, data = read_raw(FIXTURE / WEIGHTS)
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [header[name]["shape"][0] + 1, *header[name]["shape"][1:]]
    write_raw(ckpt / WEIGHTS, header, data)
    with pytest.raises(ValueError, match=rf"tensor '{name}': its bytes .* needs"):
        qwen2_5_vl.load(ckpt)


def test_a_sharded_checkpoint_whose_index_is_not_json_or_points_elsewhere_is_named(tmp_path):
    ckpt = copy(tmp_path)
    (ckpt / WEIGHTS).rename(ckpt / "model-00001-of-00001.safetensors")
    header, _ = read_raw(ckpt / "model-00001-of-00001.safetensors")
    index = {"weight_map": {k: "model-00001-of-00001.safetensors" for k in header if k != "__metadata__"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index)[:-3])
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json: not a JSON file"):
        qwen2_5_vl.load(ckpt)
    index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors"
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"weight_map\['model\.norm\.weight'\] is '\.\./elsewhere\.safetensors'"):
        qwen2_5_vl.load(ckpt)
    index["weight_map"]["model.extra.weight"] = "model-00001-of-00001.safetensors"
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00001.safetensors"
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"puts tensor 'model\.extra\.weight' in model-00001-of-00001"):
        qwen2_5_vl.load(ckpt)


def test_a_hidden_size_that_disagrees_with_the_weights_names_the_field(tmp_path):
    ckpt = copy(tmp_path)

    def edit(raw):
        raw["text_config"].update(hidden_size=32, num_attention_heads=2)
        raw["vision_config"]["out_hidden_size"] = 32

    edit_json(ckpt / "config.json", edit)
    with pytest.raises(
        ValueError,
        match=r"visual\.merger\.mlp\.2\.weight.*\(64, 128\).*\(32, 128\).*axis 0 is "
        r"vision_config\.out_hidden_size: 32 in config\.json, 64 in the weights",
    ):
        qwen2_5_vl.load(ckpt)


def test_tensors_of_modules_tokdyn_does_not_know_are_refused_unless_ignored(tmp_path):
    """A fine-tune's extra head: refused naming the first five and the count; unknown='ignore' leaves them out
    (the plan the loader reads lists every parameter, and the unknown names apart)."""
    ckpt = copy(tmp_path)
    extra = [f"latent_head.{i}.weight" for i in range(7)]
    add_tensors(ckpt / WEIGHTS, extra)
    with pytest.raises(
        ValueError,
        match=r"holds 7 tensor\(s\) that map to no parameter.*latent_head\.0\.weight.*"
        r"latent_head\.4\.weight'\] \.\.\..*unknown='ignore'",
    ) as e:
        qwen2_5_vl.load(ckpt)
    assert "latent_head.5" not in str(e.value)
    cfg = qwen2_5_vl.config.read(ckpt)
    plan = qwen2_5_vl.checkpoint.inspect(ckpt, cfg, unknown="ignore")
    assert plan.unknown == tuple(sorted(extra))
    assert [e.name for e, _ in plan.entries] == [e.name for e in qwen2_5_vl.params.layout(cfg)]
    with pytest.raises(ValueError, match=r"unknown='skip' is not allowed; expected one of \('error', 'ignore'\)"):
        qwen2_5_vl.load(ckpt, unknown="skip")
    add_tensors(ckpt / WEIGHTS, ["model.language_model.norm.weight"])  # a second name for model.norm.weight
    with pytest.raises(ValueError, match=r"holds 'model\.norm\.weight' twice"):
        qwen2_5_vl.load(ckpt, unknown="ignore")


@pytest.mark.full
def test_a_checkpoint_with_unknown_modules_loads_the_same_parameters_when_told_to_ignore_them(tmp_path):
    ckpt = copy(tmp_path)
    add_tensors(ckpt / WEIGHTS, ["latent_head.weight", "latent_head.bias"])
    got = qwen2_5_vl.load(ckpt, dtype="float32", unknown="ignore").params
    want = qwen2_5_vl.load(FIXTURE, dtype="float32").params
    import jax

    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_prompt_holding_the_video_placeholder_is_refused():
    cfg = qwen2_5_vl.config.read(FIXTURE)
    ids = np.array([[1, 5, cfg.video_token_id, 7]])
    with pytest.raises(ValueError, match=r"video placeholder token \(id 121, <\|video_pad\|>\) at row 0, position 2"):
        qwen2_5_vl.inputs.check_inputs(cfg, ids, None, None, None)
    mask = np.array([[1, 1, 0, 1]])  # a masked position is padding, not input
    qwen2_5_vl.inputs.check_inputs(cfg, ids, None, None, mask)


# ---- tokenizer, processor and chat template (items 10, 12) ----------------------------------------------------


def test_tokenizer_and_processor_files_are_named(tmp_path):
    ckpt = copy(tmp_path)
    text = (ckpt / "tokenizer.json").read_text()
    (ckpt / "tokenizer.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"tokenizer\.json: the tokenizers package cannot read it .*truncated"):
        vlm.Chat.load(ckpt)
    (ckpt / "tokenizer.json").write_text(text)
    edit_json(ckpt / "preprocessor_config.json", _set("patch_size", value=0))
    with pytest.raises(ValueError, match=r"preprocessor_config\.json: patch_size is 0; expected an integer >= 1"):
        vlm.Chat.load(ckpt)
    edit_json(ckpt / "preprocessor_config.json", _set("patch_size", value=14))
    edit_json(ckpt / "preprocessor_config.json", _set("merge_size", value=1))
    with pytest.raises(ValueError, match=r"merge_size is 1 but config\.json's vision_config\.spatial_merge_size is 2"):
        vlm.Chat.load(ckpt)
    edit_json(ckpt / "preprocessor_config.json", _set("merge_size", value=2))
    edit_json(ckpt / "preprocessor_config.json", _set("image_std", value=[0.2, 0.0, 0.2]))
    with pytest.raises(ValueError, match=r"image_std is \(0\.2, 0\.0, 0\.2\); expected three finite numbers > 0"):
        vlm.Chat.load(ckpt)
    edit_json(ckpt / "preprocessor_config.json", _set("image_std", value=[0.2, 0.2, 0.2]))
    edit_json(ckpt / "preprocessor_config.json", _set("resample", value=2))  # bilinear: not transformers' pixels
    with pytest.raises(ValueError, match=r"preprocessor_config\.json: resample is 2; expected 3 \(Pillow's bicubic"):
        vlm.Chat.load(ckpt)
    edit_json(ckpt / "preprocessor_config.json", _set("resample", value=3))
    edit_json(ckpt / "preprocessor_config.json", _set("do_convert_rgb", value=False))
    with pytest.raises(ValueError, match=r"preprocessor_config\.json: do_convert_rgb is false; .* not supported"):
        vlm.Chat.load(ckpt)


def test_answers_the_tokenizer_cannot_spell_are_refused():
    chat = vlm.Chat.load(FIXTURE)
    np.testing.assert_array_equal(chat.text_ids("a b"), [65, 0, 66])
    with pytest.raises(ValueError, match=r"the answer 'é' has no tokens: the tokenizer maps it to nothing"):
        chat.text_ids("é", "the answer")
    with pytest.raises(ValueError, match=r"'aé b' is not what its tokens spell \('a b'\): the tokenizer drops 'é'"):
        chat.text_ids("aé b")


TEMPLATES = [
    ("{% for i in range(100000) %}{% endfor %}", r"range\(100000\) gives 100,000 numbers, more than 10,000"),
    ("{{ 'x' * 10**10 }}", r"repeats a str of 1 characters 10,000,000,000 times"),
    (
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        r"builds a str",
    ),
    ("{{ 'x'.center(10**9) }}", r"'center' is given 1,000,000,000"),
    ("{{ '%0999999999d' % 1 }}", r"'%' format asks for a width of 999,999,999"),
    ("{{ (['x' * 100000] * 100)|join }}", r"the filter 'join' builds 10,000,000 characters"),
    ("{% for i in range(100) %}{{ 'y' * 1000000 }}{% endfor %}", r"its output passed 4,194,304 characters"),
    (
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        r"ran past the time limit of 0\.2 s",
    ),
    ("{% for a in 'x' * 10000 %}{% for b in 'x' * 10000 %}{% endfor %}{% endfor %}", r"ran past the time limit"),
    (
        "{{ raise_exception('system messages are not supported') }}",
        r"refused the conversation \(raise_exception\): system",
    ),
    ("{% for %}", r"is not a valid Jinja template"),
    ("{{ messages[0].content.nope.deeper }}", r"failed to render the conversation: UndefinedError"),
]


@pytest.mark.parametrize("template, match", TEMPLATES)
def test_chat_templates_render_under_time_and_size_limits(template, match):
    """Loops and allocations without bound inside Jinja's sandbox stop at a limit, naming the template, in well
    under a second past the time limit."""
    messages = [{"role": "user", "content": "hi"}]
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match) as e:
        chat_lib.render(template, messages, template_name="chat_template.jinja", max_seconds=0.2)
    assert str(e.value).startswith("chat_template.jinja ")
    assert time.perf_counter() - t0 < 1.5


LONG = "{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}done"  # 9e6 steps, 1-10 s


def _reinstalling(frame, event, arg):
    """A tracer that puts itself back whenever it is called, as coverage's C tracer and debuggers do."""
    if sys.gettrace() is not _reinstalling:
        sys.settrace(_reinstalling)


@contextlib.contextmanager
def _tracer(kind):
    previous = sys.gettrace()
    if kind == "coverage":
        coverage = pytest.importorskip("coverage", reason="coverage is not installed")
        if previous is not None:
            pytest.skip(f"a tracer is installed already ({type(previous).__name__}): coverage would not be alone")
        os.environ["COVERAGE_CORE"], core = "ctrace", os.environ.get("COVERAGE_CORE")
        try:
            cov = coverage.Coverage(data_file=None, config_file=False)
        finally:
            os.environ.pop("COVERAGE_CORE") if core is None else os.environ.update(COVERAGE_CORE=core)
        cov.start()
        try:
            if type(sys.gettrace()).__name__ != "CTracer":
                pytest.skip(f"coverage traces with {type(sys.gettrace()).__name__}, not its C tracer")
            yield
        finally:
            cov.stop()
        return
    sys.settrace({"no-op": lambda frame, event, arg: None, "reinstalling": _reinstalling}[kind])
    try:
        yield
    finally:
        sys.settrace(previous)


@pytest.mark.parametrize("kind", ["no-op", "reinstalling", "coverage"])
def test_the_time_limit_holds_under_a_tracer(kind):
    """The time limit of a checkpoint's template holds whatever tracer is installed: a no-op, one that
    reinstalls itself when it is called (a debugger's way, coverage's C tracer's), coverage's C tracer itself
    (when coverage is installed). Without the limit the template runs 1 s to 10 s and renders."""
    messages = [{"role": "user", "content": "hi"}]
    t0 = time.perf_counter()
    with _tracer(kind), pytest.raises(ValueError, match=r"ran past the time limit of 0\.2 s"):
        chat_lib.render(LONG, messages, template_name="chat_template.jinja", max_seconds=0.2)
    assert time.perf_counter() - t0 < 1.5


def test_a_template_ending_at_the_time_limit_renders_or_is_stopped_and_nothing_escapes():
    """Templates that end about when their time limit passes give their text or the limit's error, and the
    limit's exception never reaches the code that runs after the render."""
    messages = [{"role": "user", "content": "hi"}]
    outcomes = set()
    for n in range(42):  # 0.2 ms to 4 ms of work (2,000 to 40,000 steps) under limits of 0.5 ms to 3.5 ms
        template = "{% for i in range(" + str(1 + n % 20) + ") %}{% for j in range(2000) %}{% endfor %}{% endfor %}x"
        try:
            outcomes.add(chat_lib.render(template, messages, max_seconds=0.0005 * (1 + n % 7)))
        except ValueError as e:
            assert "ran past the time limit" in str(e)
            outcomes.add("stopped")
        until = time.perf_counter() + 0.005  # past the limit: where an exception raised late would land
        try:
            while time.perf_counter() < until:
                pass
        except BaseException as e:  # the limit's own exception is not an Exception
            if isinstance(e, KeyboardInterrupt):
                raise
            outcomes.add(f"{type(e).__name__} raised after the render")
    assert outcomes <= {"x", "stopped"}


def test_a_bounded_template_renders_what_jinja_renders():
    """The limits change nothing for a template within them: the fixture's template gives transformers'
    text (the reference)."""
    with np.load(FIXTURE / "reference.npz") as f:
        want = str(f["chat_text"])
    chat = vlm.Chat.load(FIXTURE)
    assert chat.template_name == str(FIXTURE / "chat_template.jinja")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
    assert chat.render(messages) == want


# ---- the study: exit 2, one line, before any work (item 12) ---------------------------------------------------


def _tokenizer_without_markers(ckpt):
    def edit(raw):
        raw["added_tokens"] = [t for t in raw["added_tokens"] if "box" not in t["content"]]
        raw["model"]["vocab"] = {k: v for k, v in raw["model"]["vocab"].items() if "box" not in k}

    edit_json(ckpt / "tokenizer.json", edit)


def _header_length(ckpt):
    data = (ckpt / WEIGHTS).read_bytes()
    (ckpt / WEIGHTS).write_bytes(struct.pack("<Q", 2**63) + data[8:])


def _truncated(ckpt):
    data = (ckpt / WEIGHTS).read_bytes()
    (ckpt / WEIGHTS).write_bytes(data[: len(data) - 64])


def _hidden(raw):
    raw["text_config"].update(hidden_size=32, num_attention_heads=2)
    raw["vision_config"]["out_hidden_size"] = 32


def _template(text):
    def write(ckpt):
        (ckpt / "chat_template.jinja").write_text(text)

    return write


def _instances(question, answer):
    def make(ckpt):
        from PIL import Image

        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ckpt.parent / "a.png")
        line = {"image": "a.png", "question": question, "answer": answer}
        (ckpt.parent / "instances.jsonl").write_text(json.dumps(line) + "\n")
        return ["--instances", str(ckpt.parent / "instances.jsonl")]

    return make


STUDY_CASES = {
    "markers": (_tokenizer_without_markers, r"latent_start='<\|box_start\|>' is not a token of the checkpoint's"),
    "tokenizer": (
        lambda c: (c / "tokenizer.json").write_text((FIXTURE / "tokenizer.json").read_text()[:900]),
        r"tokenizer\.json: the tokenizers package cannot read it",
    ),
    "header": (_header_length, r"model\.safetensors: its header claims 9,223,372,036,854,775,808 bytes"),
    "truncated": (_truncated, r"model\.safetensors is truncated: tensor"),
    "config": (lambda c: (c / "config.json").write_text("{nope"), r"config\.json: not a JSON file"),
    "patch": (
        lambda c: edit_json(c / "preprocessor_config.json", _set("patch_size", value=0)),
        r"preprocessor_config\.json: patch_size is 0",
    ),
    "merge": (
        lambda c: edit_json(c / "preprocessor_config.json", _set("merge_size", value=1)),
        r"merge_size is 1 but config\.json's vision_config\.spatial_merge_size is 2",
    ),
    "raise": (
        _template("{{ raise_exception('images are not supported') }}"),
        r"chat_template\.jinja refused the conversation \(raise_exception\): images are not supported",
    ),
    "loop": (_template("{{ 'x' * 10**10 }}"), r"chat_template\.jinja was stopped: it repeats a str"),
    "hidden": (lambda c: edit_json(c / "config.json", _hidden), r"axis 0 is vision_config\.out_hidden_size"),
    "unknown": (
        lambda c: add_tensors(c / WEIGHTS, ["latent_head.weight"]),
        r"1 tensor\(s\) that map to no parameter.*pass --unknown-tensors ignore",
    ),
    "dtype": (
        lambda c: edit_json(c / "config.json", _set("dtype", value="float16")),
        r"stored as BF16 but config\.json's torch_dtype is 'float16'",
    ),
    "rope": (
        lambda c: edit_json(c / "config.json", _set("text_config", "rms_norm_eps", value=-1)),
        r"rms_norm_eps is -1; expected a finite number > 0",
    ),
    "answer": (_instances("What is it?", "é"), r"instances=.* line 1: the answer 'é' has no tokens"),
    "video": (_instances("What is <|video_pad|> here?", "1"), r"line 1: .*holds the video placeholder token"),
}


@pytest.mark.parametrize("case", sorted(STUDY_CASES))
def test_the_study_refuses_a_broken_checkpoint_with_exit_2_before_any_work(tmp_path, capsys, case):
    from tokdyn import cli

    break_it, match = STUDY_CASES[case]
    ckpt = copy(tmp_path)
    extra = break_it(ckpt)
    extra = extra if isinstance(extra, list) else []  # the options an instances file adds
    out = tmp_path / "out"
    small = ["--batch-size", "1", "--n-instances", "2"]  # the memory check passes anywhere
    code = cli.main(["study", "vlm-diagnostics", "--model", str(ckpt), "--out", str(out), *small, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    line = err.splitlines()[-1]  # argparse's usage above it, then the one line of the error
    assert line.startswith("tokdyn study vlm-diagnostics: error: ") and "Traceback" not in err, err
    assert f"model={str(ckpt)!r}" in line
    assert re.search(match, line), line
    assert not out.exists()  # nothing written: refused before the directory is opened


def test_the_study_loads_a_checkpoint_with_unknown_tensors_when_told_to_ignore_them(tmp_path):
    from tokdyn.studies.vlm_diagnostics import checkpoint as study_checkpoint
    from tokdyn.studies.vlm_diagnostics.config import Config

    ckpt = copy(tmp_path)
    add_tensors(ckpt / WEIGHTS, ["latent_head.weight"])
    with pytest.raises(ValueError, match="--unknown-tensors ignore"):
        study_checkpoint.check_checkpoint(Config(model=str(ckpt)))
    mcfg, _ = study_checkpoint.check_checkpoint(Config(model=str(ckpt), unknown_tensors="ignore"))
    assert mcfg == qwen2_5_vl.config.read(ckpt)
    with pytest.raises(ValueError, match="unknown_tensors"):
        Config(unknown_tensors="skip").validate()


@pytest.mark.full
def test_regenerated_image_fixtures_equal(tmp_path):
    """With transformers installed: the image files and the reference remade from scratch equal the committed
    ones."""
    pytest.importorskip("transformers")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_images", IMAGES.parent / "make_qwen2_5_vl_images.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    fresh = maker.make(tmp_path)
    with np.load(IMAGES / "reference.npz") as f:
        assert sorted(f.files) == sorted(fresh)
        for k in f.files:
            if k != "versions":
                np.testing.assert_array_equal(f[k], fresh[k])
    for path in IMAGES.iterdir():
        if path.suffix in (".png", ".tiff"):
            assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_batch_of_conversations_is_encoded_as_one_batch():
    """Chat.encode_batch: each conversation as encode gives it, padded on the side asked with the pad id asked
    (the tokenizer's by default) under a zero mask, the images' pixel rows stacked one a row and one grid;
    images of two grids, or images for some conversations only, refused naming them."""
    chat = vlm.Chat.load(FIXTURE)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (56, 56, 3), np.uint8) for _ in range(2)]
    convs = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}] for t in ("a", "a b c d e")
    ]
    one = [chat.encode(c, [im]) for c, im in zip(convs, images)]
    got = chat.encode_batch(convs, images, pad_token_id=7)
    n = [o["input_ids"].shape[1] for o in one]
    assert got["input_ids"].shape == (2, max(n)) and n[0] < n[1]
    np.testing.assert_array_equal(got["input_ids"][0, -n[0] :], one[0]["input_ids"][0])  # left-padded
    assert (got["input_ids"][0, : max(n) - n[0]] == 7).all() and got["attention_mask"][0].sum() == n[0]
    np.testing.assert_array_equal(got["pixel_values"][1], one[1]["pixel_values"])
    right = chat.encode_batch(convs, images, padding_side="right", pad_token_id=7)
    np.testing.assert_array_equal(right["input_ids"][0, : n[0]], one[0]["input_ids"][0])
    with pytest.raises(ValueError, match="one grid"):
        chat.encode_batch(convs, [images[0], rng.integers(0, 255, (112, 56, 3), np.uint8)])
    with pytest.raises(ValueError, match="every conversation"):
        chat.encode_batch(convs, [images[0], None])
    with pytest.raises(ValueError, match="padding_side"):
        chat.encode_batch(convs, images, padding_side="middle")
