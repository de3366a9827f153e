"""The stand-in's configuration and its own ``config.json``: three objects, ``tower``, ``decoder`` and
``special``, in names of the stand-in's own (``patch``, ``merge``, ``width``, ``depth``, ``heads`` ...).

The attribute names the families' contract lists (:mod:`tokdyn.models.families`: ``vision.patch_size``,
``spatial_merge_size``, ``patch_dim``, ``text.hidden_size``, ``vocab_size``, ``num_hidden_layers`` and the
token ids) are properties or fields of the dataclasses below; every other name is the stand-in's own, so that
code which reaches past the contract finds nothing it expects.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tokdyn.models.blocks import fields

MODEL_TYPE = "standin_vl"


@dataclasses.dataclass(frozen=True)
class Tower:
    """The vision tower: square patches embedded linearly, then ``merge`` x ``merge`` of them fused into one
    image token.

    Attributes:
      patch: side of a patch in pixels.
      merge: side of the square of patches fused into one token.
      channels: image channels.
      width: width of a patch's embedding.
    """

    patch: int
    merge: int
    channels: int
    width: int

    @property
    def patch_size(self) -> int:
        """The contract's name of :attr:`patch`."""
        return self.patch

    @property
    def spatial_merge_size(self) -> int:
        """The contract's name of :attr:`merge`."""
        return self.merge

    @property
    def patch_dim(self) -> int:
        """Entries of one row of pixel values: channels x patch x patch (one frame)."""
        return self.channels * self.patch * self.patch


@dataclasses.dataclass(frozen=True)
class Decoder:
    """The decoder: pre-norm blocks of grouped-query attention with 1D rotary positions and a gated MLP.

    Attributes:
      vocab: tokens of the embedding and the unembedding.
      width: the residual stream's width.
      depth: blocks.
      heads: query heads.
      kv_heads: key/value heads.
      ffn: the gated MLP's width.
      eps: the RMSNorms' epsilon.
      rope_base: the rotary frequencies' base.
    """

    vocab: int
    width: int
    depth: int
    heads: int
    kv_heads: int
    ffn: int
    eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def hidden_size(self) -> int:
        """The contract's name of :attr:`width`."""
        return self.width

    @property
    def vocab_size(self) -> int:
        """The contract's name of :attr:`vocab`."""
        return self.vocab

    @property
    def num_hidden_layers(self) -> int:
        """The contract's name of :attr:`depth`."""
        return self.depth

    @property
    def head_width(self) -> int:
        """Width of one head."""
        return self.width // self.heads


@dataclasses.dataclass(frozen=True)
class Config:
    """The stand-in: its tower, its decoder and its special tokens (the contract's names).

    Attributes:
      vision: the tower.
      text: the decoder.
      image_token_id: the placeholder an image token's features replace.
      video_token_id: the video placeholder (refused in prompts).
      vision_start_token_id: the token before an image's placeholders.
      vision_end_token_id: the token after them.
      eos_token_id: the stop tokens.
      weights: the dtype the weights are stored in.
    """

    vision: Tower
    text: Decoder
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    eos_token_id: tuple = ()
    weights: str = "float32"


def to_json(cfg: Config) -> dict:
    """``config.json``'s object of ``cfg``."""
    v, d = cfg.vision, cfg.text
    return {
        "model_type": MODEL_TYPE,
        "tower": {"patch": v.patch, "merge": v.merge, "channels": v.channels, "width": v.width},
        "decoder": {
            "vocab": d.vocab,
            "width": d.width,
            "depth": d.depth,
            "heads": d.heads,
            "kv_heads": d.kv_heads,
            "ffn": d.ffn,
            "eps": d.eps,
            "rope_base": d.rope_base,
        },
        "special": {
            "image": cfg.image_token_id,
            "video": cfg.video_token_id,
            "image_start": cfg.vision_start_token_id,
            "image_end": cfg.vision_end_token_id,
            "stop": list(cfg.eos_token_id),
        },
        "weights": cfg.weights,
    }


def read(directory) -> Config:
    """The :class:`Config` of ``directory``'s ``config.json``; a ValueError naming the file and the field."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json")
    raw = fields.read_json(path, "the stand-in's configuration (an object)")
    where = f"{path}: "

    def part(name: str) -> dict:
        value = raw.get(name)
        if not isinstance(value, dict):
            raise ValueError(f"{where}{name} is {value!r}; expected an object")
        return value

    t, d, s = part("tower"), part("decoder"), part("special")
    tower = Tower(*(fields.integer(f"{where}tower.{k}", t.get(k)) for k in ("patch", "merge", "channels", "width")))
    ints = {
        k: fields.integer(f"{where}decoder.{k}", d.get(k))
        for k in ("vocab", "width", "depth", "heads", "kv_heads", "ffn")
    }
    decoder = Decoder(
        **ints,
        eps=fields.positive_number(f"{where}decoder.eps", d.get("eps", 1e-5)),
        rope_base=fields.positive_number(f"{where}decoder.rope_base", d.get("rope_base", 10000.0)),
    )
    if decoder.width % decoder.heads or decoder.heads % decoder.kv_heads or decoder.head_width % 2:
        raise ValueError(f"{where}decoder: width, heads and kv_heads do not split into heads of an even width")
    ids = {
        k: fields.integer(f"{where}special.{k}", s.get(k), 0) for k in ("image", "video", "image_start", "image_end")
    }
    stop = fields.integers(f"{where}special.stop", s.get("stop", []))
    weights = raw.get("weights", "float32")
    if weights not in ("float32", "bfloat16"):
        raise ValueError(f"{where}weights is {weights!r}; expected float32 or bfloat16")
    return Config(tower, decoder, ids["image"], ids["video"], ids["image_start"], ids["image_end"], stop, weights)


def sizes(cfg: Config) -> dict:
    """The sizes the study's estimates read: the decoder's, and the tower's one embedding (no MLP)."""
    d = cfg.text
    return dict(
        layers=d.depth,
        heads=d.heads,
        kv=d.kv_heads,
        width=d.width,
        ffn=d.ffn,
        vocab=d.vocab,
        v_depth=1,
        v_width=cfg.vision.width,
        v_ffn=0,
    )
