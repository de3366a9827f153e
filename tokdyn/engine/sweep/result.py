"""The results of a sweep in memory: :class:`SweepResult`, columns of one row per run."""

from __future__ import annotations

import numpy as np

from tokdyn import io
from tokdyn.engine.sweep.grid import Grid


class SweepResult:
    """Columnar results of a sweep: the grid's columns (axes, ``seed``, ``index``) and every
    field ``fn`` returned, as NumPy arrays of one row per run, in run-index order."""

    def __init__(self, columns: dict[str, np.ndarray], fields: tuple, grid: "Grid | None" = None):
        self.columns = columns
        self.fields = fields
        self.grid = grid

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.columns["index"])

    def __repr__(self) -> str:
        return f"SweepResult({len(self)} runs, fields={list(self.fields)})"

    def nan_counts(self) -> dict[str, int]:
        """Runs whose field holds a NaN (recorded as NaN, never dropped)."""
        out = {}
        for f in self.fields:
            v = self.columns[f]
            out[f] = int(np.isnan(v.reshape(len(v), -1)).any(axis=1).sum()) if v.dtype.kind == "f" else 0
        return out

    def to_csv(self, path: str) -> str:
        """One row per run; fields with per-run arrays are flattened into ``name_0, name_1, ...``."""
        return io.write_csv(path, _flat_columns(self.columns))

    def to_parquet(self, path: str) -> str:
        """Parquet (needs ``pyarrow``)."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_parquet needs pyarrow: pip install pyarrow") from e
        pq.write_table(pa.table(_flat_columns(self.columns)), path)
        return path


def _flat_columns(columns):
    flat = {}
    for name, v in columns.items():
        if v.ndim == 1:
            flat[name] = v
        else:
            for j, col in enumerate(v.reshape(len(v), -1).T):
                flat[f"{name}_{j}"] = col
    return flat
