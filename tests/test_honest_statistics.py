"""Statistics a reviewer signs: intervals that stay inside their quantity's range (against SciPy,
statsmodels and closed forms), no interval from too few seeds, tests printed difference first with
a practical threshold, no verdict from a smoke run, empty summary cells as errors, and the quick
presets' table of docs/reproduce.md generated from the presets."""

import dataclasses
import os
import re

import numpy as np
import pytest
from scipy import special
from scipy import stats as sps

from tokdyn import io, stats
from tokdyn.experiment import findings
from tokdyn.experiment import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------- intervals


@pytest.mark.parametrize("k,n", [(0, 12), (7, 12), (12, 12), (1, 3), (50, 100)])
def test_wilson_interval_equals_statsmodels_and_the_closed_form(k, n):
    from statsmodels.stats.proportion import proportion_confint

    low, high = stats.wilson_interval(k, n)
    ref = proportion_confint(k, n, alpha=0.05, method="wilson")
    np.testing.assert_allclose((low, high), ref, rtol=1e-9, atol=1e-12)
    z, p = sps.norm.ppf(0.975), k / n  # Wilson (1927)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    np.testing.assert_allclose((low, high), (centre - half, centre + half), rtol=1e-9, atol=1e-12)
    assert 0.0 <= low <= p <= high <= 1.0


def test_wilson_interval_checks_its_arguments():
    with pytest.raises(ValueError, match="k must be at most n"):
        stats.wilson_interval(4, 3)
    with pytest.raises(ValueError, match="n"):
        stats.wilson_interval(0, 0)


def test_bounded_interval_is_the_logit_t_interval_and_stays_in_its_range():
    v = np.array([0.0, 0.0, 0.75])  # a t interval of these leaves [0, 1]: 0.25 [-0.83, 1.33]
    half_t = sps.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
    assert v.mean() - half_t < 0 and v.mean() + half_t > 1
    low, high = stats.bounded_mean_interval(v, 0.0, 1.0)
    u, se = v.mean(), v.std(ddof=1) / np.sqrt(3)  # closed form: the delta method on logit(mean)
    half = sps.t.ppf(0.975, 2) * se / (u * (1 - u))
    np.testing.assert_allclose(
        (low, high), special.expit([special.logit(u) - half, special.logit(u) + half]), rtol=1e-12
    )
    assert 0.0 < low < v.mean() < high < 1.0
    # another range: rescaled, the same interval rescaled
    low2, high2 = stats.bounded_mean_interval(2 * v - 1, -1.0, 1.0)
    np.testing.assert_allclose((low2, high2), (2 * low - 1, 2 * high - 1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.bounded_mean_interval([0.4, 0.4, 0.4], 0, 1), (0.4, 0.4), rtol=1e-15)
    with pytest.raises(ValueError, match="must lie in"):
        stats.bounded_mean_interval([0.5, 1.5], 0, 1)


@pytest.mark.parametrize(
    "values,bounds",
    [
        ([0.0, 0.5, 0.25], findings.RATE),  # identity persistence over 3 seeds
        ([0.0, 1.0, 0.75, 0.583], findings.RATE),  # a collapse rate
        ([0.0, 0.0, 0.36], findings.RATE),  # collapse 0.12
        ([0.98, 0.99, 1.0, 0.6], findings.SCORE),  # an FG-ARI near 1
        ([-0.2, 0.0, 0.9], findings.difference_bounds(findings.RATE)),  # a difference of two rates
    ],
)
def test_seed_intervals_of_bounded_quantities_stay_in_their_range(values, bounds):
    mean, low, high, n = findings.seed_interval(values, bounds)
    assert n == len(values) and np.isfinite(low) and np.isfinite(high)
    assert bounds[0] <= low <= mean <= high <= bounds[1]


def test_bootstrap_from_ten_seeds_stays_inside_the_values():
    rng = np.random.default_rng(0)
    v = np.clip(rng.normal(0.97, 0.05, 12), 0, 1)
    mean, low, high, n = findings.seed_interval(v, findings.SCORE)
    assert n == 12 and v.min() <= low <= mean <= high <= v.max()
    ref = stats.bootstrap_ci(v, seed=0, n_resamples=findings.N_RESAMPLES)
    np.testing.assert_allclose((low, high), ref)


def test_too_few_seeds_give_no_interval_and_say_so():
    mean, low, high, n = findings.seed_interval([0.0, 0.5], findings.RATE)  # was 0.250 [-2.927, 3.427]
    assert n == 2 and mean == 0.25 and np.isnan(low) and np.isnan(high)
    assert findings.interval(mean, low, high) == "0.250 (too few seeds for an interval)"
    assert findings.interval(float("nan"), float("nan"), float("nan")) == "– [–, –]"
    assert findings.rate_interval(0, 0)[0] != findings.rate_interval(0, 0)[0]  # NaN without trials
    r, lo, hi = findings.rate_interval(3, 4)
    assert r == 0.75 and 0 < lo < r < hi <= 1


# ---------------------------------------------------------------------------------------------- tests: the difference first


def test_a_test_prints_its_difference_first_and_a_tiny_one_is_negligible():
    tiny = dict(
        metric="ari", mean_diff=0.00014, diff_low=0.00002, diff_high=0.00026, t=2.31, p=0.029, p_holm=0.5, d=-0.42
    )
    cell = findings.paired_cell(tiny, 4)
    assert cell.startswith("Δ=+0.0001 [+0.0000, +0.0003], t=2.31, p=0.029, p_holm=0.5, d_z=-0.42")
    assert cell.endswith("negligible (|Δ| < 0.01)")
    big = dict(tiny, mean_diff=0.05, diff_low=0.02, diff_high=0.08)
    assert "negligible" not in findings.paired_cell(big)
    few = dict(big, diff_low=float("nan"))
    assert "(too few seeds for an interval)" in findings.paired_cell(few)
    assert (
        findings.negligible("steps", 0.3)
        and not findings.negligible("steps", 0.6)
        and not findings.negligible("unlisted", 0.0)
    )


def test_token_dynamics_tests_carry_their_difference_and_print_it_first():
    from tokdyn.studies import token_dynamics as td

    cfg = td.Config(seeds=6, noise=(0.3,), n_clusters=(4,), methods=("baseline", "repulsion"))
    rng = np.random.default_rng(1)
    n = cfg.seeds
    base = rng.uniform(0.6, 0.9, n)
    runs = dict(
        method=np.array(["baseline"] * n + ["repulsion"] * n),
        n_clusters=np.full(2 * n, 4, np.int32),
        noise=np.full(2 * n, 0.3, np.float32),
        seed=np.tile(np.arange(n, dtype=np.int32), 2),
        ari=np.concatenate([base, base + 0.00014 + rng.normal(0, 0.0001, n)]),
        nmi=np.full(2 * n, 0.8),
        sse=np.ones(2 * n),
        steps=np.full(2 * n, 10.0),
        converged=np.ones(2 * n),
        collapsed=np.zeros(2 * n),
    )
    (t,) = td.stat_tests(runs, cfg)
    d = runs["ari"][n:] - runs["ari"][:n]
    assert t["mean_diff"] == pytest.approx(d.mean(), abs=1e-12) and t["negligible"]
    assert t["diff_low"] < t["mean_diff"] < t["diff_high"]
    assert t["p"] == pytest.approx(sps.ttest_rel(runs["ari"][n:], runs["ari"][:n]).pvalue, rel=1e-9)
    summary, overall = td.summarise(runs, cfg)
    text = td.format_tables(overall, summary, [t])
    line = next(x for x in text.splitlines() if x.strip().startswith("repulsion") and "Δ=" in x)
    assert line.index("Δ=") < line.index("t=") < line.index("p=") < line.index("d_z=")
    assert "negligible" in line and "0 of them with a difference of at least 0.01" in text


# ---------------------------------------------------------------------------------------------- no verdict from a smoke run


def _study_dir(tmp_path, preset, seeds):
    out = str(tmp_path / f"{preset or 'default'}-{seeds}")
    os.makedirs(out)
    io.write_checked_json(os.path.join(out, "config.json"), {"config": {"preset": preset, "seeds": seeds}})
    table = {"seed": np.repeat(np.arange(seeds), 2), "x": np.ones(2 * seeds)}
    return out, table


def _decided(verdict="refuted"):
    return findings.Finding(
        "X1", "t", "c", "o", "r", verdict, "basis", ("unit", "verdict"), [["a", verdict]], "s", min_seeds=10
    )


def test_a_smoke_run_never_decides(tmp_path):
    out, table = _study_dir(tmp_path, "quick", 3)
    (f,) = findings.gate([_decided()], out, table)
    assert f.verdict == "open" and f.label == "open (smoke run: 3 seeds)" and f.rows == [["a", "open"]]


def test_a_finding_needs_its_declared_evidence(tmp_path):
    out, table = _study_dir(tmp_path, "", 6)
    (f,) = findings.gate([_decided("reproduced")], out, table)
    assert f.verdict == "open" and "6 seeds, it needs 10" in f.label
    out, table = _study_dir(tmp_path, "", 12)
    (f,) = findings.gate([_decided("reproduced")], out, table)
    assert f.verdict == "reproduced" and f.label == "reproduced" and f.rows == [["a", "reproduced"]]


def test_the_report_prints_the_smoke_label():
    from tokdyn import reproduce

    f = dataclasses.replace(_decided(), verdict="open", note="smoke run: 3 seeds")
    text = reproduce.report("/nonexistent", [f], {"quick": True, "studies": {}})
    assert "**open (smoke run: 3 seeds)**" in text and "## X1. t: open (smoke run: 3 seeds)" in text


def test_docs_reproduce_quotes_the_quick_presets_as_they_are():
    from tokdyn import reproduce

    text = open(os.path.join(ROOT, "docs", "reproduce.md")).read()
    m = re.search(r"<!-- quick presets: .*? -->\n(.*?)\n<!-- end quick presets -->", text, re.S)
    assert m, "docs/reproduce.md lost its generated table of the quick presets"
    assert m.group(1).strip() == reproduce.quick_table().strip(), (
        "docs/reproduce.md's table of the quick presets differs from the presets: paste "
        "`python -c 'from tokdyn import reproduce; print(reproduce.quick_table())'`"
    )
    rows = dict(reproduce.quick_presets())
    assert "`seeds` 30 → 6" in rows["token-dynamics"]  # what the quick preset runs, not "its defaults"


# ---------------------------------------------------------------------------------------------- empty cells


def test_a_summary_cell_without_runs_is_an_error_naming_it():
    runs = {"temperature": np.array([0.3, 0.3, 1.0], np.float32), "collapsed": np.array([0.0, 1.0, 1.0])}
    sel = runner.select(runs, "rates.csv", temperature=0.3)  # float32 column, float64 value: matched
    assert sel.tolist() == [True, True, False]
    with pytest.raises(runner.EmptyCell, match=r"rates.csv: the cell temperature=0.5 has no runs"):
        runner.select(runs, "rates.csv", temperature=0.5)
    rows = [dict(temperature=0.3, collapsed=0.5, seeds=2), dict(temperature=0.7, collapsed=float("nan"), seeds=0)]
    with pytest.raises(runner.EmptyCell, match=r"rates.csv: the cell temperature=0.7 has no runs \(seeds = 0\)"):
        runner.check_cells("rates.csv", io.to_columns(rows))
    runner.check_cells("rates.csv", io.to_columns(rows[:1]))  # every cell has runs: passes
