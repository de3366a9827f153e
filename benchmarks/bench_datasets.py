"""Reading the multi-object datasets without TensorFlow: scenes a second of each stage of
``tokdyn.datasets.multi_object.read`` on a GZIP-compressed file of synthetic CLEVR-with-masks
examples (the largest of the datasets' records: 240 x 320 images and 11 masks, one byte a value,
about 3.2 MB each before compression), and an example's features decoded three ways: the wire
reader (``example.decode`` on bytes, the package's path), the ``protobuf`` message (parsed, each
one-byte list re-serialized and read by NumPy: the package's fallback), and the plain ``protobuf``
way for the image and masks alone (one Python ``bytes`` object a value, joined).

    python benchmarks/bench_datasets.py [--records 40] [--repeats 3]

Prints a table with the machine, Python, protobuf (and its backend) and the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import tfrecord_files as tf_files  # noqa: E402
from common import timed  # noqa: E402

from tokdyn.datasets import example, multi_object, tfrecord  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    d = multi_object.DATASETS["clevr_with_masks_train.tfrecords"]
    rng = np.random.default_rng(0)
    records = [tf_files.multi_object_example(d, rng, int(rng.integers(3, 11)))[0] for _ in range(args.records)]
    n = args.records
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, d.file)
        tf_files.write(path, records, compress=True)
        size = os.path.getsize(path)

        def framing():
            return sum(len(r) for r in tfrecord.read_records(path, "GZIP"))

        def wire():  # the package's path for bytes: the values read in place
            return [example.decode(r, d.features) for r in records]

        def message():  # parse with protobuf, then decode the message (one-byte lists re-serialized, packed)
            return [example.decode(example.parse_example(r), d.features) for r in records]

        def objects():  # parse with protobuf, one bytes object a value joined: the plain protobuf way
            out = []
            for r in records:
                m = example.parse_example(r)
                out.append({k: b"".join(m.features.feature[k].bytes_list.value) for k in ("image", "mask")})
            return out

        def whole():
            return sum(1 for _ in multi_object.read(path))

        rows = [
            ("read_records (GZIP, both CRC32Cs)", framing),
            ("decode: the wire reader (the package's path)", wire),
            ("decode: protobuf message, lists re-serialized", message),
            ("image and masks: protobuf, a bytes object a value", objects),
            ("multi_object.read, end to end", whole),
        ]
        import google.protobuf
        from google.protobuf.internal import api_implementation

        load = os.getloadavg()
        print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs; Python "
              f"{platform.python_version()}; protobuf {google.protobuf.__version__} ({api_implementation.Type()}); "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
        print(f"file: {n} CLEVR-with-masks examples, {sum(map(len, records)) / n / 1e6:.2f} MB each, "
              f"{size / 1e6:.1f} MB GZIP-compressed; best and median of {args.repeats}")  # fmt: skip
        print(f"| {'stage':<52} | scenes/s (best) | scenes/s (median) |")
        print(f"|{'-' * 54}|----------------:|------------------:|")
        for name, fn in rows:
            best, median = timed(fn, args.repeats)
            print(f"| {name:<52} | {n / best:15.1f} | {n / median:17.1f} |")


if __name__ == "__main__":
    main()
