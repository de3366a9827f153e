"""The diagnostics' minimal example (docs/concepts/diagnostics.md) runs and prints what it says;
``Outputs`` is defined in ``tokdyn.models.protocol`` and is the same object under its other names; and
``summaries.summarise`` tabulates ``mediation.Effects`` and ``dmlr.Result`` with counts, shares and
Wilson intervals equal to NumPy sums and SciPy's ``binomtest``, refusing what it cannot read."""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

import tokdyn.diagnostics
from tokdyn.diagnostics import dmlr, mediation, outputs, protocol, summaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "<!-- tests/test_docs.py runs this block -->"


def _rate(k: int, n: int) -> str:
    ci = sps.binomtest(k, n).proportion_ci(method="wilson")
    return f"{k}/{n} = {k / n:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def _row(text: str, first: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {first} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_outputs_lives_in_the_models_layer_and_keeps_its_names():
    # defined where the models implement the protocol (no import up the layers), re-exported above
    from tokdyn.models import protocol as model_protocol

    assert outputs.Outputs is protocol.Outputs is tokdyn.diagnostics.Outputs
    assert outputs.Outputs is model_protocol.Outputs and protocol.ApplyFn is model_protocol.ApplyFn
    assert outputs.Outputs.__module__ == "tokdyn.models.protocol"
    assert outputs.Outputs._fields == ("logits", "hidden", "attention", "latents")


def test_the_concepts_page_minimal_example_runs(capsys):
    with open(os.path.join(ROOT, "docs", "concepts", "diagnostics.md"), encoding="utf-8") as f:
        (block,) = re.findall(re.escape(MARK) + r"\n```python\n(.*?)```", f.read(), re.S)
    assert len(block.splitlines()) <= 40, "the minimal example stays minimal"
    scope = {"__name__": "__example__"}
    exec(compile(block, "docs/concepts/diagnostics.md", "exec"), scope)  # noqa: S102
    out = capsys.readouterr().out
    assert "Dims(batch=64, length=6, vocab=5, layers=1, heads=1, width=8, latents=2)" in out
    eff, apply, params, batch, answer = (scope[n] for n in ("eff", "apply", "params", "batch", "ANSWER"))
    # the zeros row against an independent count: the model's answers with its own and with zero latents,
    # eagerly (another program: an argmax tie may go either way, so one instance of slack)
    own = np.asarray(jnp.argmax(apply(params, batch).logits[:, answer], -1))
    zero_latents = jnp.zeros((64, 2, scope["D"]))
    zeroed = np.asarray(jnp.argmax(apply(params, batch, latents=zero_latents).logits[:, answer], -1))
    k = int(round(float(np.sum(np.asarray(eff.flipped)[0]))))
    assert abs(k - int(np.sum(own != zeroed))) <= 1
    assert _row(out, "zeros")[:3] == ["zeros", "64/64", _rate(k, 64)]
    assert "No answers given" in out


def _effects(rng, k=2, n=30, answers=True):
    return mediation.Effects(
        flipped=(rng.random((k, n)) < 0.3).astype(np.float32),
        correct=(rng.random((k, n)) < 0.6).astype(np.float32) if answers else np.full((k, n), np.nan),
        kl=rng.exponential(0.2, (k, n)).astype(np.float32),
        changed=rng.random((k, n)) < 0.9,
        correct_before=(rng.random(n) < 0.8).astype(np.float32) if answers else np.full(n, np.nan),
    )


def test_effects_table_is_counts_and_wilson_intervals():
    eff = _effects(np.random.default_rng(0))
    text = summaries.summarise(eff, kinds=("zeros", "swap"))
    for i, kind in enumerate(("zeros", "swap")):
        flips, correct = int(eff.flipped[i].sum()), int(eff.correct[i].sum())
        assert _row(text, kind) == [
            kind,
            f"{int(eff.changed[i].sum())}/30",
            _rate(flips, 30),
            _rate(correct, 30),
            f"{np.mean(eff.kl[i].astype(np.float64)):.4g}",
        ]
    assert f"own latents: {_rate(int(eff.correct_before.sum()), 30)}." in text
    numbered = summaries.summarise(eff)  # no names: numbered rows
    assert _row(numbered, "intervention 2")[2] == _rate(int(eff.flipped[1].sum()), 30)


def test_effects_without_answers_and_with_a_non_finite_kl_say_so():
    eff = _effects(np.random.default_rng(1), answers=False)
    eff = eff._replace(kl=eff.kl.copy())
    eff.kl[0, 3] = np.nan
    text = summaries.summarise(eff, kinds=("a", "b"))
    assert _row(text, "a")[3] == "–" and "No answers given" in text
    kept = np.delete(eff.kl[0].astype(np.float64), 3)
    assert _row(text, "a")[4] == f"{np.mean(kept):.4g} (1 non-finite left out)"


def _result(rng, n=20, t=5, inject=True):
    before = rng.normal(0.0, 1.0, n)
    best = before + np.where(rng.random(n) < 0.7, rng.exponential(0.5, n), 0.0)
    return dmlr.Result(
        latents_before=np.zeros((n, 2, 4)),
        latents_best=np.zeros((n, 2, 4)),
        reward_before=before,
        reward_best=best,
        answer_before=rng.integers(0, 3, n),
        answer_best=rng.integers(0, 3, n),
        rewards=rng.normal(0.0, 1.0, (n, t)),
        n_nan=np.where(rng.random(n) < 0.2, 2, 0),
        injected=rng.random((n, 6)) < 0.3 if inject else None,
    )


def test_result_table_against_numpy():
    res = _result(np.random.default_rng(2))
    answers = np.random.default_rng(3).integers(0, 3, 20)
    text = summaries.summarise(res, answers=answers)
    assert _row(text, "starting") == [
        "starting",
        f"{res.reward_before.mean():.4g}",
        _rate(int(np.sum(res.answer_before == answers)), 20),
    ]
    assert _row(text, "most confident") == [
        "most confident",
        f"{res.reward_best.mean():.4g}",
        _rate(int(np.sum(res.answer_best == answers)), 20),
    ]
    assert f"Reward improved: {_rate(int(np.sum(res.reward_best > res.reward_before)), 20)}." in text
    assert f"Answer changed: {_rate(int(np.sum(res.answer_before != res.answer_best)), 20)}." in text
    assert f"after the last {res.rewards[:, -1].mean():.4g}." in text
    assert f"NaN rewards met: {int(res.n_nan.sum())} in {int(np.sum(res.n_nan > 0))} of 20 instances." in text
    assert f"mean {np.mean(res.injected.sum(-1)):.4g}." in text
    plain = summaries.summarise(_result(np.random.default_rng(2), inject=False))
    assert "correct" not in plain.splitlines()[2] and "injected" not in plain


def test_what_it_cannot_read_is_refused():
    eff, res = _effects(np.random.default_rng(4)), _result(np.random.default_rng(5))
    with pytest.raises(TypeError, match="result must be a tokdyn.diagnostics.mediation.Effects"):
        summaries.summarise({"flipped": 1})
    with pytest.raises(ValueError, match="kinds must name the 2 interventions"):
        summaries.summarise(eff, kinds=("zeros",))
    with pytest.raises(ValueError, match="kinds must name"):
        summaries.summarise(eff, kinds="zeros")
    with pytest.raises(TypeError, match="answers applies to a dmlr.Result"):
        summaries.summarise(eff, answers=np.zeros(30))
    with pytest.raises(TypeError, match="kinds applies to a mediation.Effects"):
        summaries.summarise(res, kinds=("a",))
    with pytest.raises(ValueError, match=r"answers must have shape \(20,\)"):
        summaries.summarise(res, answers=np.zeros(3))
    with pytest.raises(ValueError, match=r"effects.flipped must have shape \(K, B\)"):
        summaries.summarise(eff._replace(flipped=np.zeros((2, 0))))
    with pytest.raises(ValueError, match=r"reward_before must have shape \(B,\)"):
        summaries.summarise(dmlr.Result(*[np.zeros((0,))] * 8, None))


def test_a_traced_result_is_read_on_the_host():
    """What a jitted diagnostic returns (JAX arrays) is read as NumPy."""
    eff = jax.tree_util.tree_map(jnp.asarray, _effects(np.random.default_rng(6)))
    assert _row(summaries.summarise(eff, kinds=("x", "y")), "x")[2] == _rate(int(np.sum(eff.flipped[0])), 30)
