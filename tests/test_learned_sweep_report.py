"""The learned sweeps' report (tokdyn.studies.learned_sweep.report), rerun as a user reads it: the
best condition is chosen on one half of the seeds and estimated on the other, a condition with a
non-finite model is left out and counted; the intervals of conditions.csv and paired.csv follow the
findings' rule (Student's t below 10 seeds, on the logit scale of a bounded metric), checked against
SciPy; Holm's line says over how many tests it corrects; the header states the whole grid and
where each axis came from. The sweep directory is written by the engine from a cheap stand-in for
the trained models (the report reads nothing else)."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from tokdyn.engine import sweep
from tokdyn.models import vtae as vtae_model
from tokdyn.studies.learned_sweep import report, vtae
from tokdyn.train import optim

SEEDS = 8
CFG = vtae.Config(
    seeds=SEEDS, learning_rate="3e-3,3e-2,0.3", tau_end="0.3", baseline="learning_rate=0.003", n_resamples=200,
    model=vtae_model.Config(hidden=8, batch_size=8, train=optim.Config(steps=4, steps_per_call=2, warmup=0)),
)  # fmt: skip
METRICS = CFG.metrics()


def stand_in(key, learning_rate, tau_end):
    """Per model: an accuracy highest at the learning rate 0.03 and highest of all at 0.3 on the
    seeds where it did not blow up (a NaN ``sensitivity_kl`` on some seeds: a training that blew
    up, so 0.3 may not be chosen), ``loss`` unbounded, ``collapsed`` the same for every model."""
    own = jax.random.fold_in(key, jnp.round(learning_rate * 1e4).astype(jnp.uint32))  # the condition's draws
    u = jax.random.uniform(own, (len(METRICS),))
    seed_noise = jax.random.uniform(jax.random.fold_in(key, 7), ())  # shared by a seed's models (CRN)
    mid = jnp.isclose(learning_rate, 3e-2, rtol=1e-3)
    low = jnp.isclose(learning_rate, 3e-3, rtol=1e-3)
    top = jnp.isclose(learning_rate, 0.3, rtol=1e-3)
    acc = 0.5 + 0.05 * u[0] + 0.2 * mid + 0.1 * low + 0.4 * top
    out = {m: u[i] for i, m in enumerate(METRICS)}
    out["accuracy"] = acc
    out["loss"] = 3.0 * u[3] - 1.0 + tau_end
    out["collapsed"] = jnp.float32(0.0)
    out["uniqueness"] = 0.2 + 0.1 * seed_noise
    blown = jnp.isclose(learning_rate, 0.3, rtol=1e-3) & (u[1] > 0.5)
    out["sensitivity_kl"] = jnp.where(blown, jnp.nan, u[6])
    out["skipped"] = jnp.float32(0.0)
    out["loss_curve"] = jnp.stack([2.0 + u[2], 1.0 + u[4]]) * (1.0 + learning_rate)  # 4 steps in calls of 2
    return out


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("learned-report"))
    sweep.run(stand_in, CFG.grid(), key=jax.random.key(0), common_random_numbers=True, out=out, progress=False)
    cols = sweep.load(out).columns
    return out, {k: np.asarray(v) for k, v in cols.items()}


def per_seed(cols, metric):
    """(conditions, seeds) of ``metric`` from the chunks, in grid order."""
    lr = cols["learning_rate"]
    return np.stack(
        [cols[metric][np.isclose(lr, v)][np.argsort(cols["seed"][np.isclose(lr, v)])] for v in (3e-3, 3e-2, 0.3)]
    )


def logit_t(v, lo, hi):
    """Student's t on the logit scale of [lo, hi] (the delta method), written out here."""
    u = (v.mean() - lo) / (hi - lo)
    half = scipy.stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size) / (hi - lo) / (u * (1 - u))
    c = scipy.special.logit(u)
    return lo + (hi - lo) * scipy.special.expit(c - half), lo + (hi - lo) * scipy.special.expit(c + half)


def test_the_best_condition_is_chosen_on_half_the_seeds_and_estimated_on_the_other(swept):
    out, cols = swept
    result = report.analysis(out, CFG)
    acc = per_seed(cols, "accuracy").astype(np.float64)
    nonfinite = np.isnan(per_seed(cols, "sensitivity_kl")).any(1)
    assert nonfinite.tolist() == [False, False, True]  # the stand-in blew up at the largest rate
    eligible = np.flatnonzero(~nonfinite)
    want = eligible[np.argmax(acc[eligible, :4].mean(1))]
    choice = result.data["best"]
    assert choice["row"] == want == 1 and choice["excluded"] == 1 and choice["split"]  # not 0.3, the highest mean
    held = acc[want, 4:]
    best = result.value["best"]
    np.testing.assert_allclose(best["accuracy_heldout_mean"], held.mean(), rtol=1e-9)
    np.testing.assert_allclose(
        [best["accuracy_heldout_low"], best["accuracy_heldout_high"]], logit_t(held, 0, 1), rtol=1e-7
    )
    text = result.data["report"]
    assert "## Best setting" in text and "chosen by its mean accuracy on seeds 0–3 and estimated on seeds 4–7" in text
    assert "Left out of the choice: 1 of 3 conditions" in text


def test_the_tables_use_the_findings_interval_rule(swept):
    out, cols = swept
    table = report.analysis(out, CFG).tables["conditions.csv"]
    for i in range(2):
        acc = per_seed(cols, "accuracy")[i].astype(np.float64)
        np.testing.assert_allclose([table["accuracy_low"][i], table["accuracy_high"][i]], logit_t(acc, 0, 1), rtol=1e-7)
        loss = per_seed(cols, "loss")[i].astype(np.float64)  # unbounded: Student's t itself
        ref = scipy.stats.t.interval(0.95, loss.size - 1, loc=loss.mean(), scale=scipy.stats.sem(loss))
        np.testing.assert_allclose([table["loss_low"][i], table["loss_high"][i]], ref, rtol=1e-7)
        assert 0 < table["accuracy_low"][i] < table["accuracy_high"][i] < 1


def test_holm_says_over_which_tests(swept):
    out, _ = swept
    result = report.analysis(out, CFG)
    tests = result.data["tests"]
    with_p = sum(np.isfinite(t["p"]) for t in tests)
    assert with_p < len(tests)  # `collapsed` is equal everywhere: no p
    assert f"Holm's p over the {with_p} of the {len(tests)} tests of this table that have a p" in result.data["report"]
    p = np.array([t["p"] for t in tests])
    # Holm's step-down adjustment written out (SciPy has none)
    finite = np.sort(p[np.isfinite(p)])
    m = finite.size
    want = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * finite))
    got = np.sort([t["p_holm"] for t in tests if np.isfinite(t["p"])])
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_the_header_states_the_grid_and_where_each_axis_came_from(swept):
    out, _ = swept
    text = report.analysis(out, CFG).data["report"]
    assert "- learning_rate: 0.003, 0.03, 0.3 (3 values; given)" in text
    assert "- tau_end: 0.3 (1 value; given)" in text
    assert f"- seeds: {SEEDS} (given)" in text
    assert "- not swept, every run at: " in text and "tau_start=" in text
    default = dataclasses.replace(CFG, learning_rate=vtae.Config().learning_rate, tau_end=vtae.Config().tau_end)
    lines = report.paired.grid_lines(default, default.axes())
    assert "- tau_end: 0.1, 1 (2 values; the default; `--tau-end ''` leaves it out)" in lines
    respelled = dataclasses.replace(default, tau_end="1e-1,1.0")  # the default's values, spelled otherwise
    assert "- tau_end: 0.1, 1 (2 values; the default; `--tau-end ''` leaves it out)" in report.paired.grid_lines(
        respelled, respelled.axes()
    )


def test_the_printed_lines_name_the_best_condition(swept):
    out, _ = swept
    result = report.analysis(out, CFG)
    result = dataclasses.replace(result, data=dict(result.data, timings={"sweep_s": 1.0, "analyse_s": 0.1}, out=out))
    text = report.printed(CFG, result, "")
    assert "best setting by accuracy: learning_rate=" in text and "chosen on seeds 0–3, estimated on seeds 4–7" in text
    assert "(1 condition(s) with a non-finite model left out)" in text and os.path.join(out, "report.md") in text


def test_the_figures_are_the_loss_curves_and_the_tables_intervals(swept, tmp_path):
    from tokdyn.stats import figures
    from tokdyn.studies.learned_sweep import plots

    out, cols = swept
    table = report.analysis(out, CFG).tables["conditions.csv"]
    jobs = {os.path.basename(j["path"]): j for j in plots.plot_jobs(out, CFG, table)}
    assert set(jobs) == {"loss.png", "by_learning_rate.png", "by_tau_end.png"}
    loss = jobs["loss.png"]
    assert loss["x"] == [2, 4]  # the step at the end of each call
    lr, curves = cols["learning_rate"], np.asarray(cols["loss_curve"], np.float64)
    finite = np.isfinite(np.asarray(cols["sensitivity_kl"], np.float64))  # a model that blew up counts in none
    for value, (label, mean) in zip((3e-3, 3e-2, 0.3), loss["series"].items()):
        assert label == f"learning_rate={value:.4g}, tau_end=0.3"
        np.testing.assert_allclose(mean, curves[np.isclose(lr, value) & finite].mean(0), rtol=1e-12)
    by_lr = jobs["by_learning_rate.png"]
    assert by_lr["x"] == [3e-3, 3e-2, 0.3] and by_lr["xscale"] == "log"
    low, high = by_lr["intervals"]["accuracy"]["tau_end=0.3"]
    np.testing.assert_array_equal(low, table["accuracy_low"])
    np.testing.assert_array_equal(high, table["accuracy_high"])
    path = figures.draw(dict(by_lr, path=str(tmp_path / "by_lr.png")))
    assert os.path.getsize(path) > 5000


def test_the_command_offers_no_plots_now_that_it_draws():
    from tokdyn import cli

    args = cli.build_parser(["sweep", "vtae"]).parse_args(["sweep", "vtae", "--no-plots"])
    assert args.no_plots is True
