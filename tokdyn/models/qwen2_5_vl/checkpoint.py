"""Reading a Qwen2.5-VL checkpoint directory in the Hugging Face layout, with no PyTorch and no download.

A directory holds ``config.json`` and either ``model.safetensors`` or shards listed by
``model.safetensors.index.json``. Every tensor is read through the ``safetensors`` package (its Flax
API, which keeps bfloat16), its name mapped to the parameter tree (:mod:`~tokdyn.models.qwen2_5_vl.params`), its shape and dtype
checked against the configuration before it is read, and it is placed on the devices (sharded over a
``Mesh`` when one is given).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp

from tokdyn.models.qwen2_5_vl import params as params_lib
from tokdyn.models.qwen2_5_vl.config import Config

LAYOUT = (
    "a Qwen2.5-VL checkpoint directory in the Hugging Face layout: config.json and model.safetensors, or "
    "shards model-0000i-of-0000n.safetensors listed by model.safetensors.index.json"
)
FLOAT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
"""The safetensors dtypes a weight may be stored in, and the dtypes they are."""


def _safetensors():
    try:
        import safetensors
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading a checkpoint needs the 'safetensors' package: pip install 'tokdyn[models]'"
        ) from None
    return safetensors


def files(directory: str | Path) -> dict[str, Path]:
    """The safetensors file of each tensor name in ``directory`` (one file, or the shards of the index)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(directory)!r} does not exist; expected {LAYOUT}")
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no 'weight_map'; expected {LAYOUT}")
        out = {name: directory / shard for name, shard in weight_map.items()}
        for shard in sorted(set(out.values())):
            if not shard.is_file():
                raise FileNotFoundError(f"shard {shard.name} listed by {index.name} is missing from {directory}")
        return out
    if single.is_file():
        safe_open = _safetensors().safe_open
        with safe_open(str(single), framework="flax") as f:
            return {name: single for name in f.keys()}
    raise FileNotFoundError(
        f"no model.safetensors or model.safetensors.index.json in {str(directory)!r}; expected {LAYOUT}"
    )


def sharding_for(shape: tuple[int, ...], mesh: jax.sharding.Mesh | None):
    """Where a parameter of ``shape`` goes: on a ``mesh``, its largest axis split over the mesh's first axis
    when it divides evenly (replicated otherwise); without one, the default device."""
    if mesh is None:
        return None
    from jax.sharding import NamedSharding, PartitionSpec

    axis = mesh.axis_names[0]
    n = mesh.shape[axis]
    spec = [None] * len(shape)
    if shape:
        big = max(range(len(shape)), key=lambda i: shape[i])
        if shape[big] % n == 0 and shape[big] >= n:
            spec[big] = axis
    return NamedSharding(mesh, PartitionSpec(*spec))


def load_params(directory: str | Path, cfg: Config, dtype=None, mesh=None) -> dict:
    """The parameter tree of the checkpoint in ``directory`` for configuration ``cfg``, cast to ``dtype``
    (default: the dtype the configuration states, else each tensor's own).

    Raises ValueError naming the tensor when one is missing, unexpected, of another shape than ``cfg``
    implies, or not a floating-point tensor.
    """
    safe_open = _safetensors().safe_open
    where = {params_lib.canonical(name): path for name, path in files(directory).items()}
    entries = params_lib.layout(cfg)
    expected = {e.name for e in entries}
    ignored = {"lm_head.weight"} if cfg.text.tie_word_embeddings else set()
    unexpected = sorted(set(where) - expected - ignored)
    if unexpected:
        raise ValueError(
            f"checkpoint {str(directory)!r} holds tensors this configuration has no place for: {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''} (does config.json match the weights?)"
        )
    missing = [e.name for e in entries if e.name not in where]
    if missing:
        raise ValueError(
            f"checkpoint {str(directory)!r} lacks tensors: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    originals = {params_lib.canonical(name): name for name in files(directory)}

    def place(value):
        sharding = sharding_for(value.shape, mesh)
        return jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)

    tree: dict = {}
    by_file: dict[Path, list] = {}
    for e in entries:
        by_file.setdefault(where[e.name], []).append(e)
    for path, group in by_file.items():
        with safe_open(str(path), framework="flax") as f:
            for e in group:
                name = originals[e.name]
                view = f.get_slice(name)
                stored, shape = view.get_dtype(), tuple(view.get_shape())
                if shape != e.shape:
                    raise ValueError(
                        f"tensor {name!r} in {path.name} has shape {shape}; the configuration expects {e.shape}"
                    )
                if stored not in FLOAT_DTYPES:
                    raise ValueError(
                        f"tensor {name!r} in {path.name} is {stored}; expected a floating dtype "
                        f"({', '.join(FLOAT_DTYPES)})"
                    )
                value = f.get_tensor(name)
                value = params_lib.to_tree(e, value).astype(dtype or FLOAT_DTYPES[stored])
                if e.path[:2] not in (("text", "layers"), ("vision", "blocks")):  # these are placed once stacked
                    value = place(value)
                params_lib.insert(tree, e.path, value)
    return params_lib.stack_layers(tree, cfg, place)
