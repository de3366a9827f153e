"""The studies that analyse the trained models another study keeps, its *source* (the organisms'
diagnostics read a directory of the study that trains them).

A study never imports another: the source study is found by name through the registry, which
declares who reads whom (``reads`` of :class:`tokdyn.experiment.registry.Entry`), at run time
(:func:`source_spec`); its configuration is its spec's ``config`` and its trained models are its
spec's ``store`` (:func:`source_store`). :func:`check_apart` keeps an analysis's directory and its
source's apart.
"""

from __future__ import annotations

import os
from typing import Any

from tokdyn.experiment import study as study_dir


def source_spec(name: str):
    """The :class:`~tokdyn.experiment.runner.Spec` of the source study ``name``, found by name
    (:func:`tokdyn.experiment.loading.spec`: the registry's entry, its module loaded on first use)."""
    from tokdyn.experiment import loading  # by name at run time: this layer never imports a study

    return loading.spec(name)


def source_store(name: str) -> Any:
    """The trained models of the source study ``name`` as its readers see them: its spec's
    ``store``; ``ValueError`` for a study that keeps none."""
    found = source_spec(name).store
    if found is None:
        raise ValueError(f"study {name!r} keeps no trained models for other studies to read (its SPEC.store is None)")
    return found


def check_apart(out: str, source: str) -> None:
    """:class:`~tokdyn.experiment.study.Refused` when an analysis's ``out`` and its ``source`` are
    the same directory or one lies inside the other (``--fresh`` would remove the source)."""
    o, src = (os.path.realpath(p) for p in (out, source))
    if o == src or o.startswith(src + os.sep) or src.startswith(o + os.sep):
        raise study_dir.Refused(
            f"out={out!r} and source={source!r} must be separate directories (neither inside the other): "
            "the source holds the trained models the study reads"
        )
