"""The sweep's configuration: :class:`Config` (its axes x seeds and the structure of a run; the
rules it runs and the engine sweeps they make, :meth:`Config.groups`; what it asks of the machine,
:meth:`Config.estimate`)."""

from __future__ import annotations

import dataclasses
import os
import re
import textwrap
from typing import NamedTuple

import jax
import numpy as np

from tokdyn import _checks, dynamics
from tokdyn.engine import sweep
from tokdyn.engine.runs import PACKAGE_RULES, ClusterRun, RunStructure
from tokdyn.experiment import study
from tokdyn.experiment.study import Estimate, Refused
from tokdyn.studies.token_dynamics_sweep.axes import AXES, DATA_AXES, axis_fields, axis_help
from tokdyn.studies.token_dynamics_sweep.rule_module import load_rules

STUDY = "token-dynamics-sweep"
_Axes = dataclasses.make_dataclass(
    "_Axes", axis_fields(), bases=(RunStructure,), frozen=True, namespace={"__module__": __name__}
)  # Config's axis fields, after the structure's
METRICS = ("ari", "steps", "collapsed", "converged", "nmi", "sse")
SETTING_METRICS = ("ari", "steps", "collapsed", "converged")
STRUCTURE_OPTIONS = "points_per_cluster, dim or n_tokens"  # the sizes of one run: to change when one run is too big
GROUPS = "groups"  # the folder of the engine sweeps of a sweep of several rules (Config.groups)


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
    """A token-dynamics sweep: the axes (in the order of
    :data:`~tokdyn.studies.token_dynamics_sweep.axes.AXES`) x ``seeds``, and the static
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
      best_over_nonfinite: let settings with a non-finite run (NaN or inf: a run that blew up)
        compete for the best setting and the Pareto front; by default they are excluded (report.md
        says how many), since a setting's figures over the runs that stayed finite favour settings
        that fail often.
    """

    seeds: int = 20
    root_seed: int = 0
    chunk_size: int = 0
    n_resamples: int = 2000
    rule_module: str = ""
    knob: str = ""
    preset: str = ""
    best_over_nonfinite: bool = False

    @classmethod
    def quick(cls) -> "Config":
        """The quick preset (``--quick``): 3 temperatures x 2 repulsions x 2 momenta x 2 noise levels
        x 2 cluster counts x 8 seeds in D = 2 (384 runs, a few seconds once compiled); its report.md
        says so in its first line."""
        return cls(
            temperature="0.5,2,8",
            repulsion="0,0.1",
            momentum="0,0.5",
            noise="0.3,0.9",
            n_clusters="3,4",
            seeds=8,
            dim=2,
            points_per_cluster=40,
            n_resamples=500,
            preset="quick",
        )

    def axes(self) -> tuple:
        """``((name, values), ...)`` of the non-empty axes in grid order
        (:data:`~tokdyn.studies.token_dynamics_sweep.axes.AXES`, then the ``knob`` axes in the order
        given; method: its names)."""
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
                raise ValueError(
                    f"knob expects NAME=VALUES, several separated by ';' (step_size=0.5,1;"
                    f"beta=linspace:0:1:3), got {part!r}"
                )
            if name in seen:
                raise ValueError(f"knob: {name!r} is given twice in {self.knob!r}")
            if name in AXES:
                raise ValueError(f"knob: {name!r} has an option of its own: --{name.replace('_', '-')} VALUES")
            if name in sweep.Grid.RESERVED or name in ("draw", "key"):
                raise ValueError(
                    f"knob: {name!r} is a name the sweep keeps for itself (seed, index, draw, key), "
                    "not a knob a rule may have"
                )
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
        if not isinstance(self.best_over_nonfinite, (bool, np.bool_)):
            raise TypeError(f"best_over_nonfinite must be a bool, got {self.best_over_nonfinite!r}")
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
        which = (
            f"rule {own[0][0]!r}{where}, whose knobs are {list(own[0][1])}"
            if len(own) == 1
            else "rules " + ", ".join(f"{m!r} (knobs {list(k)})" for m, k in own) + where
        )
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
                    raise ValueError(
                        f"{name}: method names {which}; {name} is a knob of the built-in rule: give it "
                        f"as '' (--{name.replace('_', '-')} '')"
                    )
                if not own:
                    raise ValueError(
                        f"knob: {name!r}: method names no rule of rule_module"
                        + (f" (its rules: {list(modules)})" if modules else " (none given)")
                        + f" nor of the package ({list(PACKAGE_RULES)}), and knob sets the knobs of "
                        "those rules"
                    )
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
                raise ValueError(
                    f"rule_module {self.rule_module.strip()!r}: {name!r} is the name of one of the package's "
                    f"rules (tokdyn.engine.runs.PACKAGE_RULES: {PACKAGE_RULES[name].name}): choose another"
                )
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
        self.check_runs()  # the engine's limit, named by this sweep's options, before any grid is built
        names, axes, rules = self.method_names(), dict(self.axes()), self.rules()
        groups = self.method_groups()
        out = []
        for g, ((rule, idx), grid_axes) in enumerate(zip(groups, self._group_axes())):
            if rule is None:
                table = tuple(dynamics.METHODS[names[i]].row() for i in idx)
            else:
                table = tuple(tuple(float(v) for v in jax.tree_util.tree_leaves(rules[names[i]].hparams)) for i in idx)
            task = ClusterRun(
                **self.structure(),
                max_clusters=max(self.cluster_counts()),
                methods=table,
                **({} if rule is None else {"rule": rule}),
            )

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
        """The non-empty axes that set the update rule
        (:data:`~tokdyn.studies.token_dynamics_sweep.axes.RULE_AXES` and the ``knob`` axes), in grid
        order: the settings of the analysis."""
        return [k for k, _ in self.axes() if k not in DATA_AXES]

    def data_axes(self) -> list:
        """The non-empty data axes (``noise``, ``n_clusters``), in grid order: pooled over in the
        analysis."""
        return [k for k, _ in self.axes() if k in DATA_AXES]

    def _group_sizes(self) -> list:
        """Per :meth:`method_groups` entry, ``{axis: size}`` of its grid's axes (``method``: its methods)."""
        sizes = {k: len(v) for k, v in self.axes()}
        return [
            {k: len(idx) if k == "method" else sizes[k] for k in names}
            for (_, idx), names in zip(self.method_groups(), self._group_axes())
        ]

    def runs(self) -> int:
        """Runs of the sweep: over its rules (:meth:`groups`), the product of the sizes of the axes
        each takes x seeds."""
        return sum(int(np.prod(list(g.values()), dtype=object)) for g in self._group_sizes()) * self.seeds

    def check_runs(self) -> int:
        """:meth:`runs`; :class:`Refused` naming ``seeds`` and the axes when they overflow the sweep
        engine's ``uint32`` run index (before any grid is built)."""
        runs = self.runs()
        if runs > sweep.MAX_RUNS:
            sizes = " x ".join(f"{k} ({len(v)})" for k, v in self.axes())
            raise Refused(
                f"seeds={self.seeds} makes {runs:,} runs ({sizes} x {self.seeds} seeds), more than the "
                f"{sweep.MAX_RUNS:,} the sweep engine can index (run indices and seeds are folded into "
                "PRNG keys as uint32): make seeds smaller, or split the axes over several sweeps"
            )
        return runs

    def settings(self) -> int:
        """Settings of the analysis: over its rules, the product of the sizes of the rule axes each
        takes."""
        return sum(
            int(np.prod([n for k, n in g.items() if k not in DATA_AXES], dtype=object)) for g in self._group_sizes()
        )

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
        runs = self.check_runs()
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
        host, host_option = max(
            (table, "seeds"), (boot, "n_resamples" if 256 * self.n_resamples > 1024 * self.seeds else "seeds")
        )
        work = points * self.n_tokens * self.dim * self.n_steps / (300 * 4 * 4 * 30)
        seconds = {
            "dynamics": runs * 1.7e-4 * max(0.5, float(np.sqrt(work))),
            "host": self.settings() * self.seeds * self.n_resamples * len(SETTING_METRICS) * 2e-9,
        }
        return Estimate(
            memory=float(device),
            option=chunk_option,
            models=runs,
            work=seconds,
            host_memory=float(host),
            host_option=host_option,
        )

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
            raise Refused(
                f"points_per_cluster={self.points_per_cluster} with dim={self.dim} (and "
                f"{max(self.cluster_counts())} clusters) makes the data of the {fewest} seed(s) a chunk draws at once an array of "
                f"{fewest * per_seed:,} elements, more than the {study.MAX_ELEMENTS:,} one array may hold "
                f"whatever the chunk_size: make {STRUCTURE_OPTIONS} smaller"
            )
        limit = None
        most = study.MAX_ELEMENTS // per_seed  # seeds whose data fit in one array
        if self.seeds > most:  # chunk // conds + 2 n_dev seeds drawn at once: at most `most`
            limit = (most - 2 * n_dev + 1) * conds - 1
        if jax.default_backend() != "cpu":  # the chunk's runs are vmapped at once
            per_run = points * (self.dim + self.n_tokens)
            if per_run > study.MAX_ELEMENTS:
                raise Refused(
                    f"points_per_cluster={self.points_per_cluster}, dim={self.dim} and n_tokens="
                    f"{self.n_tokens} make one run's working set an array of {per_run:,} elements, more "
                    f"than the {study.MAX_ELEMENTS:,} one array may hold: make {STRUCTURE_OPTIONS} smaller"
                )
            limit = min(limit or study.MAX_ELEMENTS, study.MAX_ELEMENTS // per_run)
        return limit

    def chunk(self) -> int | None:
        """The runs per chunk the sweep is run with: ``chunk_size``, or (0) None for the engine's
        default, or the largest chunk that fits (:meth:`chunk_limit`) when the default does not.
        :class:`Refused` naming ``chunk_size`` when the one given is too large to fit."""
        limit = self.chunk_limit()
        if self.chunk_size:
            if limit is not None and self.chunk_size > limit:
                raise Refused(
                    f"chunk_size makes an array of more than the {study.MAX_ELEMENTS:,} elements one array "
                    f"may hold (chunk_size={self.chunk_size}: the data of the seeds a chunk draws at once): "
                    f"make chunk_size smaller (at most {limit:,} fits with these sizes)"
                )
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
    lines = [
        textwrap.fill(
            f"{name}: {text}",
            100,
            initial_indent=" " * 6,
            subsequent_indent=" " * 8,
            break_on_hyphens=False,
            break_long_words=False,
        )
        for name, text in axis_help().items()
    ]
    return head + sep + "\n".join(lines) + "\n" + rest


Config.__doc__ = _with_axes(Config.__doc__)
