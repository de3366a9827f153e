"""The checkpoint families' registry (tokdyn.models.families): a checkpoint's family found from its config.json,
every family package exposing the names the studies and analyses use, and the Qwen2.5-VL modules that moved into
the family's package still reachable under their old names (deprecated, warning)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from tokdyn.models import families

TINY = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
CONTRACT = ("load", "Config", "Chat", "ImageProcessor", "config", "adapter", "probes", "generation")
ADAPTER = ("prompt", "layout", "make_batch", "make_apply", "noised_pixels", "Layout")


def test_detect_reads_the_model_type_and_load_uses_its_family():
    assert families.detect(TINY) == "qwen2_5_vl"
    model = families.load(TINY, dtype="float32")
    assert model.config.text.vocab_size == json.loads((TINY / "config.json").read_text())["text_config"]["vocab_size"]


@pytest.mark.parametrize("name", sorted(families.FAMILIES))
def test_every_family_exposes_the_contract(name):
    package = families.family(name)
    missing = [n for n in CONTRACT if not hasattr(package, n)]
    assert not missing, f"{name} lacks {missing}"
    assert not [n for n in ADAPTER if not hasattr(package.adapter, n)]


@pytest.mark.parametrize(
    "content, match",
    [
        (
            '{"model_type": "llava"}',
            r"model_type 'llava' is not a family tokdyn reads; the families are \['qwen2_5_vl'\]",
        ),
        ("{not json", "not a JSON file"),
        ("[1, 2]", "expected a JSON object, got list"),
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
    import importlib

    import tokdyn.models

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = getattr(tokdyn.models, old)
    assert module is importlib.import_module(new)
    (w,) = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert f"tokdyn.models.{old} is deprecated: use {new}" in str(w.message) and "removed in 0.2.0" in str(w.message)
