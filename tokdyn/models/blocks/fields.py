"""Checks of the fields of a checkpoint's JSON files (``config.json``, ``preprocessor_config.json``): each
returns the value when it is what is allowed and raises a ValueError naming where it was read (the file and
the field), the value and what is allowed otherwise. JSON has no integer type of its own, so an integer is
refused as a float, a bool or a string, whatever it would convert to.

The readers the Qwen-VL families share beside their own ``config.py`` are here too: the dataclass fields of a
section (:func:`fields_of`), the stop tokens (:func:`eos_ids`), the dtype the weights were saved in
(:func:`dtype_of`), a checkpoint directory's ``config.json`` with the stop tokens of its
``generation_config.json`` (:func:`read_config`), and the sizes a study's estimates read (:func:`sizes`)."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Callable
from pathlib import Path

from tokdyn.models.blocks.mlp import ACTIVATIONS

DTYPE_NAMES = ("float32", "bfloat16", "float16", "float64")
"""The values ``config.json``'s ``dtype`` (or ``torch_dtype``) may take: the dtype the weights were saved in."""


def integer(where: str, value, minimum: int = 1) -> int:
    """``value`` as an int when it is an integer (not a bool, a float or a string) of at least ``minimum``;
    a ValueError naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where} is {value!r} ({type(value).__name__}); expected an integer >= {minimum}")
    if value < minimum:
        raise ValueError(f"{where} is {value!r}; expected an integer >= {minimum}")
    return int(value)


def positive_number(where: str, value) -> float:
    """``value`` as a float when it is a finite number > 0 (not a bool or a string); a ValueError naming
    ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where} is {value!r}; expected a finite number > 0")
    return float(value)


def integers(where: str, value, minimum: int = 0, length: int | None = None) -> tuple[int, ...]:
    """``value`` (a list or tuple) as a tuple of integers of at least ``minimum`` (``length`` of them when
    given); a ValueError naming ``where`` and the element otherwise."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where} is {value!r}; expected a list of integers")
    if length is not None and len(value) != length:
        raise ValueError(f"{where} is {list(value)!r}; expected {length} integers")
    return tuple(integer(f"{where}[{i}]", v, minimum) for i, v in enumerate(value))


def numbers3(where: str, value, positive: bool = False) -> tuple[float, ...]:
    """``value`` (a list or tuple of three finite numbers, > 0 with ``positive``: per-channel R, G, B) as a
    tuple of floats; a ValueError naming ``where`` otherwise."""
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    ok = ok and all(not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v) for v in value)
    if not ok or (positive and min(value) <= 0):
        raise ValueError(f"{where} is {value!r}; expected three finite numbers{' > 0' if positive else ''} (R, G, B)")
    return tuple(float(v) for v in value)


def flag(where: str, value) -> bool:
    """``value`` when it is a bool (JSON true or false); a ValueError naming ``where`` otherwise."""
    if not isinstance(value, bool):
        raise ValueError(f"{where} is {value!r}; expected true or false")
    return value


def activation_name(where: str, value) -> str:
    """``value`` when it names an activation tokdyn has (:data:`tokdyn.models.blocks.mlp.ACTIVATIONS`)."""
    if value not in ACTIVATIONS:
        raise ValueError(f"{where} is {value!r}; expected one of {sorted(ACTIVATIONS)}")
    return value


def read_json(path: str | Path, what: str = "a JSON object") -> dict:
    """The JSON object in the file at ``path``; a ValueError naming the file when it is not UTF-8 JSON or not
    an object (``what`` says what it should hold)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({e}); expected {what}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected {what}, got a JSON {type(raw).__name__}")
    return raw


def fields_of(cls, values: dict, where: str, family: str, renames: dict[str, str] | None = None) -> dict:
    """The fields of the dataclass ``cls`` found in ``values`` (a section of ``config.json``; a key renamed by
    ``renames`` first, lists as tuples), the defaults for the others; a ValueError naming ``where``, the first
    required field that is missing and ``family`` (the configuration that states it)."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        key = (renames or {}).get(key, key)
        if key in names:
            out[key] = tuple(value) if isinstance(value, list) else value
    for f in dataclasses.fields(cls):
        if f.name not in out:
            if f.default is dataclasses.MISSING:
                raise ValueError(f"{where}{f.name} is missing: a {family} configuration states it")
            out[f.name] = f.default
    return out


def eos_ids(value, where: str) -> tuple[int, ...]:
    """The stop token ids of an ``eos_token_id`` field (an id, a list of them, or null: none), each an integer
    >= 0; a ValueError naming ``where`` + ``eos_token_id`` and the id otherwise."""
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    return tuple(integer(f"{where}eos_token_id", v, 0) for v in values)


def dtype_of(*sections: dict):
    """The dtype the weights were saved in, as ``transformers`` reads it: the first ``dtype``, else
    ``torch_dtype`` (its older name), that is not null, in the ``sections`` in order (the top level of
    ``config.json``, then its ``text_config``); None when none states one. Not checked here (the family's
    configuration checks it against :data:`DTYPE_NAMES`)."""
    for section in sections:
        for key in ("dtype", "torch_dtype"):
            if section.get(key) is not None:
                return section[key]
    return None


def read_config(directory: str | Path, from_dict: Callable, family: str):
    """The configuration of the checkpoint directory ``directory``: its ``config.json`` read by the family's
    ``from_dict(raw, source)``, and the stop tokens of its ``generation_config.json`` when it has one and states
    them (:func:`eos_ids`), which replace ``config.json``'s. A FileNotFoundError naming the directory and the
    layout a ``family`` checkpoint has when there is no ``config.json``; a ValueError naming the file when one
    is not a JSON object."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no config.json in {str(directory)!r}: a {family} checkpoint directory in the Hugging Face layout "
            "holds config.json and model.safetensors (or model-0000i-of-0000n.safetensors with "
            "model.safetensors.index.json)"
        )
    cfg = from_dict(read_json(path, f"a {family} configuration (an object)"), str(path))
    generation = Path(directory) / "generation_config.json"
    if generation.is_file():  # the stop tokens generation uses, where the checkpoint states them
        raw = read_json(generation, "generation settings (an object)")
        eos = eos_ids(raw.get("eos_token_id"), f"{generation}: ")
        if eos:
            cfg = dataclasses.replace(cfg, eos_token_id=eos)
    return cfg


def sizes(cfg) -> dict:
    """The sizes a study's time and memory estimates read (:mod:`tokdyn.models.families`) of a configuration
    whose ``text`` and ``vision`` hold the Hugging Face names: the decoder's ``layers``, ``heads``, ``kv``
    (key/value heads), ``width``, ``ffn`` (the gated MLP's width) and ``vocab``, and the vision tower's
    ``v_depth``, ``v_width`` and ``v_ffn``."""
    t, v = cfg.text, cfg.vision
    return dict(
        layers=t.num_hidden_layers,
        heads=t.num_attention_heads,
        kv=t.num_key_value_heads,
        width=t.hidden_size,
        ffn=t.intermediate_size,
        vocab=t.vocab_size,
        v_depth=v.depth,
        v_width=v.hidden_size,
        v_ffn=v.intermediate_size,
    )
