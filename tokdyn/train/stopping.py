"""Stop rules over recorded learning curves: pure host-side functions of the values recorded so far.

:class:`Patience` stops a model once its validation score has stopped improving, without firing
on a *plateau* before the model learns: only when at least ``min_fraction`` of the budget is
done, the best score has not risen by more than ``min_delta`` for ``patience`` of the budget,
and (with a training loss) the loss is not still falling markedly while the score holds. Every
comparison uses thresholds, so a decision never hangs on the last bits of a score and a resumed
run decides the same. Use it over a history (:meth:`Patience.decide`), replay it over a finished
curve (:meth:`Patience.first_stop`), or hand it to :func:`tokdyn.train.train_many` as its
evaluation's ``stop`` (:meth:`Patience.stopper`)::

    rule = train.Patience(patience=0.25, min_fraction=0.5, min_delta=0.01)
    result = train.train_many(trainer, data, keys, hp, evaluation=train.Evaluation(
        evaluate, keep_best="val_all", stop=rule.stopper(trainer.config, "val_all")))

The three conditions and how NaN scores and losses count: :ref:`train-stopping`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from tokdyn import _checks

MODES = ("max", "min")
SE_DECLINE = 3.0  # a decline of the score counts when larger than this many standard errors (and min_delta)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What :meth:`Patience.decide` says of each model (every field an array of the scores' leading
    shape: (M,) for (M, T) scores, () for a single (T,) curve).

    Attributes:
      stop: bool: the rule stops the model now.
      best_step: int: the step of the best recorded score (the first of equal ones), -1 if no score
        is finite.
      best: float64: that best score (NaN if none).
      improved_step: int: the step of the last significant improvement (0: none yet, the clock
        runs from the start).
      loss_falling: bool: the training loss is still falling by more than ``loss_delta`` (False
        without a loss, or when it cannot be told).
      holding: bool: the score holds its level: its mean over the latest half of the patience
        window is not below its mean over the half before by more than ``min_delta`` and three
        standard errors (True when a half has fewer than two finite scores; the loss test only
        holds a model back while this is True).
    """

    stop: np.ndarray
    best_step: np.ndarray
    best: np.ndarray
    improved_step: np.ndarray
    loss_falling: np.ndarray
    holding: np.ndarray


@dataclasses.dataclass(frozen=True)
class Patience:
    """Patience on the best validation score, after a minimum share of the budget, held back while
    the training loss is still falling (:ref:`train-stopping` gives the rule).

    Attributes:
      patience: how long the score may go without a significant improvement before the model may
        stop, as a share of the step budget in (0, 1] (0.25 of 5,000 steps: 1,250 steps; rounded to
        a whole step). A plateau shorter than this never stops a run.
      min_fraction: the share of the budget in [0, 1] always trained: no stop before step
        ``min_fraction * budget`` (rounded to a whole step).
      min_delta: the least change of the score (>= 0, in the score's units) that counts as an
        improvement, or as a decline (which must also exceed three standard errors). Evaluation
        noise larger than it makes noisy records count as improvements, which only delays a stop.
      mode: ``"max"`` (the score is maximised, e.g. an accuracy) or ``"min"`` (minimised, e.g. a
        validation loss).
      loss_delta: the relative fall of the training loss (> 0) between the two halves of the
        latest patience window above which the loss is "still falling markedly" (0.05: by more
        than 5%); None never consults the training loss.
    """

    patience: float = 0.25
    min_fraction: float = 0.5
    min_delta: float = 0.01
    mode: str = "max"
    loss_delta: Optional[float] = 0.05

    def __post_init__(self):
        for name in ("patience", "min_fraction", "min_delta", "loss_delta"):
            if np.ndim(getattr(self, name)) != 0:
                raise ValueError(f"{name} must be a scalar, got shape {np.shape(getattr(self, name))}")
        _checks.real("patience", self.patience, low=0.0, high=1.0, low_open=True)
        _checks.real("min_fraction", self.min_fraction, low=0.0, high=1.0)
        _checks.real("min_delta", self.min_delta, low=0.0)
        if not isinstance(self.mode, str):
            raise TypeError(f"mode must be a str, one of {list(MODES)}, got {self.mode!r}")
        _checks.choice("mode", self.mode, MODES)
        if self.loss_delta is not None:
            _checks.real("loss_delta", self.loss_delta, low=0.0, low_open=True)

    def windows(self, budget: int) -> tuple[int, int]:
        """``(patience, minimum)`` in whole steps for a budget of ``budget`` steps."""
        _checks.positive_int("budget", budget)
        return max(1, int(round(self.patience * budget))), int(round(self.min_fraction * budget))

    def decide(self, steps, scores, budget: int, loss=None) -> Decision:
        """The decision for each model after the last of ``steps``.

        Args:
          steps: (T,) strictly increasing positive int steps at which the history was recorded
            (T >= 0; the last is "now").
          scores: (T,) or (M, T) validation scores at those steps (NaN: not evaluated).
          budget: the run's step budget (positive int).
          loss: optional training loss, the shape of ``scores`` (NaN: not recorded).
        Returns: a :class:`Decision` (arrays of the scores' leading shape).
        """
        steps, s, lead, loss = _history(steps, scores, budget, loss)
        wait, minimum = self.windows(budget)
        m, t = s.shape
        if self.mode == "min":
            s = -s  # below: larger is better
        stop = np.zeros(m, bool)
        best_step, best = np.full(m, -1, np.int64), np.full(m, np.nan)
        improved = np.zeros(m, np.int64)
        falling, holding = np.zeros(m, bool), np.zeros(m, bool)
        if t:
            now = int(steps[-1])
            ref = np.full(m, -np.inf)  # the level of the last significant improvement
            for j in range(t):
                v = s[:, j]
                up = np.isfinite(v) & (v > ref + self.min_delta)
                ref = np.where(up, v, ref)
                improved = np.where(up, steps[j], improved)
            finite = np.isfinite(s)
            has = finite.any(axis=1)
            arg = np.argmax(np.where(finite, s, -np.inf), axis=1)  # the first of equal maxima
            best_step = np.where(has, steps[arg], -1)
            best = np.where(has, s[np.arange(m), arg], np.nan)
            half = wait / 2.0
            recent = steps > now - half
            earlier = (steps > now - 2 * half) & ~recent
            with np.errstate(invalid="ignore"):
                (m1, v1, n1), (m0, v0, n0) = _moments(s[:, recent]), _moments(s[:, earlier])
                drop = m0 - m1
                se = np.sqrt(v1 / np.maximum(n1, 1) + v0 / np.maximum(n0, 1))
                holding = ~((n1 >= 2) & (n0 >= 2) & (drop > self.min_delta) & (drop > SE_DECLINE * se))
                if loss is not None and self.loss_delta is not None:
                    l1, l0 = _nanmean(loss[:, recent]), _nanmean(loss[:, earlier])
                    falling = np.isfinite(l0) & np.isfinite(l1) & (l0 - l1 > self.loss_delta * np.abs(l0))
            stop = (now >= minimum) & (now - improved >= wait) & ~(falling & holding)
            if self.mode == "min":
                best = -best
        shape = lambda a: a.reshape(lead)
        return Decision(shape(stop), shape(best_step), shape(best), shape(improved), shape(falling), shape(holding))

    def first_stop(self, steps, scores, budget: int, loss=None) -> np.ndarray:
        """The first step at which :meth:`decide`, given the history up to it, stops each model.

        Replays a recorded curve.

        Args:
          steps: (T,) strictly increasing positive int steps at which the history was recorded.
          scores: (T,) or (M, T) validation scores at those steps (NaN: not evaluated).
          budget: the run's step budget (positive int).
          loss: optional training loss, the shape of ``scores`` (NaN: not recorded).

        Returns:
          int array of the scores' leading shape: the stopping step of each model, -1 for never.
        """
        steps, s, lead, loss = _history(steps, scores, budget, loss)
        out = np.full(s.shape[0], -1, np.int64)
        for j in range(len(steps)):
            d = self.decide(steps[: j + 1], s[:, : j + 1], budget, None if loss is None else loss[:, : j + 1])
            out = np.where((out < 0) & d.stop, steps[j], out)
        return out.reshape(lead)

    def stopper(self, config, score: str, *, loss: Optional[str] = "loss") -> Callable:
        """``stop(step, state, curves) -> bool`` for :func:`tokdyn.train.train_many` (its
        :class:`~tokdyn.train.Evaluation`'s ``stop``): True once the
        rule stops *every* model (train_many stops all its models together; the best state of
        each is kept with ``keep_best``). ``config``: the trainer's
        :class:`tokdyn.train.optim.Config` (its budget ``steps`` and ``steps_per_call``);
        ``score``: the curve column judged (an ``evaluation.fn`` column, e.g. ``"val_all"``);
        ``loss``: the training-loss column (None: the loss is not consulted)."""
        budget, per = _checks.positive_int("config.steps", config.steps), config.steps_per_call
        _checks.positive_int("config.steps_per_call", per)
        if not isinstance(score, str):
            raise TypeError(f"score must be the name of a curve column (a str), got {score!r}")
        if loss is not None and not isinstance(loss, str):
            raise TypeError(f"loss must be the name of a curve column (a str) or None, got {loss!r}")
        steps_all = (np.arange(budget // per) + 1) * per

        def stop(step, state, curves) -> bool:
            if score not in curves:
                raise ValueError(f"score {score!r} is not a recorded curve; the curves are {sorted(curves)}")
            if loss is not None and loss not in curves:
                raise ValueError(f"loss {loss!r} is not a recorded curve; the curves are {sorted(curves)}")
            n = int(step) // per
            lo = None if loss is None else np.asarray(curves[loss])[:, :n]
            return bool(np.all(self.decide(steps_all[:n], np.asarray(curves[score])[:, :n], budget, lo).stop))

        return stop


def _history(steps, scores, budget, loss):
    """Checked ``(steps (T,), scores (M, T) float64, leading shape, loss (M, T) or None)``."""
    _checks.positive_int("budget", budget)
    steps = np.asarray(steps)
    if steps.ndim != 1:
        raise ValueError(f"steps must be a (T,) array, got shape {steps.shape}")
    if steps.size and (steps.dtype.kind not in "iu" and not np.all(steps == np.round(steps))):
        raise ValueError(f"steps must be whole numbers, got {steps[:3].tolist()}...")
    steps = steps.astype(np.int64)
    if steps.size and (np.any(np.diff(steps) <= 0) or steps[0] < 1):
        raise ValueError(f"steps must be strictly increasing positive steps, got {steps[:5].tolist()}...")
    s = np.asarray(scores)
    if s.dtype.kind not in "biuf":
        raise TypeError(f"scores must be real numbers, got dtype {s.dtype}")
    if s.ndim not in (1, 2) or s.shape[-1] != steps.size:
        raise ValueError(
            f"scores must have shape ({steps.size},) or (M, {steps.size}), one value per step, got {s.shape}"
        )
    lead = s.shape[:-1]
    s = s.reshape(int(np.prod(lead)), steps.size).astype(np.float64)
    if loss is not None:
        lo = np.asarray(loss)
        if lo.dtype.kind not in "biuf":
            raise TypeError(f"loss must be real numbers, got dtype {lo.dtype}")
        if lo.shape != lead + (steps.size,):
            raise ValueError(f"loss must have the shape of scores {lead + (steps.size,)}, got {lo.shape}")
        loss = lo.reshape(s.shape).astype(np.float64)
    return steps, s, lead, loss


def _nanmean(a) -> np.ndarray:
    """Row means of the finite entries (NaN for a row without one), without warnings."""
    ok = np.isfinite(a)
    n = ok.sum(axis=1)
    return np.where(n > 0, np.where(ok, a, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)


def _moments(a):
    """Per row: the mean, the sample variance (ddof 1) and the number of the finite entries (mean
    and variance 0 for a row with fewer than 2), without warnings."""
    ok = np.isfinite(a)
    n = ok.sum(axis=1)
    x = np.where(ok, a, 0.0)
    mean = x.sum(axis=1) / np.maximum(n, 1)
    var = np.where(ok, (a - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(n - 1, 1)
    return mean, np.where(n >= 2, var, 0.0), n
