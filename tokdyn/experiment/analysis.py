"""The studies that analyse the trained models another study keeps, its *source*
(``latent-diagnostics`` and ``latent-optimisation`` read a ``latent-reasoning`` directory): the
fields their configurations share (:class:`Analysis`), their spec's ``prepare``
(:func:`source_prepare`) and the spec fields they declare (:data:`SOURCE_SPEC`).

A study never imports another: the source study is found by name through the registry, which
declares who reads whom (``reads`` of :class:`tokdyn.experiment.registry.Entry`), at run time
(:func:`source_spec`); its configuration is its spec's ``config`` and its trained models are its
spec's ``store`` (:func:`source_store`; the latent-reasoning study's is
:class:`tokdyn.studies.latent_reasoning.source.Reasoners`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

from tokdyn import _checks
from tokdyn.experiment import study as study_dir

SOURCE_STUDY = "latent-reasoning"  # the study whose directory an Analysis reads
SOURCE_PRESETS = ("default", "quick")  # an analysis's preset: the configuration its source has (Analysis.preset)
SOURCE_SELECTION = ("source", "train")  # an analysis's fields that only choose where and whether (its selection)
# an analysis's own runner.Spec fields: the directory it reads (its source field) and what its quick preset is
SOURCE_SPEC = {"sources": {"source": SOURCE_STUDY}, "preset": "the latent-reasoning study's quick models"}


def source_spec(name: str = SOURCE_STUDY):
    """The :class:`~tokdyn.experiment.runner.Spec` of the source study ``name``, found by name
    (:func:`tokdyn.experiment.loading.spec`: the registry's entry, its module loaded on first use)."""
    from tokdyn.experiment import loading  # by name at run time: this layer never imports a study

    return loading.spec(name)


def source_store(name: str = SOURCE_STUDY) -> Any:
    """The trained models of the source study ``name`` as its readers see them: its spec's
    ``store`` (the latent-reasoning study's :class:`~tokdyn.studies.latent_reasoning.source.Reasoners`);
    ``ValueError`` for a study that keeps none."""
    found = source_spec(name).store
    if found is None:
        raise ValueError(f"study {name!r} keeps no trained models for other studies to read (its SPEC.store is None)")
    return found


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The fields of a study that analyses the trained reasoners of a latent-reasoning directory, its
    *source*: the analyses' ``Config`` classes derive from it (these fields come first), so that
    each field is declared, documented (the command line's help) and checked once.

    Attributes:
      source: the latent-reasoning study directory holding (or to hold) the trained variants.
      preset: that study's configuration, "default" or "quick" (its --quick); "quick" (set by
        --quick) also opens summary.md with a line saying the run is smoke-sized.
      train: train the variants the source lacks (otherwise a missing variant is an error).
    """

    source: str = "results/latent-reasoning"
    preset: str = "default"
    train: bool = True

    def validate(self) -> "Analysis":
        """Check the fields above (``source`` a non-empty path, ``preset`` one of
        :data:`SOURCE_PRESETS`, ``train`` a bool); raise ``ValueError``/``TypeError`` naming the
        field. An analysis's own ``validate`` calls it first. Returns ``self``."""
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"source must be the path of a latent-reasoning study directory, got {self.source!r}")
        _checks.choice("preset", self.preset, SOURCE_PRESETS)
        if not isinstance(self.train, bool):
            raise TypeError(f"train must be a bool, got {self.train!r}")
        return self

    def reasoning(self):
        """The latent-reasoning study whose trained models the analysis reads: its spec's
        ``config`` (:func:`source_spec`), ``quick()`` for the preset ``"quick"``, else the default."""
        config = source_spec().config
        return config.quick() if self.preset == "quick" else config()

    def reasoners(self):
        """The source's trained models as an analysis reads them (:func:`source_store`)."""
        return source_store()


def check_apart(out: str, source: str) -> None:
    """:class:`~tokdyn.experiment.study.Refused` when an analysis's ``out`` and its ``source`` are
    the same directory or one lies inside the other (``--fresh`` would remove the source)."""
    o, src = (os.path.realpath(p) for p in (out, source))
    if o == src or o.startswith(src + os.sep) or src.startswith(o + os.sep):
        raise study_dir.Refused(
            f"out={out!r} and source={source!r} must be separate directories (neither inside the other): "
            "the source holds the trained reasoners the study reads"
        )


def source_prepare(needed: Callable[[Any], Sequence[str]]):
    """The ``prepare`` of an analysis's study spec (:class:`tokdyn.experiment.runner.Spec`): its
    source ``cfg.source``, apart from the study's ``out`` (:func:`check_apart`), opened for the
    configuration ``cfg.reasoning()`` expects and the variants ``needed(cfg)``, its files verified,
    before the study's directory is opened (the source store's ``open_source``). The source's
    configuration goes into ``session.context["reasoning"]``; returns ``{"reasoning": its stamp}``."""

    def prepare(session, cfg) -> dict:
        check_apart(session.out, cfg.source)  # all checked before the source is opened (and, if new, stamped)
        session.context["reasoning"], stamp = cfg.reasoners().open_source(
            cfg.reasoning(), cfg.source, needed(cfg), train=cfg.train, quiet=session.quiet
        )
        return {"reasoning": stamp}

    return prepare
