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


def test_logits_equal_transformers(model, ref):
    """Text-only, two images with text, and a left-padded batch: logits equal the reference's in float32."""
    check_against(model, ref)
