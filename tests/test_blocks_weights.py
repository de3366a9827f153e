"""The shared safetensors reader (``tokdyn.models.blocks.weights``) against the ``safetensors`` package, the
format's reference reader: the files it refuses (byte ranges with a hole, an overlap or bytes after the last,
a name twice, metadata that is not strings) are refused from the header alone, naming the file, the tensor
and what is allowed; the files it reads (every floating dtype, an empty tensor, a scalar, no tensors) give
its values. Each file is written here, a few bytes long."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tokdyn.models.blocks import weights

safetensors = pytest.importorskip("safetensors")


def write(path, header, data: bytes, text: str | None = None) -> None:
    """A safetensors file of ``header`` (or the raw header ``text``) and ``data``."""
    head = (json.dumps(header) if text is None else text).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


def f32(begin: int, end: int) -> dict:
    return {"dtype": "F32", "shape": [(end - begin) // 4], "data_offsets": [begin, end]}


DATA = np.arange(4, dtype="<f4").tobytes()  # 16 bytes: two F32 tensors of 2
BROKEN = {
    "trailing bytes": ({"a": f32(0, 8), "b": f32(8, 16)}, DATA + bytes(8), r"end at byte 16 of the data, which "),
    "hole": ({"a": f32(0, 8), "b": f32(16, 24)}, DATA + bytes(8), r"'b' has data_offsets \[16, 24\].*bytes from 8"),
    "overlap": ({"a": f32(0, 8), "b": f32(4, 12)}, DATA, r"'b' has data_offsets \[4, 12\], which overlaps tensor 'a'"),
    "shared bytes": ({"a": f32(0, 8), "b": f32(0, 8)}, DATA[:8], r"'b' has data_offsets \[0, 8\], which overlaps"),
    "not from 0": ({"a": f32(8, 16)}, DATA, r"'a' has data_offsets \[8, 16\].*bytes from 0 to 8"),
    "empty in a tensor": (
        {"a": f32(0, 8), "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}},
        DATA[:8],
        r"'e' has data_offsets \[4, 4\], which overlaps tensor 'a'",
    ),
    "name twice": (None, DATA, r"names 'a' twice; expected each name once"),
    "metadata not strings": ({"__metadata__": {"format": 1}, "a": f32(0, 8)}, DATA[:8], r"\['format'\] is 1; exp"),
    "metadata not an object": ({"__metadata__": ["pt"], "a": f32(0, 8)}, DATA[:8], r"__metadata__ is \['pt'\]"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_files_the_reference_reader_refuses_are_refused_from_the_header(tmp_path, case):
    header, data, match = BROKEN[case]
    path = tmp_path / "model.safetensors"
    text = '{"a": %s, "a": %s}' % (json.dumps(f32(0, 8)), json.dumps(f32(8, 16))) if header is None else None
    write(path, header, data, text)
    with pytest.raises(Exception, match="SafetensorError|deserializ") as reference:  # the package's own refusal
        with safetensors.safe_open(str(path), framework="numpy") as f:
            [f.get_tensor(k) for k in f.keys()]
    assert type(reference.value).__name__ == "SafetensorError"
    with pytest.raises(ValueError, match=match) as e:
        weights.read_header(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_files_the_reference_reader_reads_give_its_values(tmp_path):
    """Every floating dtype (bfloat16 kept), an empty tensor between two others, a scalar and string metadata,
    written by the package; then a file of no tensors. Read from the header's byte ranges, they equal what the
    package reads."""
    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    values = {
        "half": rng.normal(size=(3, 2)).astype(np.float16),
        "brain": rng.normal(size=(5,)).astype(ml_dtypes.bfloat16),
        "single": rng.normal(size=(2, 2, 2)).astype(np.float32),
        "double": rng.normal(size=(4,)),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.asarray(1.5, np.float32),
    }
    path = tmp_path / "model.safetensors"
    save_file(values, str(path), metadata={"format": "pt"})
    header = weights.read_header(path)
    reference = load_file(str(path))
    assert sorted(header) == sorted(reference)
    for name, want in reference.items():
        got = weights.array(header[name])
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.ascontiguousarray(got).tobytes() == want.tobytes(), name  # the same values, bit for bit
    save_file({}, str(path))
    assert weights.read_header(path) == {} == load_file(str(path))
