"""The configuration readers both Qwen-VL families share (``tokdyn.models.blocks.fields``), through each family's
``config.read``: the dtype the weights were saved in read as ``transformers`` reads it (``dtype``, else the older
``torch_dtype``, a null one skipped), on copies of the tiny fixtures' ``config.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokdyn.models import qwen2_5_vl, qwen3_vl

FIXTURES = Path(__file__).parent / "fixtures"
FAMILIES = {"qwen2_5_vl": (qwen2_5_vl, "qwen2_5_vl_tiny"), "qwen3_vl": (qwen3_vl, "qwen3_vl_tiny")}


def null_dtype(tmp_path: Path, fixture: str) -> Path:
    """The fixture's config.json with ``dtype`` null and ``torch_dtype`` float16 (its weights say bfloat16: only
    the configuration is read here)."""
    raw = json.loads((FIXTURES / fixture / "config.json").read_text())
    raw.update(dtype=None, torch_dtype="float16")
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return tmp_path


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_null_dtype_gives_way_to_torch_dtype(tmp_path, family):
    """transformers' PretrainedConfig takes ``dtype`` when it is not None, else ``torch_dtype``: a config.json
    whose dtype is null and torch_dtype float16 states float16 (the full test below asks transformers)."""
    module, fixture = FAMILIES[family]
    assert module.config.read(null_dtype(tmp_path, fixture)).dtype == "float16"
    assert module.config.read(FIXTURES / fixture).dtype == "bfloat16"


@pytest.mark.full  # the default test above holds both families to the rule this asks transformers for
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_dtype_is_the_one_transformers_reads(tmp_path, family):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    module, fixture = FAMILIES[family]
    directory = null_dtype(tmp_path, fixture)
    theirs = transformers.AutoConfig.from_pretrained(directory).dtype
    assert str(theirs) == f"torch.{module.config.read(directory).dtype}"
