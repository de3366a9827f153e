"""How the next token is chosen: a checkpoint's ``generation_config.json`` read into a :class:`GenerationConfig`,
the options of a call merged over it (:func:`resolve`), and the traced pieces of one decoding step (the
repetition penalty, temperature, top-k, top-p and min-p filters, greedy or sampled choice), in the order
``transformers``' ``generate`` applies them.

Every field of ``generation_config.json`` that ``transformers`` applies by default is honoured or refused:
``do_sample``, ``temperature``, ``top_k`` (50 when unset, as in ``transformers``), ``top_p``, ``min_p``,
``repetition_penalty``, ``eos_token_id``, ``pad_token_id``, ``bos_token_id`` and ``max_new_tokens`` are
honoured; a field that would change the tokens and is not implemented (beam search, ``no_repeat_ngram_size``,
``bad_words_ids``, ``typical_p`` ...) set to a value other than its neutral one is a ValueError at generation
naming the field, the value and the way out; fields that do not change the tokens (``use_cache``,
``output_*``, ``transformers_version`` ...) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HONOURED = (
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "max_new_tokens",
    "max_length",
)
"""The fields of ``generation_config.json`` that generation applies."""

NEUTRAL = {
    "num_beams": (None, 1),
    "num_beam_groups": (None, 1),
    "num_return_sequences": (None, 1),
    "penalty_alpha": (None,),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None, []),
    "force_words_ids": (None, []),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "top_h": (None,),
    "diversity_penalty": (None, 0.0),
    "encoder_repetition_penalty": (None, 1.0),
    "length_penalty": (None, 1.0),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "suppress_tokens": (None, []),
    "begin_suppress_tokens": (None, []),
    "sequence_bias": (None, {}),
    "guidance_scale": (None, 1.0),
    "exponential_decay_length_penalty": (None,),
    "renormalize_logits": (None, False),
    "remove_invalid_values": (None, False),
    "watermarking_config": (None,),
    "dola_layers": (None,),
    "stop_strings": (None, []),
    "max_time": (None,),
    "token_healing": (None, False),
    "prompt_lookup_num_tokens": (None,),
    "assistant_model": (None,),
    "constraints": (None, []),
}
"""The fields ``transformers`` applies that generation does not implement, with their neutral values: a
``generation_config.json`` holding another value is refused when it is used."""


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """The decoding settings of a checkpoint (its ``generation_config.json``) or of a call.

    Attributes:
      do_sample: sample (True) or take the most likely token (False).
      temperature: the logits are divided by it before sampling (sampling only; a file's 0 with
        ``do_sample`` false is read as greedy decoding, as ``transformers`` reads it).
      top_k: sample among the ``top_k`` most likely tokens (sampling only; None or 0: no limit).
      top_p: sample among the smallest set of most likely tokens whose probability reaches ``top_p``.
      min_p: drop tokens less likely than ``min_p`` times the most likely one (sampling only; None: off).
      repetition_penalty: the logit of every token already in the sequence (prompt or generated) divided by it
        when positive, multiplied when negative (1: off), before the other steps, greedy or sampled.
      eos_token_id: the stop tokens.
      pad_token_id: the token a stopped row is filled with (None: the first stop token, as ``transformers``).
      bos_token_id: the checkpoint's begin-of-sequence token (kept for reference; prompts carry their own).
      max_new_tokens: the default number of new tokens (None: the call's default).
      max_length: with no ``max_new_tokens`` in the call or the file, the prompt's (padded) length plus the new
        tokens, as ``transformers`` counts it.
      unhonoured: fields that would change the tokens and are not implemented, with their values; generation
        refuses a configuration that holds any.
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    max_new_tokens: int | None = None
    max_length: int | None = None
    unhonoured: tuple[tuple[str, object], ...] = ()

    @classmethod
    def from_dict(cls, raw: dict, source: str = "generation_config.json") -> GenerationConfig:
        """A :class:`GenerationConfig` from the parsed ``generation_config.json`` (``source`` names it in
        errors): ValueError naming the field when one is malformed."""
        if not isinstance(raw, dict):
            raise ValueError(f"{source} must hold a JSON object, got {type(raw).__name__}")
        out: dict = {}

        def number(name, kind, low=None, low_open=False):
            value = raw.get(name)
            if value is None:
                return None
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if kind is int:
                ok = ok and float(value) == int(value)
            if ok and low is not None:
                ok = value > low if low_open else value >= low
            if not ok:
                bound = "" if low is None else f" {'>' if low_open else '>='} {low}"
                raise ValueError(f"{source}: {name}={value!r} is not a finite {kind.__name__}{bound}")
            return kind(value)

        def ids(name):
            value = raw.get(name)
            if value is None:
                return None
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items):
                raise ValueError(f"{source}: {name}={value!r} must be a token id or a list of token ids (>= 0)")
            return tuple(items)

        if "do_sample" in raw and raw["do_sample"] is not None:
            if not isinstance(raw["do_sample"], bool):
                raise ValueError(f"{source}: do_sample={raw['do_sample']!r} must be true or false")
            out["do_sample"] = raw["do_sample"]
        for name, kind, low, low_open in (
            ("temperature", float, 0.0, False),
            ("top_p", float, 0.0, False),
            ("repetition_penalty", float, 0.0, True),
            ("min_p", float, 0.0, False),
            ("top_k", int, 0, False),
            ("max_new_tokens", int, 1, False),
            ("max_length", int, 1, False),
        ):
            value = number(name, kind, low, low_open)
            if value is not None:
                out[name] = value
        if out.get("top_p", 1.0) > 1.0:
            raise ValueError(f"{source}: top_p={out['top_p']!r} must lie in [0, 1]")
        if out.get("min_p", 0.0) > 1.0:
            raise ValueError(f"{source}: min_p={out['min_p']!r} must lie in [0, 1]")
        if out.get("temperature") == 0.0:
            if out.get("do_sample"):
                raise ValueError(
                    f"{source}: do_sample=true needs a temperature > 0, got temperature=0.0 (transformers refuses it "
                    "when it samples)"
                )
            out["temperature"] = 1.0  # unused when decoding greedily, as transformers leaves it
        if "top_k" in raw and raw["top_k"] is None:
            out["top_k"] = None
        eos = ids("eos_token_id")
        if eos is not None:
            out["eos_token_id"] = eos
        for name in ("pad_token_id", "bos_token_id"):
            value = ids(name)
            if value is not None:
                if len(value) != 1:
                    raise ValueError(f"{source}: {name}={raw[name]!r} must be one token id")
                out[name] = value[0]
        unhonoured = []
        for name, neutral in NEUTRAL.items():
            if name in raw and raw[name] not in neutral:
                unhonoured.append((name, raw[name]))
        out["unhonoured"] = tuple(unhonoured)
        return cls(**out)

    def check(self) -> None:
        """ValueError naming the first field that generation cannot honour (see :data:`~tokdyn.models.vlm.decoding.NEUTRAL`)."""
        if self.unhonoured:
            name, value = self.unhonoured[0]
            raise ValueError(
                f"generation_config.json sets {name}={value!r}, which tokdyn's generate does not implement "
                f"(it honours {', '.join(HONOURED)}); pass generation_config=GenerationConfig(...) without it, "
                "or remove the field from the file"
            )


def read(directory: str | Path) -> GenerationConfig | None:
    """The :class:`GenerationConfig` of the checkpoint in ``directory`` (its ``generation_config.json``), or None
    when it has none; the text model's ``pad_token_id`` of ``config.json`` stands in when the file names none."""
    directory = Path(directory)
    path = directory / "generation_config.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    cfg = GenerationConfig.from_dict(raw, str(path))
    if cfg.pad_token_id is None:
        pad = _config_pad(directory / "config.json")
        if pad is not None:
            cfg = dataclasses.replace(cfg, pad_token_id=pad)
    return cfg


def _config_pad(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # config.json's own reader names the problem
    if not isinstance(raw, dict):
        return None
    text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else {}
    pad = raw.get("pad_token_id", text.get("pad_token_id"))
    return pad if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else None


@dataclasses.dataclass(frozen=True)
class Settings:
    """The decoding settings of one call, resolved (host values; :func:`knobs` makes them traced).

    Attributes:
      do_sample: sample or take the most likely token.
      temperature: positive; divides the logits when sampling.
      top_k: 0 for no limit.
      top_p: in [0, 1] (0: the most likely token alone).
      min_p: in [0, 1]; 0 is off.
      repetition_penalty: positive; 1 is off.
      eos: the stop tokens.
      pad: the token a stopped row is filled with.
    """

    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repetition_penalty: float
    eos: tuple[int, ...]
    pad: int


def resolve(
    base: GenerationConfig | None,
    vocab: int,
    config_eos: tuple[int, ...] = (),
    *,
    do_sample=None,
    temperature=None,
    top_k=None,
    top_p=None,
    min_p=None,
    repetition_penalty=None,
    eos_token_id=None,
    pad_token_id=None,
) -> Settings:
    """The :class:`Settings` of a call: each option given, else ``base``'s value (the checkpoint's
    ``generation_config.json``), else ``transformers``' default. ``temperature=0`` means greedy (as it always
    has here); a positive ``temperature`` given without ``do_sample`` means sampling. ``eos_token_id=()``
    never stops. ValueError names the option when a value is out of range."""
    base = base or GenerationConfig(eos_token_id=tuple(config_eos))
    base.check()
    for name, value in (
        ("temperature", temperature),
        ("top_k", top_k),
        ("top_p", top_p),
        ("min_p", min_p),
        ("repetition_penalty", repetition_penalty),
        ("pad_token_id", pad_token_id),
    ):
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a number, got the bool {value!r}")
    if eos_token_id is not None:
        items = eos_token_id if isinstance(eos_token_id, (list, tuple, np.ndarray)) else [eos_token_id]
        if any(isinstance(i, (bool, np.bool_)) for i in items):
            raise TypeError(f"eos_token_id must be token ids, got {eos_token_id!r}")
    if temperature is not None:
        if not isinstance(temperature, (int, float, np.floating, np.integer)) or not temperature >= 0:
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        if do_sample is None:
            do_sample = temperature > 0
        if temperature == 0:
            if do_sample:
                raise ValueError("do_sample=True needs a temperature > 0, got temperature=0")
            temperature = 1.0
    do_sample = base.do_sample if do_sample is None else do_sample
    if not isinstance(do_sample, (bool, np.bool_)):
        raise ValueError(f"do_sample must be True or False, got {do_sample!r}")
    temperature = base.temperature if temperature is None else float(temperature)
    if do_sample and not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite to sample, got {temperature!r}")
    with np.errstate(over="ignore"):
        reciprocal = np.float32(1.0) / np.float32(temperature) if do_sample else np.float32(1.0)
    if not np.isfinite(reciprocal):
        raise ValueError(
            f"temperature={temperature!r} is too small for float32 logits (1 / temperature overflows): sampling at "
            "it is greedy decoding; pass do_sample=False"
        )
    top_k = base.top_k if top_k is None else top_k
    top_k = 0 if top_k is None else top_k
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"top_k must be a positive integer, 0 or None (no limit), got {top_k!r}")
    top_p = base.top_p if top_p is None else top_p
    if not isinstance(top_p, (int, float, np.floating)) or not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must lie in [0, 1] (0 keeps the most likely token alone), got {top_p!r}")
    min_p = base.min_p if min_p is None else min_p
    min_p = 0.0 if min_p is None else min_p
    if not isinstance(min_p, (int, float, np.floating)) or not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must lie in [0, 1], got {min_p!r}")
    penalty = base.repetition_penalty if repetition_penalty is None else repetition_penalty
    if not isinstance(penalty, (int, float)) or not (penalty > 0 and math.isfinite(penalty)):
        raise ValueError(f"repetition_penalty must be a finite number > 0, got {penalty!r}")
    eos = base.eos_token_id if eos_token_id is None else eos_token_id
    eos = (eos,) if isinstance(eos, (int, np.integer)) else tuple(eos)
    for name, values in (("eos_token_id", eos),):
        bad = [i for i in values if not isinstance(i, (int, np.integer)) or not 0 <= i < vocab]
        if bad:
            raise ValueError(f"{name} must be token ids in [0, {vocab}), got {bad}")
    pad = base.pad_token_id if pad_token_id is None else pad_token_id
    if pad is None:
        pad = eos[0] if eos else 0  # transformers falls back to the first stop token
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or not 0 <= pad < vocab:
        raise ValueError(f"pad_token_id must be a token id in [0, {vocab}), got {pad!r}")
    return Settings(
        bool(do_sample),
        float(temperature),
        int(top_k),
        float(top_p),
        float(min_p),
        float(penalty),
        tuple(int(i) for i in eos),
        int(pad),
    )


def new_tokens(base: GenerationConfig | None, max_new_tokens, prompt_length: int, default: int) -> int:
    """The new tokens of a call: ``max_new_tokens`` when given, else ``base``'s ``max_new_tokens``, else its
    ``max_length`` less the prompt's length (as ``transformers`` counts), else ``default``; a ValueError
    unless it is a positive integer."""
    if max_new_tokens is None and base is not None and base.max_new_tokens is not None:
        max_new_tokens = base.max_new_tokens
    elif max_new_tokens is None and base is not None and base.max_length is not None:
        max_new_tokens = base.max_length - int(prompt_length)
        if max_new_tokens < 1:
            raise ValueError(
                f"generation_config.json's max_length={base.max_length} leaves no new token after a prompt of "
                f"{prompt_length}; pass max_new_tokens"
            )
    elif max_new_tokens is None:
        max_new_tokens = default
    if isinstance(max_new_tokens, (bool, np.bool_)) or not isinstance(max_new_tokens, (int, np.integer)):
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    return int(max_new_tokens)


def knobs(s: Settings) -> dict:
    """The traced knobs of :func:`choose` from :class:`Settings`: scalar arrays, so that other settings never
    recompile the program."""
    return {
        "do_sample": jnp.asarray(s.do_sample),
        "temperature": jnp.asarray(s.temperature, jnp.float32),
        "top_k": jnp.asarray(s.top_k, jnp.int32),
        "top_p": jnp.asarray(s.top_p, jnp.float32),
        "min_p": jnp.asarray(s.min_p, jnp.float32),
        "repetition_penalty": jnp.asarray(s.repetition_penalty, jnp.float32),
    }


def penalise(logits: jax.Array, seen: jax.Array, penalty: jax.Array) -> jax.Array:
    """``transformers``' repetition penalty: the logits (B, V) of the tokens ``seen`` (B, V) divided by
    ``penalty`` where positive and multiplied by it where negative."""
    return jnp.where(seen, jnp.where(logits < 0, logits * penalty, logits / penalty), logits)


def filter_logits(logits: jax.Array, top_k, top_p, min_p=None) -> jax.Array:
    """``logits`` (B, V) with the tokens outside the ``top_k`` largest (None or 0: no limit), outside the
    smallest set whose probability reaches ``top_p`` and, with ``min_p``, less likely than ``min_p`` times the
    most likely set to -inf, in that order (``transformers``' warpers'); the most likely token is always kept.
    ``top_k``, ``top_p`` and ``min_p`` may be traced scalars."""
    v = logits.shape[-1]
    order = jnp.argsort(-logits, axis=-1)  # most likely first
    ranked = jnp.take_along_axis(logits, order, axis=-1)
    rank = jnp.arange(v)
    if top_k is not None:
        k = jnp.where(jnp.asarray(top_k) > 0, jnp.minimum(jnp.asarray(top_k), v), v)
        ranked = jnp.where(rank < k, ranked, -jnp.inf)
    if top_p is not None:
        probs = jax.nn.softmax(ranked, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability of the tokens ranked above
        ranked = jnp.where((before < top_p) | (rank == 0), ranked, -jnp.inf)
    if min_p is not None:
        probs = jax.nn.softmax(ranked, axis=-1)
        ranked = jnp.where((probs >= min_p * probs[..., :1]) | (rank == 0), ranked, -jnp.inf)
    rows = jnp.arange(logits.shape[0])[:, None]
    return jnp.full_like(logits, -jnp.inf).at[rows, order].set(ranked)


def choose(
    logits: jax.Array, keys: jax.Array, knob: dict, seen: jax.Array | None = None, sample: bool | None = None
) -> jax.Array:
    """The next token of each row of ``logits`` (B, V) under the traced ``knob`` (:func:`knobs`): the
    repetition penalty over ``seen`` (B, V), then the argmax, or a sample from the tempered, filtered
    distribution with each row's key of ``keys`` (B,). ``sample`` (static) chooses; None: the traced
    ``knob["do_sample"]`` does (a ``lax.cond``, both branches compiled, one run)."""
    logits = logits.astype(jnp.float32)
    if seen is not None:
        logits = penalise(logits, seen, knob["repetition_penalty"])

    def draw(logits):
        # shifted by the row's largest logit first, so that a small temperature never makes +inf: the largest
        # stays 0 and the others fall towards -inf (the greedy limit), where dividing first overflowed
        shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
        scaled = filter_logits(shifted / knob["temperature"], knob["top_k"], knob["top_p"], knob["min_p"])
        return jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)

    def greedy(logits):
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    if sample is None:
        return jax.lax.cond(knob["do_sample"], draw, greedy, logits)
    return draw(logits) if sample else greedy(logits)
