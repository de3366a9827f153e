"""Readable tables of the diagnostics' results: :func:`summarise` turns the
:class:`~tokdyn.diagnostics.mediation.Effects` of the latent interventions
(:func:`~tokdyn.diagnostics.mediation.latent_to_answer`) or the :class:`~tokdyn.diagnostics.dmlr.Result`
of the latent optimiser (:func:`~tokdyn.diagnostics.dmlr.optimise`) into a Markdown table over the
instances: every rate as a count, its share and a 95% Wilson interval
(:func:`tokdyn.stats.wilson_interval`), every other quantity as its mean. Host-side (NumPy): call it on
what a diagnostic returned, outside ``jit``.

Examples:
  >>> import numpy as np
  >>> from tokdyn.diagnostics import mediation, summaries
  >>> eff = mediation.Effects(flipped=np.array([[1.0, 0.0, 0.0, 0.0]]), correct=np.array([[0.0, 1.0, 1.0, 1.0]]),
  ...                         kl=np.array([[0.5, 0.1, 0.0, 0.2]]), changed=np.ones((1, 4), bool),
  ...                         correct_before=np.ones(4))
  >>> print(summaries.summarise(eff, kinds=("zeros",)))
  Latent interventions on 4 instances: each row replaces the model's own latents.
  <BLANKLINE>
  | intervention | latents changed | answer flipped | correct | KL(own ‖ intervened), mean |
  |---|---|---|---|---|
  | zeros | 4/4 | 1/4 = 0.250 [0.046, 0.699] | 3/4 = 0.750 [0.301, 0.954] | 0.2 |
  <BLANKLINE>
  Correct with the model's own latents: 4/4 = 1.000 [0.510, 1.000]. Intervals: 95% Wilson, over instances.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tokdyn.diagnostics import dmlr, mediation
from tokdyn.stats import wilson_interval

__all__ = ["summarise"]

_INTERVALS = "Intervals: 95% Wilson, over instances."


def _rate(flags) -> str:
    """``k/n = share [low, high]`` of a (n,) 0/1 array (a count, its share and its Wilson interval)."""
    flags = np.asarray(flags, np.float64)
    n, k = flags.size, int(round(float(np.sum(flags))))
    low, high = wilson_interval(k, n)
    return f"{k}/{n} = {k / n:.3f} [{low:.3f}, {high:.3f}]"


def _mean(values) -> str:
    """The mean of the finite ``values`` to 4 significant digits, the non-finite ones counted apart."""
    values = np.asarray(values, np.float64).ravel()
    finite = np.isfinite(values)
    if not finite.any():
        return f"– (all {values.size} non-finite)"
    text = f"{np.mean(values[finite]):.4g}"
    return text if finite.all() else f"{text} ({int((~finite).sum())} non-finite left out)"


def _table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _effects(eff: mediation.Effects, kinds: Optional[Sequence[str]]) -> str:
    flipped = np.asarray(eff.flipped)
    if flipped.ndim != 2 or flipped.shape[1] < 1:
        raise ValueError(
            f"effects.flipped must have shape (K, B) with B >= 1 (one latent_to_answer call), got {flipped.shape}"
        )
    n_kinds, n = flipped.shape
    if kinds is None:
        kinds = [f"intervention {i + 1}" for i in range(n_kinds)]
    elif isinstance(kinds, str) or len(kinds) != n_kinds:
        raise ValueError(
            f"kinds must name the {n_kinds} interventions of the effects, in the order they were run "
            f"(the kinds given to latent_to_answer), got {kinds!r}"
        )
    correct, before = np.asarray(eff.correct, np.float64), np.asarray(eff.correct_before, np.float64)
    answered = not np.isnan(before).any()
    rows = []
    for i, kind in enumerate(kinds):
        changed = np.asarray(eff.changed)[i]
        rows.append(
            [
                str(kind),
                f"{int(np.sum(changed))}/{n}",
                _rate(flipped[i]),
                _rate(correct[i]) if answered else "–",
                _mean(np.asarray(eff.kl)[i]),
            ]
        )
    header = ("intervention", "latents changed", "answer flipped", "correct", "KL(own ‖ intervened), mean")
    lines = [f"Latent interventions on {n} instances: each row replaces the model's own latents.", ""]
    lines += _table(header, rows) + [""]
    if answered:
        lines.append(f"Correct with the model's own latents: {_rate(before)}. {_INTERVALS}")
    else:
        lines.append(f"No answers given: correctness not measured. {_INTERVALS}")
    return "\n".join(lines)


def _result(res: dmlr.Result, answers) -> str:
    before, best = np.asarray(res.reward_before, np.float64), np.asarray(res.reward_best, np.float64)
    if before.ndim != 1 or before.size < 1:
        raise ValueError(
            f"result.reward_before must have shape (B,) with B >= 1 (one optimise call), got {before.shape}"
        )
    n = before.size
    a0, a1 = np.asarray(res.answer_before), np.asarray(res.answer_best)
    if answers is not None:
        answers = np.asarray(answers)
        if answers.shape != (n,):
            raise ValueError(f"answers must have shape ({n},), one correct token id per instance, got {answers.shape}")
    header = ("latents", "confidence reward, mean") + (("correct",) if answers is not None else ())
    rows = []
    for name, reward, answer in (("starting", before, a0), ("most confident", best, a1)):
        rows.append([name, _mean(reward)] + ([_rate(answer == answers)] if answers is not None else []))
    rewards = np.asarray(res.rewards, np.float64)
    lines = [f"Latent optimisation on {n} instances ({rewards.shape[-1]} iterations each).", ""]
    lines += _table(header, rows) + [""]
    improved = np.isfinite(best) & np.isfinite(before) & (best > before)
    lines.append(f"Reward improved: {_rate(improved)}. Answer changed: {_rate(a0 != a1)}.")
    lines.append(
        f"Mean reward after the first iteration {_mean(rewards[:, 0])}, after the last {_mean(rewards[:, -1])}."
    )
    nan = np.asarray(res.n_nan)
    lines.append(f"NaN rewards met: {int(np.sum(nan))} in {int(np.sum(nan > 0))} of {n} instances.")
    if res.injected is not None:
        lines.append(f"Image patches injected per instance: mean {_mean(np.sum(np.asarray(res.injected), -1))}.")
    lines.append(_INTERVALS)
    return "\n".join(lines)


def summarise(result, *, kinds: Optional[Sequence[str]] = None, answers=None) -> str:
    """A diagnostic's result as a readable Markdown table over its instances.

    Args:
      result: the :class:`~tokdyn.diagnostics.mediation.Effects` of one
        :func:`~tokdyn.diagnostics.mediation.latent_to_answer` (or ``latent_effects``) call, (K, B), or
        the :class:`~tokdyn.diagnostics.dmlr.Result` of one :func:`~tokdyn.diagnostics.dmlr.optimise`
        call, (B, ...).
      kinds: for ``Effects``, the names of its K interventions in the order they ran (the ``kinds``
        given to ``latent_to_answer``); None: numbered.
      answers: for a ``Result``, optional (B,) correct token ids: the table then gives the accuracy of
        the starting and of the most confident latents (an ``Effects`` carries its own).

    Returns:
      The table and its notes, as text: per intervention the instances whose latents changed, the
      answers that flipped, the correct answers and the mean KL divergence of the answer distribution;
      for a ``Result`` the mean confidence reward of the starting and the most confident latents, the
      instances whose reward improved and whose answer changed, the NaN rewards met and the patches
      injected. Rates are counts with their share and 95% Wilson interval.

    Raises:
      TypeError: ``result`` is neither an ``Effects`` nor a ``Result``, or an option is given that
        does not apply to it.
      ValueError: a result without instances, or ``kinds`` / ``answers`` that do not match it.
    """
    if isinstance(result, mediation.Effects):
        if answers is not None:
            raise TypeError("answers applies to a dmlr.Result; an Effects carries its own correctness")
        return _effects(result, kinds)
    if isinstance(result, dmlr.Result):
        if kinds is not None:
            raise TypeError("kinds applies to a mediation.Effects (its interventions), not to a dmlr.Result")
        return _result(result, answers)
    raise TypeError(
        "result must be a tokdyn.diagnostics.mediation.Effects or a tokdyn.diagnostics.dmlr.Result, "
        f"got {type(result).__name__}"
    )
