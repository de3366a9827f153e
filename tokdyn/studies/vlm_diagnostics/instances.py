"""The study's instances: images with a question and a known answer. Rendered sprite scenes
(:func:`scene_instances`: "How many objects are in the image?", the answer the number of visible objects,
the object masks kept for the perception analysis) or a user's JSONL file (:func:`read_jsonl`: one
``{"image": path, "question": str, "answer": str}`` per line, a bad line refused naming its number).
:func:`encode` turns them into fixed-shape groups of prompts (:class:`Group`), one group per layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from tokdyn.data import scenes
from tokdyn.models import qwen2_5_vl
from tokdyn.models.qwen2_5_vl import adapter as qa

QUESTION = "How many objects are in the image? Answer with one digit."
KEYS = ("image", "question", "answer")


@dataclasses.dataclass(frozen=True)
class Instances:
    """Images with questions and answers.

    Attributes:
      images: list of (H, W, 3) uint8 images.
      questions: list of str.
      answers: list of str.
      masks: (n, H, W) int segment ids (0 the background) of rendered scenes, or None.
      source: where they come from (the JSONL path, or "scenes").
    """

    images: list
    questions: list
    answers: list
    masks: Optional[np.ndarray]
    source: str

    def __len__(self) -> int:
        return len(self.images)


def scene_instances(key, n: int, *, size: int, max_objects: int) -> Instances:
    """``n`` sprite scenes (:func:`tokdyn.data.scenes.sprite_scenes`, 1 to ``max_objects`` objects) asking
    how many objects each holds; the answer counts the objects with a visible pixel."""
    low = min(0.3, 0.9 / max(1.0, max_objects**0.5))
    s = scenes.sprite_scenes(key, n, size=size, min_objects=1, max_objects=max_objects, scale=(low, min(1.0, 2 * low)))
    images = [np.round(np.asarray(im, np.float64) * 255).astype(np.uint8) for im in np.asarray(s.images)]
    counts = (np.asarray(s.visible) > 0).sum(1)
    return Instances(images, [QUESTION] * n, [str(int(c)) for c in counts], np.asarray(s.masks), "scenes")


def read_jsonl(path: str, limit: int = 0) -> Instances:
    """The instances of the JSONL file at ``path`` (the first ``limit`` lines; 0: all). Each line is a
    JSON object with ``image`` (a path, relative to the file's folder unless absolute), ``question`` and
    ``answer`` (non-empty strings); blank lines are skipped. ``ValueError`` naming the line and what is
    wrong with it (not JSON, a missing or empty key, an image that cannot be read)."""
    from PIL import Image

    base = Path(path).resolve().parent
    images, questions, answers = [], [], []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"instances={path!r} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f'{where} is not JSON ({e.msg}): expected {{"image": ..., "question": ..., "answer": ...}}'
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{where} must be a JSON object with keys {', '.join(KEYS)}, got {type(row).__name__}")
        for k in KEYS:
            if not isinstance(row.get(k), str) or not row[k].strip():
                raise ValueError(f"{where} needs a non-empty string {k!r}, got {row.get(k)!r}")
        image_path = Path(row["image"]) if Path(row["image"]).is_absolute() else base / row["image"]
        try:
            with Image.open(image_path) as im:
                images.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: the image {str(image_path)!r} cannot be read ({e})") from None
        questions.append(row["question"].strip())
        answers.append(row["answer"].strip())
        if limit and len(images) == limit:
            break
    if not images:
        raise ValueError(f"instances={path!r} holds no instances (one JSON object a line)")
    return Instances(images, questions, answers, None, str(path))


def make_instances(cfg) -> Instances:
    """The configuration's instances: ``cfg.instances`` read, or ``cfg.n_instances`` rendered scenes from
    ``fold_in(key(root_seed), 0)``."""
    if cfg.instances:
        return read_jsonl(cfg.instances, cfg.n_instances)
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), 0)
    return scene_instances(key, cfg.n_instances, size=cfg.scene_size, max_objects=cfg.max_objects)


@dataclasses.dataclass(frozen=True)
class Group:
    """Instances whose prompts share one layout, as arrays (G instances).

    Attributes:
      index: (G,) the instances' indices.
      plain: (G, T0) ids of the prompt followed by the answer's tokens (teacher-forced: the grounding score).
      block: (G, T1) ids of the prompt followed by the latent block (the latent analyses).
      answer_ids: (G, A) the answer's token ids.
      pixels: (G, patches, patch_dim) float32 pixel rows.
      grid: (1, 3) the images' grid.
      prompt_length: the prompt's length (the answer's tokens start there in ``plain``).
    """

    index: np.ndarray
    plain: np.ndarray
    block: np.ndarray
    answer_ids: np.ndarray
    pixels: np.ndarray
    grid: np.ndarray
    prompt_length: int

    @property
    def name(self) -> str:
        """The group's name in part names: its two lengths and the answer's."""
        return f"T{self.plain.shape[1]}-A{self.answer_ids.shape[1]}-L{self.block.shape[1]}"


def resized(instances: Instances, side: int) -> list:
    """Every image resized to ``side`` x ``side`` (Pillow's bicubic, as the processor resizes)."""
    return [qwen2_5_vl.processor.resize(im, side, side) for im in instances.images]


def encode(instances: Instances, loaded, cfg) -> list:
    """The instances as :class:`Group` s of one layout each (prompt length, answer length), in order of
    their first instance."""
    mcfg = loaded.config
    images = resized(instances, cfg.image_size)
    n_image = (cfg.image_size // mcfg.vision.patch_size) ** 2 // mcfg.vision.spatial_merge_size**2
    rows = {}
    for i, (q, a) in enumerate(zip(instances.questions, instances.answers)):
        p = loaded.tokens.prompt(mcfg, q, n_image)
        ans = loaded.tokens.answer(a)
        rows.setdefault((len(p), len(ans)), []).append((i, p, ans))
    groups = []
    t = loaded.tokens
    for (_, _), members in rows.items():
        index = np.asarray([m[0] for m in members])
        prompts = np.stack([m[1] for m in members])
        answers = np.stack([m[2] for m in members])
        block = np.stack([qa.prompt(p, [], cfg.n_latents, t.start, t.end, t.fill) for p in prompts])
        px = [loaded.processor(images[i]) for i in index]
        grid = px[0]["image_grid_thw"]
        pixels = np.stack([x["pixel_values"] for x in px]).astype(np.float32)
        plain = np.concatenate([prompts, answers], axis=1)
        groups.append(Group(index, plain, block, answers, pixels, grid, prompts.shape[1]))
    return groups


__all__ = [
    "Group",
    "Instances",
    "KEYS",
    "QUESTION",
    "encode",
    "make_instances",
    "read_jsonl",
    "resized",
    "scene_instances",
]
