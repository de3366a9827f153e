"""The checkpoint families' registry (tokdyn.models.families): a checkpoint's family found from its config.json,
every family package exposing the names its docstring's table lists (all that the diagnostics and the
vlm-diagnostics study reach through a family; :func:`lacks`, which tests/test_standin_family.py runs on a family
of its own design, registered under another model_type, before it runs the study on it), every family's tiny checkpoint detected and loaded by its family, no family
importing another, a checkpoint of a
model_type tokdyn does not read refused with exit 2 before any work, and the Qwen2.5-VL modules that moved into
the family's package still reachable under their old names (deprecated, warning)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import shutil
import typing
import warnings
from pathlib import Path

import pytest

from tokdyn.models import families
from tokdyn.models.vlm.family import LOOP

TINY = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
CHECKPOINTS = {"qwen2_5_vl": TINY, "qwen3_vl": Path(__file__).parent / "fixtures" / "qwen3_vl_tiny"}
"""A tiny checkpoint of every family (the registry's keys)."""
NAMES = "['qwen2_5_vl', 'qwen3_vl']"  # the families as the refusals list them
# the names of tokdyn.models.families' table: the package's own, then those of its modules ("config": the
# module config) and of its classes ("Config": the class), a class's own including its dataclass fields
PACKAGE = (
    "load",
    "Model",
    "Config",
    "config",
    "checkpoint",
    "model",
    "ImageProcessor",
    "processor",
    "vision",
    "adapter",
    "probes",
)
MODULES = {
    "config": ("read", "sizes"),
    "checkpoint": ("inspect", "files"),
    "model": LOOP,
    "processor": ("load_image", "as_rgb", "resize"),
    "vision": ("plan",),
    "adapter": ("Layout", "prompt", "layout", "make_batch", "make_apply", "image_features", "noised_pixels", "NOISES"),
    "probes": ("vision_taps", "raster_order"),
}
CLASSES = {
    "Model": ("config", "params", "generate", "__call__"),
    "Config": (
        "vision",
        "text",
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
        "eos_token_id",
    ),
    "ImageProcessor": (
        "read",
        "__call__",
        "patch_size",
        "merge_size",
        "min_pixels",
        "max_pixels",
        "target_size",
        "check_model",
    ),
}
CONFIG_PARTS = {
    "vision": ("patch_size", "spatial_merge_size", "patch_dim"),
    "text": ("hidden_size", "vocab_size", "num_hidden_layers"),
}
LAYOUT = ("image", "latents", "markers", "answer", "length")  # the fields of adapter.Layout, built by name


def members(obj) -> set:
    """The names ``obj`` has: its attributes, and a dataclass's fields (which a class need not hold)."""
    out = set(dir(obj))
    if dataclasses.is_dataclass(obj):
        out |= {f.name for f in dataclasses.fields(obj)}
    return out


def test_every_family_has_a_checkpoint_here():
    assert set(CHECKPOINTS) == set(families.FAMILIES)
    assert NAMES == str(sorted(families.FAMILIES))


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_detect_reads_the_model_type_and_load_uses_its_family(name):
    path = CHECKPOINTS[name]
    assert families.detect(path) == name
    model = families.load(path, dtype="float32")
    assert isinstance(model, families.family(name).Model) and families.family_of(model) is families.family(name)
    assert model.config.text.vocab_size == json.loads((path / "config.json").read_text())["text_config"]["vocab_size"]
    assert model.generation_config is not None  # generation_config.json read with the weights


def test_no_family_imports_another():
    """A family package imports the shared layers (tokdyn.models.vlm, tokdyn.models.blocks), never another
    family: every import of every module of each family, read from the source (lazy ones included)."""
    import ast

    packages = sorted(families.FAMILIES.values())
    for package in packages:
        folder = Path(importlib.import_module(package).__file__).parent
        others = [p for p in packages if p != package]
        for path in sorted(folder.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                bad = [n for n in names if any(n == o or n.startswith(o + ".") for o in others)]
                assert not bad, (
                    f"{path} imports {bad}: a family never imports another (share through tokdyn.models.vlm)"
                )


def lacks(package) -> list:
    """The names of the table that the family package ``package`` lacks (``"part.name"`` for a module's or a
    class's), its loop's functions checked by :func:`tokdyn.models.vlm.family.check` too."""
    from tokdyn.models.vlm import family as family_lib

    missing = [n for n in PACKAGE if not hasattr(package, n)]
    for part, names in {**MODULES, **CLASSES}.items():
        missing += [f"{part}.{n}" for n in names if n not in members(getattr(package, part, None))]
    hints = typing.get_type_hints(package.Config)
    for part, names in CONFIG_PARTS.items():
        missing += [f"Config.{part}.{n}" for n in names if n not in members(hints[part])]
    layout = getattr(getattr(package, "adapter", None), "Layout", None)
    fields = {f.name for f in dataclasses.fields(layout)} if dataclasses.is_dataclass(layout) else set()
    missing += [f"adapter.Layout.{n}" for n in LAYOUT if n not in fields]
    if not dataclasses.is_dataclass(getattr(package, "ImageProcessor", None)):
        missing.append("ImageProcessor as a dataclass")  # the study widens its pixel bounds by replace
    try:
        family_lib.check(package)
    except TypeError as e:
        missing.append(str(e))
    return missing


@pytest.mark.parametrize("name", sorted(families.FAMILIES))
def test_every_family_exposes_the_contract(name):
    assert not lacks(families.family(name)), f"{name} lacks {lacks(families.family(name))}"


def test_the_contract_is_the_docstring_table():
    # every name checked above is one the table of tokdyn.models.families names: a row's first column (the
    # package's names) or a literal of its row (the names inside it)
    rows = {}
    lines = families.__doc__.splitlines()
    top, bottom = [i for i, line in enumerate(lines) if line.startswith("====")]
    for line in lines[top + 1 : bottom]:
        head, text = line[:29].strip(), line[29:]
        if head:
            key = re.match(r"``(\w+)", head).group(1)
        rows[key] = rows.get(key, "") + " " + head + " " + text
    assert set(rows) == set(PACKAGE), sorted(rows)
    words = {k: set(re.findall(r"\w+", " ".join(re.findall(r"``(.+?)``", v)))) for k, v in rows.items()}
    for part, names in {**MODULES, **CLASSES}.items():
        missing = [n for n in names if n not in words[part] and n != "__call__"]
        assert not missing, (part, missing)
    assert {n for names in CONFIG_PARTS.values() for n in names} <= words["Config"]
    assert set(LAYOUT) <= words["adapter"]


def test_a_checkpoint_of_a_model_type_tokdyn_does_not_read_exits_2_before_any_work(tmp_path, capsys):
    from tokdyn import cli

    ckpt = tmp_path / "ckpt"
    shutil.copytree(TINY, ckpt)
    raw = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(dict(raw, model_type="llava")))
    out = tmp_path / "out"
    code = cli.main(["study", "vlm-diagnostics", "--model", str(ckpt), "--out", str(out), "--batch-size", "1"])
    err = capsys.readouterr().err.strip()
    line = err.splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err
    assert f"model={str(ckpt)!r}" in line and str(ckpt / "config.json") in line
    assert f"model_type 'llava' is not a family tokdyn reads; the families are {NAMES}" in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    "content, match",
    [
        (
            '{"model_type": "llava"}',
            r"model_type 'llava' is not a family tokdyn reads; the families are \['qwen2_5_vl', 'qwen3_vl'\]",
        ),
        ("{not json", "not a JSON file"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"model_type": ["qwen2_5_vl"]}', r"model_type \['qwen2_5_vl'\] is not a family tokdyn reads"),
        ('{"model_type": {"a": 1}}', r"model_type \{'a': 1\} is not a family tokdyn reads"),
    ],
)
def test_detect_names_the_file_and_what_is_wrong(tmp_path, content, match):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        families.detect(tmp_path)
    assert str(tmp_path / "config.json") in str(e.value)
    with pytest.raises(ValueError, match="model family 'llava' is not one tokdyn reads"):
        families.family("llava")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        families.detect(tmp_path / "missing")


@pytest.mark.parametrize(
    "old, new",
    [
        ("qwen2_5_vl_apply", "tokdyn.models.qwen2_5_vl.adapter"),
        ("qwen2_5_vl_probes", "tokdyn.models.qwen2_5_vl.probes"),
        ("qwen2_5_vl_analyses", "tokdyn.diagnostics.vlm"),
    ],
)
def test_moved_modules_keep_their_old_names_with_a_dated_warning(old, new):

    import tokdyn.models

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = getattr(tokdyn.models, old)
    assert module is importlib.import_module(new)
    (w,) = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert f"tokdyn.models.{old} is deprecated: use {new}" in str(w.message) and "removed in 0.2.0" in str(w.message)
