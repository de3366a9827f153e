"""The token-dynamics study's :class:`Config`: its fields and checks, the update rules it may run
(:func:`check_rules`), its engine tasks and grid, and its estimate. The leaf of the package: it
imports none of its parts."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from tokdyn import _checks, dynamics
from tokdyn.engine import sweep
from tokdyn.engine.runs import PACKAGE_RULES, ClusterRun, RunStructure
from tokdyn.experiment.presets import PRESETS
from tokdyn.experiment.study import Estimate


METRICS = ("ari", "nmi", "sse", "steps", "converged", "collapsed")


@dataclasses.dataclass(frozen=True)
class Config(RunStructure):
    """Everything that defines the study; saved as ``config.json`` and enough to reproduce it.

    Attributes:
      seeds: seeds per condition (0..N-1).
      noise: cluster standard deviations (a condition axis).
      n_clusters: cluster counts K (a condition axis).
      methods: update rules, names from tokdyn.dynamics.METHODS, from PACKAGE_RULES ("refinement")
        or of the rules passed to main.
      temperature: softmax temperature of every method.
      root_seed: root PRNG seed.
      mass_anchor: where the built-in methods' mass epsilon anchors the weighted mean
        (``tokdyn.dynamics.MASS_ANCHORS``): ``"token"`` (translation-invariant, the default) or
        ``"origin"`` (the published form, whose figures the study page compares with).
      preset: '' or 'quick' (set by --quick: a smoke-sized run; the printed summary's first line
        says so).
    """

    seeds: int = 30
    noise: tuple = (0.3, 0.6, 0.9)
    n_clusters: tuple = (3, 4, 5)
    methods: tuple = ("baseline", "inertia", "repulsion", "inertia+repulsion")
    temperature: float = 1.0
    root_seed: int = 0
    mass_anchor: str = "token"
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)

    @classmethod
    def quick(cls) -> "Config":
        """The quick preset (``--quick``, seconds): every method on 6 seeds x noise {0.3, 0.9} x K
        {3, 4}. A smoke run: its numbers are not the study's findings (its summary says so)."""
        return cls(seeds=6, noise=(0.3, 0.9), n_clusters=(3, 4), preset="quick")

    def validate(self, rules=None) -> "Config":
        """Check every field; ``rules``: the update rules of one's own that ``methods`` may name
        (see :func:`check_rules`)."""
        rules = check_rules(rules)
        _checks.positive_int("seeds", self.seeds)
        _checks.seed("root_seed", self.root_seed)
        _checks.choice("mass_anchor", self.mass_anchor, dynamics.MASS_ANCHORS)
        _checks.real("temperature", self.temperature, low=0.0, low_open=True)
        _checks.real("noise", np.asarray(self.noise, float), low=0.0)
        if not self.methods:
            raise ValueError("methods must name at least one method")
        for m in self.methods:
            _checks.choice("methods", m, {**dynamics.METHODS, **rules})
        if not self.noise or not self.n_clusters:
            raise ValueError("noise and n_clusters must each hold at least one value")
        for k in self.n_clusters:
            _checks.positive_int("n_clusters", k)
        # every list of conditions is a set: a repeat would count its runs as extra seeds
        _checks.distinct("methods", self.methods)
        _checks.distinct("n_clusters", self.n_clusters)
        _checks.distinct("noise", [float(v) for v in self.noise])
        _checks.distinct("noise", np.asarray(self.noise, np.float32))  # what the grid holds
        self.validate_structure(min(self.n_clusters), max(self.n_clusters))
        _checks.choice("preset", self.preset, PRESETS)
        return self

    def runs(self) -> int:
        """Runs of the study: methods x K x noise x seeds."""
        return len(self.methods) * len(self.n_clusters) * len(self.noise) * self.seeds

    def estimate(self) -> Estimate:
        """The run table held in host memory (metrics and condition columns, float64, twice while it
        is sorted; on the device only a chunk of runs at a time) and the time: runs at 4,000 a
        second on the reference CPU, scaled by this machine's ``dynamics`` rate."""
        return Estimate(
            host_memory=self.runs() * (len(METRICS) + 4) * 8 * 2,
            host_option="seeds",
            models=self.runs(),
            work={"dynamics": self.runs() / 4000.0},
        )

    def task(self) -> ClusterRun:
        """The per-run function of the built-in methods: :class:`ClusterRun` with this study's
        structure and the method table of the names of ``methods`` in ``tokdyn.dynamics.METHODS``."""
        table = tuple(
            (float(self.temperature),) + dynamics.METHODS[m].row()[1:] for m in self.methods if m in dynamics.METHODS
        )
        rule = dynamics.MASS_ANCHORS[self.mass_anchor]  # BUILTIN, or BUILTIN_ORIGIN
        return ClusterRun(
            **self.structure(),
            max_clusters=max(self.n_clusters),
            methods=table,
            rule=rule,
            hparams=dynamics.Hparams(temperature=float(self.temperature)),
        )

    def tasks(self, rules=None) -> list:
        """``[(ClusterRun, indices into methods), ...]``: the built-in methods' :meth:`task`, then one
        :class:`ClusterRun` per rule of ``rules`` that ``methods`` names, whose method table holds
        the knobs (``hparams``) of each of its settings (rules equal but for their hparams share one)."""
        rules = check_rules(rules)
        builtin = tuple(i for i, m in enumerate(self.methods) if m not in rules)
        out = [(self.task(), builtin)] if builtin else []
        groups = {}
        for i, m in enumerate(self.methods):
            if m in rules:
                r = rules[m]
                key = (dataclasses.replace(r, hparams=()), jax.tree_util.tree_structure(r.hparams))
                groups.setdefault(key, (r, []))[1].append(i)
        for r, idx in groups.values():
            table = tuple(
                tuple(float(v) for v in jax.tree_util.tree_leaves(rules[self.methods[i]].hparams)) for i in idx
            )
            out.append(
                (ClusterRun(**self.structure(), max_clusters=max(self.n_clusters), methods=table, rule=r), tuple(idx))
            )
        return out

    def grid(self, n_methods: int | None = None) -> sweep.Grid:
        """method (index into ``methods``, or into the first ``n_methods`` of a :meth:`tasks` table)
        x K x noise x seeds, the seed slowest: each chunk holds whole seeds, whose data the engine
        draws once for all 36 of their runs."""
        n = len(self.methods) if n_methods is None else n_methods
        return sweep.Grid(
            method=np.arange(n),
            n_clusters=np.asarray(self.n_clusters),
            noise=np.asarray(self.noise, np.float32),
            seeds=self.seeds,
            seed_major=True,
        )


def check_rules(rules) -> dict:
    """The rules beyond the built-in methods that a study's ``methods`` may name: the package's own
    (:data:`tokdyn.engine.runs.PACKAGE_RULES`) merged with ``rules``, the update rules of one's own: ``None`` or a
    mapping of new names (not those of ``tokdyn.dynamics.METHODS``, nor those of
    :data:`~tokdyn.engine.runs.PACKAGE_RULES` for another rule) to :class:`tokdyn.dynamics.Rule` values, each run at its ``hparams``. ``TypeError`` /
    ``ValueError`` naming the entry."""
    if rules is None:
        return dict(PACKAGE_RULES)
    if not isinstance(rules, dict):
        raise TypeError(f"rules must be a dict of names to tokdyn.dynamics.Rule, got {type(rules).__name__}")
    for name, r in rules.items():
        if not isinstance(name, str):
            raise TypeError(f"rules: names must be str, got {name!r}")
        if name in dynamics.METHODS:
            raise ValueError(
                f"rules: {name!r} is the name of a built-in method (tokdyn.dynamics.METHODS): choose another"
            )
        if name in PACKAGE_RULES and r is not PACKAGE_RULES[name]:  # itself (an already merged table) is fine
            raise ValueError(
                f"rules: {name!r} is the name of one of the package's rules (tokdyn.engine.runs."
                f"PACKAGE_RULES: {PACKAGE_RULES[name].name}): choose another"
            )
        if not isinstance(r, dynamics.Rule):
            raise TypeError(
                f"rules[{name!r}] must be a tokdyn.dynamics.Rule, got {type(r).__name__}"
                + (" (wrap your functions as dynamics.Rule(init=..., step=...))" if callable(r) else "")
            )
    return {**PACKAGE_RULES, **rules}
