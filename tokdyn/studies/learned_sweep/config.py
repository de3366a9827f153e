"""A learned sweep's configuration: :class:`SweepConfig` (seeds, the baseline condition, chunks,
bootstrap), and :func:`make_config`, which gives each model its ``Config``: those fields, one axis
field per traced knob of the model's ``Hparams`` (documented by the knob's own docstring entry),
and the model's static configuration as the field ``model``."""

from __future__ import annotations

import dataclasses
import math
import textwrap

import jax
import numpy as np

from tokdyn import _checks, train
from tokdyn.engine import sweep
from tokdyn.experiment import attributes
from tokdyn.experiment.study import Estimate, Refused
from tokdyn.studies.learned_sweep.model import LearnedModel, TrainRun

CPU_LANES = 64  # models vmapped together on CPU by default (measured: ~5x one model at a time for the autoencoder)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The fields every learned sweep has (its model's ``Config``, :func:`make_config`, adds the
    axes and the model's configuration).

    Attributes:
      seeds: seeds per condition (every condition of a seed starts from the same initial
        parameters and sees the same batches: common random numbers, so conditions are compared
        pairwise by seed).
      root_seed: root PRNG seed (seed s trains from fold_in(key(root_seed), s)).
      baseline: the condition the others are compared with, NAME=VALUE for some axes, several
        separated by ';' (learning_rate=0.003;tau_end=0.3); an axis not named takes its first value
        ('': the first condition).
      chunk_size: models per chunk file, the unit of work kept on disk (0: chosen per backend, on
        an accelerator from the device's free memory).
      lanes: models vmapped together (0: per backend: the model's ``cpu_lanes`` (default 64) on CPU,
        the whole chunk on an accelerator).
      n_resamples: bootstrap resamples of the intervals.
      preset: '' or 'quick' (set by --quick: few seeds and steps; report.md says so).
    """

    seeds: int = 32
    root_seed: int = 0
    baseline: str = ""
    chunk_size: int = 0
    lanes: int = 0
    n_resamples: int = 2000
    preset: str = ""

    MODEL = None  # the LearnedModel (a class attribute of each model's Config)

    @classmethod
    def quick(cls):
        """The quick preset (``--quick``): the model's quick configuration and axes, 6 seeds."""
        m = cls.MODEL
        return cls(seeds=6, n_resamples=500, preset="quick", model=m.quick, **_axis_values(m, m.quick_axes))

    def axes(self) -> tuple:
        """``((knob, values), ...)`` of the non-empty axes, in the order of the model's ``Hparams``
        fields (values as floats); ``ValueError`` naming the knob for values that do not parse."""
        out = []
        for name in self.MODEL.knobs:
            text = str(getattr(self, name)).strip()
            if text:
                out.append((name, tuple(float(v) for v in sweep.parse_axis(name, text))))
        return tuple(out)

    def axis_names(self) -> list:
        """The names of the non-empty axes."""
        return [k for k, _ in self.axes()]

    def baseline_condition(self) -> dict:
        """``{axis: value}`` of ``baseline`` (an axis not named: its first value). ``ValueError``
        naming ``baseline`` for a name that is not an axis of the sweep or a value not on its axis."""
        axes = dict(self.axes())
        chosen = {k: v[0] for k, v in axes.items()}
        for part in (t.strip() for t in self.baseline.split(";") if t.strip()):
            name, sep, text = (s.strip() for s in part.partition("="))
            if not sep or not name or not text:
                raise ValueError(f"baseline expects NAME=VALUE, several separated by ';', got {part!r}")
            if name not in axes:
                knobs = self.MODEL.knobs
                what = "a knob of the model that is not swept" if name in knobs else "no knob of the model"
                raise ValueError(
                    f"baseline: {name!r} is {what}; the sweep's axes are {list(axes) or 'none'} "
                    f"(the model's knobs: {list(knobs)})"
                )
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"baseline: {name}={text!r} is not a number") from None
            near = [v for v in axes[name] if math.isclose(v, value, rel_tol=1e-6, abs_tol=0.0)]
            if not near:
                raise ValueError(f"baseline: {name}={text} is not a value of the axis {name}: {list(axes[name])}")
            chosen[name] = near[0]
        return chosen

    def validate(self):
        """Check every field, every axis (its values against the model's ``Hparams.validate``) and
        the baseline; raise ``ValueError`` / ``TypeError`` naming the field or the knob before
        anything is traced. Returns ``self``."""
        _checks.positive_int("seeds", self.seeds)
        _checks.seed("root_seed", self.root_seed)
        _checks.positive_int("chunk_size", self.chunk_size, minimum=0)
        _checks.positive_int("lanes", self.lanes, minimum=0)
        _checks.positive_int("n_resamples", self.n_resamples)
        if self.preset not in ("", "quick"):
            raise ValueError(f"preset must be '' or 'quick' (set by --quick), got {self.preset!r}")
        if not isinstance(self.model, type(self.MODEL.config)):
            raise TypeError(
                f"model must be a {type(self.MODEL.config).__qualname__} (the model's Config), got {type(self.model).__name__}"
            )
        self.model.validate()
        if self.MODEL.check is not None:
            self.MODEL.check(self.model)
        axes = self.axes()
        for name, values in axes:
            check = getattr(self.MODEL.hparams, "validate", None)
            if check is not None:
                dataclasses.replace(self.MODEL.hparams, **{name: np.asarray(values)}).validate()
        self.baseline_condition()
        self.check_runs()
        return self

    def metrics(self) -> tuple:
        """The metrics this sweep's models report (the model's :meth:`~tokdyn.studies.learned_sweep.model.LearnedModel.scores`
        of ``model``), the first the report's headline."""
        return self.MODEL.scores(self.model)

    def runs(self) -> int:
        """Models the sweep trains: the product of the axes' sizes x seeds."""
        return int(np.prod([len(v) for _, v in self.axes()], dtype=object)) * self.seeds

    def check_runs(self) -> int:
        """:meth:`runs`; :class:`Refused` naming ``seeds`` beyond the engine's ``uint32`` run index."""
        runs = self.runs()
        if runs > sweep.MAX_RUNS:
            raise Refused(
                f"seeds={self.seeds} makes {runs:,} models, more than the {sweep.MAX_RUNS:,} the sweep engine "
                "can index: make seeds (or the axes) smaller"
            )
        return runs

    def grid(self) -> sweep.Grid:
        """The grid: the axes x ``seeds`` (the seed fastest)."""
        return sweep.Grid(seeds=self.seeds, **{k: np.asarray(v, np.float64) for k, v in self.axes()})

    def task(self) -> TrainRun:
        """The per-run function: a :class:`~tokdyn.studies.learned_sweep.model.TrainRun` of the model."""
        return TrainRun(self.MODEL, self.model)

    def batch(self):
        """The engine's ``batch_size``: ``lanes``, or (0) the model's ``cpu_lanes`` (default
        :data:`CPU_LANES`) on CPU and None (the whole chunk vmapped) on an accelerator."""
        if self.lanes:
            return self.lanes
        if jax.default_backend() != "cpu":
            return None
        return self.MODEL.cpu_lanes or CPU_LANES

    def params(self) -> int:
        """The number of parameters of one model (traced by ``jax.eval_shape``: nothing runs)."""
        trainer = self.MODEL.trainer(self.model)  # a Trainer or a Curriculum: its first stage starts the model
        shapes = jax.eval_shape(lambda k: train.init_state(trainer, k, self.MODEL.hparams).params, jax.random.key(0))
        return int(sum(np.prod(s.shape, dtype=np.int64) for s in jax.tree_util.tree_leaves(shapes)))

    def estimate(self) -> Estimate:
        """What the sweep asks of the machine: on the device, the models vmapped at once (their
        parameters, gradients and two Adam moments, float32, twice over for the step's
        temporaries); the time from the model's rate on the reference CPU (``training``: its
        ``quick_rate`` for the quick preset's model), and the
        analysis' bootstrap on the host."""
        runs = self.check_runs()
        lanes = self.batch() or min(runs, self.chunk_size or runs)
        memory = float(min(lanes, runs) * self.params() * 4 * 8)
        steps = self.model.train.steps
        m = self.MODEL
        rate = m.quick_rate if m.quick_rate is not None and self.model == m.quick else m.rate
        seconds = {
            "training": runs * steps / rate,
            "host": max(1, runs // self.seeds) * self.seeds * self.n_resamples * len(self.metrics()) * 2e-9,
        }
        return Estimate(memory=memory, option="lanes" if self.batch() else "chunk_size", models=runs, work=seconds)


def _axis_values(model: LearnedModel, axes) -> dict:
    """Every knob's axis field: '' but those of ``axes`` (``((knob, values), ...)``)."""
    given = dict(axes)
    return {k: given.get(k, "") for k in model.knobs}


def make_config(model: LearnedModel, module: str) -> type:
    """The ``Config`` of the sweep of ``model``, defined in the module ``module``: the fields of
    :class:`~tokdyn.studies.learned_sweep.config.SweepConfig`, one axis field per knob of the model's ``Hparams`` (a str: a comma list,
    linspace:a:b:n or logspace:a:b:n; '': not swept, the model's default), its default axes
    (``model.axes``), and ``model``, the model's static configuration (its options flattened on
    the command line)."""
    help_of = attributes.documented(type(model.hparams))
    defaults = _axis_values(model, model.axes)
    fields = [(k, str, dataclasses.field(default=defaults[k])) for k in model.knobs]
    fields.append(("model", type(model.config), dataclasses.field(default=model.config)))
    cls = dataclasses.make_dataclass(
        "Config",
        fields,
        bases=(SweepConfig,),
        frozen=True,
        namespace={
            "__module__": module,
            "MODEL": model,
            "FIXED_OPTIONS": tuple(("model", *f.split(".")) for f in model.fixed),
        },
    )
    entries = [
        f"{k}: values of the knob {k} ({help_of.get(k, 'a traced knob').rstrip('.')}): a comma list, "
        f"linspace:a:b:n or logspace:a:b:n ('': not swept, the default {getattr(model.hparams, k)!r})."
        for k in model.knobs
    ]
    entries.append(f"model: the model's static configuration ({type(model.config).__module__}.Config).")
    lines = [textwrap.fill(e, 100, initial_indent=" " * 6, subsequent_indent=" " * 8) for e in entries]
    cls.__doc__ = (
        f"A sweep of the {model.name} model: its traced knobs as axes x seeds, trained and evaluated "
        "on the execution engine, chunk by chunk (:class:`~tokdyn.studies.learned_sweep.config.SweepConfig`'s fields besides these).\n\n"
        "    Attributes:\n" + "\n".join(lines) + "\n    "
    )
    cls.__qualname__ = "Config"
    return cls
