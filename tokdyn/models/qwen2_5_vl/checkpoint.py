"""Reading a Qwen2.5-VL checkpoint directory in the Hugging Face layout, with no PyTorch and no download.

A directory holds ``config.json`` and either ``model.safetensors`` or shards listed by
``model.safetensors.index.json``. Before any weight is read, every file's safetensors header is read and checked
on its own (:func:`read_header`: a header length the file can hold, JSON, each tensor's dtype, shape and byte
range inside the file, so a truncated shard is found by its header), every tensor name is mapped to the
parameter tree (:mod:`~tokdyn.models.qwen2_5_vl.params`) and its shape and dtype checked against the
configuration (:func:`inspect`). Then every tensor is read through the ``safetensors`` package (its Flax API,
which keeps bfloat16) and placed on the devices (sharded over a ``Mesh`` when one is given).

Tensors that map to no parameter (a head a fine-tune added, say) are refused, naming the first few and their
count, unless the caller says ``unknown="ignore"``. A tensor stored in one 16-bit format while ``config.json``'s
``torch_dtype`` names the other (float16 against bfloat16) is refused: the same bits read as the other format
are other numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
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
ITEM_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
"""The bytes of one element of each safetensors dtype."""
MAX_HEADER_BYTES = 100_000_000
"""The longest safetensors header read (the ``safetensors`` package's own limit)."""
UNKNOWN = ("error", "ignore")
"""What :func:`load_params` does with tensors that map to no parameter: refuse them, or leave them out."""


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor as a safetensors header describes it.

    Attributes:
        name: its name in the file.
        file: the file that holds it.
        dtype: the safetensors dtype (``"BF16"``, ``"F32"`` ...).
        shape: its shape.
    """

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]


def read_header(path: str | Path) -> dict[str, Tensor]:
    """The tensors the safetensors file at ``path`` holds, from its header alone, checked against the file:
    the header's length fits the file (and :data:`MAX_HEADER_BYTES`), the header is a JSON object, every
    tensor has a known dtype, a shape of non-negative integers and a byte range of the size they imply that
    lies inside the file. A ValueError naming the file (and the tensor) otherwise; nothing else is read."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: {size} bytes, too short for a safetensors file (truncated?)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise ValueError(
                f"{path}: its header claims {n:,} bytes but the file holds {size - 8:,} after the length (at most "
                f"{MAX_HEADER_BYTES:,} are read): not a safetensors file, or a truncated one"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: its safetensors header is not JSON ({e}); the file is damaged") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: its safetensors header is not a JSON object")
    data = size - 8 - n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict):
            raise ValueError(f"{where}: its header entry is {info!r}; expected dtype, shape and data_offsets")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in ITEM_BYTES:
            raise ValueError(f"{where} has dtype {dtype!r}; expected one of {sorted(ITEM_BYTES)}")
        ints = lambda x: isinstance(x, list) and all(type(v) is int and v >= 0 for v in x)  # noqa: E731
        if not ints(shape):
            raise ValueError(f"{where} has shape {shape!r}; expected a list of integers >= 0")
        if not ints(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
            raise ValueError(f"{where} has data_offsets {offsets!r}; expected [begin, end] with begin <= end")
        want = math.prod(shape) * ITEM_BYTES[dtype]
        if offsets[1] - offsets[0] != want:
            raise ValueError(
                f"{where}: its bytes {offsets} are {offsets[1] - offsets[0]:,} long; {dtype} {shape} needs {want:,}"
            )
        if offsets[1] > data:
            raise ValueError(
                f"{path} is truncated: tensor {name!r} ends at byte {offsets[1]:,} of the data, which holds "
                f"{data:,} bytes"
            )
        out[name] = Tensor(name, path, dtype, tuple(shape))
    return out


def _read_index(directory: Path) -> dict[str, Path]:
    index = directory / "model.safetensors.index.json"
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{index}: not a JSON file ({e}); expected {{'weight_map': {{tensor: shard}}}}") from None
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index} has no 'weight_map' (an object of tensor name -> shard file); expected {LAYOUT}")
    out = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or Path(shard).name != shard:
            raise ValueError(
                f"{index}: weight_map[{name!r}] is {shard!r}; expected the name of a shard file in {directory}"
            )
        out[name] = directory / shard
    for shard in sorted(set(out.values())):
        if not shard.is_file():
            raise FileNotFoundError(f"shard {shard.name} listed by {index.name} is missing from {directory}")
    return out


def tensors(directory: str | Path) -> dict[str, Tensor]:
    """Every tensor of the checkpoint in ``directory`` (one file, or the shards of the index), from the files'
    headers (:func:`read_header`); a ValueError naming the index when a tensor it lists is not in its shard."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(directory)!r} does not exist; expected {LAYOUT}")
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if index.is_file():
        where = _read_index(directory)
        headers = {shard: read_header(shard) for shard in sorted(set(where.values()))}
        out = {}
        for name, shard in where.items():
            if name not in headers[shard]:
                raise ValueError(f"{index.name} puts tensor {name!r} in {shard.name}, whose header does not hold it")
            out[name] = headers[shard][name]
        return out
    if single.is_file():
        return read_header(single)
    raise FileNotFoundError(
        f"no model.safetensors or model.safetensors.index.json in {str(directory)!r}; expected {LAYOUT}"
    )


def files(directory: str | Path) -> dict[str, Path]:
    """The safetensors file of each tensor name in ``directory`` (one file, or the shards of the index)."""
    return {name: t.file for name, t in tensors(directory).items()}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`inspect` found: where each parameter's tensor is, and what maps to no parameter.

    Attributes:
        entries: the parameters (:class:`~tokdyn.models.qwen2_5_vl.params.Entry`) and the tensor each reads.
        unknown: names of tensors that map to no parameter (sorted).
    """

    entries: tuple[tuple[params_lib.Entry, Tensor], ...]
    unknown: tuple[str, ...]


def _shape_error(t: Tensor, e: params_lib.Entry) -> str:
    where = f"tensor {t.name!r} in {t.file.name} has shape {t.shape}; config.json implies {e.shape}"
    if len(t.shape) == len(e.shape) and e.dims:
        axis = next(i for i, (a, b) in enumerate(zip(t.shape, e.shape)) if a != b)
        where += f" (axis {axis} is {e.dims[axis]}: {e.shape[axis]} in config.json, {t.shape[axis]} in the weights)"
    return where + ": config.json does not describe these weights"


def inspect(directory: str | Path, cfg: Config, unknown: str = "error") -> Plan:
    """Check the checkpoint in ``directory`` against ``cfg`` from the files' headers alone (no weight is read):
    every parameter's tensor present once, of the shape ``cfg`` implies (the error names the configuration's
    field an axis comes from), stored as a float, and in the 16-bit format ``config.json``'s ``torch_dtype``
    names when it names one; tensors that map to no parameter refused (``unknown="error"``, their count and
    the first five named) or left out (``unknown="ignore"``). Returns the :class:`Plan`."""
    if unknown not in UNKNOWN:
        raise ValueError(f"unknown={unknown!r} is not allowed; expected one of {UNKNOWN}")
    found = tensors(directory)
    by_canonical: dict[str, Tensor] = {}
    for name, t in found.items():
        key = params_lib.canonical(name)
        if key in by_canonical:
            raise ValueError(
                f"checkpoint {str(directory)!r} holds {key!r} twice: as {by_canonical[key].name!r} and {name!r}"
            )
        by_canonical[key] = t
    entries = params_lib.layout(cfg)
    expected = {e.name for e in entries}
    ignored = {"lm_head.weight"} if cfg.text.tie_word_embeddings else set()
    extra = sorted(by_canonical[k].name for k in set(by_canonical) - expected - ignored)
    if extra and unknown == "error":
        raise ValueError(
            f"checkpoint {str(directory)!r} holds {len(extra)} tensor(s) that map to no parameter of Qwen2.5-VL: "
            f"{extra[:5]}{' ...' if len(extra) > 5 else ''} (modules tokdyn does not know, such as a head a "
            "fine-tune added, or a config.json that does not match the weights); pass unknown='ignore' to load "
            "the model without them"
        )
    missing = [e.name for e in entries if e.name not in by_canonical]
    if missing:
        raise ValueError(
            f"checkpoint {str(directory)!r} lacks {len(missing)} tensor(s) config.json implies: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}"
        )
    stated = {"float16": "F16", "bfloat16": "BF16"}.get(cfg.dtype or "")
    plan = []
    for e in entries:
        t = by_canonical[e.name]
        if t.shape != e.shape:
            raise ValueError(_shape_error(t, e))
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"tensor {t.name!r} in {t.file.name} is {t.dtype}; expected a floating dtype ({', '.join(FLOAT_DTYPES)})"
            )
        if stated and t.dtype in ("F16", "BF16") and t.dtype != stated:
            raise ValueError(
                f"tensor {t.name!r} in {t.file.name} is stored as {t.dtype} but config.json's torch_dtype is "
                f"{cfg.dtype!r}: float16 and bfloat16 share a size, not a meaning (the same bits read as the other "
                "are other numbers). Fix the label that is wrong: torch_dtype, or the tensors' dtype"
            )
        plan.append((e, t))
    return Plan(tuple(plan), tuple(extra))


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


def _safetensors():
    try:
        import safetensors
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading a checkpoint needs the 'safetensors' package: pip install 'tokdyn[models]'"
        ) from None
    return safetensors


def load_params(directory: str | Path, cfg: Config, dtype=None, mesh=None, unknown: str = "error") -> dict:
    """The parameter tree of the checkpoint in ``directory`` for configuration ``cfg``, cast to ``dtype``
    (default: the dtype the configuration states, else each tensor's own).

    Everything :func:`inspect` checks is checked first, from the headers (a ValueError naming the file and
    the tensor); ``unknown`` says what to do with tensors that map to no parameter (``"error"`` or
    ``"ignore"``).
    """
    plan = inspect(directory, cfg, unknown)
    safe_open = _safetensors().safe_open

    def place(value):
        sharding = sharding_for(value.shape, mesh)
        return jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)

    tree: dict = {}
    by_file: dict[Path, list] = {}
    for e, t in plan.entries:
        by_file.setdefault(t.file, []).append((e, t))
    for path, group in by_file.items():
        try:
            with safe_open(str(path), framework="flax") as f:
                for e, t in group:
                    value = params_lib.to_tree(e, f.get_tensor(t.name)).astype(dtype or FLOAT_DTYPES[t.dtype])
                    if e.path[:2] not in (("text", "layers"), ("vision", "blocks")):  # placed once stacked
                        value = place(value)
                    params_lib.insert(tree, e.path, value)
        except Exception as err:
            if type(err).__name__ != "SafetensorError":
                raise
            raise ValueError(f"{path}: the safetensors package cannot read it ({err})") from None
    return params_lib.stack_layers(tree, cfg, place)
