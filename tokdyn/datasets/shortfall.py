"""A dataset holding fewer usable examples than a study takes: :class:`Shortfall`, the error that
counts them, the study's counts lowered to fit (:func:`fit_counts`, :func:`fit_product`) and the one
line that says which options to change, and to what (:func:`line`).

The adapters that turn a dataset's examples into a study's arrays (:mod:`tokdyn.datasets.scenes`,
:mod:`tokdyn.datasets.clips`) raise a subclass of :class:`Shortfall` holding their own counts (a
file's scenes by their objects, a split's clips by their objects and frames) and turn those counts
into the changes of a study's options that would fit (their ``ways_out``); a study's ``--data``
reads the examples before any work and, on a shortfall, exits with :func:`line`.
"""

from __future__ import annotations

import math


class Shortfall(ValueError):
    """A dataset holding fewer usable examples than asked. The message names the file (or
    directory), how many it holds and how many were asked for; the fields count them (a subclass
    adds its own counts, by which a caller says which option to change).

    Attributes:
      file: the file or directory read.
      found: the usable examples it holds.
      asked: the examples asked for.
      records: the records read (all of them).
    """

    def __init__(self, message: str, **fields):
        super().__init__(message)
        self.__dict__.update(fields)


def fit_counts(counts: dict, available: int, trim=None):
    """``counts`` (``{name: count}``, each at least 1) lowered so that they sum to at most
    ``available``: only ``trim`` (a name) when lowering it alone will do, else each in proportion
    (rounded down, at least 1). None when ``available`` is below ``len(counts)``."""
    total = sum(counts.values())
    if total <= available:
        return dict(counts)
    if trim is not None and available - (total - counts[trim]) >= 1:
        return {**counts, trim: available - (total - counts[trim])}
    if available < len(counts):
        return None
    out = {k: max(1, v * available // total) for k, v in counts.items()}
    while sum(out.values()) > available:  # the floors of 1 can overshoot: take from the largest
        k = max(out, key=out.get)
        out[k] -= 1
    return out


def fit_product(counts: dict, available: int, trim=None):
    """``counts`` (``{name: count}``, each at least 1) lowered so that their product is at most
    ``available``: ``trim`` (a name) first, as far as it must (down to 1), then the others in their
    order, so the later ones are kept where the earlier can take the shortfall. None when
    ``available`` is below 1."""
    if available < 1:
        return None
    out = dict(counts)
    for k in ([trim] if trim is not None else []) + [k for k in counts if k != trim]:
        if math.prod(out.values()) <= available:
            break
        rest = math.prod(v for j, v in out.items() if j != k)
        out[k] = min(out[k], max(1, available // rest))
    return out


def line(err: Shortfall, counts: dict, ways: list, *, held: str, more: str, product: bool = False) -> str:
    """One line for a dataset with too few usable examples: ``err``'s message (the file, its count),
    what the study takes (``counts``, ``{option: count}``, summed or, with ``product``, multiplied)
    and ``ways`` (the changes that fit, as phrases), or that no setting of those options fits.

    Args:
      err: the :class:`Shortfall`.
      counts: ``{option: count}``, e.g. ``{"--seeds": 12, "--n-videos": 32}``.
      ways: ``[phrase, ...]``, e.g. ``["--n-videos 3", "--objects 4 (it holds 40 such clips)"]``.
      held: what holds the examples, and how many it holds, for the line where nothing fits
        (``"this file (it holds 12 usable scenes in all)"``).
      more: the way out where nothing fits (``"give a file with more"``).
      product: the study takes the product of ``counts`` (seeds x videos), not their sum.
    """
    need = math.prod(counts.values()) if product else sum(counts.values())
    taken = (" x " if product else " + ").join(f"{k} {v:,}" for k, v in counts.items())
    head = f"{err}; the study takes {need:,} ({taken})"
    if not ways:
        return f"{head}, and no setting of these options fits {held}: {more}"
    return f"{head}: set " + "; or ".join(ways)
