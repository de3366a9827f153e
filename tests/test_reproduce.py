"""`tokdyn reproduce`: the findings' verdict functions (each study's own, and the intervals they share
in tokdyn.experiment.findings) on synthetic output tables (reproduced, refuted and open cases each),
the report writer on a fake directory, the command line, and one real run of the cheapest study
through the command."""

import json
import os

import numpy as np
import pytest

from tokdyn import cli, io, reproduce
from tokdyn.experiment import findings
from tokdyn.studies import collapse, grid_diffusion, token_dynamics
from tokdyn.studies import visual_tokens

PUBLISHED = {
    "baseline": dict(ari=0.791, nmi=0.882, steps=11.91, collapsed=0.0),
    "inertia": dict(ari=0.799, nmi=0.887, steps=24.78, collapsed=0.0),
}


def runs_table(seeds: int, ari: dict, spread: float = 0.05, conditions: int = 3) -> dict:
    """A token-dynamics runs.csv: per method, seed and condition; each seed's mean ARI is
    ``ari[method]`` plus noise of sd ``spread``; NMI, steps and collapse at the published values."""
    rng = np.random.default_rng(0)
    cols = {k: [] for k in ("method", "noise", "seed", "ari", "nmi", "steps", "collapsed")}
    for m, target in ari.items():
        offsets = rng.normal(0, spread, seeds)
        offsets -= offsets.mean()  # the mean over seeds is exactly the target
        for s in range(seeds):
            for c in range(conditions):
                cols["method"].append(m)
                cols["noise"].append(0.3 * (c + 1))
                cols["seed"].append(s)
                cols["ari"].append(target + offsets[s])
                cols["nmi"].append(PUBLISHED[m]["nmi"])
                cols["steps"].append(PUBLISHED[m]["steps"])
                cols["collapsed"].append(0.0)
    return {k: np.asarray(v) for k, v in cols.items()}


# ---------------------------------------------------------------------------------------------- intervals


def test_seed_interval_uses_students_t_below_ten_seeds_and_the_bootstrap_above():
    from scipy import stats as sps

    v = np.array([0.1, 0.2, 0.4])
    mean, low, high, n = findings.seed_interval(v)
    half = sps.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
    assert n == 3 and mean == pytest.approx(v.mean())
    assert (low, high) == pytest.approx((v.mean() - half, v.mean() + half))
    w = np.random.default_rng(1).normal(size=40)
    mean, low, high, n = findings.seed_interval(w)
    assert n == 40 and low < mean < high and high - low < 4 * 1.96 * w.std(ddof=1) / np.sqrt(40)
    assert findings.seed_interval([0.5, 0.5, np.nan, 0.5])[1:] == (0.5, 0.5, 3)  # NaN dropped, no spread
    assert findings.seed_interval([0.5])[3] == 1 and np.isnan(findings.seed_interval([0.5])[1])


def test_seed_intervals_are_each_samples_seed_interval():
    """The batched intervals (one bootstrap for the samples of one size) against one call per sample,
    every path mixed: bootstraps of two sizes, NaNs dropped, Student's t on the logit scale, no
    spread, too few seeds, none."""
    rng = np.random.default_rng(3)
    a = rng.uniform(-0.5, 0.5, (3, 12))
    samples = [a[0], a[1], np.r_[a[2, :11], np.nan], rng.uniform(-1, 1, 25), a[0][:5], [0.2] * 12, [0.1, 0.3], []]
    got = findings.seed_intervals(samples, findings.difference_bounds(findings.SCORE))
    want = [findings.seed_interval(v, findings.difference_bounds(findings.SCORE)) for v in samples]
    assert [g[3] for g in got] == [w[3] for w in want] == [12, 12, 11, 25, 5, 12, 2, 0]
    np.testing.assert_allclose([g[:3] for g in got], [w[:3] for w in want], rtol=1e-12, atol=1e-15)


def test_aggregate_one_refutation_refutes_a_general_claim():
    assert findings.aggregate(["reproduced", "reproduced", "n/a"]) == "reproduced"
    assert findings.aggregate(["reproduced", "refuted", "open"]) == "refuted"
    assert findings.aggregate(["reproduced", "open"]) == "open"
    assert findings.aggregate(["n/a"]) == "open"


# ---------------------------------------------------------------------------------------------- 1. token dynamics


def test_published_cell_reproduced_refuted_and_open():
    rng = np.random.default_rng(0)
    v = 0.8 + rng.normal(0, 0.05, 30)
    _, (mean, low, high, _) = token_dynamics.published_cell(v, 0.8, 0.0005)
    assert token_dynamics.published_cell(v, mean, 0.0005)[0] == "reproduced"
    assert token_dynamics.published_cell(v, high + 0.0004, 0.0005)[0] == "reproduced"  # within the rounding
    assert token_dynamics.published_cell(v, mean + 2 * (high - mean), 0.0005)[0] == "refuted"  # past sqrt(2)
    assert token_dynamics.published_cell(v, mean + 1.2 * (high - mean), 0.0005)[0] == "open"  # between
    assert token_dynamics.published_cell(v[:5], mean, 0.0005)[0] == "open"  # too few seeds for a bootstrap


@pytest.mark.parametrize(
    "ari, expect",
    [
        ({"baseline": 0.791, "inertia": 0.799}, "reproduced"),
        ({"baseline": 0.791, "inertia": 0.70}, "refuted"),
    ],
)
def test_token_dynamics_findings(ari, expect):
    a, b = token_dynamics.published_findings(runs_table(30, ari), PUBLISHED)
    assert a.verdict == expect and b.verdict == "reproduced"
    assert len(a.rows) == 2 and len(b.rows) == 6
    assert "0.791" in a.basis
    few = token_dynamics.published_findings(runs_table(4, {"baseline": 0.791, "inertia": 0.799}), PUBLISHED)
    assert [f.verdict for f in few] == ["open", "open"]


# ---------------------------------------------------------------------------------------------- 2. visual tokens


def vt_table(cells: int, seeds: int, collapsed: bool) -> dict:
    rows = []
    for c in range(cells):
        for s in range(seeds):
            rows.append(
                dict(
                    part="main",
                    vocab_size=51 + c,
                    grid=5,
                    colours=3,
                    mode="vq",
                    steps=2000,
                    seed=s,
                    accuracy=0.02 if collapsed else 1.0,
                    dominant_freq=0.95 if collapsed else 0.02,
                    collapsed=int(collapsed),
                    train_loss_drop_tail=0.0,
                    train_loss_norm_last=0.5,
                )
            )
            rows.append(dict(rows[-1], steps=300, accuracy=0.5, collapsed=1))  # a short budget: not judged
    rows.append(
        dict(
            part="main",
            vocab_size=5000,
            grid=3,
            colours=2,
            mode="vq",
            steps=2000,
            seed=0,
            accuracy=0.05,
            dominant_freq=0.02,
            collapsed=0,
            train_loss_drop_tail=0.0,
            train_loss_norm_last=0.5,
        )
    )  # capacity
    return io.to_columns(rows)


@pytest.mark.parametrize(
    "cells, seeds, collapsed, expect",
    [
        (16, 5, False, "refuted"),  # 0 of 80 adequately trained models collapsed: upper bound < 0.05
        (4, 5, True, "reproduced"),  # all collapse
        (4, 2, False, "open"),  # 0 of 8: the interval reaches far above 0.05
    ],
)
def test_visual_tokens_finding(cells, seeds, collapsed, expect):
    f = visual_tokens.collapse_finding(vt_table(cells, seeds, collapsed))
    assert f.verdict == expect, f.basis
    assert f"of {cells * seeds} adequately trained models" in f.basis
    assert any(r[1] == "capacity" and r[2] == "no" for r in f.rows)


def gd_table(grid: list, token: list) -> dict:
    rows = [
        dict(scope="sequence", model="grid_d3pm_uniform", seed=s, grammatical_sentences=v) for s, v in enumerate(grid)
    ]
    rows += [dict(scope="sequence", model="token_ar", seed=s, grammatical_sentences=v) for s, v in enumerate(token)]
    rows += [dict(scope="single", model="grid_ddpm", seed=0, grammatical_sentences=np.nan)]
    return io.to_columns(rows)


@pytest.mark.parametrize(
    "grid, token, expect",
    [
        ([0.64, 0.65, 0.66], [0.96, 0.97, 0.98], "refuted"),
        ([0.955, 0.96, 0.965], [0.965, 0.97, 0.975], "reproduced"),
        ([0.60, 0.80, 0.95], [0.96, 0.97, 0.98], "open"),  # a wide interval straddles the margin
        ([0.64, 0.65], [0.96, 0.97], "open"),  # two seeds
    ],
)
def test_grid_diffusion_finding(grid, token, expect):
    f = grid_diffusion.grid_route_finding(gd_table(grid, token))
    assert f.verdict == expect, f.basis
    assert "grid_d3pm_uniform" in f.basis and "token_ar" in f.basis


# ---------------------------------------------------------------------------------------------- the report


def _fake_study(out: str, name: str, tables: dict) -> None:
    """A study directory ``out/name`` holding ``tables`` (file -> columns), recorded as its study does."""
    from tokdyn.experiment import study as study_dir

    study = study_dir.Study.open(os.path.join(out, name), name, {"fake": True}, quiet=True)
    for file, columns in tables.items():
        io.write_csv(os.path.join(out, name, file), columns)
    study.finish()


def test_report_on_a_fake_directory(tmp_path):
    out = str(tmp_path)
    _fake_study(
        out,
        "token-dynamics",
        {"runs.csv": runs_table(30, {m: token_dynamics.PUBLISHED_OVERALL[m]["ari"] for m in PUBLISHED})},
    )
    _fake_study(out, "grid-diffusion", {"results.csv": gd_table([0.64, 0.65, 0.66], [0.96, 0.97, 0.98])})
    io.write_csv(os.path.join(out, "visual-tokens", "results.csv"), vt_table(16, 5, False))  # no record: not judged
    os.makedirs(os.path.join(out, "token-dynamics", "plots"))
    os.makedirs(os.path.join(out, "token-dynamics", "parts"))
    for name in ("plots/ari_mean.png", "parts/not_a_figure.png"):
        open(os.path.join(out, "token-dynamics", name), "wb").close()
    record = {
        "quick": False,
        "tokdyn": "0",
        "machine": "test",
        "ran": ["token-dynamics"],
        "studies": {
            "token-dynamics": {"status": "done", "seconds": 7.0, "computed_seconds": 7.0, "error": None},
            "collapse": {"status": "failed", "seconds": 1.0, "error": "RuntimeError: x|y"},
        },
    }
    found = reproduce.write_report(out, record)
    verdicts = {f.key: f.verdict for f in found}
    # the studies there or run: never a finding of a study that was not run (it was listed, open, "missing")
    assert set(verdicts) == {"1a", "1b", "2a", "2b"}
    assert set(verdicts.values()) <= set(reproduce.VERDICTS)
    assert verdicts["1a"] == "reproduced" and verdicts["2b"] == "refuted"
    text = open(os.path.join(out, "report.md")).read()
    assert "![ari_mean.png](token-dynamics/plots/ari_mean.png)" in text and "not_a_figure" not in text
    assert verdicts["2a"] == "open" and "visual-tokens/results.csv cannot be verified" in text  # not "refuted"
    assert "latent-diagnostics" not in text and "video/" not in text and "RuntimeError: x|y" in text
    assert "| collapse | failed (an earlier run)" in text  # failed before writing anything: still said
    assert "failed (an earlier run)" in text
    page = open(os.path.join(out, "report.html")).read()
    assert '<img src="token-dynamics/plots/ari_mean.png"' in page and "<table>" in page
    assert "<strong>reproduced</strong>" in page and "<h2>" in page


def test_to_html_subset():
    page = reproduce.to_html(
        "# T <x>\n\npara `a<b` and **b** [l](d/x.md)\n\n| a | b\\|c |\n|---|---|\n| 1 | 2 |\n\n- i\n- j\n"
    )
    assert "<h1>T &lt;x&gt;</h1>" in page and "<code>a&lt;b</code>" in page and "<strong>b</strong>" in page
    assert '<a href="d/x.md">l</a>' in page and "<th>b|c</th>" in page and "<td>2</td>" in page
    assert "<ul><li>i</li><li>j</li></ul>" in page


# ---------------------------------------------------------------------------------------------- the command


def test_command_line(capsys):
    assert cli.with_default_command(["reproduce", "--quick"]) == ["reproduce", "all", "--quick"]
    assert cli.with_default_command(["reproduce", "all"]) == ["reproduce", "all"]
    assert cli.with_default_command(["study", "collapse"]) == ["study", "collapse"]
    assert cli.main(["reproduce", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: tokdyn reproduce") and "--quick" in text and "--studies" in text
    assert cli.main(["reproduce", "--studies", "token-dynamics,nope", "--no-cache"]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="repeat"):
        reproduce.Config(studies=("collapse", "collapse")).validate()


@pytest.mark.parametrize("quick", [True, False])
def test_study_configs_are_the_presets_and_the_analyses_read_out(quick):
    cfg = reproduce.study_config("latent-diagnostics", quick, "OUT").validate()
    assert cfg.source == os.path.join("OUT", "latent-reasoning") and cfg.preset == ("quick" if quick else "")
    assert reproduce.study_config("collapse", quick, "OUT") == (collapse.Config.quick() if quick else collapse.Config())


def test_a_run_of_the_cheapest_study_through_the_command(tmp_path, monkeypatch, capsys):
    tiny = token_dynamics.Config(seeds=3, noise=(0.3,), n_clusters=(3,), methods=("baseline", "inertia"))
    monkeypatch.setattr(reproduce, "study_config", lambda name, quick, out: tiny)
    out = str(tmp_path / "repro")
    argv = ["reproduce", "--studies", "token-dynamics", "--out", out, "--quiet", "--no-plots", "--no-cache"]
    assert cli.main(argv) == 0
    record = io.read_json(os.path.join(out, "config.json"))
    assert record["studies"]["token-dynamics"]["status"] == "done" and record["ran"] == ["token-dynamics"]
    assert record["verdicts"]["1a"] == "open"  # 3 seeds decide nothing
    first = record["studies"]["token-dynamics"]["computed_seconds"]
    assert os.path.exists(os.path.join(out, "token-dynamics", "runs.csv"))
    assert "| 1a. Token dynamics" in open(os.path.join(out, "report.md")).read()
    assert cli.main(argv) == 0  # a rerun reuses the finished study and keeps the time it was computed in
    assert io.read_json(os.path.join(out, "config.json"))["studies"]["token-dynamics"]["computed_seconds"] == first
    assert cli.main([*argv, "--quick"]) == 2  # the directory of the default preset
    assert "quick" in capsys.readouterr().err

    def boom(cfg, out, *, quiet, plots):
        raise RuntimeError("the study broke")

    monkeypatch.setattr(token_dynamics, "main", boom)
    assert cli.main(argv) == 1  # a failed study: recorded, the report written, the command fails
    record = json.load(open(os.path.join(out, "config.json")))
    assert record["studies"]["token-dynamics"]["error"] == "RuntimeError: the study broke"
    assert "RuntimeError: the study broke" in open(os.path.join(out, "report.md")).read()
