"""The parameters of Qwen3-VL: their tree, and how each maps to a tensor of a Hugging Face checkpoint.

The tree (``params``) is plain nested dicts and lists of arrays::

    {"vision": {"patch_embed": {"kernel", "bias"}, "pos_embed",
                "blocks": [{"norm1": {"scale", "bias"}, "norm2", "attn": {"qkv", "proj"},
                            "mlp": {"fc1", "fc2"}}, ...runs],
                "merger": {"norm": {"scale", "bias"}, "fc1", "fc2"},
                "deepstack": [{"norm", "fc1", "fc2"}, ...one per deepstack index]},
     "text": {"embed", "layers": {"input_norm", "post_norm",
                                  "attn": {"q", "k", "v", "o", "q_norm", "k_norm"},
                                  "mlp": {"gate", "up", "down"}},
              "norm", "lm_head": {"kernel"}}}

The decoder's layers are stacked: every array of ``text.layers`` has a leading axis of length
``num_hidden_layers`` (the decoder scans over it, so a model compiles one layer, not all of them). The vision
blocks are a list of runs (:func:`block_runs`): consecutive blocks stacked along a leading axis, a run ending at
each deepstack index, so the tower scans each run and reads the residual stream where a deepstack merger
reads it.

Linear layers hold ``{"kernel": (in, out), "bias": (out,)}`` (the checkpoint's ``weight`` transposed); the
3D patch embedding's convolution (stride = kernel) is the linear layer it equals over ``pixel_values``' rows;
LayerNorms hold ``{"scale", "bias"}``, RMSNorms their weight. :func:`layout` lists every tensor with its
checkpoint name (the published one, ``model.language_model.*``, ``model.visual.*``, ``lm_head.weight``), its
tree path and its shape on disk.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokdyn.models.blocks import weights
from tokdyn.models.blocks.weights import Entry
from tokdyn.models.qwen3_vl.config import Config, VisionConfig

TEXT, VISION = "model.language_model.", "model.visual."
"""The prefixes of the decoder's and the vision tower's tensors in a published checkpoint."""
ALIASES = (("model.", TEXT), ("visual.", VISION))
"""Older prefixes (the layout of Qwen2-VL's checkpoints) and the published ones they stand for."""


def canonical(name: str) -> str:
    """The published checkpoint name of ``name`` (``model.layers.0...`` -> ``model.language_model.layers.0...``,
    ``visual.x`` -> ``model.visual.x``; published names as they are)."""
    if name.startswith((TEXT, VISION)):
        return name
    for old, new in ALIASES:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def _layer_norm(name: str, path: tuple, size: tuple[int, str]) -> list[Entry]:
    return [
        Entry(f"{name}.weight", (*path, "scale"), (size[0],), dims=(size[1],)),
        Entry(f"{name}.bias", (*path, "bias"), (size[0],), dims=(size[1],)),
    ]


def _merger(name: str, path: tuple, v: VisionConfig, postshuffle: bool) -> list[Entry]:
    merged = (v.hidden_size * v.spatial_merge_size**2, "vision_config.hidden_size x spatial_merge_size^2")
    width = merged if postshuffle else (v.hidden_size, "vision_config.hidden_size")
    out = _layer_norm(f"{name}.norm", (*path, "norm"), width)
    out += weights.linear(f"{name}.linear_fc1", (*path, "fc1"), merged, merged, True)
    out += weights.linear(
        f"{name}.linear_fc2", (*path, "fc2"), merged, (v.out_hidden_size, "vision_config.out_hidden_size"), True
    )
    return out


def vision_layout(v: VisionConfig) -> list[Entry]:
    """Every tensor of the vision tower ``v``: the patch embedding, the learned position embedding, the
    blocks, the merger and the deepstack mergers."""
    vw = (v.hidden_size, "vision_config.hidden_size")
    p = v.patch_size
    conv_dims = (vw[1], "vision_config.in_channels", "vision_config.temporal_patch_size")
    out = [
        Entry(
            f"{VISION}patch_embed.proj.weight",
            ("vision", "patch_embed", "kernel"),
            (v.hidden_size, v.in_channels, v.temporal_patch_size, p, p),
            "conv",
            (*conv_dims, "vision_config.patch_size", "vision_config.patch_size"),
        ),
        Entry(f"{VISION}patch_embed.proj.bias", ("vision", "patch_embed", "bias"), (v.hidden_size,), dims=(vw[1],)),
        Entry(
            f"{VISION}pos_embed.weight",
            ("vision", "pos_embed"),
            (v.num_position_embeddings, v.hidden_size),
            dims=("vision_config.num_position_embeddings", vw[1]),
        ),
    ]
    qkv = (3 * v.hidden_size, "3 x vision_config.hidden_size")
    mlp = (v.intermediate_size, "vision_config.intermediate_size")
    for i in range(v.depth):
        pre, path = f"{VISION}blocks.{i}", ("vision", "blocks", i)
        out += _layer_norm(f"{pre}.norm1", (*path, "norm1"), vw)
        out += _layer_norm(f"{pre}.norm2", (*path, "norm2"), vw)
        out += weights.linear(f"{pre}.attn.qkv", (*path, "attn", "qkv"), vw, qkv, True)
        out += weights.linear(f"{pre}.attn.proj", (*path, "attn", "proj"), vw, vw, True)
        out += weights.linear(f"{pre}.mlp.linear_fc1", (*path, "mlp", "fc1"), vw, mlp, True)
        out += weights.linear(f"{pre}.mlp.linear_fc2", (*path, "mlp", "fc2"), mlp, vw, True)
    out += _merger(f"{VISION}merger", ("vision", "merger"), v, postshuffle=False)
    for j in range(len(v.deepstack_visual_indexes)):
        out += _merger(f"{VISION}deepstack_merger_list.{j}", ("vision", "deepstack", j), v, postshuffle=True)
    return out


def layout(cfg: Config) -> list[Entry]:
    """Every tensor a checkpoint of ``cfg`` holds (the output head only when its weights are not tied)."""
    t = cfg.text
    out = vision_layout(cfg.vision)
    d, hd = (t.hidden_size, "text_config.hidden_size"), t.head_dim
    vocab = (t.vocab_size, "text_config.vocab_size")
    q = (t.num_attention_heads * hd, "text_config.num_attention_heads x head_dim")
    kv = (t.num_key_value_heads * hd, "text_config.num_key_value_heads x head_dim")
    mlp = (t.intermediate_size, "text_config.intermediate_size")
    head = (hd, "text_config.head_dim")
    bias = t.attention_bias
    out.append(Entry(f"{TEXT}embed_tokens.weight", ("text", "embed"), (vocab[0], d[0]), dims=(vocab[1], d[1])))
    for i in range(t.num_hidden_layers):
        pre, path = f"{TEXT}layers.{i}", ("text", "layers", i)
        out.append(Entry(f"{pre}.input_layernorm.weight", (*path, "input_norm"), (d[0],), dims=(d[1],)))
        out.append(Entry(f"{pre}.post_attention_layernorm.weight", (*path, "post_norm"), (d[0],), dims=(d[1],)))
        out += weights.linear(f"{pre}.self_attn.q_proj", (*path, "attn", "q"), d, q, bias)
        out += weights.linear(f"{pre}.self_attn.k_proj", (*path, "attn", "k"), d, kv, bias)
        out += weights.linear(f"{pre}.self_attn.v_proj", (*path, "attn", "v"), d, kv, bias)
        out += weights.linear(f"{pre}.self_attn.o_proj", (*path, "attn", "o"), q, d, bias)
        out.append(Entry(f"{pre}.self_attn.q_norm.weight", (*path, "attn", "q_norm"), (hd,), dims=(head[1],)))
        out.append(Entry(f"{pre}.self_attn.k_norm.weight", (*path, "attn", "k_norm"), (hd,), dims=(head[1],)))
        for part in ("gate", "up"):
            out += weights.linear(f"{pre}.mlp.{part}_proj", (*path, "mlp", part), d, mlp, False)
        out += weights.linear(f"{pre}.mlp.down_proj", (*path, "mlp", "down"), mlp, d, False)
    out.append(Entry(f"{TEXT}norm.weight", ("text", "norm"), (d[0],), dims=(d[1],)))
    if not t.tie_word_embeddings:
        out += weights.linear("lm_head", ("text", "lm_head"), d, vocab, False)
    return out


def block_runs(vision: VisionConfig) -> list[int]:
    """The lengths of the runs the vision blocks are stacked in: a run ends after each deepstack index (and
    after the last block), so run ``j`` ends where deepstack feature ``j`` is read, for ``j`` below the number
    of deepstack indexes."""
    ends = sorted({i + 1 for i in vision.deepstack_visual_indexes} | {vision.depth})
    return [b - a for a, b in zip([0, *ends[:-1]], ends)]


def stacked(path: tuple) -> bool:
    """Whether the parameter at ``path`` is one of a stack (a decoder layer's, or a vision block's)."""
    return path[:2] in (("text", "layers"), ("vision", "blocks"))


def stack_layers(tree: dict, cfg: Config, place=None) -> dict:
    """``tree`` as :func:`tokdyn.models.blocks.weights.insert` builds it from the checkpoint's tensors (a list
    of decoder layers, a list of vision blocks) with the decoder's layers stacked into one and the vision
    blocks into runs (:func:`block_runs`)."""
    if isinstance(tree["text"]["layers"], list):
        tree["text"]["layers"] = weights.stack(tree["text"]["layers"], place)
    blocks = tree["vision"]["blocks"]
    if blocks and blocks[0]["norm1"]["scale"].ndim == 1:  # one dict per block, not yet stacked
        runs, start = [], 0
        for length in block_runs(cfg.vision):
            runs.append(weights.stack(blocks[start : start + length], place))
            start += length
        tree["vision"]["blocks"] = runs
    return tree


def init(key: jax.Array, cfg: Config, dtype=jnp.float32, scale: float = 0.02) -> dict:
    """Random parameters of ``cfg`` (normal weights and biases of standard deviation ``scale``, the norms'
    weights at one): for tests and benchmarks at sizes no checkpoint is at hand for."""
    tree: dict = {}
    entries = layout(cfg)
    for k, entry in zip(jax.random.split(key, len(entries)), entries):
        norm = entry.path[-1] in ("scale", "input_norm", "post_norm", "q_norm", "k_norm", "norm")
        if norm:
            value = jnp.ones(entry.shape, dtype)
        else:
            value = (scale * jax.random.normal(k, entry.shape, jnp.float32)).astype(dtype)
        weights.insert(tree, entry.path, weights.to_tree(entry, value))
    return stack_layers(tree, cfg)
