"""What the analyses of :mod:`tokdyn.diagnostics.vlm` hold static about a checkpoint family's model: a
:class:`Subject` (the model's configuration, the prompts' layout, the image grid and the family), the batch
helpers every analysis shares (:func:`encoded`, :func:`with_image`, :func:`with_latents`,
:func:`without_latents`) and the checks they run in plain Python before anything compiles
(:func:`check_batch`, :func:`check_answers`, :func:`check_noises`).

A family is a package listed in :data:`tokdyn.models.families.FAMILIES` (Qwen2.5-VL:
:mod:`tokdyn.models.qwen2_5_vl`, Qwen3-VL: :mod:`tokdyn.models.qwen3_vl`); the analyses reach its model only
through its ``adapter`` module (``Layout``, ``make_apply``, ``image_features``, ``noised_pixels``, ``NOISES``) and
its ``ImageProcessor``, never through a class of one family (:func:`family_of` finds the family of a
configuration).
"""

from __future__ import annotations

import dataclasses
import functools
from types import ModuleType
from typing import Optional

import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.models import families
from tokdyn.models.vlm.adapter import ENCODED


family_of = families.family_of
"""The family package of a configuration or image processor (:func:`tokdyn.models.families.family_of`)."""


@dataclasses.dataclass(frozen=True)
class Subject:
    """A model's configuration, image grid and prompt layout, and its family: what the analyses hold static.

    Attributes:
      config: the model's configuration (for Qwen2.5-VL a :class:`tokdyn.models.qwen2_5_vl.Config`).
      layout: the prompts' ``Layout`` from the family's adapter (every row the same).
      grid: the images' grid ``(1, h, w)`` (one image per row, all of one grid).
      family: the family's package (:func:`family_of`), whose ``adapter`` builds the ``apply``.
    """

    config: object
    layout: object
    grid: tuple
    family: ModuleType

    @property
    def adapter(self) -> ModuleType:
        """The family's ``apply`` adapter module (:mod:`tokdyn.models.qwen2_5_vl.adapter` for Qwen2.5-VL)."""
        return self.family.adapter

    @functools.cached_property
    def apply(self):
        """The protocol's ``apply`` of this subject (the adapter's ``make_apply``)."""
        return self.adapter.make_apply(self.config, np.asarray([self.grid]), self.layout)


def subject(config, image_grid_thw, layout, family: Optional[ModuleType] = None) -> Subject:
    """The :class:`Subject` of a model ``config``, an image grid ([[1, h, w]]) and a prompt ``layout`` (the
    family adapter's ``layout(...)``); ``family`` defaults to the family that defines ``config``'s type."""
    fam = family_of(config) if family is None else family
    if not isinstance(fam, ModuleType) or not hasattr(fam, "adapter"):
        raise TypeError(f"family must be a checkpoint family's package (tokdyn.models.families.family), got {fam!r}")
    if not isinstance(config, fam.Config):
        raise TypeError(f"config must be a {fam.__name__} Config, got {type(config).__name__}")
    if not isinstance(layout, fam.adapter.Layout):
        raise TypeError(f"layout must be a {fam.__name__}.adapter.Layout, got {type(layout).__name__}")
    grid = np.asarray(image_grid_thw).reshape(-1, 3)
    if len(grid) < 1 or (grid != grid[0]).any():
        raise ValueError(f"image_grid_thw must be one grid [[1, h, w]] for every row, got {grid.tolist()}")
    out = Subject(config, layout, tuple(int(g) for g in grid[0]), fam)
    out.apply  # noqa: B018 (made now, outside any trace)
    return out


def encoded(subject: Subject, params, batch: dict) -> dict:
    """``batch`` with its images encoded once (the adapter's ``image_features``): every call of an analysis on
    it then skips the vision tower. A batch that already holds ``"image_features"`` is returned as it is (they
    must be those of its ``"pixel_values"``). Traceable."""
    if "image_features" in batch:
        return batch
    return subject.adapter.image_features(subject.config, params, batch, np.asarray([subject.grid]))


def with_image(subject: Subject, params, batch: dict, pixel_values) -> dict:
    """``batch`` with other pixel rows (B, patches, patch_dim), encoded once (what the old ones' encoding added,
    :data:`tokdyn.models.vlm.adapter.ENCODED`, dropped first). Traceable."""
    fresh = {k: v for k, v in batch.items() if k not in ENCODED}
    return encoded(subject, params, {**fresh, "pixel_values": pixel_values})


def with_latents(batch: dict, latents) -> dict:
    """``batch`` holding ``latents`` (B, L, D) as each instance's own latents (``apply`` writes them at the
    slots when it is given no ``latents=``)."""
    return {**batch, "latents": latents}


def without_latents(batch: dict) -> dict:
    """``batch`` without its own latents (the slots then hold their fill token's embedding)."""
    return {k: v for k, v in batch.items() if k != "latents"}


# ---------------------------------------------------------------------------------------------- checks


def check_subject(subj) -> Subject:
    """``subj`` when it is a :class:`Subject`, else a TypeError naming what to pass."""
    if not isinstance(subj, Subject):
        raise TypeError(f"subject must be a tokdyn.diagnostics.vlm.Subject (subject(...)), got {subj!r}")
    return subj


def check_batch(subj: Subject, batch, *, block: str = "") -> int:
    """Check ``batch`` (from the adapter's ``make_batch``, optionally with its own ``"latents"``) against
    ``subj`` before compiling; ``block``: why the analysis needs a latent block ("" when it does not).
    Returns B. Raises ValueError/TypeError naming the argument."""
    check_subject(subj)
    lay, cfg = subj.layout, subj.config
    need = ("input_ids", "attention_mask", "positions", "pixel_values")
    if not isinstance(batch, dict) or any(k not in batch for k in need):
        raise TypeError(f"batch must be a dict with {list(need)} (the adapter's make_batch), got {type(batch)}")
    shape = tuple(jnp.shape(batch["input_ids"]))
    if len(shape) != 2 or shape[1] != lay.length:
        raise ValueError(f"batch['input_ids'] must be (B, T) with T = {lay.length} (the layout's), got {shape}")
    b = shape[0]
    patches = int(np.prod(subj.grid))
    want = (b, patches, cfg.vision.patch_dim)
    if tuple(jnp.shape(batch["pixel_values"])) != want:
        raise ValueError(
            f"batch['pixel_values'] must be (B, patches, patch_dim) = {want} for the grid {subj.grid}, "
            f"got {tuple(jnp.shape(batch['pixel_values']))}"
        )
    if "image_features" in batch:
        want = (b, len(lay.image), cfg.text.hidden_size)
        if tuple(jnp.shape(batch["image_features"])) != want:
            raise ValueError(
                f"batch['image_features'] must be (B, image tokens, D) = {want}, "
                f"got {tuple(jnp.shape(batch['image_features']))}"
            )
    if "latents" in batch:
        want = (b, len(lay.latents), cfg.text.hidden_size)
        if tuple(jnp.shape(batch["latents"])) != want:
            raise ValueError(f"batch['latents'] must be (B, L, D) = {want}, got {tuple(jnp.shape(batch['latents']))}")
    if block and not lay.latents:
        raise ValueError(f"layout must have a latent block (start_id and end_id in the adapter's layout) for {block}")
    return b


def check_answers(answers, b: int, vocab: int, optional: bool = False) -> None:
    """Check ``answers``, (B,) = (``b``,) integer token ids below ``vocab`` (None allowed when ``optional``)."""
    if answers is None:
        if optional:
            return
        raise ValueError(f"answers must be given, (B,) = ({b},) correct token ids, got None")
    if tuple(jnp.shape(answers)) != (b,):
        raise ValueError(f"answers must be (B,) = ({b},) token ids, got shape {tuple(jnp.shape(answers))}")
    if not jnp.issubdtype(_checks.dtype_of(answers), jnp.integer):
        raise TypeError(f"answers must be integer token ids, got dtype {_checks.dtype_of(answers)}")
    if _checks.on_host(answers):
        _checks.real("answers", np.asarray(answers), low=0, high=vocab - 1)


def check_noises(noises, allowed) -> tuple:
    """``noises`` as a tuple of ``(kind, level)`` pairs, each kind one of ``allowed`` (the adapter's
    ``NOISES``) and each level >= 0; at least one."""
    try:
        out = tuple((str(k), float(v)) for k, v in noises)
    except (TypeError, ValueError):
        raise TypeError(f"noises must be (kind, level) pairs, got {noises!r}") from None
    if not out:
        raise ValueError("noises must name at least one (kind, level), got ()")
    for kind, level in out:
        _checks.choice("noise kind", kind, allowed)
        _checks.real("noise level", level, low=0.0)
    return out


__all__ = [
    "Subject",
    "check_answers",
    "check_batch",
    "check_noises",
    "check_subject",
    "encoded",
    "family_of",
    "subject",
    "with_image",
    "with_latents",
    "without_latents",
]
