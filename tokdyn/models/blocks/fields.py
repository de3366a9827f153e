"""Checks of the fields of a checkpoint's JSON files (``config.json``, ``preprocessor_config.json``): each
returns the value when it is what is allowed and raises a ValueError naming where it was read (the file and
the field), the value and what is allowed otherwise. JSON has no integer type of its own, so an integer is
refused as a float, a bool or a string, whatever it would convert to."""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

from tokdyn.models.blocks.mlp import ACTIVATIONS


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
