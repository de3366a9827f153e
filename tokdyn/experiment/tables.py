"""A study's tables: the cells a summary selects, checked for runs, and the files they are written to.

A summary cell that no run falls in is an error (:class:`EmptyCell`), never a row of NaN:
:func:`select` picks a cell's rows (floats by ``np.isclose``), and
:func:`tokdyn.experiment.runner.run_study` calls :func:`check_cells` on every ``.csv`` table
before :func:`write_table` writes it. The names are also reached from
:mod:`tokdyn.experiment.runner`, where the studies import them.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tokdyn import io

COUNT_COLUMNS = ("n_runs", "runs", "seeds")  # a table's column that counts the runs of its row's cell


class EmptyCell(ValueError):
    """A summary cell that no run falls in (a selection that matched nothing): raised by
    :func:`select` and by :func:`check_cells` (:func:`~tokdyn.experiment.runner.run_study` checks
    every table it writes), naming the table and the cell, instead of a row of NaN."""


def _cell_text(cell: Mapping) -> str:
    return ", ".join(
        f"{k}={v!r}" if isinstance(v, str) else f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in cell.items()
    )


def select(table: Mapping, name: str = "", **cell) -> np.ndarray:
    """The (R,) mask of the rows of ``table`` (columns, ``{column: (R,) array}``) in the cell
    ``cell`` (``column=value``; a float value matches by ``np.isclose``, so a float32 column matches
    a float64 value); :class:`EmptyCell` naming ``name`` and the cell when no row does."""
    if not cell:
        raise ValueError("select: name the cell as column=value")
    mask = None
    for k, v in cell.items():
        if k not in table:
            raise ValueError(f"select: {name or 'the table'} has no column {k!r} (it has {', '.join(map(str, table))})")
        col = np.asarray(table[k])
        if col.dtype.kind in "fc" or isinstance(v, float):
            m = np.isclose(col.astype(np.float64), float(v), rtol=1e-6, atol=0.0)
        else:
            m = col == v
        mask = m if mask is None else mask & m
    if not mask.any():
        raise EmptyCell(f"{name or 'a summary'}: the cell {_cell_text(cell)} has no runs")
    return mask


def check_cells(name: str, value) -> None:
    """Raise :class:`EmptyCell` naming the table ``name`` and the cell when a row of ``value`` (a
    ``.csv`` table: columns, or a list of row dicts) counts no runs: a column of
    :data:`COUNT_COLUMNS` is 0 there (its cell is the row's columns before that one, those that are
    not NaN). Anything else passes."""
    rows = value if isinstance(value, list) else None
    if rows is None:
        if not isinstance(value, Mapping) or not any(c in value for c in COUNT_COLUMNS):
            return
        rows = io.to_rows({k: np.asarray(v) for k, v in value.items()}) if len(value) else []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            return
        for c in COUNT_COLUMNS:
            n = row.get(c)
            if isinstance(n, (int, float, np.integer, np.floating)) and not isinstance(n, bool) and n == 0:
                cell = {}
                for k, v in row.items():
                    if k == c:
                        break
                    if isinstance(v, (float, np.floating)) and not np.isfinite(v):
                        continue
                    cell[k] = v.item() if isinstance(v, np.generic) else v
                raise EmptyCell(
                    f"{name}: the cell {_cell_text(cell) or f'of row {i}'} has no runs ({c} = 0): a selection "
                    "that matched nothing (compare a float axis with np.isclose, or select by index; "
                    "tokdyn.experiment.runner.select does)"
                )


def write_table(path: str, value) -> str:
    """Write one of a :class:`~tokdyn.experiment.runner.Result`'s tables (see there) at ``path``, atomically."""
    if callable(value):
        value = value()
    if path.endswith(".csv"):
        return io.write_csv(path, value)
    if path.endswith(".json"):
        return io.write_json(path, value)
    with io.atomic_write(path) as f:
        f.write(value)
    return path
