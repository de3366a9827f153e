"""The training variants of the latent reasoner (:data:`VARIANTS`, a registry of :class:`Variant`):
``direct``, ``no_image``, ``text`` (caption then answer), ``latent_mirage``, ``latent_monet``,
``latent_lvr`` (latent feedback with an alignment to the helper image), ``latent`` (unsupervised
feedback), ``pause`` and ``coconut`` (a curriculum from captions to latents).

:func:`stages` splits the training steps into curriculum stages (one stage without a
curriculum), :func:`model_config` gives the model of a stage and :func:`stage_batch` masks the
caption tokens a stage has replaced by latents. Every stage of a curriculum has the same parameter
shapes, so one model continues through all of them. The losses are in
:mod:`tokdyn.models.latent.losses`.

What each variant trains: :ref:`latent-variants`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

import jax.numpy as jnp

from tokdyn import _checks
from tokdyn.models.latent import model as latent_model
from tokdyn.data import grid_tasks as tasks

if TYPE_CHECKING:
    from tokdyn.models.latent.config import Config


@dataclasses.dataclass(frozen=True)
class Variant:
    """What a training variant changes (static).

    Attributes:
      latent_mode: the model's latent mode, "none", "feedback" or "pause".
      caption: whether the caption is part of the sequence (and trained).
      align: the alignment loss of the latents to the helper image (None, "mirage", "monet", "lvr").
      use_image: False gives the model an empty image.
      curriculum: whether captions are replaced by latents stage by stage.
    """

    latent_mode: str = "none"
    caption: bool = False
    align: Optional[str] = None
    use_image: bool = True
    curriculum: bool = False


VARIANTS = {
    "direct": Variant(),
    "no_image": Variant(use_image=False),
    "text": Variant(caption=True),
    "latent_mirage": Variant(latent_mode="feedback", align="mirage"),
    "latent_monet": Variant(latent_mode="feedback", align="monet"),
    "latent_lvr": Variant(latent_mode="feedback", align="lvr"),
    "latent": Variant(latent_mode="feedback"),
    "pause": Variant(latent_mode="pause"),
    "coconut": Variant(latent_mode="feedback", caption=True, curriculum=True),
}


def variant(name: str) -> Variant:
    """The registered variant ``name`` (ValueError naming the choices otherwise)."""
    _checks.choice("variant", name, VARIANTS)
    return VARIANTS[name]


def stages(cfg: Config, name: str) -> list[tuple[int, int, int]]:
    """(n_latents, caption tokens dropped, steps) per curriculum stage (one stage without curriculum).
    Stage boundaries fall on multiples of ``cfg.train.steps_per_call``."""
    v = variant(name)
    if not v.curriculum:
        return [(cfg.n_latents if v.latent_mode != "none" else 0, 0, cfg.train.steps)]
    s, k = cfg.curriculum_stages, cfg.task.caption_len
    per = cfg.train.calls
    cuts = [round(per * i / (s + 1)) * cfg.train.steps_per_call for i in range(s + 2)]
    return [(round(cfg.n_latents * i / s), round(k * i / s), cuts[i + 1] - cuts[i]) for i in range(s + 1)]


def model_config(cfg: Config, name: str, stage: int = -1) -> latent_model.Config:
    """The model of variant ``name`` at curriculum ``stage`` (default: the last, the trained model)."""
    v = variant(name)
    n_lat = stages(cfg, name)[stage][0]
    mode = v.latent_mode if n_lat else "none"
    text = tasks.QUESTION_LEN + cfg.n_latents + 2 + cfg.task.caption_len + 1 if v.curriculum else 0
    return latent_model.Config(
        task=cfg.task,
        width=cfg.width,
        depth=cfg.depth,
        heads=cfg.heads,
        latent_mode=mode,
        n_latents=n_lat,
        caption_len=cfg.task.caption_len if v.caption else 0,
        projection=cfg.projection,
        use_image=v.use_image,
        text_positions=text,
    ).validate()


def dropped_captions(cfg: Config, name: str, stage: int = -1) -> int:
    """How many leading caption tokens stage ``stage`` replaces by latents (tokens it does not train)."""
    return stages(cfg, name)[stage][1]


def stage_batch(batch: tasks.Instance, dropped: int, pad: int) -> tasks.Instance:
    """``batch`` with its first ``dropped`` caption tokens set to ``pad`` (the tokens a curriculum
    stage has replaced by latents)."""
    if dropped and batch.caption.shape[-1]:
        # jnp.asarray: a batch of NumPy arrays (what tasks.splits returns) is edited as a JAX one is
        return dataclasses.replace(batch, caption=jnp.asarray(batch.caption).at[:, :dropped].set(pad))
    return batch
