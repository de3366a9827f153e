"""The study's instances: images with a question and a known answer. Rendered sprite scenes
(:func:`scene_instances`: "How many objects are in the image?", the answer the number of visible objects,
the object masks kept for the perception analysis) or a user's JSONL files (:func:`read_jsonl`: one
``{"image": path, "question": str, "answer": str}`` per line, or a multiple-choice line
``{"image": path, "question": str, "options": [str, ...], "answer": "B"}`` as V* Bench and HR-Bench lay
them out, the answer a letter or an option's text; a bad line refused naming its number).
:func:`encode` turns them into fixed-shape groups of prompts (:class:`Group`): every prompt padded to one
length bucket (:func:`bucket`), so that an analysis compiles once however long its questions are."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Optional

import jax
import numpy as np

from tokdyn.data import scenes
from tokdyn.diagnostics import choices
from tokdyn.models import families
from tokdyn.studies.vlm_diagnostics.config import DEFAULT_SCENES, TINY_FAMILY

QUESTION = "How many objects are in the image? Answer with one digit."
KEYS = ("image", "question", "answer")
PAD_ID = 0  # the id of the padding inside prompts and after answers: masked out, never read
TEXT_FLOOR = 32  # the least bucket of a prompt's text (its tokens but the image's)


@dataclasses.dataclass(frozen=True)
class Instances:
    """Images with questions and answers.

    Attributes:
      images: list of (H, W, 3) uint8 images.
      questions: list of str (as written; a multiple-choice prompt adds its options, :meth:`prompt`).
      answers: list of str (a multiple-choice answer as its option's letter).
      masks: (n, H, W) int segment ids (0 the background) of rendered scenes, or None.
      source: where they come from (the JSONL paths, comma-separated, or "scenes").
      options: per instance, its options (a tuple of str) or None (an open question); None: all open.
      files: per instance, the benchmark it comes from (its JSONL file's name without the suffix; "scenes").
      digests: per instance, the SHA-256 of its image file's bytes (None for rendered scenes).
      n_choices: the number of possible answers of a rendered scene's question (its chance level is 1 / this;
        0: none stated).
    """

    images: list
    questions: list
    answers: list
    masks: Optional[np.ndarray]
    source: str
    options: Optional[list] = None
    files: Optional[list] = None
    digests: Optional[list] = None
    n_choices: int = 0

    def __len__(self) -> int:
        return len(self.images)

    def options_of(self, i: int) -> Optional[tuple]:
        """Instance ``i``'s options (None for an open question)."""
        return None if self.options is None else self.options[i]

    def prompt(self, i: int) -> str:
        """The question put to the model for instance ``i``: the question, or the multiple-choice prompt of
        its options (:func:`tokdyn.diagnostics.choices.prompt`)."""
        opts = self.options_of(i)
        return self.questions[i] if opts is None else choices.prompt(self.questions[i], opts)

    def file_of(self, i: int) -> str:
        """The benchmark (file) instance ``i`` comes from."""
        return self.source if self.files is None else self.files[i]

    def chance(self, i: int) -> float:
        """The chance level of instance ``i``'s answer: 1 / its options, 1 / :attr:`n_choices` for a scene, NaN
        for an open question."""
        opts = self.options_of(i)
        if opts is not None:
            return 1.0 / len(opts)
        return 1.0 / self.n_choices if self.n_choices else float("nan")


def scene_instances(key, n: int, *, size: int, max_objects: int) -> Instances:
    """``n`` sprite scenes (:func:`tokdyn.data.scenes.sprite_scenes`, 1 to ``max_objects`` objects) asking
    how many objects each holds; the answer counts the objects with a visible pixel."""
    low = min(0.3, 0.9 / max(1.0, max_objects**0.5))
    s = scenes.sprite_scenes(key, n, size=size, min_objects=1, max_objects=max_objects, scale=(low, min(1.0, 2 * low)))
    images = [np.round(np.asarray(im, np.float64) * 255).astype(np.uint8) for im in np.asarray(s.images)]
    counts = (np.asarray(s.visible) > 0).sum(1)
    return Instances(
        images,
        [QUESTION] * n,
        [str(int(c)) for c in counts],
        np.asarray(s.masks),
        "scenes",
        files=["scenes"] * n,
        n_choices=max_objects,
    )


def file_sha256(path) -> str:
    """The SHA-256 (hex) of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def image_family(family: Optional[ModuleType]) -> ModuleType:
    """``family`` (a checkpoint family's package, whose ``processor`` reads and resizes the images), or, for
    None, the tiny random model's (:data:`~tokdyn.studies.vlm_diagnostics.config.TINY_FAMILY`)."""
    return families.family(TINY_FAMILY) if family is None else family


def read_lines(path, strict: bool = True) -> list:
    """The lines of the UTF-8 text file at ``path`` (split at ``\\n``, ``\\r\\n`` or ``\\r``; a leading
    byte-order mark dropped). ``strict``: a line that is not UTF-8 is refused with a ``ValueError`` naming the
    file, the line and the byte; else it reads as None (for a reader that leaves the refusal to
    :func:`read_jsonl`)."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out = []
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            if strict:
                raise ValueError(
                    f"instances={str(path)!r} line {number} is not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                    f"{e.start + 1}): an instances file is UTF-8 text; save it as UTF-8"
                ) from None
            out.append(None)
    return out


def read_jsonl(path: str, limit: int = 0, family: Optional[ModuleType] = None) -> Instances:
    """The instances of the JSONL file at ``path`` (the first ``limit`` lines; 0: all). Each line is a
    JSON object with ``image`` (a path, relative to the file's folder unless absolute), ``question`` and
    ``answer`` (non-empty strings) and, for a multiple-choice question, ``options`` (a list of 2 to 26
    non-empty strings, each on one line, no two the same; the answer then an option's letter, ``"B"``, or its
    text, not both for two different options); blank lines are skipped. ``ValueError`` naming the file, the
    line, the field, the value and what is allowed (a file that is not UTF-8, a line that is not JSON, a
    missing or empty key, options that are not such a list (:func:`tokdyn.diagnostics.choices.check_options`),
    an answer that is no option or an ambiguous one (:func:`tokdyn.diagnostics.choices.answer_letter`), an
    image that does not exist, is a directory or cannot be read). Images are read as
    ``transformers`` reads them (the ``processor.load_image`` of ``family``, the checkpoint's family; default
    :func:`image_family`'s; Qwen2.5-VL's :func:`tokdyn.models.qwen2_5_vl.processor.load_image`: EXIF
    orientation, transparency composited on white; more than 8 bits a channel, or a decompression bomb,
    refused)."""
    load_image = image_family(family).processor.load_image
    base = Path(path).resolve().parent
    images, questions, answers, options, digests = [], [], [], [], []
    for number, line in enumerate(read_lines(path), 1):
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
        opts, answer = None, row["answer"].strip()
        if "options" in row:
            opts = choices.check_options(row["options"], f"{where}: options")
            answer = choices.answer_letter(answer, opts, f"{where}: answer")
        image_path = Path(row["image"]) if Path(row["image"]).is_absolute() else base / row["image"]
        if not image_path.exists() or image_path.is_dir():
            raise ValueError(
                f"{where}: the image {row['image']!r} ({str(image_path)!r}) "
                f"{'is a directory' if image_path.is_dir() else 'does not exist'}: give an image file's path, "
                "relative to the instances file's folder or absolute"
            )
        try:  # as transformers reads it: EXIF orientation, transparency on white; more than 8 bits refused
            images.append(load_image(image_path))
            digests.append(file_sha256(image_path))
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: the image {str(image_path)!r} cannot be read ({e})") from None
        questions.append(row["question"].strip())
        answers.append(answer)
        options.append(opts)
        if limit and len(images) == limit:
            break
    if not images:
        raise ValueError(f"instances={path!r} holds no instances (one JSON object a line)")
    name = Path(path).name.rsplit(".", 1)[0] or Path(path).name
    n = len(images)
    return Instances(images, questions, answers, None, str(path), options=options, files=[name] * n, digests=digests)


def instance_files(instances: str) -> list:
    """The JSONL files of ``--instances``: one path, or several separated by commas."""
    return [p.strip() for p in instances.split(",") if p.strip()]


def read_files(instances: str, limit: int = 0, family: Optional[ModuleType] = None) -> Instances:
    """The instances of every file of ``instances`` (:func:`instance_files`; each its first ``limit``
    lines, its images read by ``family``, :func:`read_jsonl`), in order; two files of one name are refused
    (their benchmark would be one)."""
    parts = [read_jsonl(p, limit, family) for p in instance_files(instances)]
    names = [q.files[0] for q in parts]
    if len(set(names)) != len(names):
        raise ValueError(
            f"instances={instances!r}: two files have the same name {sorted(n for n in names if names.count(n) > 1)[0]!r} "
            "(each file is one benchmark, named by its file name): rename one"
        )
    if len(parts) == 1:
        return parts[0]
    cat = lambda field: [x for q in parts for x in getattr(q, field)]  # noqa: E731
    return Instances(
        cat("images"),
        cat("questions"),
        cat("answers"),
        None,
        ",".join(q.source for q in parts),
        options=cat("options"),
        files=cat("files"),
        digests=cat("digests"),
    )


def stamp(cfg, instances: Optional[Instances]) -> dict:
    """What the study directory's stamp holds of the instances: for ``--instances``, each file's path and
    SHA-256 and the SHA-256 of every image's bytes in order (an image replaced under its name, or an answer
    changed, is another stamp); for rendered scenes, that they are rendered (the configuration fixes them)."""
    if not cfg.instances or instances is None:
        return {"source": "scenes"}
    files = instance_files(cfg.instances)
    return {
        "files": {os.path.abspath(p): file_sha256(p) for p in files},
        "images": list(instances.digests or []),
    }


def make_instances(cfg, family: Optional[ModuleType] = None) -> Instances:
    """The configuration's instances: ``cfg.instances`` read (their images by ``family``, :func:`read_jsonl`),
    or ``cfg.n_instances`` rendered scenes (0: :data:`~tokdyn.studies.vlm_diagnostics.config.DEFAULT_SCENES`)
    from ``fold_in(key(root_seed), 0)``."""
    if cfg.instances:
        return read_files(cfg.instances, cfg.n_instances, family)
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), 0)
    n = cfg.n_instances or DEFAULT_SCENES
    return scene_instances(key, n, size=cfg.scene_size, max_objects=cfg.max_objects)


def bucket(n: int, floor: int = 1) -> int:
    """The length ``n`` tokens are padded to: the least power of two ``>= max(n, floor)`` (padding at most
    doubles them; a few buckets hold every length)."""
    return 1 << (max(int(n), int(floor), 1) - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class Group:
    """Instances whose prompts share one layout, as arrays (G instances). Every prompt is padded to one
    length (:func:`bucket` of the longest prompt's text, plus the image's tokens) by :data:`PAD_ID` tokens
    placed right after the image (masked out: the tokens that follow keep their rotary positions), every
    answer to one length by padding after it; so the image, the latent block and the answer position sit
    at the same positions in every row, and one program serves them all.

    Attributes:
      index: (G,) the instances' indices.
      prompt: (G, T) ids of the prompt (the generation's input).
      prompt_mask: (G, T) bool, False at the padding.
      plain: (G, T + A) ids of the prompt followed by the answer's tokens (teacher-forced: the grounding score).
      plain_mask: (G, T + A) bool.
      answer_ids: (G, A) the answer's token ids, padded.
      answer_mask: (G, A) bool, False at the padding (at least the first token is True).
      pixels: (G, patches, patch_dim) float32 pixel rows.
      grid: (1, 3) the images' grid.
      prompt_length: T (the answer's tokens start there in ``plain``).
    """

    index: np.ndarray
    prompt: np.ndarray
    prompt_mask: np.ndarray
    plain: np.ndarray
    plain_mask: np.ndarray
    answer_ids: np.ndarray
    answer_mask: np.ndarray
    pixels: np.ndarray
    grid: np.ndarray
    prompt_length: int

    @property
    def name(self) -> str:
        """The group's name in part names: its two lengths and the answer's."""
        return f"T{self.prompt.shape[1]}-A{self.answer_ids.shape[1]}"


def resized(instances: Instances, side: int, family: Optional[ModuleType] = None) -> list:
    """Every image resized to ``side`` x ``side`` as ``family``'s image processor resizes (its
    ``processor.resize``, Pillow's bicubic for Qwen2.5-VL; default :func:`image_family`'s)."""
    resize = image_family(family).processor.resize
    return [resize(im, side, side) for im in instances.images]


def _padded(row: np.ndarray, at: int, length: int) -> tuple:
    """``row`` with :data:`PAD_ID` inserted at ``at`` up to ``length``, and its mask."""
    n = length - len(row)
    ids = np.concatenate([row[:at], np.full(n, PAD_ID, row.dtype), row[at:]])
    mask = np.concatenate([np.ones(at, bool), np.zeros(n, bool), np.ones(len(row) - at, bool)])
    return ids, mask


def encode(instances: Instances, loaded, cfg) -> list:
    """The instances as :class:`Group` s: a group per position of the image in the prompt and per length
    bucket of the prompt's text (:func:`bucket`: one long question pads its own group, never every prompt), in
    order of their first instance; prompts and answers padded to their buckets; the images resized by
    ``loaded``'s family (its ``processor.resize``)."""
    mcfg, family = loaded.config, loaded.family
    images = resized(instances, cfg.image_size, family)
    n_image = (cfg.image_size // mcfg.vision.patch_size) ** 2 // mcfg.vision.spatial_merge_size**2
    t = loaded.tokens
    rows = {}
    for i in range(len(instances)):
        p = t.prompt(mcfg, instances.prompt(i), n_image)
        ans = t.answer(instances.answers[i])
        last = int(np.flatnonzero(p == mcfg.image_token_id)[-1])
        at = last + 2 if last + 1 < len(p) and p[last + 1] == mcfg.vision_end_token_id else last + 1
        rows.setdefault((at, bucket(len(p) - n_image, TEXT_FLOOR)), []).append((i, p, ans))
    groups = []
    for (at, _), members in rows.items():
        index = np.asarray([m[0] for m in members])
        length = n_image + bucket(max(len(m[1]) for m in members) - n_image, TEXT_FLOOR)
        width = bucket(max(len(m[2]) for m in members))
        prompts, prompt_mask = map(np.stack, zip(*[_padded(m[1], at, length) for m in members]))
        answers, answer_mask = map(np.stack, zip(*[_padded(m[2], len(m[2]), width) for m in members]))
        px = [loaded.processor(images[i]) for i in index]
        grid = px[0]["image_grid_thw"]
        pixels = np.stack([x["pixel_values"] for x in px]).astype(np.float32)
        plain = np.concatenate([prompts, answers], axis=1)
        plain_mask = np.concatenate([prompt_mask, answer_mask], axis=1)
        groups.append(
            Group(
                index,
                prompts,
                prompt_mask,
                plain,
                plain_mask,
                answers,
                answer_mask,
                pixels,
                grid,
                length,
            )
        )
    return groups


__all__ = [
    "Group",
    "PAD_ID",
    "bucket",
    "file_sha256",
    "image_family",
    "instance_files",
    "read_files",
    "stamp",
    "Instances",
    "KEYS",
    "QUESTION",
    "encode",
    "make_instances",
    "read_jsonl",
    "read_lines",
    "resized",
    "scene_instances",
]
