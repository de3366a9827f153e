"""The parameters of Qwen2.5-VL: their tree, and how each maps to a tensor of a Hugging Face checkpoint.

The tree (``params``) is plain nested dicts and lists of arrays::

    {"vision": {"patch_embed": {"kernel"}, "blocks": [{"norm1", "norm2", "attn": {"qkv", "proj"},
                "mlp": {"gate", "up", "down"}}, ...runs], "merger": {"norm", "fc1", "fc2"}},
     "text": {"embed", "layers": {"input_norm", "post_norm", "attn": {"q", "k", "v", "o"},
              "mlp": {"gate", "up", "down"}}, "norm", "lm_head": {"kernel"}}}

The decoder's layers are stacked: every array of ``text.layers`` has a leading axis of length
``num_hidden_layers`` (the decoder scans over it, so a model compiles one layer, not all of them). The vision
blocks are a list of runs (:func:`block_runs`): consecutive blocks of the same attention (windowed, or full)
stacked along a leading axis, each run scanned.

Linear layers hold ``{"kernel": (in, out), "bias": (out,)}`` (the checkpoint's ``weight`` transposed); the
3D patch embedding's convolution (stride = kernel) is the linear layer it equals, over ``pixel_values``' rows.
:func:`layout` lists every tensor with its checkpoint name, its tree path and its shape on disk, as
:class:`~tokdyn.models.blocks.weights.Entry` values; the tree is built from them by the shared
:mod:`tokdyn.models.blocks.weights` (:class:`Entry`, :func:`to_tree`, :func:`insert`, :func:`stack` and
:func:`count` are its names).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokdyn.models.blocks.weights import Entry, count, insert, linear, stack, to_tree
from tokdyn.models.qwen2_5_vl.config import Config, VisionConfig

__all__ = [
    "ALIASES",
    "Entry",
    "block_runs",
    "canonical",
    "count",
    "init",
    "insert",
    "layout",
    "stack",
    "stack_layers",
    "stacked",
    "to_tree",
]


def layout(cfg: Config) -> list[Entry]:
    """Every tensor a checkpoint of ``cfg`` holds (the output head only when its weights are not tied)."""
    v, t = cfg.vision, cfg.text
    out: list[Entry] = []
    vp = v.patch_size
    vw = (v.hidden_size, "vision_config.hidden_size")
    out.append(
        Entry(
            "visual.patch_embed.proj.weight",
            ("vision", "patch_embed", "kernel"),
            (v.hidden_size, v.in_channels, v.temporal_patch_size, vp, vp),
            "conv",
            (
                vw[1],
                "vision_config.in_channels",
                "vision_config.temporal_patch_size",
                *["vision_config.patch_size"] * 2,
            ),
        )
    )
    vmlp = (v.intermediate_size, "vision_config.intermediate_size")
    for i in range(v.depth):
        pre, path = f"visual.blocks.{i}", ("vision", "blocks", i)
        out.append(Entry(f"{pre}.norm1.weight", (*path, "norm1"), (v.hidden_size,), dims=(vw[1],)))
        out.append(Entry(f"{pre}.norm2.weight", (*path, "norm2"), (v.hidden_size,), dims=(vw[1],)))
        qkv = (3 * v.hidden_size, "3 x vision_config.hidden_size")
        out += linear(f"{pre}.attn.qkv", (*path, "attn", "qkv"), vw, qkv, True)
        out += linear(f"{pre}.attn.proj", (*path, "attn", "proj"), vw, vw, True)
        for part in ("gate", "up"):
            out += linear(f"{pre}.mlp.{part}_proj", (*path, "mlp", part), vw, vmlp, True)
        out += linear(f"{pre}.mlp.down_proj", (*path, "mlp", "down"), vmlp, vw, True)
    merged = (v.hidden_size * v.spatial_merge_size**2, "vision_config.hidden_size x spatial_merge_size^2")
    out.append(Entry("visual.merger.ln_q.weight", ("vision", "merger", "norm"), (v.hidden_size,), dims=(vw[1],)))
    out += linear("visual.merger.mlp.0", ("vision", "merger", "fc1"), merged, merged, True)
    out += linear(
        "visual.merger.mlp.2",
        ("vision", "merger", "fc2"),
        merged,
        (v.out_hidden_size, "vision_config.out_hidden_size"),
        True,
    )

    d, hd = (t.hidden_size, "hidden_size"), t.head_dim
    vocab = (t.vocab_size, "vocab_size")
    q = (t.num_attention_heads * hd, "num_attention_heads x head width")
    kv = (t.num_key_value_heads * hd, "num_key_value_heads x head width")
    mlp = (t.intermediate_size, "intermediate_size")
    out.append(Entry("model.embed_tokens.weight", ("text", "embed"), (vocab[0], d[0]), dims=(vocab[1], d[1])))
    for i in range(t.num_hidden_layers):
        pre, path = f"model.layers.{i}", ("text", "layers", i)
        out.append(Entry(f"{pre}.input_layernorm.weight", (*path, "input_norm"), (d[0],), dims=(d[1],)))
        out.append(Entry(f"{pre}.post_attention_layernorm.weight", (*path, "post_norm"), (d[0],), dims=(d[1],)))
        out += linear(f"{pre}.self_attn.q_proj", (*path, "attn", "q"), d, q, True)
        out += linear(f"{pre}.self_attn.k_proj", (*path, "attn", "k"), d, kv, True)
        out += linear(f"{pre}.self_attn.v_proj", (*path, "attn", "v"), d, kv, True)
        out += linear(f"{pre}.self_attn.o_proj", (*path, "attn", "o"), q, d, False)
        for part in ("gate", "up"):
            out += linear(f"{pre}.mlp.{part}_proj", (*path, "mlp", part), d, mlp, False)
        out += linear(f"{pre}.mlp.down_proj", (*path, "mlp", "down"), mlp, d, False)
    out.append(Entry("model.norm.weight", ("text", "norm"), (d[0],), dims=(d[1],)))
    if not t.tie_word_embeddings:
        out += linear("lm_head", ("text", "lm_head"), d, vocab, False)
    return out


ALIASES = (("model.language_model.", "model."), ("model.visual.", "visual."))
"""Prefixes of ``transformers``' in-memory names and the published names they stand for."""


def canonical(name: str) -> str:
    """The published checkpoint name of ``name`` (``model.language_model.x`` -> ``model.x``, ...)."""
    for new, old in ALIASES:
        if name.startswith(new):
            return old + name[len(new) :]
    return name


def block_runs(vision: VisionConfig) -> list[tuple[bool, int]]:
    """The vision blocks as runs of consecutive blocks of the same attention: ``(full attention?, length)``."""
    runs: list[tuple[bool, int]] = []
    for i in range(vision.depth):
        full = i in vision.fullatt_block_indexes
        if runs and runs[-1][0] == full:
            runs[-1] = (full, runs[-1][1] + 1)
        else:
            runs.append((full, 1))
    return runs


def stacked(path: tuple) -> bool:
    """Whether the parameter at ``path`` is one of a stack (a decoder layer's, or a vision block's)."""
    return path[:2] in (("text", "layers"), ("vision", "blocks"))


def stack_layers(tree: dict, cfg: Config, place=None) -> dict:
    """``tree`` as :func:`insert` builds it from the checkpoint's tensors (a list of decoder layers, a list of
    vision blocks) with the decoder's layers stacked into one and the vision blocks into runs
    (:func:`block_runs`)."""
    if isinstance(tree["text"]["layers"], list):
        tree["text"]["layers"] = stack(tree["text"]["layers"], place)
    blocks = tree["vision"]["blocks"]
    if blocks and blocks[0]["norm1"].ndim == 1:  # one dict per block, not yet stacked
        runs, start = [], 0
        for _, length in block_runs(cfg.vision):
            runs.append(stack(blocks[start : start + length], place))
            start += length
        tree["vision"]["blocks"] = runs
    return tree


def init(key: jax.Array, cfg: Config, dtype=jnp.float32, scale: float = 0.02) -> dict:
    """Random parameters of ``cfg`` (normal weights of standard deviation ``scale``, norms at one): for tests and
    benchmarks at sizes no checkpoint is at hand for."""
    tree: dict = {}
    entries = layout(cfg)
    keys = jax.random.split(key, len(entries))
    for k, entry in zip(keys, entries):
        if entry.name.endswith("norm.weight") or "layernorm" in entry.name or entry.name.endswith("norm1.weight"):
            value = jnp.ones(entry.shape, dtype)
        elif entry.name.endswith("norm2.weight") or entry.name.endswith("ln_q.weight"):
            value = jnp.ones(entry.shape, dtype)
        else:
            value = (scale * jax.random.normal(k, entry.shape, jnp.float32)).astype(dtype)
        insert(tree, entry.path, to_tree(entry, value))
    return stack_layers(tree, cfg)
