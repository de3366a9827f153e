"""Scoring trained organisms as a study reports them: the option each model answers
(:func:`tokdyn.models.organism.training.answers`), the accuracy per task family (:func:`accuracy`), both in one
call for a training's held-out evaluation (:func:`evaluate`), and the chance level a family's accuracy is read
against (:func:`majority_baseline`). Host functions over NumPy; the models' forward passes are compiled once
per recipe and pool shape."""

from __future__ import annotations

import numpy as np

from tokdyn.models.organism import tasks as tasks_lib
from tokdyn.models.organism import training


def accuracy(answers: np.ndarray, pool: training.Pool) -> dict:
    """Accuracy per task family of ``answers`` (M, N) (option indices, -1 for none: :func:`training.answers`)
    on the N instances of ``pool``: ``{family: (M,), "all": (M,)}`` over the families present, ``"all"`` the
    share of every instance."""
    answers = np.asarray(answers)
    letter, family = np.asarray(pool.letter), np.asarray(pool.family)
    if answers.ndim != 2 or answers.shape[1] != letter.shape[0]:
        raise ValueError(f"answers must be (models, {letter.shape[0]}) for the pool's instances, got {answers.shape}")
    correct = answers == letter[None]
    out = {f: correct[:, family == i].mean(1) for i, f in enumerate(tasks_lib.FAMILIES) if np.any(family == i)}
    out["all"] = correct.mean(1)
    return out


def evaluate(cfg: training.Config, recipe, params, pool: training.Pool, *, chunk: int = 64) -> dict:
    """:func:`accuracy` of the M models ``params`` (stacked) of ``recipe`` on ``pool``: ``{family: (M,), "all":
    (M,)}``; the ``evaluate`` of a :class:`tokdyn.train.Evaluation`."""
    return accuracy(training.answers(cfg, recipe, params, pool, chunk), pool)


def majority_baseline(train: training.Pool, test: training.Pool) -> dict:
    """Accuracy per family of answering each family's most frequent letter in ``train`` on ``test`` (the chance
    level: with shuffled options about ``1 / n_options``; with the fixed order the most frequent value's
    share), and ``"all"``, the share over every test instance."""
    out, hits, total = {}, 0, 0
    tr_l, tr_f = np.asarray(train.letter), np.asarray(train.family)
    te_l, te_f = np.asarray(test.letter), np.asarray(test.family)
    for i, f in enumerate(tasks_lib.FAMILIES):
        a, b = tr_l[tr_f == i], te_l[te_f == i]
        if len(a) and len(b):
            right = b == np.bincount(a).argmax()
            out[f], hits, total = float(right.mean()), hits + int(right.sum()), total + len(b)
    out["all"] = hits / total if total else float("nan")
    return out


__all__ = ["accuracy", "evaluate", "majority_baseline"]
