"""A checkpoint's weights in the Hugging Face layout (safetensors), read with no PyTorch and no download, onto
a family's parameter tree.

A directory holds ``model.safetensors``, or shards listed by ``model.safetensors.index.json``. Before any weight
is read, every file's header is read and checked on its own (:func:`read_header`: a header length the file
can hold, JSON, each tensor's dtype, shape and byte range inside the file, so a truncated shard is found by
its header); then :func:`match` maps every tensor name onto a family's layout (a list of :class:`Entry`, one
per parameter: its checkpoint name, where it goes in the tree and the shape the configuration implies) and
checks each shape and dtype, refusing tensors that map to no parameter unless told to leave them out. Only
then does :func:`read` read each tensor from the byte range its header gives (the format is a JSON header and
raw little-endian arrays: NumPy maps them, bfloat16 through ``ml_dtypes``, so nothing compiles while a
checkpoint loads), put it in the tree's layout and place it on the devices (sharded over a ``Mesh`` when one
is given), building the tree with :func:`insert` and stacking repeated layers with :func:`stack`.

A header is held to the safetensors format as the ``safetensors`` package reads it: the tensors' byte ranges
cover the data once, in order, with no hole, no overlap and nothing after the last (a file that breaks this
is damaged, or built to be read two ways), no name twice, and ``__metadata__`` an object of strings.

A tensor stored in one 16-bit format while the configuration names the other (float16 against bfloat16) is
refused: the same bits read as the other format are other numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

FLOAT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
"""The safetensors dtypes a weight may be stored in, and the dtypes they are."""
NUMPY_DTYPES = {
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
"""The NumPy dtype of the bytes of each floating safetensors dtype (little-endian, as the format stores them)."""
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
"""What :func:`match` does with tensors that map to no parameter: refuse them, or leave them out."""
LAYOUT = (
    "a checkpoint directory in the Hugging Face layout: model.safetensors, or shards "
    "model-0000i-of-0000n.safetensors listed by model.safetensors.index.json"
)
"""What a directory of weights holds, for messages (a family names itself in its own)."""


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor as a safetensors header describes it.

    Attributes:
        name: its name in the file.
        file: the file that holds it.
        dtype: the safetensors dtype (``"BF16"``, ``"F32"`` ...).
        shape: its shape.
        offset: where its bytes begin in the file.
    """

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int = 0


@dataclasses.dataclass(frozen=True)
class Entry:
    """One parameter of a family's tree and the checkpoint tensor it reads.

    Attributes:
        name: the tensor's name in the checkpoint (the family's published names).
        path: where it goes in the parameter tree (keys and list indices).
        shape: its shape on disk.
        kind: ``"linear"`` (transposed to (in, out)), ``"conv"`` (flattened to (in, out)) or ``"plain"``.
        dims: the configuration's fields each axis of ``shape`` comes from (``"vocab_size"``,
            ``"vision_config.hidden_size"``, ...), for errors that name the field a checkpoint disagrees with.
    """

    name: str
    path: tuple
    shape: tuple[int, ...]
    kind: str = "plain"
    dims: tuple[str, ...] = ()


def linear(name: str, path: tuple, n_in: tuple[int, str], n_out: tuple[int, str], bias: bool) -> list[Entry]:
    """A linear layer's weight (``name.weight``, (out, in) on disk) and bias; ``n_in``/``n_out`` are
    ``(size, the configuration field it comes from)``."""
    out = [Entry(f"{name}.weight", (*path, "kernel"), (n_out[0], n_in[0]), "linear", (n_out[1], n_in[1]))]
    if bias:
        out.append(Entry(f"{name}.bias", (*path, "bias"), (n_out[0],), "plain", (n_out[1],)))
    return out


def _once(path: Path):
    """A ``json.loads`` hook that refuses a name given twice in one object (the safetensors format forbids it;
    JSON readers keep one of the two silently)."""

    def pairs(items: list) -> dict:
        seen: set = set()
        for key, _ in items:
            if key in seen:
                raise ValueError(f"{path}: its safetensors header names {key!r} twice; expected each name once")
            seen.add(key)
        return dict(items)

    return pairs


def read_header(path: str | Path) -> dict[str, Tensor]:
    """The tensors the safetensors file at ``path`` holds, from its header alone, checked against the file:
    the header's length fits the file (and :data:`MAX_HEADER_BYTES`), the header is a JSON object naming each
    tensor once, ``__metadata__`` (when there is one) maps strings to strings, every tensor has a known dtype,
    a shape of non-negative integers and a byte range of the size they imply that lies inside the file, and
    the ranges cover the data once, in order (no hole, no overlap, no byte after the last): the format as the
    ``safetensors`` package reads it. A ValueError naming the file (and the tensor, its value and what is
    allowed) otherwise; nothing else is read."""
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
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_once(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: its safetensors header is not JSON ({e}); the file is damaged") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: its safetensors header is not a JSON object")
    data = size - 8 - n
    out, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                raise ValueError(f"{path}: its __metadata__ is {info!r}; expected an object of strings")
            for key, value in info.items():
                if not isinstance(value, str):
                    raise ValueError(f"{path}: __metadata__[{key!r}] is {value!r}; expected a string")
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
        out[name] = Tensor(name, path, dtype, tuple(shape), 8 + n + offsets[0])
        spans.append((offsets[0], offsets[1], name))
    end, last = 0, None
    for begin, stop, name in sorted(spans):
        if begin != end:
            if begin < end:
                how = f"overlaps tensor {last!r}, which ends at byte {end:,}"
            else:
                how = f"leaves the bytes from {end:,} to {begin:,} to no tensor"
            raise ValueError(
                f"{path}: tensor {name!r} has data_offsets {[begin, stop]}, which {how}; expected it to begin at "
                f"byte {end:,} (the tensors cover the data once, in order: a damaged file, or one built to be read "
                "two ways)"
            )
        end, last = stop, name
    if end != data:
        raise ValueError(
            f"{path}: its tensors end at byte {end:,} of the data, which holds {data:,} bytes: {data - end:,} bytes "
            "that no tensor holds (expected none: a damaged file, or one built to be read two ways)"
        )
    return out


def _read_index(directory: Path, layout: str) -> dict[str, Path]:
    index = directory / "model.safetensors.index.json"
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{index}: not a JSON file ({e}); expected {{'weight_map': {{tensor: shard}}}}") from None
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index} has no 'weight_map' (an object of tensor name -> shard file); expected {layout}")
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


def tensors(directory: str | Path, layout: str = LAYOUT) -> dict[str, Tensor]:
    """Every tensor of the checkpoint in ``directory`` (one file, or the shards of the index), from the files'
    headers (:func:`read_header`); a ValueError naming the index when a tensor it lists is not in its shard,
    a FileNotFoundError saying what the directory should hold (``layout``) when it holds no weights."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(directory)!r} does not exist; expected {layout}")
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if index.is_file():
        where = _read_index(directory, layout)
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
        f"no model.safetensors or model.safetensors.index.json in {str(directory)!r}; expected {layout}"
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`match` found: where each parameter's tensor is, and what maps to no parameter.

    Attributes:
        entries: the parameters (:class:`Entry`) and the tensor each reads.
        unknown: names of tensors that map to no parameter (sorted).
    """

    entries: tuple[tuple[Entry, Tensor], ...]
    unknown: tuple[str, ...]


def _shape_error(t: Tensor, e: Entry, config: str) -> str:
    where = f"tensor {t.name!r} in {t.file.name} has shape {t.shape}; {config} implies {e.shape}"
    if len(t.shape) == len(e.shape) and e.dims:
        axis = next(i for i, (a, b) in enumerate(zip(t.shape, e.shape)) if a != b)
        where += f" (axis {axis} is {e.dims[axis]}: {e.shape[axis]} in {config}, {t.shape[axis]} in the weights)"
    return where + f": {config} does not describe these weights"


def match(
    directory: str | Path,
    entries: list[Entry],
    canonical: Callable[[str], str] = lambda name: name,
    *,
    family: str = "the model",
    ignored: tuple[str, ...] = (),
    dtype: str | None = None,
    dtype_field: str = "dtype",
    unknown: str = "error",
    layout: str = LAYOUT,
) -> Plan:
    """The tensors of the checkpoint in ``directory`` matched to the parameters ``entries``, from the files'
    headers alone (no weight is read).

    Each tensor's name is taken to its ``canonical`` form (a family's published name) first; then every
    parameter's tensor must be present once, of the shape its entry states (the error names the
    configuration's field an axis comes from), stored as a float, and in the 16-bit format ``dtype`` names
    when it names one (``"float16"`` or ``"bfloat16"``: the configuration's dtype, read from ``config.json``'s
    field ``dtype_field``, which the message names: ``"dtype"``, or the older ``"torch_dtype"``). Tensors that map to no
    parameter (names in ``ignored`` excepted, such as a tied output head) are refused (``unknown="error"``:
    their count and the first five named, ``family`` naming the model) or left out (``unknown="ignore"``).
    Returns the :class:`Plan`.
    """
    if unknown not in UNKNOWN:
        raise ValueError(f"unknown={unknown!r} is not allowed; expected one of {UNKNOWN}")
    found = tensors(directory, layout)
    by_canonical: dict[str, Tensor] = {}
    for name, t in found.items():
        key = canonical(name)
        if key in by_canonical:
            raise ValueError(
                f"checkpoint {str(directory)!r} holds {key!r} twice: as {by_canonical[key].name!r} and {name!r}"
            )
        by_canonical[key] = t
    expected = {e.name for e in entries}
    extra = sorted(by_canonical[k].name for k in set(by_canonical) - expected - set(ignored))
    if extra and unknown == "error":
        raise ValueError(
            f"checkpoint {str(directory)!r} holds {len(extra)} tensor(s) that map to no parameter of {family}: "
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
    stated = {"float16": "F16", "bfloat16": "BF16"}.get(dtype or "")
    plan = []
    for e in entries:
        t = by_canonical[e.name]
        if t.shape != e.shape:
            raise ValueError(_shape_error(t, e, "config.json"))
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"tensor {t.name!r} in {t.file.name} is {t.dtype}; expected a floating dtype ({', '.join(FLOAT_DTYPES)})"
            )
        if stated and t.dtype in ("F16", "BF16") and t.dtype != stated:
            raise ValueError(
                f"tensor {t.name!r} in {t.file.name} is stored as {t.dtype} but config.json's {dtype_field} is "
                f"{dtype!r}: float16 and bfloat16 share a size, not a meaning (the same bits read as the other "
                f"are other numbers). Fix the label that is wrong: {dtype_field}, or the tensors' dtype"
            )
        plan.append((e, t))
    return Plan(tuple(plan), tuple(extra))


def to_tree(entry: Entry, value):
    """The checkpoint tensor ``value`` of ``entry`` in the layout of the parameter tree: a linear layer's
    weight transposed to (in, out), a convolution whose stride is its kernel flattened to the linear layer it
    equals (in = the kernel's other axes, row-major), anything else as it is."""
    if entry.kind == "linear":
        return value.T
    if entry.kind == "conv":
        return value.reshape(value.shape[0], -1).T
    return value


def insert(tree: dict, path: tuple, value) -> None:
    """Put ``value`` at ``path`` in the nested dict/list ``tree``, creating what is missing."""
    node = tree
    for key, nxt in zip(path[:-1], path[1:]):
        if isinstance(node, list):
            while len(node) <= key:
                node.append(None)
            if node[key] is None:
                node[key] = [] if isinstance(nxt, int) else {}
            node = node[key]
        else:
            node = node.setdefault(key, [] if isinstance(nxt, int) else {})
    if isinstance(node, list):
        while len(node) <= path[-1]:
            node.append(None)
    node[path[-1]] = value


def stack(items: list, place=None):
    """The trees ``items`` (of one structure) as one tree whose arrays have a leading axis, built one array
    at a time and the items' arrays dropped as it goes (so the copies held at once are one array's; NumPy
    arrays are stacked on the host); ``place`` (optional) puts each stacked array where it goes. ``items`` is
    emptied."""
    flat = [jax.tree_util.tree_flatten(item) for item in items]
    treedef = flat[0][1]
    columns = [leaves for leaves, _ in flat]
    del flat
    items.clear()
    stacked = []
    for j in range(len(columns[0])):
        column = [row[j] for row in columns]
        for row in columns:
            row[j] = None
        value = np.stack(column) if all(isinstance(c, np.ndarray) for c in column) else jnp.stack(column)
        del column
        stacked.append(value if place is None else place(value))
    return jax.tree_util.tree_unflatten(treedef, stacked)


def count(params) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def sharding_for(shape: tuple[int, ...], mesh: jax.sharding.Mesh | None):
    """Where a parameter of ``shape`` goes: on a ``mesh``, its largest axis split over the mesh's first axis
    when it divides evenly (replicated otherwise); without one, the default device (None)."""
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


def placer(mesh: jax.sharding.Mesh | None):
    """A function that puts an array where :func:`sharding_for` says (for :func:`read` and :func:`stack`)."""

    def place(value):
        sharding = sharding_for(value.shape, mesh)
        # a host copy put on the device: jnp.asarray of a memory-mapped array compiled a small program per
        # weight shape, and the copy keeps the tree from the file (which may be rewritten while it is held)
        return jax.device_put(np.array(value), sharding)

    return place


def array(t: Tensor) -> np.ndarray:
    """The values of the floating tensor ``t`` (from :func:`read_header`), mapped read-only from its file."""
    if math.prod(t.shape) == 0:
        return np.zeros(t.shape, NUMPY_DTYPES[t.dtype])
    return np.memmap(t.file, dtype=NUMPY_DTYPES[t.dtype], mode="r", offset=t.offset, shape=t.shape)


def read(plan: Plan, dtype=None, mesh=None, later: Callable[[tuple], bool] = lambda path: False) -> dict:
    """The parameter tree of ``plan`` (from :func:`match`): every tensor read (:func:`array`), put in the tree's
    layout (:func:`to_tree`), cast to ``dtype`` (default: each tensor's own) and inserted at its entry's path.

    Each array is placed on the devices (:func:`placer` of ``mesh``) as it is read, except those whose path
    ``later`` holds (the layers a family stacks: they stay NumPy arrays, placed once stacked).
    """
    place = placer(mesh)
    tree: dict = {}
    for e, t in plan.entries:
        value = to_tree(e, array(t)).astype(np.dtype(dtype) if dtype else NUMPY_DTYPES[t.dtype])
        insert(tree, e.path, value if later(e.path) else place(value))
    return tree
