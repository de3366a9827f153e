"""The organism's checkpoint files: a complete Hugging Face Qwen2.5-VL checkpoint directory (:func:`write`) that
``transformers``' ``from_pretrained`` / ``AutoProcessor`` and :func:`tokdyn.models.qwen2_5_vl.load` /
``Chat.load`` open, and its ``latent_mode.json`` read back and checked (:func:`read_latent_mode`).

A directory :func:`write` makes holds:

- ``model.safetensors`` (or shards with ``model.safetensors.index.json``): the parameter tree under
  ``transformers``' tensor names (:mod:`tokdyn.models.qwen2_5_vl.saving`);
- ``config.json`` (every field ``Qwen2_5_VLConfig`` reads), ``generation_config.json`` (greedy, stopping at
  ``<|im_end|>`` and ``<|endoftext|>``), ``preprocessor_config.json``;
- ``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``
  (:func:`tokdyn.models.organism.tokenizer.files`);
- ``latent_mode.json``: ``{"start": "<|latent_start|>", "end": "<|latent_end|>", "pad": "<|latent_pad|>",
  "size": N}`` (:data:`LATENT_FIELDS`), when the model has a latent mode;
- ``tokdyn_checkpoint.json`` (:data:`MARKER`): that :func:`write` wrote it, and the SHA-256 of every other
  file.

The files are written into a new temporary directory beside the target (each file through
:func:`tokdyn.io.atomic_write`), which is then renamed to the target: a killed write leaves the old directory or
none, plus a ``*.tmp`` folder, never half a checkpoint under the target's name. A directory that holds files and
no :data:`MARKER`, or files its marker does not list, is refused: :func:`write` only replaces what it wrote.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import uuid
from pathlib import Path

from tokdyn import io
from tokdyn.models import qwen2_5_vl
from tokdyn.models.organism import tokenizer as tokenizer_lib
from tokdyn.models.qwen2_5_vl import saving
from tokdyn.models.vlm import chat as chat_lib
from tokdyn.models.vlm import latent as latent_lib

MARKER = "tokdyn_checkpoint.json"
"""The file that marks a directory :func:`write` wrote, with the SHA-256 of each of its files."""
WRITER = "tokdyn.models.organism.checkpoint.write"
LATENT_FILE = latent_lib.FILE
LATENT_FIELDS = latent_lib.FIELDS
"""The fields of ``latent_mode.json``: the three tokens' strings and the latents per block."""
MAX_LATENT_SIZE = latent_lib.MAX_SIZE
"""The most latents per block ``latent_mode.json`` may state (the published methods use 4 to 10)."""
PLACEHOLDERS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}
"""The configuration's special ids and the tokens they must be in the tokenizer."""


def special_ids(tok) -> dict:
    """The configuration's ids of the tokens of ``tok`` (a ``tokenizers.Tokenizer`` with Qwen's special tokens):
    the vision placeholders (:data:`PLACEHOLDERS`) and ``eos_token_id`` (``<|im_end|>``, ``<|endoftext|>``)."""
    out = {}
    for field, token in PLACEHOLDERS.items():
        out[field] = _token_id(tok, token, "tokenizer")
    out["eos_token_id"] = tuple(
        _token_id(tok, t, "tokenizer") for t in (tokenizer_lib.EOS_TOKEN, tokenizer_lib.PAD_TOKEN)
    )
    return out


def _token_id(tok, token: str, where: str) -> int:
    found = tok.token_to_id(token)
    if found is None:
        raise ValueError(
            f"{where} lacks the token {token!r}; a Qwen2.5-VL tokenizer holds {list(PLACEHOLDERS.values())}"
        )
    return int(found)


def vocab_size(tok, multiple: int = 64) -> int:
    """The rows of an embedding for ``tok``: its size (added tokens included) rounded up to ``multiple``."""
    return multiple * math.ceil(tok.get_vocab_size(with_added_tokens=True) / multiple)


def model_config(tok, vision: qwen2_5_vl.VisionConfig, text: qwen2_5_vl.TextConfig, dtype: str | None = None):
    """A :class:`tokdyn.models.qwen2_5_vl.Config` of the towers ``vision`` and ``text`` with the special ids
    of ``tok`` (:func:`special_ids`); ``text.vocab_size`` must hold every token of ``tok``."""
    if text.vocab_size < tok.get_vocab_size(with_added_tokens=True):
        raise ValueError(
            f"text.vocab_size is {text.vocab_size}; the tokenizer has {tok.get_vocab_size(with_added_tokens=True)} "
            f"tokens (vocab_size(tokenizer) = {vocab_size(tok)})"
        )
    return qwen2_5_vl.Config(vision=vision, text=text, **special_ids(tok), dtype=dtype)


def tiny_config(tok) -> qwen2_5_vl.Config:
    """The tiny organism of the tests: two vision blocks of width 32 (one windowed, one full), two decoder
    layers of width 64 with grouped keys and values, the vocabulary of ``tok`` (:func:`vocab_size`)."""
    vision = qwen2_5_vl.VisionConfig(
        depth=2,
        hidden_size=32,
        intermediate_size=40,
        num_heads=2,
        out_hidden_size=64,
        window_size=56,
        fullatt_block_indexes=(1,),
        tokens_per_second=2,
    )
    text = qwen2_5_vl.TextConfig(
        vocab_size=vocab_size(tok),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=10000.0,
        mrope_section=(2, 3, 3),
    )
    return model_config(tok, vision, text)


check_latent_mode = latent_lib.check_fields
"""A latent mode's fields checked against a tokenizer (:func:`tokdyn.models.vlm.latent.check_fields`)."""


def read_latent_mode(directory: str | Path) -> dict:
    """The latent mode the checkpoint in ``directory`` states in its ``latent_mode.json``, checked against its
    ``tokenizer.json`` (:func:`tokdyn.models.vlm.latent.read_fields`): ``{"start", "end", "pad", "size"}`` (token
    strings and an int), which ``LatentMode(**read_latent_mode(d))`` takes; FileNotFoundError without the file,
    a ValueError naming the file, the field and its value when one is wrong."""
    return latent_lib.read_fields(directory)


def _latent_fields(latent_mode, tok) -> dict | None:
    if latent_mode is None:
        return None
    if isinstance(latent_mode, latent_lib.LatentMode):
        if latent_mode.feed != "norm":
            raise ValueError(
                f"latent_mode.feed is {latent_mode.feed!r}; {LATENT_FILE} states a mode that feeds back the final-norm "
                "state ('norm') only"
            )
        fields = {}
        for name in LATENT_FIELDS[:3]:
            value = getattr(latent_mode, name)
            fields[name] = value if isinstance(value, str) else tok.id_to_token(value)
        fields["size"] = latent_mode.size
    elif isinstance(latent_mode, dict):
        fields = dict(latent_mode)
    else:
        raise TypeError(
            f"latent_mode must be a tokdyn.models.vlm.LatentMode, a dict of {list(LATENT_FIELDS)} or None, got "
            f"{type(latent_mode).__name__}"
        )
    return check_latent_mode(fields, tok, "latent_mode")


def check_model(cfg, tok, processor) -> None:
    """Refuse a configuration that does not fit the tokenizer ``tok`` and the image processor ``processor``: a
    placeholder id other than the tokenizer's token (:data:`PLACEHOLDERS`), a stop token or a token of the
    tokenizer past ``vocab_size``, a processor that cuts images otherwise than the vision tower. A ValueError
    naming the field and both values."""
    if not isinstance(cfg, qwen2_5_vl.Config):
        raise TypeError(f"config must be a tokdyn.models.qwen2_5_vl.Config, got {type(cfg).__name__}")
    n = tok.get_vocab_size(with_added_tokens=True)
    if cfg.text.vocab_size < n:
        raise ValueError(f"config.text.vocab_size is {cfg.text.vocab_size}; the tokenizer has {n} tokens")
    for field, token in PLACEHOLDERS.items():
        want = _token_id(tok, token, "tokenizer")
        if getattr(cfg, field) != want:
            raise ValueError(f"config.{field} is {getattr(cfg, field)}; the tokenizer's {token} is {want}")
    bad = [i for i in cfg.eos_token_id if i >= cfg.text.vocab_size]
    if bad or not cfg.eos_token_id:
        raise ValueError(
            f"config.eos_token_id is {list(cfg.eos_token_id)}; expected stop tokens below vocab_size={cfg.text.vocab_size}"
        )
    if not isinstance(processor, qwen2_5_vl.ImageProcessor):
        raise TypeError(f"processor must be a tokdyn.models.qwen2_5_vl.ImageProcessor, got {type(processor).__name__}")
    processor.check_model(cfg.vision, "processor", "config")


def _check_target(target: Path) -> list[str]:
    """The files of the existing ``target`` that :func:`write` may replace (none when it does not exist); a
    ValueError when it is not a directory :func:`write` wrote."""
    if not target.exists():
        return []
    if not target.is_dir():
        raise ValueError(f"directory {str(target)!r} is a file; expected a new directory or one tokdyn wrote")
    present = sorted(p.name for p in target.iterdir())
    if not present:
        return []
    marker = target / MARKER
    if not marker.is_file():
        raise ValueError(
            f"directory {str(target)!r} holds files ({present[:3]}{' ...' if len(present) > 3 else ''}) and no {MARKER}: "
            "it was not written by tokdyn's organism checkpoint writer, which refuses to overwrite it; write to a new "
            "or empty directory"
        )
    try:
        listed = io.read_json(str(marker))
        files = set(listed["files"]) if listed.get("written_by") == WRITER else None
    except (ValueError, KeyError, TypeError, AttributeError):
        files = None
    if files is None:
        raise ValueError(f"{marker} is not a marker {WRITER} wrote; refusing to overwrite {str(target)!r}")
    foreign = [name for name in present if name != MARKER and name not in files]
    if foreign:
        raise ValueError(
            f"directory {str(target)!r} holds files its {MARKER} does not list ({foreign[:3]}): refusing to "
            "overwrite what the writer did not write; move them away or write to a new directory"
        )
    return present


def write(
    directory: str | Path,
    config,
    params,
    *,
    latent_mode,
    tokenizer=None,
    chat_template: str = tokenizer_lib.CHAT_TEMPLATE,
    processor=None,
    dtype: str = "float32",
    max_shard_bytes: int = saving.MAX_SHARD_BYTES,
    max_position_embeddings: int = 32768,
) -> Path:
    """Write a complete Hugging Face Qwen2.5-VL checkpoint directory of ``params`` (the module's docstring lists
    its files), atomically.

    Everything is checked before anything is written: the tree against ``config``
    (:func:`tokdyn.models.qwen2_5_vl.saving.check_tree`), ``config`` against the tokenizer and the processor
    (:func:`check_model`), the latent mode against the tokenizer (:func:`check_latent_mode`), the chat template
    as Jinja, and the target (a new or empty directory, or one this function wrote: any other is refused).

    Args:
      directory: the checkpoint directory to make (or replace, when :func:`write` wrote it).
      config: the model's :class:`tokdyn.models.qwen2_5_vl.Config` (its ``dtype`` is set to ``dtype``);
        :func:`model_config` makes one with the tokenizer's ids.
      params: the parameter tree (:mod:`tokdyn.models.qwen2_5_vl.params`' layout, as ``qwen2_5_vl.load``
        gives it and ``params.init`` makes it).
      latent_mode: a :class:`tokdyn.models.vlm.LatentMode` (ids or token strings; ``feed="norm"``), a
        dict of :data:`LATENT_FIELDS`, or None (no ``latent_mode.json``).
      tokenizer: a ``tokenizers.Tokenizer`` holding Qwen's special tokens (default: the organism's,
        :func:`tokdyn.models.organism.tokenizer.build`).
      chat_template: the chat template (default Qwen2.5-VL's).
      processor: the image processor's settings (default :class:`tokdyn.models.qwen2_5_vl.ImageProcessor`'s,
        Qwen2.5-VL's published ones).
      dtype: the dtype of the weights written: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
      max_shard_bytes: the largest safetensors file (more weights are written as shards).
      max_position_embeddings: the decoder's position limit ``transformers`` records (tokdyn does not use it).

    Returns:
      The directory written.
    """
    tok = tokenizer_lib.build() if tokenizer is None else tokenizer
    if not hasattr(tok, "token_to_id") or not hasattr(tok, "to_str"):
        raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tok).__name__}")
    processor = qwen2_5_vl.ImageProcessor() if processor is None else processor
    check_model(config, tok, processor)
    if dtype not in saving.DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one the weights may be written in; expected one of {saving.DTYPES}")
    config = dataclasses.replace(config, dtype=dtype)
    saving.check_tree(params, config)
    latent = _latent_fields(latent_mode, tok)
    if not isinstance(chat_template, str) or not chat_template:
        raise ValueError("chat_template must be a non-empty Jinja template")
    chat_lib.render(chat_template, [{"role": "user", "content": "x"}], template_name="chat_template")

    target = Path(directory)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        pad = _token_id(tok, tokenizer_lib.PAD_TOKEN, "tokenizer")
        names = saving.write_weights(tmp, params, config, dtype, max_shard_bytes)
        texts = {
            "config.json": saving.config_dict(
                config, bos_token_id=pad, pad_token_id=pad, max_position_embeddings=max_position_embeddings
            ),
            "generation_config.json": saving.generation_dict(config, bos_token_id=pad, pad_token_id=pad),
            "preprocessor_config.json": saving.preprocessor_dict(processor),
        }
        if latent is not None:
            texts[LATENT_FILE] = latent
        for name, value in texts.items():
            io.write_json(str(tmp / name), value)
        tokenizer_files = tokenizer_lib.files(tok, chat_template)
        for name, text in tokenizer_files.items():
            with io.atomic_write(str(tmp / name)) as f:
                f.write(text)
        names += [*texts, *tokenizer_files]
        files = {name: io.file_sha256(str(tmp / name)) for name in sorted(names)}
        io.write_json(str(tmp / MARKER), {"written_by": WRITER, "files": files})
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _replace(tmp: Path, target: Path) -> None:
    """Put the finished directory ``tmp`` at ``target``: a rename onto a new or empty target; an existing one
    (checked by :func:`_check_target`) renamed aside first and removed after."""
    if target.exists() and any(target.iterdir()):
        old = target.parent / f"{target.name}.{uuid.uuid4().hex[:12]}.old.tmp"
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


__all__ = [
    "LATENT_FIELDS",
    "LATENT_FILE",
    "MARKER",
    "MAX_LATENT_SIZE",
    "PLACEHOLDERS",
    "WRITER",
    "check_latent_mode",
    "check_model",
    "model_config",
    "read_latent_mode",
    "special_ids",
    "tiny_config",
    "vocab_size",
    "write",
]
