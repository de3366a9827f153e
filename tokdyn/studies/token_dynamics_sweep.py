"""Sweeps of token dynamics over the update rule's hyperparameters and the data's conditions.

    tokdyn sweep token-dynamics --temperature logspace:0.05:20:25 --repulsion linspace:0:0.2:11 \\
        --momentum 0,0.5 --noise 0.3,0.6,0.9 --n-clusters 3,4,5 --seeds 200 --out DIR

One run is :class:`tokdyn.engine.runs.ClusterRun` (the published study's run, every condition traced);
the grid is the product of the axes x seeds, executed by :func:`tokdyn.engine.sweep.run` with common
random numbers (every setting sees the same data and initial tokens for a given seed, so settings
are compared pairwise), chunk by chunk into ``DIR/chunks``.

Before any run, ``DIR`` is checked and stamped (``study.json``, :mod:`tokdyn.experiment.study`):
an output path that cannot be written, a sweep whose analysis cannot fit in memory, whose chunks
cannot fit on the disk, or whose runs overflow the engine's ``uint32`` run index
(:meth:`Config.estimate`: ``--seeds 4000000000`` is refused naming ``seeds``) exits 2 naming the
option; one that will take more than an hour says so up front. A directory of another study (a
token-dynamics study's, say) or of this sweep with other arguments is refused naming the fields
that differ; ``--fresh`` removes what it holds and starts afresh.

Resuming: the same command run again continues a killed sweep, computing only the chunks that
are not on disk. Every chunk is written atomically with a checksum and the stamp of the sweep's
arguments (:func:`tokdyn.engine.sweep.run`): a truncated or altered chunk is named in a warning,
set aside to ``DIR/chunks/corrupt/`` and recomputed; a damaged ``manifest.json`` (fully determined
by the arguments) is set aside and written anew, the chunks' stamps keeping any other sweep's
chunks out. Several processes may run one sweep into one ``DIR`` (:func:`main`'s ``part``, or
one process per host under ``jax.distributed``): part 0 stamps the directory and writes the
analysis once every part's chunks are there.

Afterwards (:func:`analyse`) the directory gets:

- ``summary.csv``: per condition (every axis), mean / std of each metric over the seeds whose
  run stayed finite, the count of non-finite values per metric (``*_nan``: NaN or inf) and of runs
  left out (``nonfinite``: a run with a non-finite metric blew up and counts in no figure); its
  SHA-256 is recorded in ``tables.json`` (which carries a checksum of its own), and a reader
  (``tokdyn plot heatmap``) recomputes it from the verified chunks, with a warning, when it does
  not match;
- ``settings.csv``: per hyperparameter setting (the rule axes: temperature, momentum, repulsion,
  and any of the extended rules' knobs, ``--knob`` axes, or ``method``, an index into ``config.json``'s
  method names, with ``method_name`` beside it in every table),
  pooled over the data axes (noise, n_clusters), mean ARI, steps, collapse and convergence rates
  with 95% percentile-bootstrap intervals over seeds, and whether it is on the Pareto front;
- ``pareto.csv`` + ``plots/pareto.png``: the settings no other setting beats on both mean steps
  (fewer) and mean ARI (higher): the speed/quality trade-off the published study asked about;
- ``plots/heatmap_*.png``: ARI and collapse rate over the first two rule axes;
- ``report.md``: the best regimes found, with their intervals, and the conditions that had
  non-finite runs marked (⚠) and counted; ``config.json`` (the stamp: the whole configuration and
  the tokdyn version, with the environment and the timings).

Every list of conditions is a set: an axis that lists a value twice (``--noise 0.3,0.3``,
``--temperature linspace:1:1:3``, ``--method baseline,baseline``) exits 2 naming it. Results are
keyed by the code that made them: the manifest records the run function's
:func:`tokdyn.engine.sweep.code_digest`, its output fields and, with ``--rule-module``, the
SHA-256 of the rule's file, so a rerun after the rule changed exits 2 ("the rule's code changed
since these results: rerun with --fresh, or into another directory").

Several rules, paired by seed: ``--method`` takes built-in methods, the package's rules beyond
them (``refinement``, :data:`tokdyn.engine.runs.PACKAGE_RULES`) and ``--rule-module``'s rules in any
mix (``--method baseline,refinement,lloyd``), and ``--knob NAME=VALUES`` makes a field of a rule's
``hparams`` an axis (:class:`Config`: ``--knob step_size=0.5,1`` for ``refinement``). Each rule is one engine sweep (:meth:`Config.groups`), in
``DIR/groups/<i>-<name>`` with its own manifest and chunks (resumed and stamped like a sweep of one
rule), all with the same root key and common random numbers; the analysis merges them into one
summary / settings / pareto / report, and report.md compares each method's best setting with the
first method's, paired by seed. ``--quick``: a small preset whose report.md says so in its first
line.

``tokdyn plot heatmap DIR --x A --y B [--metric M] [--where axis=value]`` draws one metric of a
finished sweep over two of its axes into ``DIR/plots``; every bad argument (an axis or a value the
sweep does not have, an unfinished sweep, a damaged manifest) exits 2 naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import sys
import textwrap
import time
import warnings
from typing import NamedTuple

import jax
import numpy as np

from tokdyn import _checks, dynamics, io
from tokdyn.engine import sweep
from tokdyn.engine.runs import PACKAGE_RULES, ClusterRun, RunStructure
from tokdyn.experiment import attributes, runner, study
from tokdyn.experiment.study import Estimate, Refused
from tokdyn.stats import figures, inference, summary

KNOB_AXES = dynamics.FIELDS  # the built-in rule's knobs (the fields of dynamics.Hparams): an axis and an option each
RULE_AXES = KNOB_AXES + ("method",)
DATA_AXES = ("noise", "n_clusters")
FIRST_KNOBS = ("temperature", "repulsion", "momentum")  # the knobs the published sweep varies, first in the grid
DEFAULT_AXES = {"temperature": "logspace:0.05:20:25", "repulsion": "linspace:0:0.2:11", "momentum": "0,0.5",
                "noise": "0.3,0.6,0.9", "n_clusters": "3,4,5"}  # every other axis: "" (not an axis)
_OTHER_AXES = {  # the help text of the axes that are not knobs (a knob's comes from dynamics.Hparams)
    "noise": "cluster standard deviation axis.",
    "n_clusters": "cluster count axis.",
    "method": "method names, comma-separated: built-in methods, the package's rules beyond them (refinement: "
              "tokdyn.refinement.REFINEMENT at its default knobs) and rule_module's rules in any mix, run on common "
              "random numbers (the same data and initial tokens per seed) and compared by name (an axis of indices "
              "into them; explicit rule axes override a method's values); empty: not an axis.",
}


def axis_names(knobs: type = dynamics.Hparams) -> tuple:
    """The names of the sweep's axes in grid order (the order of the chunks' runs, and of the
    options) when the built-in rule's knobs are the fields of ``knobs``: :data:`FIRST_KNOBS`,
    the data axes, ``method``, then every other field of ``knobs`` in its order. A knob added to
    :class:`tokdyn.dynamics.Hparams` becomes the last axis (every earlier sweep keeps its layout)."""
    fields = tuple(f.name for f in dataclasses.fields(knobs))
    return FIRST_KNOBS + DATA_AXES + ("method",) + tuple(k for k in fields if k not in FIRST_KNOBS)


def axis_help(knobs: type = dynamics.Hparams) -> dict:
    """``{axis: help text}`` of the sweep's axes (:func:`axis_names`): a knob's is the first
    sentence of its entry in the ``Attributes:`` section of ``knobs``' docstring (its
    cross-references written as the full names they point to, so that the text reads the same in
    ``--help`` and in the documentation), with the default it runs at when it is not an axis; the
    other axes' are their own."""
    own = attributes.documented(knobs)
    defaults = {f.name: f.default for f in dataclasses.fields(knobs)}
    module = _public_module(knobs)
    where = f"{module}.{knobs.__name__}"
    out = {}
    for name in axis_names(knobs):
        if name in _OTHER_AXES:
            out[name] = _OTHER_AXES[name]
            continue
        text = re.split(r"(?<=\.)\s+(?=[A-Z])", own.get(name, "").strip())[0]  # its first sentence
        text = re.sub(r":[\w:]+:`~?([^`]+)`", lambda m: f"``{_qualified(m.group(1), module)}``", text)
        out[name] = (f"{name} axis, a knob of the built-in rule ({where}.{name}: {text.rstrip('.')}); empty: not an "
                     f"axis (each method's value, else {defaults[name]:g}).")
    return out


def _public_module(cls: type) -> str:
    """The shortest module path that exports ``cls`` (``tokdyn.dynamics`` for a class defined in
    ``tokdyn.dynamics.hparams`` and re-exported by its package)."""
    parts = cls.__module__.split(".")
    for n in range(1, len(parts)):
        module = sys.modules.get(".".join(parts[:n]))
        if module is not None and getattr(module, cls.__name__, None) is cls:
            return ".".join(parts[:n])
    return cls.__module__


def _qualified(target: str, module: str) -> str:
    """A docstring's cross-reference target as a full dotted name (``sinkhorn`` in
    ``tokdyn.dynamics``: ``tokdyn.dynamics.sinkhorn``)."""
    return target if target.startswith("tokdyn.") else f"{module}.{target}"


def axis_fields(knobs: type = dynamics.Hparams) -> list:
    """``[(name, str, dataclasses.field), ...]`` of the sweep's axes (:func:`axis_names`), for
    :func:`dataclasses.make_dataclass`: each a ``str`` of values, its default
    :data:`DEFAULT_AXES`' or ``""`` (not an axis)."""
    return [(name, str, dataclasses.field(default=DEFAULT_AXES.get(name, ""))) for name in axis_names(knobs)]


AXES = axis_names()  # grid order
_Axes = dataclasses.make_dataclass("_Axes", axis_fields(), bases=(RunStructure,), frozen=True,
                                   namespace={"__module__": __name__})  # Config's axis fields, after the structure's
METRICS = ("ari", "steps", "collapsed", "converged", "nmi", "sse")
SETTING_METRICS = ("ari", "steps", "collapsed", "converged")
STRUCTURE_OPTIONS = "points_per_cluster, dim or n_tokens"  # the sizes of one run: to change when one run is too big


class Group(NamedTuple):
    """One engine sweep of a token-dynamics sweep: the runs of one update rule (:meth:`Config.groups`)."""

    task: ClusterRun  # the per-run function
    grid: sweep.Grid  # its runs; ``method``: indices into ``methods``
    methods: tuple  # indices into Config.method_names() of its methods (() when method is not an axis)
    folder: str  # its directory under the sweep's (""): the sweep's own

    def dir(self, out: str) -> str:
        """Its sweep directory (manifest and chunks) in the sweep directory ``out``."""
        return os.path.join(out, self.folder) if self.folder else out


@dataclasses.dataclass(frozen=True)
class Config(_Axes):
    """A token-dynamics sweep: the axes (in the order of :data:`AXES`) x ``seeds``, and the static
    structure of a run. Axis values are a comma list (0.3,0.6), linspace:a:b:n or logspace:a:b:n; a
    single value fixes that condition; an empty axis is not an axis. Saved in ``config.json``;
    enough to reproduce the sweep.

    The axes are derived from :class:`tokdyn.dynamics.Hparams` (:func:`axis_fields`): one per knob
    of the built-in rule, named as the knob, documented by its own docstring (:func:`axis_help`),
    besides ``noise``, ``n_clusters`` and ``method``. A knob added there is an axis here, and an
    option of ``tokdyn sweep token-dynamics``, with nothing else to edit.

    Attributes:
      seeds: seeds per condition.
      root_seed: root PRNG seed.
      chunk_size: runs per chunk file, the unit of work kept on disk (0: chosen per backend).
      n_resamples: bootstrap resamples of the intervals.
      rule_module: update rules of one's own, module:NAME or path/to/file.py:NAME, NAME a
        tokdyn.dynamics.Rule (named by its name) or a dict of them (named by their keys); method
        may then name them beside the built-in methods (each rule is one engine sweep, in
        groups/ of the output directory, with the same root key; the built-in rule axes apply to
        the rules that have those knobs: give them as '' when none has).
      knob: axes of the knobs of the rules beyond the built-in methods (refinement's,
        rule_module's: fields of a rule's hparams), NAME=VALUES,
        several separated by ';' (step_size=0.5,1;beta=linspace:0:1:3), VALUES in the syntax of
        the other axes; each applies to the rules of method that have that knob.
      preset: '' or 'quick' (set by --quick: a small grid and few seeds; report.md says so).
    """

    seeds: int = 20
    root_seed: int = 0
    chunk_size: int = 0
    n_resamples: int = 2000
    rule_module: str = ""
    knob: str = ""
    preset: str = ""

    @classmethod
    def quick(cls) -> "Config":
        """The quick preset (``--quick``): 3 temperatures x 2 repulsions x 2 momenta x 2 noise levels
        x 2 cluster counts x 8 seeds in D = 2 (384 runs, a few seconds once compiled); its report.md
        says so in its first line."""
        return cls(temperature="0.5,2,8", repulsion="0,0.1", momentum="0,0.5", noise="0.3,0.9", n_clusters="3,4",
                   seeds=8, dim=2, points_per_cluster=40, n_resamples=500, preset="quick")

    def axes(self) -> tuple:
        """``((name, values), ...)`` of the non-empty axes in grid order (:data:`AXES`, then the
        ``knob`` axes in the order given; method: its names)."""
        out = []
        for name in AXES:
            text = getattr(self, name).strip()
            if not text:
                continue
            if name == "method":
                out.append((name, tuple(v.strip() for v in text.split(",") if v.strip())))
            else:
                out.append((name, tuple(sweep.parse_axis(name, text).tolist())))
        return tuple(out) + self.knob_axes()

    def knob_axes(self) -> tuple:
        """``((name, values), ...)`` of ``knob`` (``NAME=VALUES;...``): axes of the knobs of the rules
        beyond the built-in methods (:meth:`rules`). ``ValueError`` naming ``knob`` (or the knob) when it does not parse."""
        out, seen = [], set()
        for part in (t.strip() for t in self.knob.split(";") if t.strip()):
            name, sep, text = part.partition("=")
            name = name.strip()
            if not sep or not name.isidentifier() or not text.strip():
                raise ValueError(f"knob expects NAME=VALUES, several separated by ';' (step_size=0.5,1;"
                                 f"beta=linspace:0:1:3), got {part!r}")
            if name in seen:
                raise ValueError(f"knob: {name!r} is given twice in {self.knob!r}")
            if name in AXES:
                raise ValueError(f"knob: {name!r} has an option of its own: --{name.replace('_', '-')} VALUES")
            if name in sweep.Grid.RESERVED or name in ("draw", "key"):
                raise ValueError(f"knob: {name!r} is a name the sweep keeps for itself (seed, index, draw, key), "
                                 "not a knob a rule may have")
            seen.add(name)
            out.append((name, tuple(sweep.parse_axis(name, text).tolist())))
        return tuple(out)

    def validate(self) -> "Config":
        """Check every field and axis (``method`` against the built-in methods, the package's rules and
        ``rule_module``'s, every rule axis and ``knob`` against the knobs of the rules ``method`` names); raise
        ``ValueError``/``TypeError`` naming the field (or the knob), before anything is traced.
        Returns ``self``."""
        _checks.positive_int("seeds", self.seeds)
        _checks.seed("root_seed", self.root_seed)
        _checks.positive_int("chunk_size", self.chunk_size, minimum=0)
        _checks.positive_int("n_resamples", self.n_resamples)
        if self.preset not in ("", "quick"):
            raise ValueError(f"preset must be '' or 'quick' (set by --quick), got {self.preset!r}")
        rules = self.rules()  # ValueError naming rule_module, before anything is traced
        axes = self.axes()
        for name, values in axes:
            if len(values) == 0:
                raise ValueError(f"axis {name!r} has no values")
            _checks.distinct(name, values)  # a list of conditions is a set (parse_axis checks the numeric ones)
            if name == "method":
                for m in values:
                    _checks.choice("method", m, {**dynamics.METHODS, **rules})
        names = self.method_names()
        groups = [(rule, idx, dynamics.FIELDS if rule is None else rule.knobs) for rule, idx in self.method_groups()]
        own = [(names[idx[0]], knobs) for rule, idx, knobs in groups if rule is not None]
        builtin = any(rule is None for rule, _, _ in groups)
        modules = self.module_rules()
        where = " of rule_module" if all(m in modules for m, _ in own) else ""  # else: the package's rules among them
        which = (f"rule {own[0][0]!r}{where}, whose knobs are {list(own[0][1])}" if len(own) == 1 else
                 "rules " + ", ".join(f"{m!r} (knobs {list(k)})" for m, k in own) + where)
        for name, values in axes:
            v = np.asarray(values, float) if name != "method" else None
            if name == "method":
                continue
            if name == "noise":
                _checks.real(name, v, low=0.0)
            elif name == "n_clusters":
                if not np.all(v == np.round(v)) or v.min() < 1:
                    raise ValueError(f"n_clusters values must be integers >= 1, got {list(values)}")
            elif not any(name in knobs for _, _, knobs in groups):
                if name in dynamics.FIELDS:  # an option of the built-in rule, and no rule of the sweep has it
                    raise ValueError(f"{name}: method names {which}; {name} is a knob of the built-in rule: give it "
                                     f"as '' (--{name.replace('_', '-')} '')")
                if not own:
                    raise ValueError(f"knob: {name!r}: method names no rule of rule_module"
                                     + (f" (its rules: {list(modules)})" if modules else " (none given)")
                                     + f" nor of the package ({list(PACKAGE_RULES)}), and knob sets the knobs of "
                                       "those rules")
                raise ValueError(f"knob: {name!r} is not a knob of the {which}")
            elif name in dynamics.FIELDS and builtin:
                dynamics.Hparams(**{name: v}).validate()  # names the field, the value and what is allowed
            else:
                _checks.real(name, v)
        self.validate_structure(min(self.cluster_counts()), max(self.cluster_counts()))
        self.groups()  # a rule whose knobs a run cannot take: named before anything is traced
        return self

    def cluster_counts(self) -> tuple:
        """The cluster counts K of the ``n_clusters`` axis, as ints (the run's default when it is not
        an axis)."""
        return tuple(int(k) for k in dict(self.axes()).get("n_clusters", (ClusterRun.n_clusters,)))

    def method_names(self) -> tuple:
        """The names of the ``method`` axis (its grid values are indices into them), or ()."""
        return tuple(dict(self.axes()).get("method", ()))

    def rules(self) -> dict:
        """``{name: tokdyn.dynamics.Rule}``: the rules beyond the built-in methods that ``method`` may
        name: the package's own (:data:`tokdyn.engine.runs.PACKAGE_RULES`: ``refinement``) and
        ``rule_module``'s (:meth:`module_rules`). ``ValueError`` naming ``rule_module`` when one of
        its rules takes the name of a package rule it is not."""
        own = self.module_rules()
        for name, rule in own.items():
            if name in PACKAGE_RULES and rule != PACKAGE_RULES[name]:
                raise ValueError(f"rule_module {self.rule_module.strip()!r}: {name!r} is the name of one of the package's "
                                 f"rules (tokdyn.engine.runs.PACKAGE_RULES: {PACKAGE_RULES[name].name}): choose another")
        return {**PACKAGE_RULES, **own}

    def module_rules(self) -> dict:
        """``{name: tokdyn.dynamics.Rule}`` of ``rule_module`` ({} when it is empty), see :func:`load_rules`."""
        return load_rules(self.rule_module.strip()) if self.rule_module.strip() else {}

    def method_groups(self) -> tuple:
        """``((rule, method indices), ...)``: the rules the sweep runs, one compilation each, as in
        the token-dynamics study's :meth:`tokdyn.studies.token_dynamics.Config.tasks`: ``None`` (the
        built-in rule) for the built-in methods (or every run, when ``method`` is not an axis), then
        one per rule of :meth:`rules` (the package's, ``rule_module``'s) that ``method`` names (rules
        equal but for their hparams
        are settings of one rule and share one), with the indices into :meth:`method_names` of
        the methods it runs."""
        rules, names = self.rules(), self.method_names()
        if not names:
            return ((None, ()),)
        builtin = tuple(i for i, m in enumerate(names) if m not in rules)
        out = [(None, builtin)] if builtin else []
        groups = {}
        for i, m in enumerate(names):
            if m in rules:
                r = rules[m]
                key = (dataclasses.replace(r, hparams=()), jax.tree_util.tree_structure(r.hparams))
                groups.setdefault(key, (r, []))[1].append(i)
        return tuple(out + [(r, tuple(idx)) for r, idx in groups.values()])

    def rule(self):
        """The rule of :meth:`rules` the sweep runs when it runs that rule alone (the methods it
        names are settings of one rule), or None: the built-in rule, or several rules."""
        groups = self.method_groups()
        return groups[0][0] if len(groups) == 1 else None

    def _group_axes(self) -> list:
        """Per :meth:`method_groups` entry, the names of the axes of its grid: ``method``, the data
        axes and the rule axes that are knobs of its rule, in grid order."""
        out = []
        for rule, _ in self.method_groups():
            knobs = dynamics.FIELDS if rule is None else rule.knobs
            out.append([k for k, _ in self.axes() if k in ("method",) + DATA_AXES or k in knobs])
        return out

    def groups(self) -> tuple:
        """The engine sweeps this sweep is made of, one per rule (:meth:`method_groups`), each a
        :class:`Group`: its :class:`~tokdyn.engine.runs.ClusterRun` (this sweep's structure, the
        largest cluster count, the method table of its methods: the built-in methods' rows, or the
        knobs (``hparams``) of each setting of the rule), its grid (the axes its rule takes, in
        grid order; ``method`` as indices into its own methods; the seed slowest: a chunk holds
        whole seeds, whose data are drawn once for all their runs), the indices into
        :meth:`method_names` of its methods and its folder (``""``: the output directory itself
        when there is one group, else ``groups/<i>-<name>``). Every group runs with the same root
        key and common random numbers: the runs of a seed see the same data and initial tokens in
        every group."""
        names, axes, rules = self.method_names(), dict(self.axes()), self.rules()
        groups = self.method_groups()
        out = []
        for g, ((rule, idx), grid_axes) in enumerate(zip(groups, self._group_axes())):
            if rule is None:
                table = tuple(dynamics.METHODS[names[i]].row() for i in idx)
            else:
                table = tuple(tuple(float(v) for v in jax.tree_util.tree_leaves(rules[names[i]].hparams)) for i in idx)
            task = ClusterRun(**self.structure(), max_clusters=max(self.cluster_counts()), methods=table,
                              **({} if rule is None else {"rule": rule}))

            def values(k):
                if k == "method":
                    return np.arange(len(idx), dtype=np.int64)
                return np.asarray(axes[k], np.int64) if k == "n_clusters" else np.asarray(axes[k], np.float64)

            grid = sweep.Grid(seeds=self.seeds, seed_major=True, **{k: values(k) for k in grid_axes})
            label = names[idx[0]] if rule is not None else "builtin"
            slug = re.sub(r"[^A-Za-z0-9._+-]", "_", label)[:40]
            folder = "" if len(groups) == 1 else os.path.join(GROUPS, f"{g}-{slug}")
            out.append(Group(task, grid, tuple(idx), folder))
        return tuple(out)

    def task(self) -> ClusterRun:
        """The per-run function of a sweep of one rule (:meth:`groups`' only one); ``ValueError``
        when it runs several."""
        return self._only().task

    def grid(self) -> sweep.Grid:
        """The grid of a sweep of one rule (:meth:`groups`' only one): the non-empty axes
        (``method`` as indices into :meth:`method_names`) x ``seeds``, the seed slowest; ``ValueError``
        when it runs several."""
        return self._only().grid

    def _only(self) -> "Group":
        groups = self.groups()
        if len(groups) != 1:
            raise ValueError(f"this sweep runs {len(groups)} rules, one engine sweep each: see Config.groups()")
        return groups[0]

    def rule_axes(self) -> list:
        """The non-empty axes that set the update rule (:data:`RULE_AXES` and the ``knob`` axes), in
        grid order: the settings of the analysis."""
        return [k for k, _ in self.axes() if k not in DATA_AXES]

    def data_axes(self) -> list:
        """The non-empty data axes (``noise``, ``n_clusters``), in grid order: pooled over in the
        analysis."""
        return [k for k, _ in self.axes() if k in DATA_AXES]

    def _group_sizes(self) -> list:
        """Per :meth:`method_groups` entry, ``{axis: size}`` of its grid's axes (``method``: its methods)."""
        sizes = {k: len(v) for k, v in self.axes()}
        return [{k: len(idx) if k == "method" else sizes[k] for k in names}
                for (_, idx), names in zip(self.method_groups(), self._group_axes())]

    def runs(self) -> int:
        """Runs of the sweep: over its rules (:meth:`groups`), the product of the sizes of the axes
        each takes x seeds."""
        return sum(int(np.prod(list(g.values()), dtype=object)) for g in self._group_sizes()) * self.seeds

    def settings(self) -> int:
        """Settings of the analysis: over its rules, the product of the sizes of the rule axes each
        takes."""
        return sum(int(np.prod([n for k, n in g.items() if k not in DATA_AXES], dtype=object))
                   for g in self._group_sizes())

    def estimate(self) -> Estimate:
        """What the sweep and its analysis ask of the machine; :class:`Refused` naming the option
        when the run count overflows the engine's ``uint32`` run index or an array on the device
        XLA's 32-bit element index.

        Memory on the device (``memory``): a chunk (the data of its seeds, drawn once per seed, the
        working set of the runs vmapped at once: one on CPU, the chunk on an accelerator, float32;
        its outputs). On the host (``host_memory``): the larger of the analysis' per-setting,
        per-seed table (:func:`tokdyn.stats.summary.per_seed`: sums, counts and means of 4 metrics
        plus a temporary, float64, settings x seeds) and its bootstrap buffers (1024 resamples'
        index counts over the seeds, int64 and float64, and 256 settings x ``n_resamples`` means).
        Time: about 1.7e-4 s per run at the default structure on the reference CPU, growing with
        the square root of points x tokens x dim x n_steps (measured; rough), scaled by this
        machine's ``dynamics`` rate; the analysis on the host."""
        runs = self.runs()
        if runs > sweep.MAX_RUNS:
            sizes = " x ".join(f"{k} ({len(v)})" for k, v in self.axes())
            raise Refused(f"seeds={self.seeds} makes {runs:,} runs ({sizes} x {self.seeds} seeds), more than the "
                          f"{sweep.MAX_RUNS:,} the sweep engine can index (run indices and seeds are folded into "
                          "PRNG keys as uint32): make seeds smaller, or split the axes over several sweeps")
        points = max(self.cluster_counts()) * self.points_per_cluster
        accelerator = jax.default_backend() != "cpu"
        chunk = min(self.chunk() or (65536 if accelerator else 2048) * jax.local_device_count(), runs)

        def device_bytes(chunk):  # the data of a chunk's seeds, its vmapped lanes' working set, its outputs
            draws = min(self.seeds, chunk // (runs // self.seeds) + 2 * jax.local_device_count())  # seeds in a chunk
            lanes = chunk if accelerator else 1  # runs vmapped at once (execute.default_batch_size)
            return (draws * points * (self.dim + 2) + 3 * lanes * points * (self.dim + self.n_tokens)) * 4 + chunk * 64

        table = self.settings() * self.seeds * (3 * len(SETTING_METRICS) + 1) * 8
        boot = 1024 * self.seeds * 24 + 2 * 256 * self.n_resamples * 8
        device = device_bytes(chunk)
        # a chunk of one run needs most of it: its sizes, not the chunk size, are what to change
        chunk_option = "chunk_size" if device_bytes(1) < device / 2 else STRUCTURE_OPTIONS
        host, host_option = max((table, "seeds"), (boot, "n_resamples" if 256 * self.n_resamples > 1024 * self.seeds
                                                   else "seeds"))
        work = points * self.n_tokens * self.dim * self.n_steps / (300 * 4 * 4 * 30)
        seconds = {"dynamics": runs * 1.7e-4 * max(0.5, float(np.sqrt(work))),
                   "host": self.settings() * self.seeds * self.n_resamples * len(SETTING_METRICS) * 2e-9}
        return Estimate(memory=float(device), option=chunk_option, models=runs, work=seconds,
                        host_memory=float(host), host_option=host_option)

    def chunk_limit(self) -> int | None:
        """The most runs a chunk may hold so that every array of it fits XLA's 32-bit element index
        (the data of the seeds it draws at once: ``points x dim`` each; on an accelerator also its
        vmapped runs' working set), or None when any chunk fits. :class:`Refused` naming the sizes
        (``points_per_cluster``, ``dim``, ``n_tokens``) when not even a chunk of one run fits:
        the chunk size cannot help then."""
        runs = self.runs()
        conds = max(runs // self.seeds, 1)
        n_dev = jax.local_device_count()
        points = max(self.cluster_counts()) * self.points_per_cluster
        per_seed = points * self.dim  # the data drawn once per seed
        fewest = min(self.seeds, 1 // conds + 2 * n_dev)  # the seeds a chunk of one run draws
        if fewest * per_seed > study.MAX_ELEMENTS:
            raise Refused(f"points_per_cluster={self.points_per_cluster} with dim={self.dim} (and "
                          f"{max(self.cluster_counts())} clusters) makes the data of the {fewest} seed(s) a chunk draws at once an array of "
                          f"{fewest * per_seed:,} elements, more than the {study.MAX_ELEMENTS:,} one array may hold "
                          f"whatever the chunk_size: make {STRUCTURE_OPTIONS} smaller")
        limit = None
        most = study.MAX_ELEMENTS // per_seed  # seeds whose data fit in one array
        if self.seeds > most:  # chunk // conds + 2 n_dev seeds drawn at once: at most `most`
            limit = (most - 2 * n_dev + 1) * conds - 1
        if jax.default_backend() != "cpu":  # the chunk's runs are vmapped at once
            per_run = points * (self.dim + self.n_tokens)
            if per_run > study.MAX_ELEMENTS:
                raise Refused(f"points_per_cluster={self.points_per_cluster}, dim={self.dim} and n_tokens="
                              f"{self.n_tokens} make one run's working set an array of {per_run:,} elements, more "
                              f"than the {study.MAX_ELEMENTS:,} one array may hold: make {STRUCTURE_OPTIONS} smaller")
            limit = min(limit or study.MAX_ELEMENTS, study.MAX_ELEMENTS // per_run)
        return limit

    def chunk(self) -> int | None:
        """The runs per chunk the sweep is run with: ``chunk_size``, or (0) None for the engine's
        default, or the largest chunk that fits (:meth:`chunk_limit`) when the default does not.
        :class:`Refused` naming ``chunk_size`` when the one given is too large to fit."""
        limit = self.chunk_limit()
        if self.chunk_size:
            if limit is not None and self.chunk_size > limit:
                raise Refused(f"chunk_size makes an array of more than the {study.MAX_ELEMENTS:,} elements one array "
                              f"may hold (chunk_size={self.chunk_size}: the data of the seeds a chunk draws at once): "
                              f"make chunk_size smaller (at most {limit:,} fits with these sizes)")
            return self.chunk_size
        default = (65536 if jax.default_backend() != "cpu" else 2048) * jax.local_device_count()
        return limit if limit is not None and limit < min(default, self.runs()) else None

    def disk(self) -> float:
        """Bytes the chunk files will take (measured: about 26 bytes per run and 2 KiB per file)."""
        chunk = min(self.chunk_size or 2048, self.runs())
        return self.runs() * 26.0 + -(-self.runs() // chunk) * 2048.0



def _with_axes(doc: str) -> str:
    """``doc`` (:class:`Config`'s docstring) with the entries of the axes (:func:`axis_help`, in
    grid order) first in its ``Attributes:`` section."""
    head, sep, rest = doc.partition("    Attributes:\n")
    lines = [textwrap.fill(f"{name}: {text}", 100, initial_indent=" " * 6, subsequent_indent=" " * 8,
                           break_on_hyphens=False, break_long_words=False) for name, text in axis_help().items()]
    return head + sep + "\n".join(lines) + "\n" + rest


Config.__doc__ = _with_axes(Config.__doc__)

def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def rule_module_file(spec: str) -> str | None:
    """The file the module of ``spec`` (``module:NAME`` or ``path/to/file.py:NAME``) is loaded
    from, or None when it has none (or cannot be found: :func:`load_rules` names the problem)."""
    target = spec.rpartition(":")[0]
    if not target:
        return None
    if _is_path(target):
        path = os.path.abspath(target)
        return path if os.path.isfile(path) else None
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError, AttributeError):
        return None
    origin = getattr(found, "origin", None) if found is not None and found.has_location else None
    return origin if origin and os.path.isfile(origin) else None


def rule_module_digest(spec: str) -> str:
    """The SHA-256 (hex) of the bytes of the file of ``spec``'s module (:func:`rule_module_file`;
    "" when it has none): stamped into the sweep's manifest, so that results of another version of
    the file are never resumed."""
    path = rule_module_file(spec)
    if path is None:
        return ""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


_LOADED_SHA = "__tokdyn_rule_module_sha256__"  # a module attribute: the digest of the file it was run from


def load_rules(spec: str) -> dict:
    """``{name: tokdyn.dynamics.Rule}`` named by ``spec``, ``module:NAME`` (an importable module) or
    ``path/to/file.py:NAME`` (a file, imported as the module named by its stem): ``NAME`` a
    :class:`tokdyn.dynamics.Rule` (named by its ``name``) or a dict of them (named by their keys;
    not the names of built-in methods). A file is imported once per process and content (its rules
    stay equal, so they share their compilation); a file changed since is imported anew, so the
    rules are always those of the file as it is (:func:`rule_module_digest`). ``ValueError`` naming
    ``rule_module`` for anything that does not resolve."""
    return dict(_load_rules(spec, rule_module_digest(spec)))


@functools.lru_cache(maxsize=None)
def _load_rules(spec: str, sha: str) -> dict:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ValueError(f"rule_module must be module:NAME or path/to/file.py:NAME, got {spec!r}")
    try:
        if _is_path(target):
            path = os.path.abspath(target)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no file {path}")
            name = os.path.splitext(os.path.basename(path))[0]
            module = sys.modules.get(name)
            if (module is not None and os.path.abspath(getattr(module, "__file__", None) or "") == path
                    and getattr(module, _LOADED_SHA, None) != sha):  # the file changed since: run it anew
                del sys.modules[name]
                module = None
            if module is None:
                loader = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(loader)
                sys.modules[name] = module  # (dataclasses look a class's module up there)
                setattr(module, _LOADED_SHA, sha)
                try:
                    loader.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
            elif os.path.abspath(getattr(module, "__file__", None) or "") != path:
                raise ImportError(f"a module named {name!r} is imported already, from "
                                  f"{getattr(module, '__file__', None)}: rename the file")
        else:
            module = importlib.import_module(target)
            if getattr(module, _LOADED_SHA, sha) != sha:  # its file changed since it was imported here
                module = importlib.reload(module)
            setattr(module, _LOADED_SHA, sha)
    except Exception as e:  # noqa: BLE001 (the user's module: any failure to import it is a bad rule_module)
        raise ValueError(f"rule_module {spec!r}: cannot import {target!r}: {type(e).__name__}: {e}") from e
    if not hasattr(module, attr):
        raise ValueError(f"rule_module {spec!r}: {target!r} has no attribute {attr!r}")
    value = getattr(module, attr)
    if isinstance(value, dynamics.Rule):
        if not value.name:
            raise ValueError(f"rule_module {spec!r}: the rule has no name (Rule(..., name=...)), by which method "
                             "names it; or give a dict {name: rule}")
        value = {value.name: value}
    if not isinstance(value, dict) or not value:
        raise ValueError(f"rule_module {spec!r}: {attr} must be a tokdyn.dynamics.Rule or a non-empty dict of them, "
                         f"got {type(value).__name__}")
    for name, rule in value.items():
        if not isinstance(name, str) or not name.strip() or "," in name or name != name.strip():
            raise ValueError(f"rule_module {spec!r}: rule names must be non-empty str without commas or outer "
                             f"spaces, got {name!r}")
        if name in dynamics.METHODS:
            raise ValueError(f"rule_module {spec!r}: {name!r} is the name of a built-in method (tokdyn.dynamics."
                             "METHODS): choose another")
        if not isinstance(rule, dynamics.Rule):
            raise ValueError(f"rule_module {spec!r}: {attr}[{name!r}] must be a tokdyn.dynamics.Rule, got "
                             f"{type(rule).__name__}")
    return dict(value)


def run_sweep(cfg: Config, out: str, *, progress: bool = True, batch_size="auto", devices=None,
              part=None) -> float:
    """Run (or continue) the sweep into ``out``; returns the seconds it took. One engine sweep
    (:func:`tokdyn.engine.sweep.run`) per rule (:meth:`Config.groups`), each into its own folder
    with its own manifest (the code digest of its rule, the rule module's SHA-256, its output
    fields), all with the same root key and common random numbers. ``part``: ``(i, n)``, this
    process's share (see :func:`tokdyn.engine.sweep.run`)."""
    cfg.validate()
    i, n = _part(part)
    groups = cfg.groups()
    t0 = time.perf_counter()
    for g, group in enumerate(groups):
        manifest = os.path.join(group.dir(out), "manifest.json")
        if n > 1 and i != 0 and g > 0 and not os.path.exists(manifest):  # part 0 starts it once done with the last
            _wait(f"part 0 to start the sweep of {group.folder}", lambda: int(not os.path.exists(manifest)) + sum(
                len(sweep.missing_chunks(e.dir(out))) for e in groups[:g]), not progress)
        sweep.run(group.task, group.grid, key=jax.random.key(cfg.root_seed), common_random_numbers=True,
                  chunk_size=cfg.chunk(), out=group.dir(out), resume=True, progress=progress, collect=False,
                  batch_size=batch_size, devices=devices, part=(i, n), code=code_record(cfg))
    return time.perf_counter() - t0


def missing_chunks(cfg: Config, out: str) -> list:
    """The chunks of every rule's engine sweep (:meth:`Config.groups`) in ``out`` that have no file
    yet (:func:`tokdyn.engine.sweep.missing_chunks`; a group without its manifest yet: one entry)."""
    missing = []
    for group in cfg.groups():
        d = group.dir(out)
        missing += sweep.missing_chunks(d) if os.path.exists(os.path.join(d, "manifest.json")) else [(0, 0)]
    return missing


def code_record(cfg: Config) -> dict:
    """What the sweep's results depend on beyond its task's own code (:func:`tokdyn.engine.sweep.code_digest`):
    ``{"rule_module": SHA-256 of its file}`` when ``rule_module`` names one (a helper the rule
    calls is in that file too), else ``{}``. Recorded in the sweep's manifest: a rerun after the
    file changed is refused."""
    spec = cfg.rule_module.strip()
    return {"rule_module": rule_module_digest(spec) or "no file"} if spec else {}


def _label(row: dict, names) -> str:
    """A setting for a person: ``method=NAME, temperature=1`` (an axis its rule does not take, NaN
    in the merged tables, is left out)."""
    parts = []
    for n in names:
        v = row.get(n)
        if n == "method" and row.get("method_name") is not None:
            parts.append(f"method={row['method_name']}")
        elif v is not None and np.isfinite(v):
            parts.append(f"{n}={v:.4g}")
    return ", ".join(parts) or "(one setting)"


def _ci(row: dict, f: str, p: int = 3) -> str:
    return f"{row[f + '_mean']:.{p}f} [{row[f + '_low']:.{p}f}, {row[f + '_high']:.{p}f}]"


def _to_global(table: dict, group: Group) -> dict:
    """A group's table with its ``method`` column as indices into :meth:`Config.method_names`."""
    if "method" in table:
        table = dict(table, method=np.asarray(group.methods, np.int64)[np.asarray(table["method"], np.int64)])
    return table


def merge_tables(parts: list, axes, names) -> dict:
    """The tables of several groups (:meth:`Config.groups`, their ``method`` as global indices) as
    one: the ``axes`` columns first (NaN where a group's rule has no such knob), ``method_name``
    after ``method`` (the names ``names`` of the indices), then the other columns."""
    out = {}
    for k in axes:
        if all(k in p for p in parts):
            out[k] = np.concatenate([np.asarray(p[k]) for p in parts])
        else:
            out[k] = np.concatenate([np.asarray(p[k], np.float64) if k in p else np.full(len(p["nonfinite"]), np.nan)
                                     for p in parts])
        if k == "method":
            out["method_name"] = np.asarray(names, dtype=object)[out["method"]].astype(str)
    for k in parts[0]:
        if k not in out:
            out[k] = np.concatenate([np.asarray(p[k]) for p in parts])
    return out


def analysis(out: str, cfg: Config, *, seconds: float | None = None, top: int = 10) -> runner.Result:
    """The analysis of the finished sweep in ``out``: the tables ``summary.csv`` (its SHA-256
    recorded in ``tables.json``, :func:`write_table`, so that a later reader such as
    :func:`heatmap` can tell it is the table written here), ``settings.csv`` and ``pareto.csv``, and
    ``report.md``'s text (``data["report"]``); its value is ``{"best": row, "front": rows}``. A
    sweep of several rules (:meth:`Config.groups`) is summarised per rule and merged into one table
    each, every method by its name (``method_name``; ``method`` its index); its settings share the
    bootstrap resamples over seeds, and report.md compares each method's best setting with the
    first method's, paired by seed. A run with a non-finite metric (NaN or ±inf) is left out of
    every figure and counted (``nonfinite`` per condition and setting, ``{metric}_nan`` per
    metric); report.md marks the conditions that had such runs."""
    # a run whose state blew up (a non-finite metric: its tokens left the floats) counts in no
    # figure: its collapse or ARI would be an artefact of the overflow, not of the dynamics
    groups, names = cfg.groups(), cfg.method_names()
    by = cfg.rule_axes()
    conds, tabs = [], []
    for group in groups:
        d = group.dir(out)
        conds.append(_to_global(summary.condition_stats(d, METRICS, require_finite=METRICS), group))
        tabs.append(_to_global(summary.setting_table(d, [k for k in by if k in group.grid.names], SETTING_METRICS,
                                                     n_resamples=cfg.n_resamples, require_finite=METRICS), group))
    cond = merge_tables(conds, [k for k, _ in cfg.axes()], names)
    tab = merge_tables(tabs, by, names)
    front = summary.pareto_front(tab["steps_mean"], tab["ari_mean"])
    tab["on_front"] = front
    order = np.flatnonzero(front)[np.argsort(tab["steps_mean"][front], kind="stable")]
    front_rows = io.to_rows(tab, order)
    ranked = np.argsort(-np.nan_to_num(tab["ari_mean"], nan=-np.inf), kind="stable")
    best = io.to_rows(tab, ranked[:top])
    paired = _paired_lines(out, cfg, tab, [len(t["nonfinite"]) for t in tabs])
    tables = {"summary.csv": cond, TABLES: lambda: _tables_entry(out, "summary.csv"), "settings.csv": tab,
              "pareto.csv": {k: np.asarray(v)[order] for k, v in tab.items()}}
    report = report_text(cfg, tab, ranked, front_rows, cond, seconds, top, paired)
    return runner.Result(tables, data=dict(cond=cond, tab=tab, report=report),
                         value=dict(best=best[0], front=front_rows))


def analyse(out: str, cfg: Config, *, plots: bool = True, seconds: float | None = None, top: int = 10) -> dict:
    """Write the :func:`analysis` of the finished sweep in ``out`` there (summary.csv, tables.json,
    settings.csv, pareto.csv, report.md and, with ``plots``, the figures of :func:`plot_jobs`) and
    return ``{"best": row, "front": rows}``: the analysis of a sweep directory outside a run of
    :func:`main`, which writes the same."""
    result = analysis(out, cfg, seconds=seconds, top=top)
    for name, value in result.tables.items():
        runner.write_table(os.path.join(out, name), value)
    if plots:
        for job in plot_jobs(out, cfg, result.data["cond"], result.data["tab"]):
            figures.draw(job)
    runner.write_table(os.path.join(out, "report.md"), result.data["report"] + "\n")
    return result.value


def _paired_lines(out: str, cfg: Config, tab: dict, sizes: list) -> list:
    """report.md's paired comparison: each method's best setting (by mean ARI) against the first
    method's, the difference per seed (each seed's mean over the data axes: common random numbers
    pair them) with a 95% percentile bootstrap over seeds. ``sizes``: the settings of each group,
    in ``tab``'s order. [] unless the sweep has two methods or more and two seeds or more."""
    names = cfg.method_names()
    if len(names) < 2 or cfg.seeds < 2:
        return []
    by = cfg.rule_axes()
    values, starts = [], np.cumsum([0] + sizes)
    for group in cfg.groups():  # (settings of the group, seeds) per metric, in setting_table's row order
        values.append(summary.per_seed(group.dir(out), [k for k in by if k in group.grid.names], ("ari", "steps"),
                                       require_finite=METRICS)[1])

    def per_seed(row):
        g = int(np.searchsorted(starts, row, side="right") - 1)
        return {f: values[g][f][row - starts[g]] for f in ("ari", "steps")}

    best = {}
    for m in range(len(names)):
        rows = np.flatnonzero(tab["method"] == m)
        ari = np.nan_to_num(tab["ari_mean"][rows], nan=-np.inf)
        best[m] = int(rows[np.argmax(ari)])
    ref = per_seed(best[0])
    lines = ["", f"## Paired by seed: each method's best setting against {names[0]}'s", "",
             f"Differences per seed (method minus {names[0]}, each seed's mean over the data axes: common random "
             "numbers pair them), mean with a 95% percentile bootstrap over seeds; a seed where either side had no "
             "finite run is dropped.", "",
             "| method | best setting | ΔARI [95% CI] | Δsteps [95% CI] | seeds |", "|---|---|---|---|---|"]
    ref_row = io.to_rows(tab, [best[0]])[0]
    lines.insert(3, f"{names[0]}'s best setting: {_label(ref_row, by)}.")
    lines.insert(4, "")
    for m in range(1, len(names)):
        mine = per_seed(best[m])
        cells = []
        for f, p in (("ari", 3), ("steps", 2)):
            d = mine[f] - ref[f]
            d = d[np.isfinite(d)]
            if d.size >= 2:
                lo, hi = inference.bootstrap_ci(d, seed=0, n_resamples=cfg.n_resamples)
                cells.append(f"{d.mean():+.{p}f} [{lo:+.{p}f}, {hi:+.{p}f}]")
            else:
                cells.append(f"{d.mean():+.{p}f}" if d.size else "-")
        n = int(np.sum(np.isfinite(mine["ari"] - ref["ari"])))
        lines.append(f"| {names[m]} | {_label(io.to_rows(tab, [best[m]])[0], by)} | {cells[0]} | {cells[1]} | "
                     f"{n} of {cfg.seeds} |")
    return lines


def heatmap_job(out: str, cond: dict, x: str, y: str, metric: str, where: dict | None = None,
                stat: str = "mean") -> dict:
    """The :func:`tokdyn.stats.figures.draw` job of a heatmap of ``metric`` over axes ``x`` and ``y``,
    pooled over the other axes (or fixed by ``where``), from a :func:`summary.condition_stats`
    table of the sweep in ``out``. ``stat``: "mean" or "std" (over the pooled runs)."""
    axes = [a for a in summary.table_axes(cond) if a != "method_name"]
    for arg, name in (("x", x), ("y", y)):
        if name not in axes:
            raise ValueError(f"{arg}={name!r} is not an axis of this sweep; axes: {axes}")
    if x == y:
        raise ValueError(f"x and y must be different axes, got {x!r} twice")
    if stat not in ("mean", "std"):
        raise ValueError(f"stat must be 'mean' or 'std', got {stat!r}")
    m = summary.marginal(cond, [y, x], [metric], where=where)
    xs, ys = np.unique(m[x]), np.unique(m[y])
    z = np.full((ys.size, xs.size), np.nan)
    z[np.searchsorted(ys, m[y]), np.searchsorted(xs, m[x])] = m[f"{metric}_{stat}"]
    suffix = "".join(f"_{k}{v:g}" for k, v in (where or {}).items())
    pooled = [a for a in axes if a not in (x, y) and a not in (where or {})]
    title = f"{metric} ({stat}) over seeds" + (f" and {', '.join(pooled)}" if pooled else "")
    if where:
        title += "; " + ", ".join(f"{k}={v:g}" for k, v in where.items())
    return dict(kind="heatmap", path=os.path.join(out, "plots", f"heatmap_{metric}_{stat}_{y}_vs_{x}{suffix}.png"),
                x=xs.tolist(), y=ys.tolist(), z=z.tolist(), xlabel=x, ylabel=y, title=title, cbar=metric)


def plot_jobs(out: str, cfg: Config, cond: dict, tab: dict) -> list[dict]:
    """The figures of :func:`analyse`, as jobs of :func:`tokdyn.stats.figures.draw`: the Pareto
    front of the settings ``tab`` (``plots/pareto.png``) and, with two axes or more, heatmaps of
    ARI, collapse and steps over the first two (:func:`heatmap_job` of the conditions ``cond``; in a
    sweep of several rules, per rule over the first two axes it takes, ``..._<group>.png``)."""
    jobs = []
    front = np.asarray(tab["on_front"], bool)
    jobs.append(dict(kind="front", path=os.path.join(out, "plots", "pareto.png"), cost=tab["steps_mean"].tolist(),
                     benefit=tab["ari_mean"].tolist(), front=front.tolist(), low=tab["ari_low"].tolist(),
                     high=tab["ari_high"].tolist(), xlabel="mean steps", ylabel="mean ARI",
                     title=f"{len(front)} settings; Pareto front ({front.sum()}) with 95% bootstrap CI"))
    groups = cfg.groups()
    for group in groups:  # per rule: the heatmaps over the first two axes it takes
        axes = [k for k in cfg.rule_axes() + cfg.data_axes() if k in group.grid.names
                and (len(groups) == 1 or group.grid.axes[k].size > 1)]  # of several rules: no axis of one value
        if len(axes) < 2:
            continue
        part = cond
        if len(groups) > 1:  # its conditions, without the axes of the other rules
            sel = np.isin(cond["method"], group.methods)
            part = {k: np.asarray(v)[sel] for k, v in cond.items()
                    if k in group.grid.names or k not in [a for a, _ in cfg.axes()] + ["method_name"]}
        for metric in ("ari", "collapsed", "steps"):
            job = heatmap_job(out, part, axes[0], axes[1], metric)
            if len(groups) > 1:
                tag = os.path.basename(group.folder)
                job["path"] = job["path"][:-len(".png")] + f"_{tag}.png"
                job["title"] = f"{tag}: {job['title']}"
            jobs.append(job)
    return jobs


def report_text(cfg: Config, tab: dict, ranked, front_rows: list, cond: dict, seconds, top: int, paired=()) -> str:
    """``report.md`` (without its final newline): the sweep, its best settings by mean ARI, the
    Pareto front of steps against ARI, collapse, the best setting per data condition, the paired
    comparison of the methods (``paired``) and the non-finite runs."""
    by = cfg.rule_axes()
    n_runs = cfg.runs()
    best = io.to_rows(tab, ranked[:1])[0]
    groups, names = cfg.groups(), cfg.method_names()
    if len(groups) == 1:
        runs = " x ".join(f"{k} ({len(v)})" for k, v in cfg.axes()) + f" x {cfg.seeds} seeds"
    else:  # one engine sweep per rule, each over the axes its rule takes
        runs = "; ".join(f"{'+'.join(names[i] for i in g.methods)} ({g.folder}): "
                         + " x ".join(f"{k} ({n})" for k, n in zip(g.grid.names, g.grid.shape))
                         + f" x {cfg.seeds} seeds"
                         for g in groups) + " (one engine sweep per rule, the same root key and seeds)"
    quick = ([f"Quick preset: a small grid and {cfg.seeds} seeds (tokdyn sweep token-dynamics --quick), to try the "
              "command and its outputs; run without --quick for a sweep whose figures mean something.", ""]
             if cfg.preset == "quick" else [])
    lines = quick + [
        "# Token-dynamics sweep",
        "",
        f"{n_runs:,} runs: " + runs + (f", in {seconds:.1f} s" if seconds else "") + ".",
        f"Runs: {cfg.n_tokens} tokens, D={cfg.dim}, {cfg.points_per_cluster} points per cluster, "
        f"centres {cfg.centers} (box {cfg.center_box:g}), init {cfg.init}, at most {cfg.n_steps} steps, "
        f"tol {cfg.tol:g}." + (" Method indices: " + ", ".join(f"{i} = {m}" for i, m in enumerate(cfg.method_names()))
                               + "." if cfg.method_names() else ""),
        "A *setting* is one point of the rule axes (" + (", ".join(by) or "none") + "), pooled over the data axes ("
        + (", ".join(cfg.data_axes()) or "none") + "). Intervals are 95% percentile "
        "bootstraps over seeds (common random numbers: every setting saw the same data per seed).",
        "",
        f"## Best regimes by mean ARI (top {min(top, len(ranked))} of {len(ranked)} settings)",
        "",
        "| setting | ARI [95% CI] | steps [95% CI] | collapse rate | converged | non-finite runs |",
        "|---|---|---|---|---|---|",
    ]
    for r in io.to_rows(tab, ranked[:top]):
        lines.append(f"| {_label(r, by)} | {_ci(r, 'ari')} | {_ci(r, 'steps', 2)} | {r['collapsed_mean']:.3f} | "
                     f"{r['converged_mean']:.3f} | {_flag(r['nonfinite'])} |")
    overlap = int(np.sum(tab["ari_high"] >= best["ari_low"]))
    lines += ["", f"{overlap} setting(s) have an ARI interval reaching the best setting's lower bound "
                  f"({best['ari_low']:.3f}): the top is {'not ' if overlap > 1 else ''}clearly separated."]
    lines += ["", "## Speed vs quality: the Pareto front (fewer steps, higher ARI)", "",
              "| setting | steps [95% CI] | ARI [95% CI] | collapse rate |", "|---|---|---|---|"]
    for r in front_rows:
        lines.append(f"| {_label(r, by)} | {_ci(r, 'steps', 2)} | {_ci(r, 'ari')} | {r['collapsed_mean']:.3f} |")
    for delta in (0.01, 0.02, 0.05) if np.isfinite(best["ari_mean"]) else ():
        ok = np.flatnonzero(tab["ari_mean"] >= best["ari_mean"] - delta)
        fast = ok[np.argmin(tab["steps_mean"][ok])]
        r = io.to_rows(tab, [fast])[0]
        lines.append(f"\nFastest setting within {delta:g} ARI of the best: {_label(r, by)}: steps {_ci(r, 'steps', 2)}, "
                     f"ARI {_ci(r, 'ari')}.")
    collapse = np.flatnonzero(tab["collapsed_mean"] > 0.5)
    if collapse.size:
        lines += ["", "## Collapse", "", f"{collapse.size} setting(s) collapse in more than half of their runs"
                  + (" that stayed finite" if tab["nonfinite"].sum() else "") + "; "
                  "e.g. " + "; ".join(_label(r, by) for r in io.to_rows(tab, collapse[:5])) + "."]
    data_axes = cfg.data_axes()
    if data_axes and by:
        lines += ["", "## Best setting per data condition (mean ARI ± s.e. over seeds)", "",
                  "| " + " | ".join(data_axes) + " | best setting | ARI | steps | non-finite runs |",
                  "|" + "---|" * (len(data_axes) + 4)]
        keys = np.stack([cond[a] for a in data_axes], 1)
        for key in np.unique(keys, axis=0):
            sel = np.flatnonzero(np.all(keys == key, 1))
            head = "| " + " | ".join(f"{v:g}" for v in key)
            if not np.isfinite(cond["ari_mean"][sel]).any():
                flag = _flag(cond["nonfinite"][sel].sum())
                lines.append(f"{head} | (no setting has a finite run) | - | - | {flag} |")
                continue
            i = sel[np.nanargmax(cond["ari_mean"][sel])]
            se = cond["ari_std"][i] / np.sqrt(max(cond["ari_n"][i], 1))
            lines.append(f"{head} | {_label({a: cond[a][i] for a in by + ['method_name'] if a in cond}, by)} | "
                         f"{cond['ari_mean'][i]:.3f} ± {se:.3f} | {cond['steps_mean'][i]:.2f} | "
                         f"{_flag(cond['nonfinite'][i])} |")
    lines += list(paired)
    lines += ["", "## Non-finite runs (NaN or inf)", ""] + _nonfinite_lines(cfg, cond)
    return "\n".join(lines)


def _flag(n) -> str:
    """A count of non-finite runs for report.md's tables: ``0``, or the count marked ``⚠``."""
    return f"⚠ {int(n)}" if n else "0"


def _nonfinite_lines(cfg: Config, cond: dict, shown: int = 20) -> list:
    """report.md's account of the runs with a non-finite metric: how many conditions and runs,
    which metrics, that every figure excludes them, and the conditions marked (the first ``shown``)."""
    bad = np.flatnonzero(cond["nonfinite"] > 0)
    if bad.size == 0:
        return ["No run produced a non-finite metric (NaN or inf)."]
    runs = int(cond["nonfinite"].sum())
    per_metric = ", ".join(f"{f}: {int(cond[f + '_nan'].sum())}" for f in METRICS if cond[f + "_nan"].sum())
    axes = [k for k, _ in cfg.axes()]
    lines = [f"⚠ {bad.size} of {len(cond['n'])} condition(s) had non-finite runs: {runs} of {int(cond['n'].sum())} "
             f"runs in all (runs with a NaN or inf per metric: {per_metric or 'none'}). Those runs blew up; every "
             "figure "
             "of this report and of summary.csv / settings.csv / pareto.csv (means, rates such as the collapse rate, "
             "intervals) excludes them and is over the runs that stayed finite; the `nonfinite` column counts them.",
             "", "| " + " | ".join(axes) + " | non-finite runs | of |", "|" + "---|" * (len(axes) + 2)]
    for i in bad[:shown]:
        lines.append("| " + " | ".join(str(cond["method_name"][i]) if a == "method" and "method_name" in cond
                                       else f"{cond[a][i]:g}" for a in axes) + f" | ⚠ {int(cond['nonfinite'][i])} | "
                     f"{int(cond['n'][i])} |")
    if bad.size > shown:
        lines.append(f"\n... and {bad.size - shown} more (summary.csv's `nonfinite` column lists them all).")
    return lines


TABLES = "tables.json"  # the SHA-256 of each table the sweep wrote, with a checksum of its own


def _json_digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


GROUPS = "groups"  # the folder of the engine sweeps of a sweep of several rules (Config.groups)


def group_dirs(out: str) -> list:
    """The engine sweeps' directories of the sweep of several rules in ``out`` (``groups/*`` with a
    manifest), sorted; [] for a sweep of one rule (its manifest is ``out``'s own)."""
    folder = os.path.join(out, GROUPS)
    if os.path.exists(os.path.join(out, "manifest.json")) or not os.path.isdir(folder):
        return []
    return [os.path.join(folder, d) for d in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, d, "manifest.json"))]


def sweep_key(out: str) -> str:
    """The id of the sweep in ``out``: its manifest's :func:`tokdyn.engine.sweep.sweep_id`, or for a
    sweep of several rules a digest of each engine sweep's (:func:`group_dirs`). ``ValueError`` when
    there is none or a manifest is damaged."""
    dirs = group_dirs(out)
    if not dirs:
        return sweep.sweep_id(sweep.read_manifest(out))
    return _json_digest({os.path.basename(d): sweep.sweep_id(sweep.read_manifest(d)) for d in dirs})


def _tables_record(out: str) -> dict:
    """``tables.json`` of ``out`` when it is intact and of the sweep now in ``out``; else ``{}``."""
    path = os.path.join(out, TABLES)
    try:
        record = io.read_json(path)
        sid = sweep_key(out)
    except (OSError, ValueError):
        return {}
    if (not isinstance(record, dict) or record.get("checksum") != _json_digest({k: v for k, v in record.items()
                                                                                 if k != "checksum"})
            or record.get("sweep") != sid or not isinstance(record.get("tables"), dict)):
        return {}
    return record


def _tables_entry(out: str, name: str) -> dict:
    """``tables.json`` of ``out`` with the SHA-256 of its table ``name`` (written already) recorded."""
    with open(os.path.join(out, name), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    record = _tables_record(out) or {"sweep": sweep_key(out), "tables": {}}
    record = {"sweep": record["sweep"], "tables": {**record["tables"], name: sha}}
    record["checksum"] = _json_digest(record)
    return record


def write_table(out: str, name: str, columns: dict) -> str:
    """Write the table ``name`` (a CSV of ``columns``) into the sweep directory ``out`` and record
    its SHA-256 in ``tables.json`` (itself carrying a checksum of its fields and the sweep's id),
    so that :func:`read_table` can tell it is the table written here. Returns its path."""
    path = io.write_csv(os.path.join(out, name), columns)
    io.write_json(os.path.join(out, TABLES), _tables_entry(out, name))
    return path


def read_table(out: str, name: str) -> tuple:
    """``(columns, None)`` of the table ``name`` of the sweep in ``out`` when its bytes are those
    recorded by :func:`write_table`; ``(None, reason)`` otherwise (absent, altered since, cut
    short, or without a record)."""
    path = os.path.join(out, name)
    if not os.path.isfile(path) or os.path.islink(path):
        return None, None if not os.path.lexists(path) else "it is not a plain file"
    with open(path, "rb") as f:
        data = f.read()
    recorded = _tables_record(out).get("tables", {}).get(name)
    if recorded is None:
        return None, f"no SHA-256 of it is recorded in an intact {TABLES}"
    if hashlib.sha256(data).hexdigest() != recorded:
        return None, "its SHA-256 differs from the one recorded when it was written"
    try:
        return io.read_csv(path), None
    except (ValueError, IndexError, OSError) as e:
        return None, f"it cannot be read: {e}"


STUDY = "token-dynamics-sweep"
PART_WAIT_S = 600.0  # how long a part waits without progress for another (part 0's stamp, the others' chunks)


def _part(part) -> tuple:
    """``part`` as ``(i, n)``; default: this process's share of a multi-process job (one: ``(0, 1)``)."""
    if part is None:
        return jax.process_index(), jax.process_count()
    if (not isinstance(part, (tuple, list)) or len(part) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in part)
            or not 0 <= part[0] < part[1]):
        raise ValueError(f"part must be a pair (i, n) of ints with 0 <= i < n, got {part!r}")
    return int(part[0]), int(part[1])


def check_disk(cfg: Config, out: str, *, fresh: bool = False) -> None:
    """:class:`Refused` naming ``seeds`` when the sweep's chunk files (:meth:`Config.disk`, less the
    chunks already in ``out`` unless ``fresh``) would not fit on the disk that holds ``out``."""
    probe = os.path.abspath(out)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    have = 0
    for group in () if fresh else cfg.groups():
        chunk_dir = os.path.join(group.dir(out), "chunks")
        have += 0 if not os.path.isdir(chunk_dir) else sum(e.stat().st_size for e in os.scandir(chunk_dir)
                                                            if e.is_file(follow_symlinks=False))
    need = cfg.disk() - have
    if need > 0.95 * free:
        raise Refused(f"{STUDY}: its {cfg.runs():,} runs will take about {_size(need)} of chunk files, and only "
                      f"{_size(free)} is free on the disk of {probe!r} (the sweep keeps 5% of it spare): make seeds "
                      "(or the axes) smaller, or choose an --out on a larger disk")


def _size(n: float) -> str:
    """Bytes for a person: ``512 bytes``, ``3.4 KiB``, ``12.5 MiB``, ``2.25 GiB`` (three
    significant digits at least, so two different sizes never print alike as 0.0)."""
    n = float(n)
    if abs(n) < 1024:
        return f"{int(round(n)):,} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.3g} {unit}" if abs(n) < 100 else f"{n:,.0f} {unit}"
    return f"{n} PiB"


def _wait(what: str, missing, quiet: bool) -> None:
    """Wait until ``missing()`` (a count) is 0, giving up (``TimeoutError`` naming ``what``) after
    :data:`PART_WAIT_S` without progress."""
    last, deadline, told = missing(), time.monotonic() + PART_WAIT_S, False
    while last:
        if not quiet and not told:
            print(f"{STUDY}: waiting for {what}", file=sys.stderr)
            told = True
        time.sleep(0.2)
        now = missing()
        if now < last:
            last, deadline = now, time.monotonic() + PART_WAIT_S
        if now and time.monotonic() > deadline:
            raise TimeoutError(f"{STUDY}: waited {PART_WAIT_S:.0f} s without progress for {what} ({now} missing); run "
                               "the same command again in one process to finish the sweep and write its analysis")


def check(session: runner.Session, cfg: Config) -> None:
    """The configuration's checks, and the part of a shared sweep (``session.options["part"]``)."""
    cfg.validate()
    session.context["part"] = _part(session.options.get("part"))


def prepare(session: runner.Session, cfg: Config) -> None:
    """Before the directory is opened: the disk the chunks need; of a sweep shared by several
    processes, no ``fresh``, and part 0's stamp awaited by the others."""
    i, n = session.context["part"]
    out = session.out
    check_disk(cfg, out, fresh=session.fresh)
    if n > 1:
        if session.fresh:
            raise Refused(f"fresh=True with part={(i, n)}: several processes cannot clear one directory safely; start "
                          "afresh with one process (or remove the directory), then start the parts")
        if i != 0:
            stamp = os.path.join(out, study.STAMP)
            _wait(f"part 0 to stamp {stamp}", lambda: int(not os.path.exists(stamp)), session.quiet)


def run(session: runner.Session, cfg: Config) -> runner.Result | None:
    """Run (or resume) this process's share of the sweep; part 0 then waits for the others' chunks
    and analyses the whole (:func:`analysis`); the other parts return None."""
    i, n = session.context["part"]
    out = session.out
    seconds = session.timings["sweep_s"] = run_sweep(cfg, out, progress=not session.quiet, part=(i, n))
    if n > 1:
        if i != 0:
            session.say(f"part {i} of {n}: done; part 0 writes the analysis once every part's chunks are in {out}")
            return None
        _wait("the other parts' chunks", lambda: len(missing_chunks(cfg, out)), session.quiet)
    with session.timed("analyse"):
        result = analysis(out, cfg, seconds=seconds)
    session.timings["n_runs"] = cfg.runs()
    return dataclasses.replace(result, data=dict(result.data, timings=session.timings, out=out))


def printed(cfg: Config, result: runner.Result, report: str) -> str:
    """The lines a run prints at its end: the time taken, the best setting, the Pareto front."""
    t, b = result.data["timings"], result.value["best"]
    return (f"{cfg.runs():,} runs in {t['sweep_s']:.1f} s; analysis in {t['analyse_s']:.1f} s\n"
            f"best mean ARI: {_label(b, cfg.rule_axes())}: ARI {_ci(b, 'ari')}, steps {_ci(b, 'steps', 2)}\n"
            f"Pareto front: {len(result.value['front'])} settings; see {os.path.join(result.data['out'], 'report.md')}")


SPEC = runner.Spec(
    name=STUDY, config=Config, run=run, check=check, prepare=prepare,
    figures=lambda session, cfg, r: [figures.draw(job) for job in plot_jobs(session.out, cfg, r.data["cond"],
                                                                               r.data["tab"])],
    summary=lambda cfg, r: r.data["report"], summary_file="report.md", preset=None,  # report.md says it
    printed=printed, outputs=("summary.csv", TABLES, "settings.csv", "pareto.csv"))
# (no figure_files: `tokdyn plot heatmap` draws into the same plots/ folder)


def main(cfg: Config, out: str, *, quiet: bool = False, plots: bool = True, fresh: bool = False,
         part=None) -> dict | None:
    """Run (or resume) the sweep into ``out`` and write its analysis
    (:func:`tokdyn.experiment.runner.run_study`); returns the analysis.

    Before any run, ``out`` is checked and stamped (:class:`~tokdyn.experiment.study.Study`):
    a path that cannot be written, a sweep that cannot fit in memory or on the disk, or that
    overflows the engine's run index, is refused naming the option; a directory of another study
    or of another sweep configuration is refused naming the fields that differ, unless ``fresh``
    (which removes what it holds). ``part``: ``(i, n)``, this process's share of a sweep that
    several processes run into the same ``out`` at once (default: ``jax.process_index()`` of
    ``jax.process_count()``); part 0 stamps the directory (the others wait for its stamp) and
    writes the analysis once every part's chunks are there; the others return ``None``."""
    return runner.run_study(SPEC, cfg, out, quiet=quiet, plots=plots, fresh=fresh, part=part)


@dataclasses.dataclass(frozen=True)
class HeatmapConfig:
    """A heatmap of one metric of a finished sweep over two of its axes.

    Attributes:
      dir: the sweep directory.
      x: axis on the horizontal (required).
      y: axis on the vertical (required).
      metric: output field.
      stat: mean | std (over the pooled runs).
      where: fix other axes, name=value,name=value (otherwise they are pooled).
    """

    dir: str
    x: str = ""
    y: str = ""
    metric: str = "ari"
    stat: str = "mean"
    where: str = ""

    def fixed(self) -> dict:
        """``where`` as ``{axis: value}``."""
        out = {}
        for part in (t.strip() for t in self.where.split(",") if t.strip()):
            name, sep, value = part.partition("=")
            try:
                out_value = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ValueError(f"where expects name=value pairs separated by commas, got {part!r}")
            if name.strip() in out:
                raise ValueError(f"where fixes {name.strip()!r} twice, in {self.where!r}")
            out[name.strip()] = out_value
        return out

    def validate(self) -> "HeatmapConfig":
        """Check the arguments against the sweep in ``dir`` (its axes, their values and its output
        fields, whether it is finished and ``dir`` can be written): every problem is a
        ``ValueError`` naming the option (the command exits 2)."""
        _checks.choice("stat", self.stat, ("mean", "std"))
        if not isinstance(self.dir, str) or not self.dir:
            raise TypeError(f"dir must name a sweep's output directory, got {self.dir!r}")
        if not os.path.isdir(self.dir):
            raise ValueError(f"dir={self.dir!r} is not a directory: name the --out of a `tokdyn sweep token-dynamics`")
        dirs = group_dirs(self.dir)
        if dirs:
            raise ValueError(f"dir={self.dir!r} holds a sweep of several rules, one engine sweep each: plot one of "
                             f"them, dir={dirs[0]!r}" + "".join(f" or {d!r}" for d in dirs[1:]))
        try:
            grid = sweep.Grid.from_dict(sweep.read_manifest(self.dir)["grid"])
        except io.CorruptFile as e:
            raise ValueError(f"dir={self.dir!r}: {e}; run the sweep command again with its arguments to write it anew "
                             "(its finished chunks are kept)") from None
        axes = list(grid.names)
        where = self.fixed()
        for arg, name in [("x", self.x), ("y", self.y)] + [("where", k) for k in where]:
            if name not in axes:
                raise ValueError(f"{arg}={name!r} is not an axis of this sweep; axes: {axes}")
        if self.x == self.y:
            raise ValueError(f"x and y must be different axes, got {self.x!r} twice")
        for name, value in where.items():
            if name in (self.x, self.y):
                raise ValueError(f"where fixes {name!r}, which the heatmap spans (x={self.x!r}, y={self.y!r})")
            values = grid.axes[name]
            if not np.isclose(values, value).any():
                raise ValueError(f"where={name}={value:g}: the sweep's {name} takes the values "
                                 f"{[float(v) if values.dtype.kind == 'f' else int(v) for v in values]}")
        missing = sweep.missing_chunks(self.dir)
        if missing:
            raise ValueError(f"dir={self.dir!r} holds an unfinished sweep ({len(missing)} chunk(s) missing, the first "
                             f"for runs [{missing[0][0]}, {missing[0][1]})): run the sweep command again to finish it")
        fields = sweep.output_fields(self.dir)
        if self.metric not in fields:
            raise ValueError(f"metric={self.metric!r} is not an output of this sweep; metrics: {list(fields)}")
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise ValueError(f"dir={self.dir!r} cannot be written: the heatmap is drawn into its plots/ folder")
        return self


def _summary_table(cfg: HeatmapConfig) -> dict:
    """The sweep's ``summary.csv`` when it is the table the sweep wrote (its SHA-256 is the one
    recorded in ``tables.json``, :func:`read_table`) and holds ``cfg.metric``; else computed from
    the verified chunks and written anew (with a warning naming the file when it was there but
    could not be trusted); :class:`Refused` naming the file when a chunk is damaged."""
    path = os.path.join(cfg.dir, "summary.csv")
    grid = sweep.Grid.from_dict(sweep.read_manifest(cfg.dir)["grid"])
    want = [*grid.names, "n", f"{cfg.metric}_{cfg.stat}", f"{cfg.metric}_mean"]
    cond, problem = read_table(cfg.dir, "summary.csv")
    if cond is not None:
        if all(k in cond and len(cond[k]) == grid.n_conditions and cond[k].dtype.kind in "fiu" for k in want):
            return cond
        problem = f"it lacks the columns of {cfg.metric!r}"
    fields = sweep.output_fields(cfg.dir)
    try:  # the fields in the order analyse writes them
        ordered = [f for f in METRICS if f in fields] + [f for f in fields if f not in METRICS]
        cond = summary.condition_stats(cfg.dir, ordered, require_finite=[f for f in METRICS if f in fields])
    except ValueError as e:  # a chunk damaged since the sweep finished (iter_chunks names it)
        raise Refused(f"{e}: run the sweep command again with its arguments (it recomputes the chunk), then "
                      "plot") from None
    if problem is not None:
        warnings.warn(f"{path} is not the table the sweep wrote ({problem}): recomputed from the sweep's verified "
                      "chunks and written anew", RuntimeWarning, stacklevel=3)
    write_table(cfg.dir, "summary.csv", cond)
    return cond


def heatmap(cfg: HeatmapConfig) -> str:
    """Draw the heatmap of ``cfg`` (reading or writing the sweep's ``summary.csv``); returns its path."""
    cfg.validate()
    cond = _summary_table(cfg)
    return figures.draw(heatmap_job(cfg.dir, cond, cfg.x, cfg.y, cfg.metric, where=cfg.fixed(), stat=cfg.stat))
