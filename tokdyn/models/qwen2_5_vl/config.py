"""Qwen2.5-VL's configuration, read from a checkpoint's ``config.json`` in either of Hugging Face's layouts:
the text model's fields at the top level (the published checkpoints, ``rope_scaling`` with ``mrope_section``)
or nested under ``text_config`` (``transformers`` 5's ``save_pretrained``, ``rope_parameters``).

Every field is checked when it is read (and when a configuration is built in code): a ValueError names the
file, the field, its value and what is allowed, before any weight is read. Sizes are positive integers
(JSON numbers, not strings or booleans), the widths divide into their heads, ``rope_theta`` and
``rms_norm_eps`` are finite and positive (either at zero or below gives NaN logits), the M-RoPE sections are
three non-negative integers summing to half the head width, and the special token ids are integers.
"""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path
from types import SimpleNamespace

from tokdyn.models.blocks.fields import (
    DTYPE_NAMES,
    activation_name,
    dtype_of,
    eos_ids,
    fields_of,
    flag,
    integer,
    integers,
    positive_number,
    read_config,
    read_json,
    sizes,
)

__all__ = [
    "DTYPE_NAMES",
    "Config",
    "TextConfig",
    "VisionConfig",
    "activation_name",
    "check_config",
    "check_text",
    "check_vision",
    "from_dict",
    "integer",
    "integers",
    "positive_number",
    "read",
    "read_json",
    "sizes",
]

FAMILY = "Qwen2.5-VL"
"""The family's name, for messages."""


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The vision tower's structure.

    Attributes:
        depth: number of vision blocks.
        hidden_size: width of the vision blocks.
        intermediate_size: width of the vision blocks' gated MLP.
        num_heads: attention heads of a vision block.
        out_hidden_size: width of the merger's output (the text model's ``hidden_size``).
        patch_size: spatial side of a patch in pixels.
        temporal_patch_size: frames in a patch.
        spatial_merge_size: side of the square of patches the merger joins into one token.
        window_size: side of an attention window in pixels (windowed layers).
        fullatt_block_indexes: the blocks that attend over the whole image; the others attend in windows.
        in_channels: image channels.
        hidden_act: the gated MLP's activation.
        rope_theta: base of the 2D rotary frequencies.
        tokens_per_second: temporal position step of video frames (kept for completeness; images use 1).
    """

    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    in_channels: int = 3
    hidden_act: str = "silu"
    rope_theta: float = 10000.0
    tokens_per_second: int = 4

    def __post_init__(self):
        check_vision(self)

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Length of one row of ``pixel_values``: channels x frames x patch x patch."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The Qwen2 decoder's structure.

    Attributes:
        vocab_size: rows of the embedding and of the output head.
        hidden_size: width of the decoder.
        intermediate_size: width of the gated MLP.
        num_hidden_layers: decoder layers.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (grouped-query attention).
        rms_norm_eps: RMSNorm's epsilon.
        rope_theta: base of the rotary frequencies.
        mrope_section: how the rotary frequencies split over time, height and width.
        hidden_act: the gated MLP's activation.
        tie_word_embeddings: whether the output head is the embedding's transpose.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, ...] = (16, 24, 24)
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False

    def __post_init__(self):
        check_text(self)

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class Config:
    """Qwen2.5-VL: the vision tower, the decoder and the special tokens.

    Attributes:
        vision: the vision tower's structure.
        text: the decoder's structure.
        image_token_id: the placeholder token that image features replace.
        video_token_id: the placeholder token of video features.
        vision_start_token_id: the token before an image's placeholders.
        vision_end_token_id: the token after them.
        eos_token_id: the end-of-sequence token(s), as a tuple.
        dtype: the dtype the checkpoint's weights were saved in (``"bfloat16"``, ``"float32"`` ...), if stated.
    """

    vision: VisionConfig
    text: TextConfig
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    eos_token_id: tuple[int, ...] = ()
    dtype: str | None = None

    def __post_init__(self):
        check_config(self)


def check_vision(v: VisionConfig, where: str = "VisionConfig.") -> None:
    """Every field of ``v`` and how they fit together; ValueError naming ``where`` + the field."""
    for name in ("depth", "hidden_size", "intermediate_size", "num_heads", "out_hidden_size", "patch_size"):
        integer(where + name, getattr(v, name))
    for name in ("temporal_patch_size", "spatial_merge_size", "window_size", "in_channels"):
        integer(where + name, getattr(v, name))
    integers(where + "fullatt_block_indexes", v.fullatt_block_indexes)
    bad = [i for i in v.fullatt_block_indexes if i >= v.depth]
    if bad:
        raise ValueError(
            f"{where}fullatt_block_indexes is {list(v.fullatt_block_indexes)}; expected indexes of blocks, below "
            f"depth={v.depth}"
        )
    activation_name(where + "hidden_act", v.hidden_act)
    positive_number(where + "rope_theta", v.rope_theta)
    if isinstance(v.tokens_per_second, bool) or not isinstance(v.tokens_per_second, numbers.Real):
        raise ValueError(f"{where}tokens_per_second is {v.tokens_per_second!r}; expected a number")
    if v.hidden_size % v.num_heads or (v.hidden_size // v.num_heads) % 4:
        raise ValueError(
            f"{where}hidden_size={v.hidden_size} and num_heads={v.num_heads}: the width must split into num_heads "
            "heads of a width divisible by 4 (the 2D rotary positions rotate pairs of rows and of columns)"
        )
    if v.window_size < v.patch_size * v.spatial_merge_size:
        raise ValueError(
            f"{where}window_size is {v.window_size}; expected at least patch_size x spatial_merge_size = "
            f"{v.patch_size * v.spatial_merge_size} pixels (one merged token)"
        )


def check_text(t: TextConfig, where: str = "TextConfig.") -> None:
    """Every field of ``t`` and how they fit together; ValueError naming ``where`` + the field."""
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        integer(where + name, getattr(t, name))
    integer(where + "num_key_value_heads", t.num_key_value_heads)
    positive_number(where + "rms_norm_eps", t.rms_norm_eps)
    positive_number(where + "rope_theta", t.rope_theta)
    activation_name(where + "hidden_act", t.hidden_act)
    flag(where + "tie_word_embeddings", t.tie_word_embeddings)
    if t.hidden_size % t.num_attention_heads or (t.hidden_size // t.num_attention_heads) % 2:
        raise ValueError(
            f"{where}hidden_size={t.hidden_size} and num_attention_heads={t.num_attention_heads}: the width must "
            "split into num_attention_heads heads of an even width (rotary positions rotate pairs)"
        )
    if t.num_attention_heads % t.num_key_value_heads:
        raise ValueError(
            f"{where}num_key_value_heads is {t.num_key_value_heads}; expected a divisor of "
            f"num_attention_heads={t.num_attention_heads} (grouped-query attention)"
        )
    sections = integers(where + "mrope_section", t.mrope_section, 0, 3)
    if sum(sections) != (t.hidden_size // t.num_attention_heads) // 2:
        raise ValueError(
            f"{where}mrope_section is {list(sections)}; expected three integers >= 0 summing to half the head "
            f"width, {(t.hidden_size // t.num_attention_heads) // 2} (hidden_size {t.hidden_size} / num_attention_heads {t.num_attention_heads} / 2)"
        )


def check_config(cfg: Config, where: str = "Config.", text_where: str | None = None) -> None:
    """The ids and dtype of ``cfg`` (its towers checked by :func:`check_vision` and :func:`check_text`): the
    placeholder and stop token ids non-negative integers (an id past the vocabulary is allowed, as
    ``transformers`` saves its defaults so: such a token never appears in the inputs, which are checked)."""
    for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        integer(where + name, getattr(cfg, name), 0)
    for value in cfg.eos_token_id:
        integer(f"{text_where or where}eos_token_id", value, 0)
    if cfg.dtype is not None and cfg.dtype not in DTYPE_NAMES:
        raise ValueError(f"{where}torch_dtype is {cfg.dtype!r}; expected one of {DTYPE_NAMES}")
    if cfg.vision.out_hidden_size != cfg.text.hidden_size:
        raise ValueError(
            f"{where}vision_config.out_hidden_size ({cfg.vision.out_hidden_size}) must equal the text hidden_size "
            f"({cfg.text.hidden_size}): the merger's output replaces token embeddings"
        )


def _section(raw: dict, name: str, source: str, required: bool) -> dict:
    value = raw.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        shown = "null" if value is None else repr(value)
        raise ValueError(
            f"{source}: {name} is {shown}; expected an object holding the "
            f"{'vision tower' if name == 'vision_config' else 'decoder'}'s fields (a Qwen2.5-VL configuration)"
        )
    return value


def _rope(d: dict, where: str) -> dict:
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    key = "rope_parameters" if d.get("rope_parameters") else "rope_scaling"
    if not isinstance(rope, dict):
        raise ValueError(f"{where}{key} is {rope!r}; expected an object")
    out = {}
    theta = rope.get("rope_theta", d.get("rope_theta"))
    if theta is not None:
        out["rope_theta"] = positive_number(where + "rope_theta", theta)
    if "mrope_section" in rope:
        out["mrope_section"] = integers(f"{where}{key}.mrope_section", rope["mrope_section"], 0, 3)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "mrope", "axial"):
        raise ValueError(f"{where}{key}.rope_type is {kind!r}; expected 'default' or 'mrope' (no scaling)")
    return out


def from_dict(raw: dict, source: str = "config.json") -> Config:
    """A :class:`Config` from the parsed ``config.json`` of a Qwen2.5-VL checkpoint (``source`` names the file
    in errors): a ValueError naming the file, the field, its value and what is allowed when one is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    if "vision_config" not in raw:
        raise ValueError(f"{source} has no 'vision_config': not a Qwen2.5-VL checkpoint's configuration")
    model_type = raw.get("model_type")
    if model_type not in (None, "qwen2_5_vl"):
        raise ValueError(f"{source}: model_type is {model_type!r}; expected 'qwen2_5_vl'")
    vision_raw = _section(raw, "vision_config", source, True)
    nested = _section(raw, "text_config", source, False)
    text_raw, origin = dict(nested), {k: "text_config." for k in nested}
    for key, value in raw.items():  # the published layout keeps the text fields at the top level
        if key not in ("vision_config", "text_config") and key not in text_raw:
            text_raw[key], origin[key] = value, ""
    if text_raw.get("use_sliding_window"):
        raise ValueError(f"{source} sets use_sliding_window: sliding-window attention in the decoder is not supported")
    vwhere = f"{source}: vision_config."
    tprefix = "text_config." if nested else ""
    twhere = f"{source}: {tprefix}"
    vision = fields_of(VisionConfig, vision_raw, vwhere, FAMILY, {"spatial_patch_size": "patch_size"})
    if "patch_size" in vision_raw:
        vision["patch_size"] = vision_raw["patch_size"]
    vision.update(_rope(vision_raw, vwhere))
    text_raw.setdefault("num_key_value_heads", text_raw.get("num_attention_heads"))  # no grouping by default
    text = fields_of(TextConfig, text_raw, twhere, FAMILY)
    text.update(_rope(text_raw, twhere))
    tie = raw.get("tie_word_embeddings", text_raw.get("tie_word_embeddings", False))
    text["tie_word_embeddings"] = tie
    check_vision(SimpleNamespace(**vision), vwhere)
    check_text(SimpleNamespace(**text), twhere)
    ids = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    top = {f.name: raw.get(f.name, f.default) for f in dataclasses.fields(Config) if f.name in ids}
    top["eos_token_id"] = eos_ids(text_raw.get("eos_token_id"), f"{source}: {origin.get('eos_token_id', '')}")
    top["dtype"] = dtype_of(raw, nested)
    vision_cfg, text_cfg = VisionConfig(**vision), TextConfig(**text)
    top.update(vision=vision_cfg, text=text_cfg)
    check_config(SimpleNamespace(**top), f"{source}: ", f"{source}: {origin.get('eos_token_id', '')}")
    return Config(**top)


def read(directory: str | Path) -> Config:
    """The :class:`Config` of the checkpoint directory ``directory``: its ``config.json``, and the stop tokens of
    its ``generation_config.json`` when it has one (each id a non-negative integer;
    :func:`tokdyn.models.blocks.fields.read_config`)."""
    return read_config(directory, from_dict, FAMILY)
