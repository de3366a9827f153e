"""The collapse study's :class:`Config`: its fields and checks, the sweeps it runs, their ratios
and per-run function, and its estimate. The leaf of the package: it imports none of its parts."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from tokdyn import _checks, analysis, data
from tokdyn.engine.runs import CollapseRun
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.presets import PRESETS
from tokdyn.experiment.study import Estimate


MAX_STEPS = 2**31 - 1  # a run's step counter is a 32-bit integer
EXTRA_RATIOS = (0.9, 0.95, 1.05, 1.1)  # added to the threshold check's ratios
RUN_FIELDS = 7  # outputs of one run (CollapseRun)
REAL_TRAIN_RATE = 18.0  # rough: model-steps a second of a Slot Attention at 32 x 32, 32 scenes a step, on the
# reference CPU, taken from the scenes study's (tokdyn.studies.object_discovery.config.LEARNED_RATE); scaled by
# scenes x pixels a step


def ratio_grid(lo, hi, n, extra=()) -> np.ndarray:
    """``n`` ratios log-spaced from ``lo`` to ``hi`` with ``extra`` added, rounded to 6 decimals,
    distinct and ascending, float32: the tau / tau_c values of a sweep."""
    return np.unique(np.round(np.concatenate([np.geomspace(lo, hi, n), extra]), 6)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      shapes: data shapes, names from tokdyn.data.SHAPES.
      n_tokens: token counts T of the threshold check.
      ratio_min: smallest tau / tau_c.
      ratio_max: largest tau / tau_c.
      n_ratios: tau / tau_c values, log-spaced (plus 0.9, 0.95, 1.05, 1.1).
      seeds: seeds per threshold condition.
      n_points: points per data set (a multiple of 12).
      n_steps: the most steps a run takes.
      merge_rel: merge tolerance / RMS data radius.
      tol_rel: convergence tolerance / RMS data radius.
      phase_noise: cluster standard deviations of the phase diagrams.
      phase_tokens: token counts of the phase diagrams (on three clusters).
      momentum: momentum values of the momentum diagram.
      repulsion_rel: repulsion / (tr Cov X)^(3/2) values of the repulsion diagram.
      phase_seeds: seeds per phase-diagram cell.
      phase_ratios: tau / tau_c values of the phase diagrams.
      convergence_runs: runs of the convergence-time check.
      root_seed: root PRNG seed.
      preset: '' or 'quick' (set by --quick: a smoke-sized run; the printed summary's first line
        and summary.json say so).
      data: '' (the synthetic parts only) or a multi-object dataset's file, or a directory holding
        one (tokdyn.datasets.multi_object): the real part runs too, on a trained Slot Attention's
        encoder features of its scenes (tokdyn.studies.collapse.real).
      data_scenes: scenes measured (the first of the file with 1 to data_max_objects visible objects).
      data_pool: scenes that train the Slot Attention (the next ones).
      data_max_objects: most visible objects of a scene taken (the model has one slot more).
      data_size: image side the scenes are resized to.
      data_steps: the Slot Attention's training steps (a multiple of 100, or fewer than 100).
      data_batch: scenes a training step.
      data_learning_rate: its peak Adam learning rate.
      data_points: encoder features drawn from each measured scene as its point cloud (of its
        data_size^2).
    """

    shapes: tuple = ("blobs2", "aniso2", "overlap4", "blobs8")
    n_tokens: tuple = (2, 4, 8)
    ratio_min: float = 0.25
    ratio_max: float = 4.0
    n_ratios: int = 17
    seeds: int = 16
    n_points: int = 120
    n_steps: int = 2000
    merge_rel: float = analysis.MERGE_REL
    tol_rel: float = 1e-5
    phase_noise: tuple = (0.25, 0.5, 1.0, 1.5, 2.5)
    phase_tokens: tuple = (2, 3, 6, 12)  # T/K = 2/3, 1, 2, 4 on three clusters
    momentum: tuple = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
    repulsion_rel: tuple = (0.0, 1e-7, 1e-5, 1e-3, 1e-1)
    phase_seeds: int = 8
    phase_ratios: int = 13
    convergence_runs: int = 64
    root_seed: int = 0
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)
    data: str = ""
    data_scenes: int = 8
    data_pool: int = 512
    data_max_objects: int = 6
    data_size: int = 32
    data_steps: int = 2000
    data_batch: int = 32
    data_learning_rate: float = 4e-4
    data_points: int = 256

    def validate(self) -> "Config":
        """Check every field (``n_points`` a multiple of 12, token counts at most ``n_points``); raise
        ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        for name in ("shapes", "n_tokens", "phase_noise", "phase_tokens", "momentum", "repulsion_rel"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"{name} must list at least one value (a comma list), got {value!r}")
            _checks.distinct(name, value)  # each value is one condition: a repeat would count its runs twice
        for s in self.shapes:
            _checks.choice("shapes", s, data.SHAPES)
        for name in ("n_tokens", "phase_tokens"):
            for t in getattr(self, name):
                _checks.positive_int(name, t, minimum=2)
        for name in ("n_ratios", "seeds", "n_points", "n_steps", "phase_seeds", "phase_ratios", "convergence_runs"):
            _checks.positive_int(name, getattr(self, name), minimum=2 if "ratio" in name else 1)
        if self.n_steps > MAX_STEPS:
            raise ValueError(f"n_steps must be at most {MAX_STEPS:,} (a 32-bit step counter), got {self.n_steps!r}")
        _checks.seed("root_seed", self.root_seed)
        _checks.real("ratio_min", self.ratio_min, low=0.0, low_open=True)
        _checks.real("ratio_max", self.ratio_max, low=self.ratio_min, low_open=True)
        _checks.real("merge_rel", self.merge_rel, low=0.0, low_open=True)
        _checks.real("tol_rel", self.tol_rel, low=0.0, low_open=True)
        _checks.real("phase_noise", np.asarray(self.phase_noise, float), low=0.0, low_open=True)
        _checks.real("momentum", np.asarray(self.momentum, float), low=0.0, high=1.0, high_open=True)
        _checks.real("repulsion_rel", np.asarray(self.repulsion_rel, float), low=0.0)
        if self.n_points % 12:
            raise ValueError(f"n_points must be a multiple of 12 (3 or 4 equal clusters), got {self.n_points}")
        for name in ("n_tokens", "phase_tokens"):
            if max(getattr(self, name)) > self.n_points:
                raise ValueError(f"{name} must not exceed n_points={self.n_points}, got {getattr(self, name)}")
        _checks.choice("preset", self.preset, PRESETS)
        self._check_data()
        return self

    def _check_data(self) -> None:
        """The real part's fields; ``data`` a multi-object dataset's file (read only when the study runs)."""
        from tokdyn.datasets import multi_object

        if not isinstance(self.data, str):
            raise TypeError(f"data must be a path (a str), got {self.data!r}")
        for name in ("data_scenes", "data_pool", "data_max_objects", "data_size", "data_steps", "data_batch"):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive_int("data_points", self.data_points, minimum=max(self.n_tokens))
        _checks.real("data_learning_rate", self.data_learning_rate, low=0.0, low_open=True)
        if self.data_steps > 100 and self.data_steps % 100:
            raise ValueError(f"data_steps must be a multiple of 100 (or fewer than 100), got {self.data_steps}")
        multi_object.check_option(self.data, self.data_max_objects, "data_max_objects")

    @classmethod
    def quick(cls) -> "Config":
        """The quick preset (``--quick``, well under a minute on 2 cores): 2 shapes x 2 token counts,
        7 ratios x 4 seeds in the threshold check, 2 noise levels x 2 token counts, 2 momenta and 2
        repulsions x 5 ratios x 2 seeds in the diagrams, 500 steps. A smoke run: its numbers are
        not the study's findings (its summary says so). With ``data``: 2 measured scenes of 16 x 16 and a
        Slot Attention trained for 20 steps on 16 scenes, 64 features a scene."""
        return cls(
            shapes=("blobs2", "overlap4"),
            n_tokens=(2, 4),
            n_ratios=7,
            seeds=4,
            n_points=48,
            n_steps=500,
            phase_noise=(0.5, 1.5),
            phase_tokens=(3, 6),
            momentum=(0.0, 0.9),
            repulsion_rel=(0.0, 1e-3),
            phase_seeds=2,
            phase_ratios=5,
            convergence_runs=8,
            data_scenes=2,
            data_pool=16,
            data_size=16,
            data_steps=20,
            data_batch=4,
            data_points=64,
            preset="quick",
        )

    def sweeps(self) -> list[tuple[str, dict]]:
        """``(part, {option: size})`` of every sweep: its runs are the product of the sizes (the
        threshold check's ratios counted at most: ``n_ratios`` plus the 4 near 1)."""
        out = [
            (f"threshold_{s}_T{t}", dict(n_ratios=self.n_ratios + len(EXTRA_RATIOS), seeds=self.seeds))
            for s in self.shapes
            for t in self.n_tokens
        ]
        out += [
            (
                f"phase_T{t}",
                dict(phase_noise=len(self.phase_noise), phase_ratios=self.phase_ratios, phase_seeds=self.phase_seeds),
            )
            for t in self.phase_tokens
        ]
        out += [
            (
                "momentum",
                dict(momentum=len(self.momentum), phase_ratios=self.phase_ratios, phase_seeds=self.phase_seeds),
            ),
            (
                "repulsion",
                dict(
                    repulsion_rel=len(self.repulsion_rel), phase_ratios=self.phase_ratios, phase_seeds=self.phase_seeds
                ),
            ),
        ]
        return out

    def estimate(self) -> Estimate:
        """The largest sweep's run table held in memory (its conditions and outputs, float64, a few
        copies) or one run's data and token distances (on each device at once), and the time at
        a rough cost per step on the reference CPU (the runs scaled by this machine's ``dynamics``
        rate; the Jacobians' eigenvalues and a compile per sweep on the host); refuses
        (:class:`~tokdyn.experiment.study.Refused`, naming the option) a table or run larger than
        XLA can index, before :meth:`ratios` is computed."""
        defaults = Config()
        dim = max(data.SHAPES[s][0] for s in self.shapes)
        tokens = max(self.n_tokens + self.phase_tokens)
        study_dir.elements_fit("n_points", self.n_points, max(dim, tokens))  # the data, the distances
        need = {"n_points": len(jax.local_devices()) * 8.0 * self.n_points * (dim + tokens) * 4}
        jac = 2 * dim * max(sorted(set(self.n_tokens))[:2])  # the Jacobian check's state (with a velocity)
        study_dir.elements_fit("n_tokens", jac, jac)
        need["n_tokens"] = jac * jac * 8.0 * 4
        need["convergence_runs"] = self.convergence_runs * 2000.0  # a row (a dict) per run, held until written
        runs, seconds = 0, 0.0
        step = self.n_points * tokens * dim * 2e-9 + 1e-6
        for name, sizes in self.sweeps():
            n = int(np.prod([float(v) for v in sizes.values()]))
            option = max(sizes, key=lambda k: sizes[k] / max(1, _default_size(defaults, k)))
            if n > study_dir.MAX_ELEMENTS:
                study_dir.elements_fit(option, *sizes.values())
            need[option] = max(need.get(option, 0.0), n * (RUN_FIELDS + 4) * 8.0 * 3)
            runs += n
            # most runs converge within a few hundred steps; some of momentum and repulsion never do
            slow = 0.25 if name in ("momentum", "repulsion") else 0.0
            seconds += n * step * ((1 - slow) * min(self.n_steps, 300) + slow * self.n_steps)
        seconds += self.convergence_runs * (0.05 + 2000 * 3 * 2 * self.n_points * 2e-9)
        host = 12 * len(self.shapes) * jac**3 * 1e-9 + 10.0 * len(self.sweeps())  # eigenvalues, compiles
        work = {"dynamics": seconds, "host": host}
        if self.data:  # the real part: the model's training, the runs on its features (a 32-wide encoder)
            step = self.data_steps * self.data_batch * self.data_size**2 / (32 * 32**2) / REAL_TRAIN_RATE
            work["training"] = step
            runs_real = self.data_scenes * len(self.n_tokens) * (self.n_ratios + len(EXTRA_RATIOS)) * self.seeds
            work["dynamics"] += runs_real * self.data_points * max(self.n_tokens) * 32 * 2e-9 * min(self.n_steps, 300)
            work["host"] += 30.0  # reading the scenes, compiling the model and the runs
            runs += runs_real + 1
        option = max(need, key=need.get)
        return Estimate(
            memory=need[option],
            option=option,
            models=runs + self.convergence_runs,
            work=work,
        )

    def ratios(self) -> np.ndarray:
        """The tau / tau_c values of the threshold check, (n,) float32 ascending: ``n_ratios``
        log-spaced from ``ratio_min`` to ``ratio_max`` plus 0.9, 0.95, 1.05 and 1.1, rounded to 6
        decimals, without repeats."""
        return ratio_grid(self.ratio_min, self.ratio_max, self.n_ratios, EXTRA_RATIOS)

    def run_fn(self, shape: str, n_tokens: int) -> CollapseRun:
        """The per-run function of a sweep on the point cloud ``shape`` with ``n_tokens`` tokens:
        :class:`~tokdyn.engine.runs.CollapseRun` with this configuration's ``n_points``, ``n_steps``,
        ``merge_rel`` and ``tol_rel``."""
        return CollapseRun(shape, n_tokens, self.n_points, self.n_steps, float(self.merge_rel), float(self.tol_rel))


def _default_size(cfg: Config, name: str) -> int:
    value = getattr(cfg, name)
    return len(value) if isinstance(value, tuple) else value
