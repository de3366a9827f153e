"""The model the study diagnoses: a local checkpoint directory of a family tokdyn reads (:func:`open_checkpoint`,
its files checked before any work, its weights' SHA-256 in the stamp: :func:`weights_stamp`), or, with no
``--model``, a tiny Qwen2.5-VL with random weights built here (:func:`tiny_config`), whose numbers mean
nothing. :class:`Loaded` holds the model, its family and how its prompts are made (:class:`Tokens`).

The family is the package :mod:`tokdyn.models.families` names for the ``model_type`` of the checkpoint's
``config.json`` (:func:`detect_family`; the random model's:
:data:`~tokdyn.studies.vlm_diagnostics.config.TINY_FAMILY`); every later use of the model goes through
``loaded.family``, by the names every family exposes (the table of :mod:`tokdyn.models.families`), never
through one family's package by name.

:func:`open_checkpoint` checks everything the run will read of a checkpoint before any work, from the files
alone (no weight is read): ``config.json`` field by field, ``preprocessor_config.json`` and its agreement with
the vision tower, ``tokenizer.json``, the chat template (rendered over the study's own conversation, under a
time and size limit), every safetensors header (lengths, offsets, a truncated shard) and every tensor's shape
and dtype against the configuration, the latent markers (each one token of the tokenizer, none of the model's
own placeholders), and each instance's question (no video placeholder) and answer (every character a token).
:func:`model_stamp`, which the study calls before it opens its directory, runs it, so a bad checkpoint is a
usage error (exit 2) naming the file and the field."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from pathlib import Path
from types import ModuleType
from typing import Optional

import jax
import numpy as np

from tokdyn import extras
from tokdyn.diagnostics import choices
from tokdyn.models import families, vlm
from tokdyn.studies.vlm_diagnostics import instances as instances_lib
from tokdyn.studies.vlm_diagnostics.config import BLOCK_TOKENS, TINY_FAMILY

LAYOUT = (
    "a checkpoint directory of a family tokdyn reads (config.json's model_type a key of "
    "tokdyn.models.families.FAMILIES) in the Hugging Face layout: config.json, model.safetensors (or "
    "model-0000i-of-0000n.safetensors listed by model.safetensors.index.json), tokenizer.json, a chat template "
    "(chat_template.jinja, chat_template.json or tokenizer_config.json's chat_template) and "
    "preprocessor_config.json"
)
TINY_SEED = 0  # the random model's weights: tiny_params(tiny_config())
TINY_SCALE = 0.1
# the random model's own token ids (it has no tokenizer): see Tokens.tiny
TINY_IDS = dict(bos=1, start=100, end=101, fill=102, assistant=103, digits=10, letters=70, words=(20, 100))
# the files besides the weights that the study's numbers depend on: the tokenizer, the chat template's homes,
# the image processor's and the decoding's configuration (each stamped when the checkpoint has it)
INPUT_FILES = (
    "latent_mode.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "generation_config.json",
)


def tiny_config():
    """The tiny Qwen2.5-VL (the family :data:`~tokdyn.studies.vlm_diagnostics.config.TINY_FAMILY`) the study
    builds without ``--model``: two vision blocks of width 32 (one windowed, one full), two decoder layers of
    width 64, a vocabulary of 128 (the test checkpoint's structure). Its ``Config``."""
    family = families.family(TINY_FAMILY)  # the configuration's fields are that family's own
    vision = family.VisionConfig(
        depth=2,
        hidden_size=32,
        intermediate_size=40,
        num_heads=2,
        out_hidden_size=64,
        window_size=56,
        fullatt_block_indexes=(1,),
        tokens_per_second=2,
    )
    text = family.TextConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=10000.0,
        mrope_section=(2, 3, 3),
    )
    return family.Config(
        vision=vision,
        text=text,
        image_token_id=120,
        video_token_id=121,
        vision_start_token_id=118,
        vision_end_token_id=119,
        eos_token_id=(2,),
        dtype="float32",
    )


def tiny_params(mcfg) -> dict:
    """Random weights of ``mcfg`` drawn on the host (NumPy's generator seeded :data:`TINY_SEED`): normal
    weights of standard deviation :data:`TINY_SCALE`, norms at one (the layout of
    :func:`tokdyn.models.qwen2_5_vl.params.init`, which draws each weight with JAX: a compile per shape)."""
    lib = families.family(TINY_FAMILY).params  # its parameter tree's layout, that family's own
    rng = np.random.default_rng(TINY_SEED)
    tree: dict = {}
    for entry in lib.layout(mcfg):
        norm = any(entry.name.endswith(s) for s in ("norm.weight", "norm1.weight", "norm2.weight", "ln_q.weight"))
        if norm or "layernorm" in entry.name:
            value = np.ones(entry.shape, np.float32)
        else:
            value = (TINY_SCALE * rng.standard_normal(entry.shape)).astype(np.float32)
        lib.insert(tree, entry.path, lib.to_tree(entry, value))
    return jax.tree_util.tree_map(jax.numpy.asarray, lib.stack_layers(tree, mcfg))


def file_sha256(path) -> str:
    """The SHA-256 of the file at ``path`` (hex), read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def detect_family(directory: str) -> ModuleType:
    """The package of the checkpoint family of ``directory``: :func:`tokdyn.models.families.family` of the
    ``model_type`` of its ``config.json`` (:func:`tokdyn.models.families.detect`). ``ValueError`` naming
    ``model`` and the file: missing, not JSON, or a ``model_type`` tokdyn does not read (the families named)."""
    try:
        return families.family(families.detect(directory))
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"model={directory!r}: {e}") from None


def check_directory(directory: str) -> ModuleType:
    """Refuse a checkpoint directory that lacks a file the study reads, whose ``config.json`` names a
    ``model_type`` of no family tokdyn reads (:func:`detect_family`, before anything else is read), or whose
    ``config.json`` is not a configuration of its family (every field checked, the family's ``config.read``):
    ``ValueError`` naming ``model``, the file missing (and the layout expected, :data:`LAYOUT`) or the file
    and field that is wrong, before any weight is read. Returns the family's package. The study's memory
    estimate reads ``config.json`` after this."""
    d = Path(directory)
    problems = []
    if not (d / "config.json").is_file():
        problems.append("config.json")
    if not (d / "model.safetensors").is_file() and not (d / "model.safetensors.index.json").is_file():
        problems.append("model.safetensors or model.safetensors.index.json")
    if not (d / "tokenizer.json").is_file():
        problems.append("tokenizer.json")
    if "config.json" in problems:  # no family to ask for the rest
        raise ValueError(f"model={directory!r} lacks {', '.join(problems)}: expected {LAYOUT}")
    family = detect_family(directory)
    try:
        if vlm.chat.read_template(d) is None:
            problems.append("a chat template")
        if not problems:
            family.config.read(d)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"model={directory!r}: {e}") from None
    if problems:
        raise ValueError(f"model={directory!r} lacks {', '.join(problems)}: expected {LAYOUT}")
    return family


def weights_stamp(directory: str) -> dict:
    """What the stamp holds of a checkpoint: its directory (absolute) and ``{file: SHA-256}`` of its
    weight files (the safetensors files and the index), of config.json and of every file of
    :data:`INPUT_FILES` it has (the tokenizer, the chat template, the image processor's and the decoding's
    configuration), and the SHA-256 of the chat template's text as read (``chat_template``), so a directory
    of results is never resumed with other weights or other inputs."""
    d = Path(directory)
    family = detect_family(directory)
    try:
        names = sorted({p.name for p in family.checkpoint.files(d).values()})
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"model={directory!r}: {e}") from None
    names += [n for n in ("model.safetensors.index.json", "config.json", *INPUT_FILES) if (d / n).is_file()]
    out = {"directory": str(d.resolve()), "sha256": {n: file_sha256(d / n) for n in sorted(set(names))}}
    try:
        template = vlm.chat.read_template(d)
    except (OSError, ValueError):
        template = None  # a file that cannot be read is named when the checkpoint is opened
    if template is not None:
        out["sha256"]["chat_template"] = hashlib.sha256(template.encode("utf-8")).hexdigest()
    return out


def random_stamp() -> dict:
    """What the stamp holds of the random model: how it is built."""
    return {"directory": "", "random": {"seed": TINY_SEED, "scale": TINY_SCALE, "config": "tiny_config()"}}


@dataclasses.dataclass(frozen=True)
class Tokens:
    """How the study's prompts are made for one model.

    Attributes:
      chat: the checkpoint's ``Chat`` (its family's ``Chat.load``; None for the random model).
      start: the latent block's opening marker id.
      end: its closing marker id.
      fill: the id whose embedding fills the latent slots.
      image_pad: the placeholder the chat template renders for one image (the family's ``chat.IMAGE_PAD``;
        None for the random model).
    """

    chat: Optional[object]
    start: int
    end: int
    fill: int
    image_pad: Optional[str] = None

    @classmethod
    def tiny(cls) -> "Tokens":
        """The random model's ids (it has no tokenizer): words and digits mapped to fixed ids."""
        return cls(None, TINY_IDS["start"], TINY_IDS["end"], TINY_IDS["fill"])

    def prompt(self, cfg, question: str, n_image: int) -> np.ndarray:
        """The ids (int64) of a user turn with one image of ``n_image`` merged tokens and ``question`` (``cfg``
        the model's configuration),
        ending where the assistant's answer begins: ``ValueError`` when the chat template fails (or runs past
        its limits), renders other than one image placeholder, or the prompt holds the video placeholder."""
        if self.chat is None:
            lo, hi = TINY_IDS["words"]
            words = [lo + zlib.crc32(w.encode()) % (hi - lo) for w in question.lower().split()]
            image = [cfg.vision_start_token_id, *[cfg.image_token_id] * n_image, cfg.vision_end_token_id]
            return np.asarray([TINY_IDS["bos"], *image, *words, TINY_IDS["assistant"]], np.int64)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = self.chat.render(messages, add_generation_prompt=True)
        pad = self.image_pad
        if pad is None:
            raise ValueError(
                "Tokens.image_pad must be the chat template's image placeholder (the family's chat.IMAGE_PAD)"
            )
        if text.count(pad) != 1:
            raise ValueError(f"the chat template rendered {text.count(pad)} image placeholders for one image")
        before, after = text.split(pad)
        ids = np.asarray(self.chat.tokenizer.encode(before + pad * n_image + after).ids, np.int64)
        if (ids == cfg.video_token_id).any():
            raise ValueError(
                f"the prompt of the question {question!r} holds the video placeholder token (id "
                f"{cfg.video_token_id}): video input is not supported; remove it from the question"
            )
        return ids

    def answer(self, text: str) -> np.ndarray:
        """The ids of an answer's text (at least one; the first is the answer token of the decomposition,
        the mediation and the optimiser): ``ValueError`` when the checkpoint's tokenizer maps it to nothing, to
        its unknown token, or drops characters of it."""
        if self.chat is None:
            out = []
            for w in text.split():
                if w.isdigit():
                    out += [TINY_IDS["digits"] + int(c) for c in w]
                elif len(w) == 1 and "A" <= w <= "Z":  # an option's letter
                    out.append(TINY_IDS["letters"] + ord(w) - ord("A"))
                else:
                    out.append(TINY_IDS["words"][0] + 1)
            ids = out
        else:
            ids = list(self.chat.text_ids(text, "the answer"))  # every character a token
        if not ids:
            raise ValueError(f"the answer {text!r} has no tokens")
        return np.asarray(ids, np.int64)

    def decode(self, ids, stops=()) -> str:
        """The text of generated ids (one row), cut before its first token of ``stops`` (the
        configuration's ``eos_token_id``): the checkpoint's tokenizer without special tokens, or, for the
        random model, its digits and letters (any other id as a space)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        cut = [k for k, i in enumerate(ids) if i in set(stops)]
        ids = ids[: cut[0]] if cut else ids
        if self.chat is not None:
            return self.chat.decode(ids, skip_special_tokens=True)
        out = []
        for i in ids:
            if TINY_IDS["digits"] <= i < TINY_IDS["digits"] + 10:
                out.append(str(i - TINY_IDS["digits"]))
            elif TINY_IDS["letters"] <= i < TINY_IDS["letters"] + 26:
                out.append(chr(ord("A") + i - TINY_IDS["letters"]))
            else:
                out.append(" ")
        return "".join(out).strip()

    def score_ids(self, labels) -> tuple:
        """The first token id of each answer label (an option's letter, a digit): the tokens whose
        log-probabilities the answer distribution is read over."""
        return tuple(int(self.answer(label)[0]) for label in labels)


class Loaded:
    """The model under study, its family and how its inputs are made; the weights are read (or drawn) on first
    use of ``model``, so a rerun whose parts are all kept never reads them, and put on every local device.

    Args:
      config: the model's ``Config`` (its family's).
      processor: its ``ImageProcessor``, admitting the study's image size.
      tokens: its :class:`Tokens`.
      load: a function of nothing returning the family's ``Model``.
      random: True for the tiny random model.
      family: the family's package (:func:`detect_family`), through which the study makes the model's inputs
        (its ``adapter``, ``processor``) and the analyses reach the model.
    """

    def __init__(
        self, config, processor, tokens: Tokens, load, random: bool, family: ModuleType, generation_config=None
    ):
        self.config, self.processor, self.tokens, self.random = config, processor, tokens, random
        self.family, self.generation_config = family, generation_config
        self.size = 0  # the latents a block holds (open_checkpoint: latent_size)
        self._load, self._model = load, None

    def latent_mode(self, size: int):
        """The :class:`tokdyn.models.vlm.LatentMode` of the study's markers (:class:`Tokens`) with ``size``
        latents a block."""
        return vlm.LatentMode(self.tokens.start, self.tokens.end, self.tokens.fill, size)

    def model_pad(self) -> int:
        """The id a stopped row is filled with (the checkpoint's decoding settings, as generation resolves
        them)."""
        settings = vlm.decoding.resolve(self.generation_config, self.config.text.vocab_size, self.config.eos_token_id)
        return settings.pad

    @property
    def model(self):
        """The family's ``Model``, read or drawn once, its weights on every local device
        (:func:`tokdyn.models.vlm.devices.replicate`): the study's batches are split over them."""
        if self._model is None:
            self._model = vlm.devices.replicate(self._load())
        return self._model


def token_id(chat, text: str, field: str, mcfg=None) -> int:
    """The id of the token ``text`` in the checkpoint's tokenizer; ``ValueError`` naming ``field`` when it is
    not one token (not in the vocabulary, or the tokenizer splits the string into several), or, given the
    model's configuration ``mcfg``, when its id is outside the model's vocabulary or one of the model's own
    placeholders (image, video, vision start and end)."""
    i = chat.tokenizer.token_to_id(text)
    added = [getattr(a, "content", str(a)) for a in chat.tokenizer.get_added_tokens_decoder().values()]
    shown = ", ".join(added[:24]) + (" ..." if len(added) > 24 else "")
    way_out = (
        "name one token of the checkpoint's tokenizer that the prompt does not use, with --latent-start, "
        f"--latent-end and --latent-fill (its added tokens: {shown or 'none'}; a latent-reasoning checkpoint "
        "that records its tokens in latent_mode.json needs no flag)"
    )
    if i is None:
        raise ValueError(f"{field}={text!r} is not a token of the checkpoint's tokenizer: {way_out}")
    ids = chat.tokenizer.encode(text, add_special_tokens=False).ids
    if ids != [i]:
        raise ValueError(
            f"{field}={text!r} is not encoded as the one token {i}: the tokenizer makes {ids} of it; {way_out}"
        )
    if mcfg is not None:
        own = {
            mcfg.image_token_id: "image placeholder",
            mcfg.video_token_id: "video placeholder",
            mcfg.vision_start_token_id: "vision start",
            mcfg.vision_end_token_id: "vision end",
        }
        if i in own:
            raise ValueError(f"{field}={text!r} is the model's {own[i]} token (id {i}): {way_out}")
        if i >= mcfg.text.vocab_size:
            raise ValueError(
                f"{field}={text!r} has id {i}, outside the model's vocabulary of {mcfg.text.vocab_size}: {way_out}"
            )
    return int(i)


def instance_texts(cfg) -> list[tuple[str, str, str]]:
    """``(where, question, answer)`` of each instance the configuration asks: the lines of each file of
    ``cfg.instances`` (the first ``cfg.n_instances`` of each; a multiple-choice line's question as the model
    gets it, with its options, and its answer as the option's letter; lines that are not instances are left
    to :func:`~tokdyn.studies.vlm_diagnostics.instances.read_jsonl` to refuse), or the rendered scenes' question
    with every answer they can have."""
    if not cfg.instances:
        return [
            ("the rendered scenes' question", instances_lib.QUESTION, str(k)) for k in range(1, cfg.max_objects + 1)
        ]
    out = []
    for path in instances_lib.instance_files(cfg.instances):
        found = 0
        # a line that is not UTF-8 reads as None, for read_jsonl to refuse naming the file and the line
        for number, line in enumerate(instances_lib.read_lines(path, strict=False), 1):
            try:
                row = json.loads(line) if line and line.strip() else None
            except json.JSONDecodeError:
                continue
            if not (
                isinstance(row, dict) and isinstance(row.get("question"), str) and isinstance(row.get("answer"), str)
            ):
                continue
            question, answer = row["question"].strip(), row["answer"].strip()
            if "options" in row:
                try:
                    opts = choices.check_options(row["options"])
                    question, answer = (
                        choices.prompt(question, opts),
                        choices.answer_letter(answer, opts),
                    )
                except ValueError:
                    continue
            out.append((f"instances={path!r} line {number}", question, answer))
            found += 1
            if cfg.n_instances and found == cfg.n_instances:
                break
    return out


def latent_tokens(cfg, chat=None) -> dict:
    """The latent block's marker strings, ``{"latent_start": ..., "latent_end": ..., "latent_fill": ...}``: the
    flags where given; else the checkpoint's ``latent_mode.json`` (:meth:`tokdyn.models.vlm.LatentMode.read`,
    checked against its tokenizer); else, with ``--latents block``, the study's own markers
    (:data:`~tokdyn.studies.vlm_diagnostics.config.BLOCK_TOKENS`). ``--latents generated`` on a checkpoint with
    neither flags nor the file is refused: the tokens a checkpoint was trained with cannot be guessed."""
    given = {f: getattr(cfg, f) for f in ("latent_start", "latent_end", "latent_fill")}
    if all(given.values()):
        return given
    if any(given.values()):
        raise ValueError(
            f"--latent-start, --latent-end and --latent-fill go together: got {given}; give all three, or none "
            "(the checkpoint's latent_mode.json, or the study's own block markers)"
        )
    mode = vlm.LatentMode.read(cfg.model, chat) if cfg.model else None
    if mode is not None:
        strings = json.loads((Path(cfg.model) / vlm.latent.FILE).read_text(encoding="utf-8"))
        return {"latent_start": strings["start"], "latent_end": strings["end"], "latent_fill": strings["pad"]}
    if cfg.latents == "generated":
        raise ValueError(
            f"--latents generated needs the checkpoint's latent tokens: {cfg.model} has no {vlm.latent.FILE}; "
            "give --latent-start, --latent-end and --latent-fill (the tokens it was trained to open, close and "
            "pad its block with) and --n-latents"
        )
    return dict(zip(("latent_start", "latent_end", "latent_fill"), BLOCK_TOKENS))


def latent_size(cfg) -> int:
    """The latents a block holds: ``--n-latents`` where given, else the checkpoint's ``latent_mode.json``'s size,
    else :data:`~tokdyn.studies.vlm_diagnostics.config.DEFAULT_LATENTS`."""
    from tokdyn.studies.vlm_diagnostics.config import DEFAULT_LATENTS

    if cfg.n_latents:
        return cfg.n_latents
    path = Path(cfg.model) / vlm.latent.FILE if cfg.model else None
    if path is not None and path.is_file():
        size = json.loads(path.read_text(encoding="utf-8")).get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
            return size
    return DEFAULT_LATENTS


def check_checkpoint(cfg) -> tuple:
    """The checks of :func:`open_checkpoint` on ``cfg.model``, from its files alone (no weight is read):
    returns its configuration and :class:`Tokens`. ``ValueError`` naming ``model``, the file and the field (a
    ``model_type`` of no family tokdyn reads: naming it and the families). The packages that read a
    checkpoint (its weights, tokenizer and chat template: the ``models`` extra) are looked up first:
    :class:`tokdyn.extras.MissingExtra` naming the missing ones and the command that installs them."""
    extras.require("models", f"reading the checkpoint model={cfg.model!r} (its weights, tokenizer and chat template)")
    family = check_directory(cfg.model)
    try:
        mcfg = family.config.read(cfg.model)
        chat = vlm.Chat.load(cfg.model, family)  # the processor checked against config.json's vision tower
        family.checkpoint.inspect(cfg.model, mcfg, cfg.unknown_tensors)  # every header, shape and dtype
        decoding = vlm.decoding.read(cfg.model)
        if decoding is not None:  # a field generation refuses, refused now rather than after hours of work
            vlm.decoding.resolve(decoding, mcfg.text.vocab_size, mcfg.eos_token_id)
        names = latent_tokens(cfg, chat)
        ids = [token_id(chat, text, f, mcfg) for f, text in names.items()]
        tokens = Tokens(chat, *ids, image_pad=vlm.chat.IMAGE_PAD)
        for where, question, answer in instance_texts(cfg):
            try:
                tokens.prompt(mcfg, question, 1)  # the chat template rendered, bounded
                tokens.answer(answer)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
    except (FileNotFoundError, ValueError) as e:  # the library's way out, as the study's option
        message = str(e).replace("pass unknown='ignore'", "pass --unknown-tensors ignore")
        raise ValueError(f"model={cfg.model!r}: {message}") from None
    return mcfg, tokens


def open_checkpoint(cfg) -> Loaded:
    """The model of the study's configuration ``cfg``: the checkpoint at ``cfg.model``, opened by the family
    its ``config.json`` names (:func:`detect_family`), every file the run reads checked now, before any work
    (:func:`check_checkpoint`: the configuration, the processor, the tokenizer, the chat template rendered over
    the study's conversation, the safetensors headers against the configuration, the latent markers, the
    instances' questions and answers), its weights read on first use (the family's ``load``); or the tiny
    random model of :data:`~tokdyn.studies.vlm_diagnostics.config.TINY_FAMILY`. Its image processor widened
    to admit ``cfg.image_size`` squares. ``ValueError`` naming ``model``, the file and the field for a
    checkpoint that cannot serve."""
    side = cfg.image_size
    generation_config = None
    if cfg.model:
        mcfg, tokens = check_checkpoint(cfg)
        family = detect_family(cfg.model)
        processor, random = tokens.chat.processor, False
        generation_config = vlm.decoding.read(cfg.model)
        load = lambda: family.load(cfg.model, dtype=cfg.dtype, unknown=cfg.unknown_tensors)  # noqa: E731
    else:
        family = families.family(TINY_FAMILY)
        mcfg = tiny_config()
        tokens, processor, random = Tokens.tiny(), family.ImageProcessor(), True
        load = lambda: family.Model(mcfg, tiny_params(mcfg))  # noqa: E731
    processor = dataclasses.replace(
        processor, min_pixels=min(processor.min_pixels, side * side), max_pixels=max(processor.max_pixels, side * side)
    )
    out = Loaded(mcfg, processor, tokens, load, random, family, generation_config)
    out.size = latent_size(cfg)
    return out


def model_stamp(cfg) -> dict:
    """The stamp's record of the model: :func:`weights_stamp` of ``cfg.model`` once :func:`open_checkpoint`
    has checked it (a ValueError naming ``model``, the file and the field otherwise), or :func:`random_stamp`."""
    if not cfg.model:
        return random_stamp()
    open_checkpoint(cfg)
    return weights_stamp(cfg.model)


__all__ = [
    "LAYOUT",
    "Loaded",
    "Tokens",
    "check_checkpoint",
    "check_directory",
    "detect_family",
    "file_sha256",
    "instance_texts",
    "latent_size",
    "latent_tokens",
    "model_stamp",
    "open_checkpoint",
    "random_stamp",
    "tiny_config",
    "tiny_params",
    "token_id",
    "weights_stamp",
]
