"""Readers of published object-centric datasets' files, without TensorFlow (host side, NumPy out).

Nothing downloads: each reader takes a local directory holding the dataset's files under their
published names, and a missing one names the expected layout and where the dataset is published
(:doc:`/concepts/datasets` says which files to fetch and where to put them). The readers need the
``data`` extra (``pip install 'tokdyn[data]'``: ``google-crc32c``, ``protobuf``, ``pillow``); the
core install stays without them.

- :mod:`tokdyn.datasets.tfrecord`      the TFRecord framing with its CRC32C checks, GZIP (``read_records``)
- :mod:`tokdyn.datasets.example`       ``tf.train.Example`` with the ``protobuf`` runtime and feature specs (``decode``)
- :mod:`tokdyn.datasets.multi_object`  DeepMind's multi-object datasets: CLEVR with masks, Multi-dSprites,
  Tetrominoes, Objects Room (``DATASETS``, ``find``, ``read``, ``labels``)
- :mod:`tokdyn.datasets.clevr`         CLEVR v1.0: PNG images and the scenes JSON (``load``, ``iterate``, ``read_scenes``,
  ``scene_arrays``)
- :mod:`tokdyn.datasets.clevrer`       CLEVRER: MP4 videos decoded with PyAV (the ``video`` extra), annotations
  and questions (``load``, ``read_video``, ``annotation_arrays``, ``read_questions``)
- :mod:`tokdyn.datasets.movi`          MOVi (Kubric): TFDS shards of PNG frames, segmentations and objects
  (``find``, ``read``, ``decode``, ``instance_arrays``)
- :mod:`tokdyn.datasets.scenes`        a dataset's scenes cropped, resized and filtered by object count, for the
  scenes study's ``--data`` (``load``, ``LoadedScenes``)
- :mod:`tokdyn.datasets.clips`         a MOVi split's clips cut, resized and kept by object count, for the video
  study's ``--data`` (``load``, ``LoadedClips``)
- :mod:`tokdyn.datasets.shortfall`     too few usable examples for a study: the error that counts them and the
  one line naming the options to change (``Shortfall``, ``fit_counts``, ``fit_product``, ``line``)
- :mod:`tokdyn.datasets.batches`       fixed-shape batches with masks, deterministic by seed, sharded over
  processes, prefetched (``batches``)
"""

from tokdyn.datasets import (  # noqa: F401
    batches,
    clevr,
    clevrer,
    clips,
    example,
    movi,
    multi_object,
    scenes,
    shortfall,
    tfrecord,
)
