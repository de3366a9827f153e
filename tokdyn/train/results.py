"""What :func:`~tokdyn.train.train_many` returns and keeps: :class:`Result`, the best state of each
model (:class:`Best`), and the models that skipped non-finite steps (:func:`nan_report`,
:func:`skipped_counts`, :func:`warn_skipped`)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import numpy as np

from tokdyn.train.trainer import TrainState


@dataclasses.dataclass(frozen=True)
class Result:
    """What :func:`~tokdyn.train.train_many` returns.

    Attributes:
      state: the stacked :class:`~tokdyn.train.TrainState` (leaves (M, ...)).
      curves: dict name -> (M, calls) float host arrays, each the mean over a call of
        ``steps_per_call`` steps (NaN for calls not made).
      steps: (calls,) int: steps done at the end of each call.
      finished: the budget was spent or ``stop`` ended training (False: a deadline or
        ``max_calls`` returned early; call again to resume).
      stopped_at: steps done when training ended (the budget, or where ``stop`` ended it).
      best_state: with ``keep_best``: the stacked state of each model at its best recorded value
        of the ``keep_best`` column (its initial state while it has none); else None.
      best_step: with ``keep_best``: (M,) int, the step of each model's best value (-1: none yet);
        else None.
      skipped: (M,) int: the steps each model skipped as non-finite (its loss or gradient NaN or
        infinite), over its whole training (a resumed run's earlier calls included); a model whose
        count equals ``stopped_at`` never trained. :func:`~tokdyn.train.train_many` warns when any is above 0.
      group: the models a device vmapped at once in the last stage run (``Execution.batch_size``
        resolved; 1 under ``"loop"``); None where this call ran none.
      memory: where ``batch_size="auto"`` sized the groups: the bytes a call of the last stage run
        needs per device by XLA's memory analysis (:mod:`tokdyn.train.sizing`); else None.
    """

    state: TrainState
    curves: dict
    steps: np.ndarray
    finished: bool
    stopped_at: int
    best_state: Optional[TrainState] = None
    best_step: Optional[np.ndarray] = None
    skipped: Optional[np.ndarray] = None
    group: Optional[int] = None
    memory: Optional[int] = None

    def nan_report(self) -> list[tuple[int, int, int]]:
        """:func:`nan_report` of the state."""
        return nan_report(self.state)


def nan_report(state: TrainState) -> list[tuple[int, int, int]]:
    """``[(model, first non-finite step, steps skipped), ...]`` for every model of a stacked state
    that skipped a step."""
    first = np.atleast_1d(np.asarray(state.nan_step))
    count = np.atleast_1d(np.asarray(state.skipped))
    return [(int(i), int(first[i]), int(count[i])) for i in np.flatnonzero(first >= 0)]


@dataclasses.dataclass(frozen=True)
class Best:
    """The best state that :func:`~tokdyn.train.train_many` keeps with ``keep_best`` (host arrays).

    Attributes:
      column: the curve column judged (e.g. ``"val_all"``).
      mode: ``"max"`` (the largest value is best) or ``"min"``.
      state: the stacked state of each model at its best value (its initial state while it has none).
      step: (M,) int64 the step of each model's best value, -1 while it has none.
      value: (M,) float32 that value as recorded in the curves (NaN while none).
    """

    column: str
    mode: str
    state: TrainState
    step: np.ndarray
    value: np.ndarray

    def update(self, state: TrainState, values, step: int) -> "Best":
        """This record after a call that recorded ``values`` (M,) at ``step``: a model whose value is
        finite and strictly better than its best so far (ties keep the earlier step) takes its
        row of ``state`` (copied to the host only when some model improved)."""
        v = np.asarray(values, np.float32)
        better = v > self.value if self.mode == "max" else v < self.value
        better = np.isfinite(v) & (np.isnan(self.value) | better)
        if not better.any():
            return self
        new = jax.tree_util.tree_map(
            lambda b, s: np.where(better.reshape((-1,) + (1,) * (b.ndim - 1)), np.asarray(s), b), self.state, state
        )
        return Best(
            self.column,
            self.mode,
            new,
            np.where(better, step, self.step),
            np.where(better, v, self.value).astype(np.float32),
        )


def skipped_counts(state: TrainState) -> np.ndarray:
    """(M,) int: the steps each model of a stacked state skipped as non-finite."""
    return np.atleast_1d(np.asarray(state.skipped)).astype(np.int64)


def describe_model(i: int, hparams, limit: int = 4) -> str:
    """``model i (learning_rate=0.001, ...)``: the model's index (into ``keys``) and its
    hyper-parameter values."""
    leaves = jax.tree_util.tree_flatten_with_path(hparams)[0]
    values = []
    for path, v in leaves[:limit]:
        name = jax.tree_util.keystr(path).lstrip(".") or "hparams"
        try:
            a = np.asarray(v).reshape(-1)
            values.append(f"{name}={float(a[i] if a.size > i else a[0]):.4g}")
        except (TypeError, ValueError, IndexError):  # a leaf that is no number: named without its value
            values.append(name)
    more = ", ..." if len(leaves) > limit else ""
    return f"model {i}" + (f" ({', '.join(values)}{more})" if values else "")


def warn_skipped(
    skipped: np.ndarray, steps_done: int, hparams=None, *, name: str = "training", stacklevel: int = 2
) -> Optional[str]:
    """Warn (``RuntimeWarning``, whatever the caller's ``quiet``) when any model skipped a non-finite step.

    The message says how many models and steps, which models (index into ``keys``, and their
    ``hparams``), and those that skipped every step (never trained).

    Args:
      skipped: (M,) int, the steps each model skipped.
      steps_done: the optimiser steps each model took (skipped ones included).
      hparams: optional hyper-parameters, every leaf (M,), shown beside each model's index.
      name: what trained, the message's first word.
      stacklevel: as for ``warnings.warn``, counted from the caller.

    Returns:
      The message, or None when no step was skipped.
    """
    skipped = np.atleast_1d(np.asarray(skipped))
    bad = np.flatnonzero(skipped > 0)
    if not bad.size:
        return None
    every = [int(i) for i in bad if steps_done > 0 and skipped[i] >= steps_done]
    shown = [describe_model(int(i), hparams) if hparams is not None else f"model {int(i)}" for i in bad[:8]]
    msg = (
        f"{name}: {bad.size} of {skipped.size} models skipped non-finite steps ({int(skipped[bad].sum())} steps "
        f"in all, of {steps_done} per model): "
        + "; ".join(f"{s}: {int(skipped[i])} skipped" for s, i in zip(shown, bad[:8]))
        + (f"; and {bad.size - 8} more" if bad.size > 8 else "")
    )
    if every:
        msg += (
            f". {len(every)} skipped every step and did not train at all (models {', '.join(map(str, every[:20]))}"
            f"{', ...' if len(every) > 20 else ''}): its loss or gradient is not finite"
        )
    msg += ". Result.skipped holds the count per model; Result.nan_report() the first such step"
    import warnings

    warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel + 1)
    return msg
