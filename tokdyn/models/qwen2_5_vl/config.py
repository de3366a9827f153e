"""Qwen2.5-VL's configuration, read from a checkpoint's ``config.json`` in either of Hugging Face's layouts:
the text model's fields at the top level (the published checkpoints, ``rope_scaling`` with ``mrope_section``)
or nested under ``text_config`` (``transformers`` 5's ``save_pretrained``, ``rope_parameters``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


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


def _pick(d: dict, cls, renames: dict[str, str] | None = None) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in d.items():
        key = (renames or {}).get(key, key)
        if key in names:
            out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _rope(d: dict) -> dict:
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    out = {}
    theta = rope.get("rope_theta", d.get("rope_theta"))
    if theta is not None:
        out["rope_theta"] = float(theta)
    if "mrope_section" in rope:
        out["mrope_section"] = tuple(int(s) for s in rope["mrope_section"])
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "mrope", "axial"):
        raise ValueError(f"rope type {kind!r} is not supported; expected 'default' or 'mrope'")
    return out


def from_dict(raw: dict) -> Config:
    """A :class:`Config` from the parsed ``config.json`` of a Qwen2.5-VL checkpoint."""
    if not isinstance(raw, dict) or "vision_config" not in raw:
        raise ValueError("config.json has no 'vision_config': not a Qwen2.5-VL checkpoint's configuration")
    model_type = raw.get("model_type")
    if model_type not in (None, "qwen2_5_vl"):
        raise ValueError(f"config.json's model_type is {model_type!r}; expected 'qwen2_5_vl'")
    text_raw = dict(raw.get("text_config") or {})
    for key, value in raw.items():  # the published layout keeps the text fields at the top level
        if key not in ("vision_config", "text_config"):
            text_raw.setdefault(key, value)
    if text_raw.get("use_sliding_window"):
        raise ValueError(
            "config.json sets use_sliding_window: sliding-window attention in the decoder is not supported"
        )
    vision_raw = dict(raw["vision_config"])
    vision = _pick(vision_raw, VisionConfig, {"spatial_patch_size": "patch_size"})
    if "patch_size" in vision_raw:
        vision["patch_size"] = vision_raw["patch_size"]
    vision.update(_rope(vision_raw))
    text = _pick(text_raw, TextConfig)
    text.update(_rope(text_raw))
    text.setdefault("num_key_value_heads", text_raw.get("num_attention_heads"))
    text["tie_word_embeddings"] = bool(raw.get("tie_word_embeddings", text_raw.get("tie_word_embeddings", False)))
    try:
        vision_cfg = VisionConfig(**vision)
        text_cfg = TextConfig(**text)
    except TypeError as err:
        raise ValueError(f"config.json lacks a field Qwen2.5-VL needs: {err}") from None
    if text_cfg.hidden_size % text_cfg.num_attention_heads:
        raise ValueError("text hidden_size must be a multiple of num_attention_heads")
    if vision_cfg.out_hidden_size != text_cfg.hidden_size:
        raise ValueError(
            f"vision out_hidden_size ({vision_cfg.out_hidden_size}) must equal the text hidden_size "
            f"({text_cfg.hidden_size})"
        )
    eos = text_raw.get("eos_token_id")
    eos = () if eos is None else tuple(eos) if isinstance(eos, list) else (int(eos),)
    top = _pick(raw, Config)
    top.pop("vision", None), top.pop("text", None)
    top["eos_token_id"] = eos
    top["dtype"] = raw.get("dtype", raw.get("torch_dtype", text_raw.get("dtype", text_raw.get("torch_dtype"))))
    return Config(vision=vision_cfg, text=text_cfg, **top)


def read(directory: str | Path) -> Config:
    """The :class:`Config` of the checkpoint directory ``directory``: its ``config.json``, and the stop tokens of
    its ``generation_config.json`` when it has one."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no config.json in {str(directory)!r}: a Qwen2.5-VL checkpoint directory in the Hugging Face layout "
            "holds config.json and model.safetensors (or model-0000i-of-0000n.safetensors with "
            "model.safetensors.index.json)"
        )
    cfg = from_dict(json.loads(path.read_text()))
    generation = Path(directory) / "generation_config.json"
    if generation.is_file():  # the stop tokens generation uses, where the checkpoint states them
        eos = json.loads(generation.read_text()).get("eos_token_id")
        if eos is not None:
            cfg = dataclasses.replace(cfg, eos_token_id=tuple(eos) if isinstance(eos, list) else (int(eos),))
    return cfg
