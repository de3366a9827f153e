"""Writing a Qwen2.5-VL parameter tree as the files of a Hugging Face checkpoint: the inverse of
:mod:`~tokdyn.models.qwen2_5_vl.params`' map, and the configuration files ``transformers`` reads.

- :func:`check_tree`: the tree has the structure and shapes of a configuration's (as :func:`params.init
  <tokdyn.models.qwen2_5_vl.params.init>` and :func:`~tokdyn.models.qwen2_5_vl.load` make it), checked before
  anything is written;
- :func:`tensors`: each checkpoint tensor under its published name (``model.layers.0.self_attn.q_proj.weight``,
  ``visual.blocks.0...``), in the layout on disk (a linear layer's kernel transposed back to (out, in), the
  patch embedding back to its 3D convolution), one at a time, cast to the dtype written; the output head left out
  when tied to the embedding, as ``save_pretrained`` leaves it out;
- :func:`write_weights`: the tensors as ``model.safetensors``, or as shards of at most ``max_shard_bytes``
  listed by ``model.safetensors.index.json``, each file written atomically;
- :func:`config_dict`, :func:`generation_dict`, :func:`preprocessor_dict`: ``config.json`` (the layout
  ``transformers`` 5 saves: the decoder's fields under ``text_config``, ``rope_parameters``),
  ``generation_config.json`` and ``preprocessor_config.json`` of a configuration, which
  :func:`tokdyn.models.qwen2_5_vl.config.read` and ``transformers`` read back to the same model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np

from tokdyn import io
from tokdyn.models.qwen2_5_vl import params as params_lib
from tokdyn.models.qwen2_5_vl.config import Config
from tokdyn.models.qwen2_5_vl.processor import ImageProcessor

DTYPES = ("float32", "bfloat16", "float16")
"""The dtypes the weights may be written in."""
MAX_SHARD_BYTES = 5 * 1024**3
"""The largest safetensors file :func:`write_weights` writes by default (5 GiB, as ``save_pretrained``)."""
SAFETENSORS_METADATA = {"format": "pt"}
"""The header metadata ``transformers`` expects of a PyTorch checkpoint's safetensors file."""


def from_tree(entry: params_lib.Entry, value: np.ndarray) -> np.ndarray:
    """The parameter tree's ``value`` of ``entry`` in the checkpoint's layout (the inverse of
    :func:`tokdyn.models.qwen2_5_vl.params.to_tree`): a linear kernel (in, out) as its (out, in) weight, the
    patch embedding's (in, out) matrix as its convolution's (out, channels, frames, patch, patch)."""
    if entry.kind == "linear":
        return value.T
    if entry.kind == "conv":
        return value.T.reshape(entry.shape)
    return value


def _block_run(vision, index: int) -> tuple[int, int]:
    """(run, position in the run) of vision block ``index`` (:func:`~tokdyn.models.qwen2_5_vl.params.block_runs`)."""
    start = 0
    for run, (_, length) in enumerate(params_lib.block_runs(vision)):
        if index < start + length:
            return run, index - start
        start += length
    raise IndexError(f"vision block {index} is past depth {vision.depth}")


def lookup(tree: dict, entry: params_lib.Entry, cfg: Config):
    """The array of ``entry`` in the stacked parameter ``tree`` (one decoder layer's slice of the stacked
    layers, one vision block's slice of its run)."""
    path = entry.path
    if path[:2] == ("text", "layers"):
        node, index, rest = tree["text"]["layers"], path[2], path[3:]
    elif path[:2] == ("vision", "blocks"):
        run, index = _block_run(cfg.vision, path[2])
        node, rest = tree["vision"]["blocks"][run], path[3:]
    else:
        node, index, rest = tree, None, path
    for key in rest:
        node = node[key]
    return node if index is None else node[index]


def _shape_tree(cfg: Config):
    return jax.eval_shape(lambda: params_lib.init(jax.random.key(0), cfg))


def check_tree(tree, cfg: Config) -> None:
    """Refuse a parameter tree that is not one of ``cfg`` (its structure, or a leaf's shape, differs from
    :func:`~tokdyn.models.qwen2_5_vl.params.init`'s): a ValueError naming the first path that is missing, extra
    or of another shape, and the shape ``cfg`` implies."""
    want = {jax.tree_util.keystr(p): leaf.shape for p, leaf in jax.tree_util.tree_leaves_with_path(_shape_tree(cfg))}
    got = {jax.tree_util.keystr(p): np.shape(leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}
    missing = sorted(set(want) - set(got))
    if missing:
        raise ValueError(
            f"params lacks {len(missing)} array(s) the configuration implies: {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''} (the tree of tokdyn.models.qwen2_5_vl.params.init)"
        )
    extra = sorted(set(got) - set(want))
    if extra:
        raise ValueError(
            f"params holds {len(extra)} array(s) no tensor of the configuration maps to: {extra[:3]}"
            f"{' ...' if len(extra) > 3 else ''}"
        )
    for path, shape in want.items():
        if tuple(got[path]) != tuple(shape):
            raise ValueError(f"params{path} has shape {tuple(got[path])}; the configuration implies {tuple(shape)}")


def _dtype(dtype: str):
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one the weights may be written in; expected one of {DTYPES}")
    import ml_dtypes

    return ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)


def tensors(tree, cfg: Config, dtype: str = "float32") -> Iterator[tuple[str, np.ndarray]]:
    """``(name, tensor)`` of every tensor of the checkpoint of ``tree`` (checked by :func:`check_tree` first), in
    the order of :func:`~tokdyn.models.qwen2_5_vl.params.layout`, each a contiguous host array of ``dtype``
    (``"float32"``, ``"bfloat16"`` or ``"float16"``), made one at a time."""
    cast = _dtype(dtype)
    check_tree(tree, cfg)
    for entry in params_lib.layout(cfg):
        value = np.asarray(lookup(tree, entry, cfg))
        yield entry.name, np.ascontiguousarray(from_tree(entry, value).astype(cast))


def _write_safetensors(path: Path, named: dict) -> None:
    from safetensors.numpy import save

    data = save(named, metadata=SAFETENSORS_METADATA)
    with io.atomic_write(str(path), "wb", size=len(data)) as f:
        f.write(data)


def write_weights(
    directory: str | Path, tree, cfg: Config, dtype: str = "float32", max_shard_bytes: int = MAX_SHARD_BYTES
) -> list[str]:
    """Write the checkpoint's tensors of ``tree`` into ``directory`` (which must exist): ``model.safetensors``
    when they fit in ``max_shard_bytes``, else ``model-0000i-of-0000n.safetensors`` shards (tensors in layout
    order, a shard closed before it would pass ``max_shard_bytes``; a tensor larger than that alone in its own)
    and ``model.safetensors.index.json``, as ``save_pretrained`` lays them out. Each file is written atomically
    (:func:`tokdyn.io.atomic_write`). Returns the names of the files written."""
    directory = Path(directory)
    if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int) or max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be a positive int, got {max_shard_bytes!r}")
    item = np.dtype(_dtype(dtype)).itemsize
    entries = params_lib.layout(cfg)
    sizes = [int(np.prod(e.shape)) * item for e in entries]
    groups: list[list[int]] = [[]]
    used = 0
    for i, size in enumerate(sizes):
        if groups[-1] and used + size > max_shard_bytes:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += size
    stream = tensors(tree, cfg, dtype)
    if len(groups) == 1:
        _write_safetensors(directory / "model.safetensors", dict(stream))
        return ["model.safetensors"]
    written, weight_map = [], {}
    for k, group in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        shard = dict(next(stream) for _ in group)
        _write_safetensors(directory / name, shard)
        weight_map.update({t: name for t in shard})
        written.append(name)
        del shard
    index = {"metadata": {"total_size": int(sum(sizes))}, "weight_map": weight_map}
    io.write_json(str(directory / "model.safetensors.index.json"), index)
    return written + ["model.safetensors.index.json"]


def _ids(value: tuple[int, ...]):
    return value[0] if len(value) == 1 else list(value)


def config_dict(
    cfg: Config,
    *,
    bos_token_id: int | None = None,
    pad_token_id: int | None = None,
    max_position_embeddings: int = 32768,
) -> dict:
    """``config.json`` of ``cfg`` in the layout ``transformers`` 5 saves (the decoder's fields under
    ``text_config`` with ``rope_parameters``, the vision tower's under ``vision_config``, the ids and
    ``tie_word_embeddings`` at the top); ``bos_token_id``, ``pad_token_id`` and ``max_position_embeddings``
    are the decoder's fields tokdyn does not use, written for ``transformers``. :func:`config.from_dict
    <tokdyn.models.qwen2_5_vl.config.from_dict>` reads it back to ``cfg``."""
    v, t = cfg.vision, cfg.text
    text = {
        "attention_dropout": 0.0,
        "bos_token_id": bos_token_id,
        "eos_token_id": _ids(cfg.eos_token_id) if cfg.eos_token_id else None,
        "hidden_act": t.hidden_act,
        "hidden_size": t.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": t.intermediate_size,
        "layer_types": ["full_attention"] * t.num_hidden_layers,
        "max_position_embeddings": max_position_embeddings,
        "max_window_layers": t.num_hidden_layers,
        "model_type": "qwen2_5_vl_text",
        "num_attention_heads": t.num_attention_heads,
        "num_hidden_layers": t.num_hidden_layers,
        "num_key_value_heads": t.num_key_value_heads,
        "pad_token_id": pad_token_id,
        "rms_norm_eps": t.rms_norm_eps,
        "rope_parameters": {"mrope_section": list(t.mrope_section), "rope_theta": t.rope_theta, "rope_type": "default"},
        "sliding_window": None,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": t.vocab_size,
    }
    vision = {
        "depth": v.depth,
        "fullatt_block_indexes": list(v.fullatt_block_indexes),
        "hidden_act": v.hidden_act,
        "hidden_size": v.hidden_size,
        "in_channels": v.in_channels,
        "initializer_range": 0.02,
        "intermediate_size": v.intermediate_size,
        "model_type": "qwen2_5_vl_vision",
        "num_heads": v.num_heads,
        "out_hidden_size": v.out_hidden_size,
        "patch_size": v.patch_size,
        "rope_parameters": {"rope_theta": v.rope_theta, "rope_type": "axial"},
        "spatial_merge_size": v.spatial_merge_size,
        "temporal_patch_size": v.temporal_patch_size,
        "tokens_per_second": v.tokens_per_second,
        "window_size": v.window_size,
    }
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "dtype": cfg.dtype or "float32",
        "image_token_id": cfg.image_token_id,
        "model_type": "qwen2_5_vl",
        "text_config": text,
        "tie_word_embeddings": t.tie_word_embeddings,
        "video_token_id": cfg.video_token_id,
        "vision_config": vision,
        "vision_end_token_id": cfg.vision_end_token_id,
        "vision_start_token_id": cfg.vision_start_token_id,
    }


def generation_dict(cfg: Config, *, bos_token_id: int | None = None, pad_token_id: int | None = None) -> dict:
    """``generation_config.json`` for greedy decoding (``do_sample`` false, no penalty) that stops at
    ``cfg``'s ``eos_token_id``."""
    out = {"do_sample": False, "eos_token_id": list(cfg.eos_token_id)}
    if bos_token_id is not None:
        out["bos_token_id"] = bos_token_id
    if pad_token_id is not None:
        out["pad_token_id"] = pad_token_id
    return out


def preprocessor_dict(processor: ImageProcessor) -> dict:
    """``preprocessor_config.json`` of the image processor's settings (``size`` and ``min_pixels`` /
    ``max_pixels`` both, as the published Qwen2.5-VL files hold them), read back by
    :meth:`ImageProcessor.read <tokdyn.models.qwen2_5_vl.processor.ImageProcessor.read>` and ``transformers``."""
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(processor.image_mean),
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_std": list(processor.image_std),
        "max_pixels": processor.max_pixels,
        "merge_size": processor.merge_size,
        "min_pixels": processor.min_pixels,
        "patch_size": processor.patch_size,
        "processor_class": "Qwen2_5_VLProcessor",
        "resample": 3,
        "rescale_factor": processor.rescale_factor,
        "size": {"longest_edge": processor.max_pixels, "shortest_edge": processor.min_pixels},
        "temporal_patch_size": processor.temporal_patch_size,
    }


def json_text(value: dict) -> str:
    """The text a configuration file is written with: indented JSON, keys in order, a final newline."""
    return json.dumps(value, indent=2) + "\n"


__all__ = [
    "DTYPES",
    "MAX_SHARD_BYTES",
    "SAFETENSORS_METADATA",
    "check_tree",
    "config_dict",
    "from_tree",
    "generation_dict",
    "json_text",
    "lookup",
    "preprocessor_dict",
    "tensors",
    "write_weights",
]
