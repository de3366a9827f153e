"""Qwen3-VL's configuration, read from a checkpoint's ``config.json``: the decoder's fields nested under
``text_config`` and the vision tower's under ``vision_config`` (the layout of the published checkpoints and of
``transformers``' ``save_pretrained``), the rotary settings as ``rope_scaling`` with ``rope_theta`` beside it
(published) or as ``rope_parameters`` (``transformers`` 5), and ``tie_word_embeddings`` at the top level or in
``text_config``.

Every field is checked when it is read (and when a configuration is built in code): a ValueError names the
file, the field, its value and what is allowed, before any weight is read. Sizes are positive integers (JSON
numbers, not strings or booleans); ``rope_theta`` and ``rms_norm_eps`` are finite and positive; the M-RoPE
sections are three non-negative integers summing to half the head width, laid out interleaved
(``mrope_interleaved``; a configuration that turns it off is refused, as ``transformers`` interleaves
regardless); ``num_position_embeddings`` is a square (the learned grid of position embeddings); the deepstack
indexes are increasing vision blocks, no more of them than decoder layers; the special token ids are
non-negative integers.
"""

from __future__ import annotations

import dataclasses
import math
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
    sizes,
)
from tokdyn.models.blocks.rotary import interleaved_axes

__all__ = [
    "DTYPE_NAMES",
    "MODEL_TYPES",
    "ROPE_TYPES",
    "Config",
    "TextConfig",
    "VisionConfig",
    "check_config",
    "check_text",
    "check_vision",
    "from_dict",
    "read",
    "sizes",
]

FAMILY = "Qwen3-VL"
"""The family's name, for messages."""
MODEL_TYPES = ("qwen3_vl",)
"""The ``model_type`` this family reads (Qwen3-VL-MoE, ``qwen3_vl_moe``, has other weights and is refused)."""
ROPE_TYPES = ("default", "mrope")
"""The decoder's ``rope_type`` values taken: plain multimodal rotary positions, no scaling."""


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The vision tower's structure.

    Attributes:
        depth: number of vision blocks.
        hidden_size: width of the vision blocks.
        intermediate_size: width of the vision blocks' MLP.
        num_heads: attention heads of a vision block.
        out_hidden_size: width of the mergers' output (the decoder's ``hidden_size``).
        patch_size: spatial side of a patch in pixels.
        temporal_patch_size: frames in a patch.
        spatial_merge_size: side of the square of patches a merger joins into one token.
        in_channels: image channels.
        hidden_act: the vision MLP's activation.
        num_position_embeddings: rows of the learned position embedding, a square grid interpolated to each
            image's grid of patches.
        deepstack_visual_indexes: the blocks whose output a deepstack merger maps into the decoder's first
            layers (the first index's to the first layer, ...), increasing.
        rope_theta: base of the 2D rotary frequencies.
    """

    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    hidden_act: str = "gelu_pytorch_tanh"
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
    rope_theta: float = 10000.0

    def __post_init__(self):
        check_vision(self)
        object.__setattr__(self, "deepstack_visual_indexes", tuple(self.deepstack_visual_indexes))  # hashable

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Length of one row of ``pixel_values``: channels x frames x patch x patch."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def grid_side(self) -> int:
        """Side of the learned grid of position embeddings (``num_position_embeddings`` is its square)."""
        return math.isqrt(self.num_position_embeddings)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The Qwen3 decoder's structure.

    Attributes:
        vocab_size: rows of the embedding and of the output head.
        hidden_size: width of the decoder.
        intermediate_size: width of the gated MLP.
        num_hidden_layers: decoder layers.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (grouped-query attention).
        head_dim: width of one attention head (not always ``hidden_size / num_attention_heads``).
        rms_norm_eps: epsilon of every RMSNorm (the layers', the final one, and the per-head query and key
            norms).
        rope_theta: base of the rotary frequencies.
        mrope_section: how many rotary frequencies follow the time, the height and the width, interleaved.
        hidden_act: the gated MLP's activation.
        attention_bias: whether the query, key, value and output projections have biases.
        tie_word_embeddings: whether the output head is the embedding's transpose.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 500_000.0
    mrope_section: tuple[int, ...] = (24, 20, 20)
    hidden_act: str = "silu"
    attention_bias: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self):
        check_text(self)
        object.__setattr__(self, "mrope_section", tuple(self.mrope_section))  # hashable: a static argument


@dataclasses.dataclass(frozen=True)
class Config:
    """Qwen3-VL: the vision tower, the decoder and the special tokens.

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
        object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))

    @property
    def n_deepstack(self) -> int:
        """Number of deepstack features (and of decoder layers they are added after)."""
        return len(self.vision.deepstack_visual_indexes)


def check_vision(v, where: str = "VisionConfig.") -> None:
    """Every field of ``v`` and how they fit together; ValueError naming ``where`` + the field."""
    for name in ("depth", "hidden_size", "intermediate_size", "num_heads", "out_hidden_size", "patch_size"):
        integer(where + name, getattr(v, name))
    for name in ("temporal_patch_size", "spatial_merge_size", "in_channels", "num_position_embeddings"):
        integer(where + name, getattr(v, name))
    side = math.isqrt(v.num_position_embeddings)
    if side * side != v.num_position_embeddings:
        raise ValueError(
            f"{where}num_position_embeddings is {v.num_position_embeddings}; expected a square (the learned "
            "position embeddings are a side x side grid)"
        )
    indexes = integers(where + "deepstack_visual_indexes", v.deepstack_visual_indexes)
    if any(i >= v.depth for i in indexes) or any(b <= a for a, b in zip(indexes, indexes[1:])):
        raise ValueError(
            f"{where}deepstack_visual_indexes is {list(indexes)}; expected increasing indexes of vision blocks, "
            f"below depth={v.depth}"
        )
    activation_name(where + "hidden_act", v.hidden_act)
    positive_number(where + "rope_theta", v.rope_theta)
    if v.hidden_size % v.num_heads or (v.hidden_size // v.num_heads) % 4:
        raise ValueError(
            f"{where}hidden_size={v.hidden_size} and num_heads={v.num_heads}: the width must split into num_heads "
            "heads of a width divisible by 4 (the 2D rotary positions rotate pairs of rows and of columns)"
        )


def check_text(t, where: str = "TextConfig.") -> None:
    """Every field of ``t`` and how they fit together; ValueError naming ``where`` + the field."""
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        integer(where + name, getattr(t, name))
    integer(where + "num_key_value_heads", t.num_key_value_heads)
    integer(where + "head_dim", t.head_dim)
    positive_number(where + "rms_norm_eps", t.rms_norm_eps)
    positive_number(where + "rope_theta", t.rope_theta)
    activation_name(where + "hidden_act", t.hidden_act)
    flag(where + "attention_bias", t.attention_bias)
    flag(where + "tie_word_embeddings", t.tie_word_embeddings)
    if t.head_dim % 2:
        raise ValueError(f"{where}head_dim is {t.head_dim}; expected an even width (rotary positions rotate pairs)")
    if t.num_attention_heads % t.num_key_value_heads:
        raise ValueError(
            f"{where}num_key_value_heads is {t.num_key_value_heads}; expected a divisor of "
            f"num_attention_heads={t.num_attention_heads} (grouped-query attention)"
        )
    sections = integers(where + "mrope_section", t.mrope_section, 0, 3)
    half = t.head_dim // 2
    if sum(sections) != half:
        raise ValueError(
            f"{where}mrope_section is {list(sections)}; expected three integers >= 0 summing to half the head "
            f"width, head_dim / 2 = {half}"
        )
    counts = [int((interleaved_axes(sections, half) == a).sum()) for a in range(3)]
    if counts != list(sections):
        raise ValueError(
            f"{where}mrope_section is {list(sections)}; interleaved over {half} frequencies (height every third "
            f"from the second, width every third from the third) it gives time, height and width {counts}: "
            f"expected sections whose height and width fit, 3 x height <= {half + 1} and 3 x width <= {half}"
        )


def check_config(cfg, where: str = "Config.", eos_where: str | None = None) -> None:
    """The ids and dtype of ``cfg`` and how its towers meet (each tower checked by :func:`check_vision` and
    :func:`check_text`): the placeholder and stop token ids non-negative integers (an id past the vocabulary
    is allowed, as ``transformers`` saves its defaults so: such a token never appears in the inputs, which are
    checked), the mergers' width the decoder's, no more deepstack features than decoder layers."""
    for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        integer(where + name, getattr(cfg, name), 0)
    for value in cfg.eos_token_id:
        integer(f"{eos_where or where}eos_token_id", value, 0)
    if cfg.dtype is not None and cfg.dtype not in DTYPE_NAMES:
        raise ValueError(f"{where}dtype is {cfg.dtype!r}; expected one of {DTYPE_NAMES}")
    if cfg.vision.out_hidden_size != cfg.text.hidden_size:
        raise ValueError(
            f"{where}vision_config.out_hidden_size ({cfg.vision.out_hidden_size}) must equal the text hidden_size "
            f"({cfg.text.hidden_size}): the mergers' outputs replace token embeddings and add to hidden states"
        )
    n = len(cfg.vision.deepstack_visual_indexes)
    if n > cfg.text.num_hidden_layers:
        raise ValueError(
            f"{where}vision_config.deepstack_visual_indexes lists {n} blocks but the decoder has "
            f"num_hidden_layers={cfg.text.num_hidden_layers}: deepstack feature i is added after decoder layer i"
        )


def _section(raw: dict, name: str, source: str) -> dict:
    value = raw.get(name)
    if not isinstance(value, dict):
        shown = "missing" if name not in raw else "null" if value is None else repr(value)
        tower = "vision tower" if name == "vision_config" else "decoder"
        raise ValueError(f"{source}: {name} is {shown}; expected an object holding the {tower}'s fields")
    return value


def _rope(d: dict, where: str, text: bool) -> dict:
    """``rope_theta`` (and, for the decoder, ``mrope_section``) from ``rope_parameters`` or ``rope_scaling``
    with ``rope_theta`` beside it; the rotary type and the interleaving checked."""
    key = "rope_parameters" if d.get("rope_parameters") is not None else "rope_scaling"
    rope = d.get(key)
    rope = {} if rope is None else rope
    if not isinstance(rope, dict):
        raise ValueError(f"{where}{key} is {rope!r}; expected an object")
    out = {}
    theta = rope.get("rope_theta", d.get("rope_theta"))
    if theta is not None:
        named = f"{key}.rope_theta" if "rope_theta" in rope else "rope_theta"
        out["rope_theta"] = positive_number(where + named, theta)
    kind = rope.get("rope_type", rope.get("type", "default" if text else "axial"))
    allowed = ROPE_TYPES if text else ("axial",)
    if kind not in allowed:
        raise ValueError(f"{where}{key}.rope_type is {kind!r}; expected one of {allowed} (no scaling)")
    if text:
        if "mrope_section" in rope:
            out["mrope_section"] = integers(f"{where}{key}.mrope_section", rope["mrope_section"], 0, 3)
        interleaved = rope.get("mrope_interleaved", True)
        if flag(f"{where}{key}.mrope_interleaved", interleaved) is not True:
            raise ValueError(
                f"{where}{key}.mrope_interleaved is false; Qwen3-VL's decoder interleaves its multimodal rotary "
                "frequencies (transformers' Qwen3-VL ignores the flag and interleaves): a checkpoint trained "
                "with contiguous sections is not a Qwen3-VL"
            )
    return out


def from_dict(raw: dict, source: str = "config.json") -> Config:
    """A :class:`Config` from the parsed ``config.json`` of a Qwen3-VL checkpoint (``source`` names the file
    in errors): a ValueError naming the file, the field, its value and what is allowed when one is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    model_type = raw.get("model_type")
    if model_type not in (None, *MODEL_TYPES):
        raise ValueError(f"{source}: model_type is {model_type!r}; expected one of {MODEL_TYPES} (Qwen3-VL)")
    vision_raw = _section(raw, "vision_config", source)
    text_raw = _section(raw, "text_config", source)
    vwhere, twhere = f"{source}: vision_config.", f"{source}: text_config."
    for name, d, where, allowed in (
        ("model_type", vision_raw, vwhere, (None, "qwen3_vl_vision", "qwen3_vl")),
        ("model_type", text_raw, twhere, (None, "qwen3_vl_text")),
    ):
        if d.get(name) not in allowed:
            raise ValueError(f"{where}{name} is {d.get(name)!r}; expected one of {[a for a in allowed if a]}")
    vision = fields_of(VisionConfig, vision_raw, vwhere, FAMILY)
    vision.update(_rope(vision_raw, vwhere, text=False))
    text_raw = dict(text_raw)
    if text_raw.get("num_key_value_heads") is None:  # no grouping, as transformers reads it
        text_raw["num_key_value_heads"] = text_raw.get("num_attention_heads")
    text = fields_of(TextConfig, text_raw, twhere, FAMILY)
    text.update(_rope(text_raw, twhere, text=True))
    if "tie_word_embeddings" in raw:  # the top level decides, as transformers' Qwen3VLConfig does
        text["tie_word_embeddings"] = flag(f"{source}: tie_word_embeddings", raw["tie_word_embeddings"])
    check_vision(SimpleNamespace(**vision), vwhere)
    check_text(SimpleNamespace(**text), twhere)
    ids = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    top = {f.name: raw.get(f.name, f.default) for f in dataclasses.fields(Config) if f.name in ids}
    eos_where = f"{source}: text_config." if "eos_token_id" in text_raw else f"{source}: "
    top["eos_token_id"] = eos_ids(text_raw.get("eos_token_id", raw.get("eos_token_id")), eos_where)
    top["dtype"] = dtype_of(raw, text_raw)
    top.update(vision=VisionConfig(**vision), text=TextConfig(**text))
    check_config(SimpleNamespace(**top), f"{source}: ", eos_where)
    return Config(**top)


def read(directory: str | Path) -> Config:
    """The :class:`Config` of the checkpoint directory ``directory``: its ``config.json``, and the stop tokens of
    its ``generation_config.json`` when it has one (each id a non-negative integer;
    :func:`tokdyn.models.blocks.fields.read_config`)."""
    return read_config(directory, from_dict, FAMILY)
