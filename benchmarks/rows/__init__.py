"""The suite's rows, one module per family, and their registry.

Each family is a function ``run(suite)`` that adds its rows to a :class:`rows.base.Suite`; every
row that does token-dynamics work is placed against the one work count of ``work.py``.

  ceilings     rows.ceilings   the device's measured ceilings (GEMM, copy, FMA, exp)
  dynamics     rows.dynamics   the token-dynamics kernel alone, the study path (+ profile), given data, the peers
  rules        rows.rules      the built-in rule's choices against their alternatives: centred coordinates, Langevin draws skipped
  metrics      rows.metrics    ARI/NMI of labelings, FG-ARI, the auction, matched IoU, each against its peer
  data         rows.data       sprite-scene generation and the scenes study's fixed dynamics, each against NumPy
  peers        rows.peers      PyTorch peers of two learned models, eager and torch.compile
  training     rows.training   every learned model's training over seeds, with its share of the bound
  sampling     rows.sampling   grid-diffusion sampling
  engine       rows.engine     the sweep engine: in memory, to disk, per-run draws; devices; peak memory
  estimates    rows.estimates  each study command's time estimates against its wall time in a fresh process
  sweep        rows.sweep      a long sweep to disk in a child process
  vlm          rows.vlm        Qwen2.5-VL's vision tower, prefill and decode (random weights, 3B/7B shapes)
  vlm-compile  rows.vlm        each program of the vlm rows compiled from abstract arguments: its seconds
"""

from __future__ import annotations

import importlib

FAMILIES = {
    "ceilings": ("rows.ceilings", "run"),
    "dynamics": ("rows.dynamics", "run"),
    "rules": ("rows.rules", "run"),
    "metrics": ("rows.metrics", "run"),
    "data": ("rows.data", "run"),
    "peers": ("rows.peers", "run"),
    "training": ("rows.training", "run"),
    "sampling": ("rows.sampling", "run"),
    "engine": ("rows.engine", "run"),
    "estimates": ("rows.estimates", "run"),
    "sweep": ("rows.sweep", "run"),
    "vlm": ("rows.vlm", "run"),
    "vlm-compile": ("rows.vlm", "run_compile"),
}
"""Family name -> (module, function), in the suite's order."""


def family(name: str):
    """The ``run(suite)`` function of a family of rows."""
    module, fn = FAMILIES[name]
    return getattr(importlib.import_module(module), fn)
