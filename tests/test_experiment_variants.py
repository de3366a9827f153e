"""Trained variants compared (tokdyn.experiment.variants) on hand-made curves and small fake stores, no
training: convergence against a plain re-implementation of the documented stop rule, the paired tests
against SciPy's ``ttest_rel`` and statsmodels' Holm correction, the summary table cell by cell, the
curve logger's rows and judge, and a variant's test committed to a store and collected back."""

import hashlib
import os
import types

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from tokdyn import io, train
from tokdyn.experiment import variants
from tokdyn.stats import figures
from tokdyn.train import store

# --------------------------------------------------------------------------------------------- converged


def reference_converged(steps, vals, loss, budget, patience, min_fraction, min_delta, loss_delta, after):
    """One seed's ``(best_step, best, converged)`` by the rule as docs/concepts/runs-and-sweeps.md states it
    (train-stopping), written out in plain Python, with variants.converged's own two conditions: the
    window seen at two evaluations at least since the last improvement, and lying after step ``after``."""
    wait = max(1, int(round(patience * budget)))
    minimum = int(round(min_fraction * budget))
    now = int(steps[-1])
    level, improved = -np.inf, 0  # the level and step of the last significant improvement
    best, best_step = np.nan, -1
    for st, v in zip(steps, vals):
        if np.isfinite(v) and v > level + min_delta:
            level, improved = v, int(st)
        if np.isfinite(v) and (best_step < 0 or v > best):  # the first of equal maxima
            best, best_step = float(v), int(st)
    half = wait / 2.0
    recent = [i for i, st in enumerate(steps) if st > now - half]
    earlier = [i for i, st in enumerate(steps) if now - wait < st <= now - half]

    def finite(idx, xs):
        return [xs[i] for i in idx if np.isfinite(xs[i])]

    r, e = finite(recent, vals), finite(earlier, vals)
    holding = True
    if len(r) >= 2 and len(e) >= 2:
        drop = np.mean(e) - np.mean(r)
        se = np.sqrt(np.var(r, ddof=1) / len(r) + np.var(e, ddof=1) / len(e))
        holding = not (drop > min_delta and drop > 3 * se)
    falling = False
    if loss is not None and loss_delta is not None:
        lr, le = finite(recent, loss), finite(earlier, loss)
        if lr and le:
            falling = np.mean(le) - np.mean(lr) > loss_delta * abs(np.mean(le))
    stop = now >= minimum and now - improved >= wait and not (falling and holding)
    since = sum(1 for st in steps if st > improved)
    return best_step, best, bool(stop and since >= 2 and now - wait >= after)


def as_curve(per_seed: dict) -> dict:
    """Curve columns (rows ordered by step, then seed, as curve_logger writes them) from
    ``{seed: (steps, val_all, loss)}``."""
    rows = sorted((int(st), s, v, lo) for s, (sts, vs, ls) in per_seed.items() for st, v, lo in zip(sts, vs, ls))
    return {
        "step": [r[0] for r in rows],
        "seed": [r[1] for r in rows],
        "loss": [r[3] for r in rows],
        "val_all": [r[2] for r in rows],
    }


BUDGET = 100
STEPS = np.arange(10, 101, 10)  # an evaluation every 10 steps
RULE = dict(patience=0.4, min_fraction=0.5, min_delta=0.01)  # wait 40 steps, no stop before step 50
FALLING = 1.0 * 0.8 ** np.arange(10)  # a training loss falling by 20% an evaluation
FLAT_LOSS = np.ones(10)

CURVES = {
    # still rising: a significant improvement at every evaluation
    "rising": (STEPS, 0.1 + 0.05 * np.arange(10), FALLING),
    # flattened at step 30 (a NaN evaluation before it, a rise within min_delta after it), the loss flat
    "flattened": (STEPS, [0.2, np.nan, 0.8, 0.8, 0.805, 0.8, 0.8, 0.8, 0.8, 0.8], FLAT_LOSS),
    # the score flat from the start while the training loss still falls: held back only with loss_delta
    "still_learning": (STEPS, np.full(10, 0.5), FALLING),
    # overfitting: the score falls well beyond its noise while the loss falls: the rule stops
    "overfitting": (STEPS, [0.3, 0.6, 0.8, 0.9, 0.88, 0.86, 0.6, 0.6, 0.3, 0.3], FALLING),
    # sparse: the rule stops, but the window after the last improvement saw a single evaluation
    "sparse": (np.array([10, 20, 100]), [0.2, 0.6, 0.6], np.ones(3)),
}


@pytest.mark.parametrize("loss_delta", [0.05, None])
@pytest.mark.parametrize("after", [0, 60, 61])
def test_converged_matches_the_documented_rule_on_hand_made_curves(loss_delta, after):
    rule = train.Patience(**RULE, loss_delta=loss_delta)
    kinds = list(CURVES)
    seeds = len(kinds) + 1  # the last seed has no rows yet
    curve = as_curve({s: CURVES[k] for s, k in enumerate(kinds)})
    got = variants.converged(rule, BUDGET, seeds, curve, after=after)
    for s, kind in enumerate(kinds):
        steps, vals, loss = CURVES[kind]
        best_step, best, conv = reference_converged(
            steps, vals, loss, BUDGET, **RULE, loss_delta=loss_delta, after=after
        )
        assert got["best_step"][s] == best_step, (kind, got["best_step"][s], best_step)
        assert got["best"][s] == pytest.approx(best), (kind, got["best"][s], best)
        assert got["converged"][s] == conv, (kind, after, loss_delta, got["converged"][s], conv)
    assert got["best_step"][-1] == -1 and np.isnan(got["best"][-1]) and not got["converged"][-1]
    assert got["steps"] == 100
    # the hand-made expectations, independent of the reference too
    want = {
        "rising": False,
        "flattened": after <= 60,  # its window 60..100 lies after step ``after``
        "still_learning": loss_delta is None and after <= 60,
        "overfitting": after <= 60,
        "sparse": False,
    }
    assert dict(zip(kinds, got["converged"].tolist())) == want, (got["converged"], want)
    # fewer seeds converged than all: a curve logger judging by it goes on
    assert not np.all(got["converged"])
    assert got["best_step"][kinds.index("flattened")] == 50  # the best, though not a significant improvement
    assert got["best_step"][kinds.index("still_learning")] == 10  # the first of equal maxima
    assert got["best_step"][kinds.index("overfitting")] == 40


def test_converged_matches_the_documented_rule_on_random_curves():
    rng = np.random.default_rng(0)
    for trial in range(40):
        seeds, budget = 3, int(rng.choice([60, 100, 140]))
        rule_kw = dict(
            patience=float(rng.choice([0.1, 0.25, 0.4])),
            min_fraction=float(rng.choice([0.0, 0.3, 0.5])),
            min_delta=float(rng.choice([0.0, 0.01, 0.05])),
        )
        loss_delta = [None, 0.02, 0.1][trial % 3]
        after = int(rng.choice([0, budget // 4]))
        rule = train.Patience(**rule_kw, loss_delta=loss_delta)
        per_seed = {}
        for s in range(seeds):
            n = int(rng.integers(2, 15))
            steps = np.sort(rng.choice(np.arange(1, budget + 1), n, replace=False))
            vals = np.minimum.accumulate(rng.uniform(0, 1, n)[::-1])[::-1] + rng.normal(0, 0.03, n)  # a rise, noisy
            vals[rng.uniform(size=n) < 0.1] = np.nan
            loss = np.exp(-rng.uniform(0, 3) * steps / budget) + rng.normal(0, 0.01, n)
            per_seed[s] = (steps, vals, loss)
        got = variants.converged(rule, budget, seeds, as_curve(per_seed), after=after)
        for s, (steps, vals, loss) in per_seed.items():
            best_step, best, conv = reference_converged(
                steps, vals, loss, budget, **rule_kw, loss_delta=loss_delta, after=after
            )
            context = (trial, s, rule_kw, loss_delta, after)
            assert got["best_step"][s] == best_step, context
            assert got["best"][s] == pytest.approx(best, nan_ok=True), context
            assert got["converged"][s] == conv, context


def test_converged_without_a_loss_column_and_with_an_empty_curve():
    rule = train.Patience(**RULE, loss_delta=0.05)
    curve = as_curve({0: CURVES["still_learning"]})
    del curve["loss"]  # no loss recorded: the loss test abstains
    assert variants.converged(rule, BUDGET, 1, curve)["converged"].tolist() == [True]
    empty = variants.converged(rule, BUDGET, 2, {"step": [], "seed": [], "val_all": []})
    assert empty["best_step"].tolist() == [-1, -1] and np.all(np.isnan(empty["best"]))
    assert empty["converged"].tolist() == [False, False] and empty["steps"] == 0


def test_converged_names_a_bad_budget():
    with pytest.raises(ValueError, match="budget"):
        variants.converged(train.Patience(), 0, 1, as_curve({0: CURVES["flattened"]}))


# ------------------------------------------------------------------------------------------ curve_logger


def logged_curves(seeds: int, calls: int) -> dict:
    """What train_many hands a stop: (seeds, calls) per column, a value that tells seed and call apart."""
    s, c = np.meshgrid(np.arange(seeds), np.arange(calls), indexing="ij")
    return {
        "val_all": 0.1 * c + 0.01 * s,
        "loss": 10.0 + c + 0.5 * s,
        "val_count": 0.2 * c + 0.01 * s,
        "grad_norm": 100.0 + c + 0.5 * s,
    }


def test_curve_logger_appends_each_calls_rows_writes_them_and_asks_its_judge(tmp_path):
    path = str(tmp_path / "curves" / "a.csv")
    rows, judged, verdicts = {}, [], iter([[True, False], [True, True]])

    def judge(r):
        judged.append({k: list(v) for k, v in r.items()})
        return {"converged": np.asarray(next(verdicts))}

    stop = variants.curve_logger(path, rows, 2, 10, judge)
    curves = logged_curves(2, 3)
    assert stop(10, None, curves) is False  # one seed has not converged
    assert stop(20, None, curves) is True  # every seed has
    want = {
        "step": [10, 10, 20, 20],
        "seed": [0, 1, 0, 1],
        "grad_norm": [100.0, 100.5, 101.0, 101.5],
        "loss": [10.0, 10.5, 11.0, 11.5],
        "val_all": [0.0, 0.01, 0.1, 0.11],
        "val_count": [0.0, 0.01, 0.2, 0.21],
    }
    assert list(rows) == list(want), list(rows)  # step, seed, the logs sorted, then the scores
    for k, v in want.items():
        np.testing.assert_allclose(rows[k], v, err_msg=k)
    written = io.read_csv(path)
    assert list(written) == list(want)
    for k, v in want.items():
        np.testing.assert_allclose(written[k], v, err_msg=k)
    assert len(judged) == 2 and judged[0]["step"] == [10, 10] and judged[1]["step"] == [10, 10, 20, 20]


def test_curve_logger_drops_the_rows_a_resume_redoes(tmp_path):
    path = str(tmp_path / "a.csv")
    rows = {"step": [10, 10, 20, 20, 30, 30], "seed": [0, 1] * 3, "loss": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
    stop = variants.curve_logger(path, rows, 2, 10, lambda r: {"converged": [False, False]})
    assert stop(20, None, {"loss": np.array([[7.0, 8.0, 9.0], [17.0, 18.0, 19.0]])}) is False
    assert rows == {"step": [10, 10, 20, 20], "seed": [0, 1, 0, 1], "loss": [1.0, 2.0, 8.0, 18.0]}, rows
    np.testing.assert_allclose(io.read_csv(path)["loss"], [1.0, 2.0, 8.0, 18.0])


def test_curve_logger_keeps_every_column_as_long_as_the_steps_when_a_stage_logs_more_or_less(tmp_path):
    """A curriculum's later stage logs a part the first did not (coconut's start marker once latents come in):
    the rows before it read NaN there, and a column a call lacks reads NaN on its rows."""
    path = str(tmp_path / "a.csv")
    rows = {}
    stop = variants.curve_logger(path, rows, 2, 10, lambda r: {"converged": [False, False]})
    stop(10, None, {"loss": np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])})
    stop(20, None, {"loss": np.array([[1.0, 3.0, 0], [2.0, 4.0, 0]]), "start_ce": np.array([[0, 5.0, 0], [0, 6.0, 0]])})
    stop(30, None, {"start_ce": np.array([[0, 5.0, 7.0], [0, 6.0, 8.0]])})
    written = io.read_csv(path)
    np.testing.assert_array_equal(written["step"], [10, 10, 20, 20, 30, 30])
    np.testing.assert_allclose(written["loss"], [1.0, 2.0, 3.0, 4.0, np.nan, np.nan])
    np.testing.assert_allclose(written["start_ce"], [np.nan, np.nan, 5.0, 6.0, 7.0, 8.0])


def test_curve_logger_judged_by_converged_stops_where_every_seed_first_converges(tmp_path):
    rule = train.Patience(**RULE, loss_delta=0.05)
    flat, learning = CURVES["flattened"], CURVES["overfitting"]
    curves = {"val_all": np.array([flat[1], learning[1]], float), "loss": np.array([flat[2], learning[2]])}
    rows = {}
    stop = variants.curve_logger(str(tmp_path / "a.csv"), rows, 2, 10, lambda r: variants.converged(rule, BUDGET, 2, r))
    stopped = next((int(st) for st in STEPS if stop(int(st), None, curves)), None)
    want = next(
        int(STEPS[j])
        for j in range(len(STEPS))
        if all(
            reference_converged(STEPS[: j + 1], c[1][: j + 1], c[2][: j + 1], BUDGET, **RULE, loss_delta=0.05, after=0)[
                2
            ]
            for c in (flat, learning)
        )
    )
    assert stopped == want == 80, (stopped, want)


# ------------------------------------------------------------------------------------------------ tested


def fake_result(seeds: int = 2, step: int = 120) -> train.Result:
    """A finished training's Result of host arrays (no JAX program): its final and best states."""

    def state(at, skipped, nan_step):
        return train.TrainState(
            params={"w": np.zeros((seeds, 3))},
            opt_state=types.SimpleNamespace(total_notfinite=np.asarray(skipped)),
            extra=(),
            hparams={},
            step=np.asarray(at, np.int32),
            nan_step=np.asarray(nan_step, np.int32),
        )

    return train.Result(
        state=state([step] * seeds, [0, 3], [-1, 57]),
        curves={},
        steps=np.array([40, 80, step]),
        finished=True,
        stopped_at=step,
        best_state=state([80, 100], [0, 2], [-1, -1]),
        best_step=np.array([80, 100]),
    )


def test_tested_is_the_best_state_or_the_final_one():
    res = fake_result()
    state, step = variants.tested(res, "best", 2)
    assert state is res.best_state and step is res.best_step
    state, step = variants.tested(res, "final", 2)
    assert state is res.state and step.tolist() == [120, 120]
    with pytest.raises(ValueError, match="which must be 'best' or 'final', got 'last'"):
        variants.tested(res, "last", 2)


# ------------------------------------------------------------------------------- write_tested and collect

ACCURACY = {
    "a": {"count": [0.6, 0.8], "colour": [0.4, 0.2], "all": [0.5, 0.5], "caption_exact": [0.1, 0.0]},
    "b": {"count": [1.0, 0.9], "colour": [0.7, 0.75], "all": [0.85, 0.825]},
}
CONV = {
    "a": {"best_step": np.array([80, 100]), "best": np.array([0.7, 0.65]), "converged": np.array([True, False])},
    "b": {"best_step": np.array([40, 120]), "best": np.array([0.9, 0.95]), "converged": np.array([True, True])},
}
ROWS = {"step": [40, 40, 80, 80, 120, 120], "seed": [0, 1] * 3, "loss": [3.0, 2.5, 2.0, 1.5, 1.0, 0.75]}
ROWS["val_all"] = [0.25, 0.5, 0.7, 0.65, 0.6, 0.6]


def commit(out: str, name: str, which: str, answers) -> None:
    """A variant's final checkpoint (a stand-in carrying its step and stamp), then its test committed."""
    p = store.paths(out, name)
    io.save_npz(p["checkpoint"], meta_step=np.asarray(120), meta_stamp=np.asarray(f"stamp of {name}"))
    conv = {**CONV[name], "steps": 120}
    variants.write_tested(out, name, fake_result(), dict(ROWS), conv, answers, ACCURACY[name], which=which, budget=200)


def test_write_tested_commits_a_finished_variant_the_store_verifies(tmp_path):
    out = str(tmp_path)
    answers = np.arange(10, dtype=np.int32).reshape(2, 5) % 4
    commit(out, "a", "best", answers)
    commit(out, "b", "final", answers[::-1])
    for name in ("a", "b"):
        assert store.finished(out, name), name
        store.verify(out, name)  # strictly: the four files whole and in agreement
    p = store.paths(out, "a")
    curve = io.read_csv(p["curve"])
    for k, v in ROWS.items():
        np.testing.assert_allclose(curve[k], v, err_msg=k)
    kept = io.load_npz(p["answers"])
    np.testing.assert_array_equal(kept["answers"], answers)
    np.testing.assert_array_equal(store.read_answers(out, "b"), answers[::-1])
    with open(p["curve"], "rb") as f:
        assert kept["curve_csv"].tobytes() == f.read()
    assert int(kept["steps"]) == 120
    res = store.read_result(p["result"])
    assert res["variant"] == "a" and res["steps"] == 120 and res["budget"] == 200 and res["tested"] == "best"
    assert res["accuracy"] == ACCURACY["a"]
    assert res["best_step"] == [80, 100] and res["best_val"] == [0.7, 0.65]
    assert res["converged"] == [True, False]
    assert res["tested_step"] == [80, 100]  # each seed's best
    assert res["nan_step"] == [-1, 57] and res["skipped_steps"] == [0, 3]  # of the final state
    assert res["checkpoint_stamp_sha256"] == hashlib.sha256(b"stamp of a").hexdigest()
    res_b = store.read_result(store.paths(out, "b")["result"])
    assert res_b["tested"] == "final" and res_b["tested_step"] == [120, 120]


def test_collect_reads_back_what_write_tested_wrote(tmp_path):
    out = str(tmp_path)
    commit(out, "a", "best", np.zeros((2, 5), np.int32))
    commit(out, "b", "final", np.ones((2, 5), np.int32))
    base = {
        "chance": {"count": 0.25, "colour": 0.2, "all": 0.22},
        "majority": {"count": 0.3, "colour": 0.4, "all": 0.35},
    }
    acc, conv = variants.collect(out, ["a", "ghost", "b"], base)  # ghost: never trained, left out
    assert list(acc) == ["variant", "family", "seed", "accuracy", "chance", "majority", "converged"], list(acc)
    want_acc = [
        (
            name,
            fam,
            s,
            ACCURACY[name][fam][s],
            base["chance"][fam],
            base["majority"][fam],
            bool(CONV[name]["converged"][s]),
        )
        for name in ("a", "b")
        for fam in ("count", "colour", "all")  # caption_exact is not a family
        for s in (0, 1)
    ]
    got_acc = list(zip(*acc.values()))
    assert sorted(got_acc) == sorted(want_acc), got_acc
    assert [r[0] for r in got_acc] == ["a"] * 6 + ["b"] * 6  # in the order of the names
    assert list(conv) == ["variant", "seed", "steps", "budget", "best_step", "best_val", "tested_step", "converged"]
    want_conv = [
        ("a", 0, 120, 200, 80, 0.7, 80, True),
        ("a", 1, 120, 200, 100, 0.65, 100, False),
        ("b", 0, 120, 200, 40, 0.9, 120, True),
        ("b", 1, 120, 200, 120, 0.95, 120, True),
    ]
    assert list(zip(*conv.values())) == want_conv, list(zip(*conv.values()))
    empty_acc, empty_conv = variants.collect(out, ["ghost"], base)
    assert all(v == [] for v in empty_acc.values()) and all(v == [] for v in empty_conv.values())


# ------------------------------------------------------------------------------------------ paired_tests

FAMILY_NAMES = ("count", "colour", "shape")
FAMILIES = ["colour", "count"]  # reported one by one (shape only within "all"), not in the names' order


def paired_store(out: str):
    """A store of answers of 3 seeds to 90 four-way questions: direct and text (the references), latent, one
    that did not converge every seed, one with a result but no answers and one never trained."""
    rng = np.random.default_rng(7)
    n = 90
    truth = rng.integers(0, 4, n)
    family = rng.integers(0, 3, n)
    skill = {"direct": 0.55, "text": 0.7, "latent": 0.8, "unconverged": 0.6, "halfway": 0.9}
    converged = {k: [True, True, True] for k in skill}
    converged["unconverged"] = [True, False, True]
    for name, p_right in skill.items():
        right = rng.uniform(size=(3, n)) < p_right
        answers = np.where(right, truth[None], (truth[None] + rng.integers(1, 4, (3, n))) % 4)
        paths = store.paths(out, name)
        if name != "halfway":
            io.save_npz(paths["answers"], answers=answers)
        store.write_result(paths["result"], {"variant": name, "converged": converged[name]})
    return truth, family


def test_paired_tests_match_scipy_and_statsmodels_holm(tmp_path):
    out = str(tmp_path)
    truth, family = paired_store(out)
    names = ["direct", "latent", "text", "unconverged", "halfway", "ghost"]
    cols = variants.paired_tests(out, names, truth, family, FAMILIES, ["direct", "text", "nowhere"], FAMILY_NAMES)
    keys = ["variant", "against", "family", "n", "mean_diff", "t", "p", "p_holm", "d", "tested"]
    assert sorted(cols) == sorted(keys) and len({len(v) for v in cols.values()}) == 1
    rows = [dict(zip(cols, r)) for r in zip(*cols.values())]
    per_instance = {}
    for name in ("direct", "latent", "text", "unconverged"):
        per_instance[name] = (io.load_npz(store.paths(out, name)["answers"])["answers"] == truth).mean(axis=0)
    want = []
    for ref in ("direct", "text"):
        for name in ("direct", "latent", "text", "unconverged"):
            if name == ref:
                continue
            for fam in FAMILIES + ["all"]:
                sel = np.ones(len(truth), bool) if fam == "all" else family == FAMILY_NAMES.index(fam)
                a, b = per_instance[name][sel], per_instance[ref][sel]
                want.append((name, ref, fam, int(sel.sum()), a, b))
    assert [(r["variant"], r["against"], r["family"], r["n"]) for r in rows] == [w[:4] for w in want]
    for r, (name, ref, fam, _, a, b) in zip(rows, want):
        where = (name, ref, fam)
        assert r["mean_diff"] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12), where
        if name == "unconverged":  # a seed did not converge: listed, not tested
            assert r["tested"] is False and all(np.isnan(r[k]) for k in ("t", "p", "d", "p_holm")), (where, r)
            continue
        scipy_t = sps.ttest_rel(a, b)
        diff = a - b
        assert r["tested"] is True, where
        assert r["t"] == pytest.approx(scipy_t.statistic, rel=1e-9), (where, r["t"], scipy_t.statistic)
        assert r["p"] == pytest.approx(scipy_t.pvalue, rel=1e-9), (where, r["p"], scipy_t.pvalue)
        assert r["d"] == pytest.approx(diff.mean() / diff.std(ddof=1), rel=1e-9), where
    p = np.asarray(cols["p"], float)
    tested = ~np.isnan(p)
    assert tested.sum() == 12 and (~tested).sum() == 6
    want_holm = np.full(p.shape, np.nan)
    want_holm[tested] = multipletests(p[tested], method="holm")[1]  # the family: every test of the table
    np.testing.assert_allclose(cols["p_holm"], want_holm, rtol=1e-12)
    assert np.any(want_holm[tested] > p[tested])  # the correction matters here
    assert min(p[tested]) < 1e-3 < max(p[tested])  # significant and not significant pairs alike


def test_paired_tests_of_a_store_without_its_references_are_empty(tmp_path):
    out = str(tmp_path)
    truth, family = paired_store(out)
    cols = variants.paired_tests(out, ["latent", "text"], truth, family, FAMILIES, ["direct"], FAMILY_NAMES)
    assert all(v == [] for v in cols.values()), cols


# ----------------------------------------------------------------------------------------- summary_table


def test_summary_table_cell_by_cell():
    acc = {"variant": [], "family": [], "seed": [], "accuracy": [], "chance": []}
    chance = {"count": 0.25, "colour": 1 / 3, "all": 0.3}
    table = {
        "direct": {"count": [0.5, 0.7], "colour": [0.25, 0.75], "all": [0.4, 0.6]},
        "latent": {"count": [0.9, 0.8, 1.0], "all": [0.85, 0.8, 0.9]},  # no colour rows
    }
    for name, fams in table.items():
        for fam, xs in fams.items():
            for s, x in enumerate(xs):
                for k, v in (("variant", name), ("family", fam), ("seed", s), ("accuracy", x), ("chance", chance[fam])):
                    acc[k].append(v)
    conv = {
        "variant": ["direct", "direct", "latent", "latent", "latent"],
        "seed": [0, 1, 0, 1, 2],
        "converged": [True, False, True, True, True],
        "steps": [400, 400, 250, 250, 250],
    }
    got = variants.summary_table(acc, conv, ["count", "colour"], {"chance": "chance (majority)"}).split("\n")
    want = [
        ["variant", "count", "colour", "all", "converged seeds", "steps"],
        ["---"] * 6,
        ["direct", "0.600 (0.50-0.70)", "0.500 (0.25-0.75)", "0.500 (0.40-0.60)", "1/2", "400"],
        ["latent", "0.900 (0.80-1.00)", "", "0.850 (0.80-0.90)", "3/3", "250"],
        ["chance (majority)", "0.250", "0.333", "0.300", "", ""],
    ]
    assert len(got) == len(want), got
    for line, cells in zip(got, want):
        assert line.startswith("|") and line.endswith("|"), line
        assert [c.strip() for c in line[1:-1].split("|")] == cells, (line, cells)


# ------------------------------------------------------------------------------------------- plot_curves


def test_plot_curves_draws_each_seed_and_their_mean(tmp_path, monkeypatch):
    out = str(tmp_path)
    assert variants.plot_curves(out, ["a"], ["count"]) is None  # no curve yet
    assert not os.path.exists(os.path.join(out, "learning_curves.png"))
    cols = {"step": [10, 10, 20, 20, 30, 30], "seed": [0, 1] * 3}
    cols |= {"val_count": [0.1, 0.3, 0.4, 0.6, 0.5, 0.9], "val_all": [0.2, 0.4, 0.3, 0.5, 0.6, 0.8]}
    io.write_csv(store.paths(out, "a")["curve"], cols)
    io.write_csv(store.paths(out, "b")["curve"], {k: v[:4] for k, v in cols.items()})
    io.write_csv(store.paths(out, "no_scores")["curve"], {"step": [10], "seed": [0], "loss": [1.0]})
    with open(store.paths(out, "damaged")["curve"], "w") as f:
        f.write("step,seed,val_count,val_all\n10,0\n")  # a cut row
    drawn = []
    save = figures.save
    monkeypatch.setattr(figures, "save", lambda fig, path, dpi=100: drawn.append(fig) or save(fig, path, dpi))
    path = variants.plot_curves(out, ["a", "missing", "no_scores", "damaged", "b"], ["count"])
    assert path == os.path.join(out, "learning_curves.png") and figures.drawn_by_tokdyn(path)
    (fig,) = drawn
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["count", "all"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]
    step, seed = np.array(cols["step"]), np.array(cols["seed"])
    for ax, fam in zip(axes, ["count", "all"]):
        y = np.array(cols[f"val_{fam}"])
        lines = [(list(ln.get_xdata()), list(ln.get_ydata()), ln.get_linewidth()) for ln in ax.get_lines()]
        want = []
        for upto in (6, 4):  # a, then b (its first two steps)
            s_, st_, y_ = seed[:upto], step[:upto], y[:upto]
            want += [(list(st_[s_ == s]), list(y_[s_ == s]), 0.6) for s in (0, 1)]
            grid = sorted(set(st_.tolist()))
            want.append((grid, [(y_[st_ == g][0] + y_[st_ == g][1]) / 2 for g in grid], 1.8))
        assert len(lines) == len(want), (fam, len(lines))
        for (gx, gy, gw), (wx, wy, ww) in zip(lines, want):
            assert gx == wx and gw == ww, (fam, gx, wx, gw, ww)
            np.testing.assert_allclose(gy, wy, err_msg=fam)
    drawn.clear()  # no family but the pooled one: one panel, a single Axes
    assert variants.plot_curves(out, ["a", "b"], []) == path
    assert [ax.get_title() for ax in drawn[0].axes if ax.get_title()] == ["all"]
