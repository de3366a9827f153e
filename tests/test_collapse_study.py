"""The collapse study end to end on a tiny configuration, and its CLI as a hostile user runs it:
killed at random moments, its files truncated, given empty lists and absurd sizes (the cases every
study shares -- paths it cannot write, another configuration, --fresh -- are in
test_study_runner.py)."""

import dataclasses
import json
import os
import shutil
import warnings

import numpy as np
import pytest

import hostile
import killing
from conftest import compilation_cache_dir
from tokdyn import analysis, cli, data, io
from tokdyn.experiment import study as study_dir
from tokdyn.studies import collapse

TINY = dict(
    shapes=("aniso2",),
    n_tokens=(2, 4),
    seeds=6,
    n_ratios=5,
    n_steps=1000,
    phase_noise=(0.5, 1.5),
    phase_tokens=(4,),
    momentum=(0.0, 0.9),
    repulsion_rel=(0.0, 1e-3),
    phase_seeds=2,
    phase_ratios=5,
    convergence_runs=16,
    n_points=48,
)
# the command line of TINY (every field given spelled out: the runs of the command are the study of TINY)
SMALL = [
    "study",
    "collapse",
    *(
        x
        for k, v in TINY.items()
        for x in ("--" + k.replace("_", "-"), ",".join(map(str, v)) if isinstance(v, tuple) else str(v))
    ),
]
RESULTS = ("threshold_check.csv", "jacobian_check.csv", "convergence.csv", "phase.csv", "summary.json")
FIGURES = ("phase_collapse.png", "phase_groups.png", "phase_momentum.png", "phase_repulsion.png")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two uninterrupted runs of the command on TINY in this process: ``A`` with figures, then ``B``
    without (its programs compiled already). ``A`` is also the finished study the checks of its
    outputs read; the kill tests run the command in child processes that read this session's
    compilation cache (``cache``: the programs of ``A`` and ``B``, compiled alike, are loaded, not
    compiled again)."""
    root = tmp_path_factory.mktemp("collapse-cli")
    assert cli.main([*SMALL, "--out", str(root / "A"), "--quiet", "--no-cache"]) == 0
    assert cli.main([*SMALL, "--out", str(root / "B"), "--no-plots", "--quiet", "--no-cache"]) == 0
    yield dict(root=root, cache=compilation_cache_dir(), A=root / "A", B=root / "B")


@pytest.fixture(scope="module")
def study(runs):
    """``(config, directory, summary)`` of the finished study of TINY (the command's run ``A``)."""
    out = str(runs["A"])
    with open(os.path.join(out, "summary.json")) as f:
        return collapse.Config(**TINY), out, json.load(f)


@pytest.mark.full
def test_outputs_and_threshold(study):
    cfg, out, summary = study
    for name in (
        "threshold_check.csv",
        "jacobian_check.csv",
        "convergence.csv",
        "phase.csv",
        "config.json",
        "summary.json",
        "phase_collapse.png",
        "phase_groups.png",
        "phase_momentum.png",
        "phase_repulsion.png",
    ):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    thr = io.read_csv(os.path.join(out, "threshold_check.csv"))
    assert len(thr["shape"]) == len(cfg.shapes) * len(cfg.n_tokens)
    assert np.all(np.abs(thr["rel_error"]) <= 0.1)
    assert np.all(thr["rate_below"] <= 0.1) and np.all(thr["rate_above"] >= 0.9)
    # the predicted tau_c is the mean of 2 lambda_max over the seeds' datasets, recomputed here
    import jax

    from tokdyn.engine import sweep

    key = jax.random.fold_in(jax.random.key(cfg.root_seed), sum(map(ord, "threshold_aniso2_T2")))
    tcs = [
        2
        * np.linalg.eigvalsh(
            np.cov(np.asarray(data.point_cloud(jax.random.fold_in(key, s), "aniso2", cfg.n_points, 1.0)).T, bias=True)
        ).max()
        for s in range(cfg.seeds)
    ]
    np.testing.assert_allclose(thr["tau_c_pred"][0], np.mean(tcs), rtol=1e-4)
    assert len(sweep.load(os.path.join(out, "sweeps", "threshold_aniso2_T2"))) == cfg.seeds * len(cfg.ratios())


@pytest.mark.full
def test_jacobian_check_and_config(study):
    cfg, out, summary = study
    jac = io.read_csv(os.path.join(out, "jacobian_check.csv"))
    assert np.max(jac["abs_error"]) < 1e-4
    assert set(np.unique(jac["momentum"])) == {0.0, 0.5, 0.9}
    stable = jac["rho_num"] < 1
    assert np.array_equal(stable, jac["ratio"] > 1)
    saved = json.load(open(os.path.join(out, "config.json")))
    again = collapse.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()})
    assert again == cfg
    conv = io.read_csv(os.path.join(out, "convergence.csv"))
    assert summary["convergence_spearman"] > 0 and len(conv["rho"]) == 16


@pytest.mark.full
def test_resume_skips_finished_sweeps(study, tmp_path):
    cfg, finished, _ = study
    out = shutil.copytree(finished, tmp_path / "copy")
    chunks = os.path.join(out, "sweeps", "threshold_aniso2_T4", "chunks")
    before = {f: os.path.getmtime(os.path.join(chunks, f)) for f in os.listdir(chunks)}
    rows = collapse.threshold_part(cfg, str(out))  # all chunks on disk: nothing recomputed
    thr = io.read_csv(os.path.join(out, "threshold_check.csv"))
    np.testing.assert_allclose([r["ratio_50"] for r in rows], thr["ratio_50"])
    assert before and {f: os.path.getmtime(os.path.join(chunks, f)) for f in os.listdir(chunks)} == before


def test_a_micro_threshold_part_finds_the_predicted_collapse_temperature(tmp_path):
    """The study's headline in the default run, at a micro size (one data shape, T = 2, 3 seeds x 9
    ratios of tau / tau_c, 36 points: one sweep, one program): tokens collapse between 0.9 and 1.1
    tau_c, and the predicted tau_c is 2 lambda_max of the covariance of each seed's data (NumPy). The
    full tier runs the whole study (test_outputs_and_threshold and the command's tests)."""
    import jax

    cfg = collapse.Config(shapes=("aniso2",), n_tokens=(2,), seeds=3, n_ratios=5, n_steps=300, n_points=36)
    (row,) = collapse.threshold_part(cfg, str(tmp_path / "c"))
    assert row["n_runs"] == cfg.seeds * len(cfg.ratios()) == 27
    assert row["rate_below"] == 0.0 and row["rate_above"] == 1.0  # no collapse below 0.9 tau_c, all above 1.1
    assert abs(row["rel_error"]) <= 0.1
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), sum(map(ord, "threshold_aniso2_T2")))
    two_lambda = [
        2
        * np.linalg.eigvalsh(
            np.cov(np.asarray(data.point_cloud(jax.random.fold_in(key, s), "aniso2", 36, 1.0)).T, bias=True)
        ).max()
        for s in range(cfg.seeds)
    ]
    np.testing.assert_allclose(row["tau_c_pred"], np.mean(two_lambda), rtol=1e-4)


def test_crossing():
    assert collapse.crossing([0.5, 1.0, 2.0], [0.0, 0.0, 1.0]) == pytest.approx(np.sqrt(2.0))
    assert np.isnan(collapse.crossing([0.5, 1.0], [0.0, 0.2]))
    assert collapse.crossing([0.5, 1.0], [0.7, 1.0]) == 0.5


def test_config_and_cli_errors(capsys):
    with pytest.raises(ValueError, match="shapes"):
        collapse.Config(shapes=("nope",)).validate()
    with pytest.raises(ValueError, match="merge_rel"):
        collapse.Config(merge_rel=0.0).validate()
    with pytest.raises(ValueError, match="momentum"):
        collapse.Config(momentum=(1.0,)).validate()
    assert cli.main(["study", "collapse", "--tol-rel", "-1"]) == 2
    assert "tol_rel" in capsys.readouterr().err
    assert dataclasses.fields(collapse.Config)  # every field is a CLI option
    assert analysis.MERGE_REL == collapse.Config().merge_rel


# ---------------------------------------------------------------------------------------------- the command


@pytest.mark.full
def test_command_outputs_and_record(runs):
    a = runs["A"]
    for name in (*RESULTS, *FIGURES, "config.json", study_dir.STAMP):
        assert (a / name).stat().st_size > 0, name
    record = json.loads((a / "config.json").read_text())
    assert {"study", "config", "tokdyn", "sources", "environment", "timings", "shapes"} <= set(record)
    assert record["config"]["seeds"] == TINY["seeds"] and record["shapes"]["aniso2"]
    parts = sorted(os.listdir(a / "parts"))
    assert parts == [
        "convergence.json",
        "jacobian.json",
        "sweep_momentum.npz",
        "sweep_phase_T4.npz",
        "sweep_repulsion.npz",
        "sweep_threshold_aniso2_T2.npz",
        "sweep_threshold_aniso2_T4.npz",
    ]
    assert sorted(os.listdir(a / "sweeps")) == [
        "momentum",
        "phase_T4",
        "repulsion",
        "threshold_aniso2_T2",
        "threshold_aniso2_T4",
    ]
    killing.same_files(a, runs["B"], RESULTS)  # figures or not, the same results


@pytest.mark.full
def test_killed_midway_resumes_to_the_same_files(runs):
    """SIGKILL as soon as the jacobian part is written (the threshold sweep and that part done, the
    convergence and phase parts not yet), then the same command: the files of an uninterrupted run."""
    killing.resumes_after_a_kill_at(
        [*SMALL, "--no-plots", "--quiet", "--out", runs["root"] / "K"],
        runs["cache"],
        runs["B"],
        RESULTS,
        os.path.join("parts", "jacobian.json"),
    )


@pytest.mark.slow  # the kills at random moments; the full run (-m full) keeps the kill midway above
def test_killed_at_random_moments_resumes_to_the_same_files(runs, tmp_path):
    killing.resumes_after_timed_kills(SMALL, tmp_path, runs["B"], RESULTS, seed=5, low=0.3)


@pytest.mark.full
def test_truncated_parts_chunks_and_manifests_are_named_and_recomputed(runs, tmp_path):
    d = tmp_path / "D"
    shutil.copytree(runs["B"], d)
    sweep = d / "sweeps" / "momentum"
    hurt = [
        d / "parts" / "jacobian.json",
        d / "parts" / "convergence.json",
        d / "parts" / "sweep_momentum.npz",
        sweep / "manifest.json",
        *[sweep / "chunks" / f for f in os.listdir(sweep / "chunks")],
    ]
    for path in hurt:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main([*SMALL, "--out", str(d), "--no-plots", "--no-cache"]) == 0
    err = " ".join(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    for path in hurt:
        assert f"{path} could not be read" in err, path  # parts by the study runner, the sweep by its engine
        assert any(n.startswith(path.name) for n in os.listdir(path.parent / "corrupt"))
    killing.same_files(runs["B"], d, RESULTS)
    assert sorted(os.listdir(sweep)) == ["chunks", "corrupt", "manifest.json"]


REFUSED = [  # the cases, and more of the same kind: (options, words the message holds)
    (["--shapes", ""], "shapes must list at least one value"),
    (["--momentum", ""], "momentum must list at least one value"),
    (["--n-tokens", ""], "n_tokens must list at least one value"),
    (["--phase-tokens", ""], "phase_tokens must list at least one value"),
    (["--phase-noise", ""], "phase_noise must list at least one value"),
    (["--repulsion-rel", ""], "repulsion_rel must list at least one value"),
    (["--phase-tokens", "100"], "phase_tokens must not exceed n_points=48"),
    (["--ratio-max", "nan"], "ratio_max must be finite"),
    (["--root-seed", "-1"], "root_seed must be an int in [0, 4294967295]"),
    (["--n-steps", str(10**10)], "n_steps must be at most 2,147,483,647"),
    (["--seeds", "1000000000"], "make seeds smaller"),
    (["--seeds", str(10**12)], "make seeds smaller"),
    (["--phase-seeds", str(10**8)], "make phase_seeds smaller"),
    (["--n-ratios", str(10**9)], "make n_ratios smaller"),
    (["--n-points", str(12 * 10**8)], "make n_points smaller"),
    (["--convergence-runs", str(10**9)], "make convergence_runs smaller"),
]


@pytest.mark.parametrize("options, words", REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_bad_options_exit_2_before_any_work(options, words, tmp_path, capsys):
    hostile.refused_before_any_work([*SMALL, *options], words, tmp_path, capsys)


def test_estimate_of_the_default_run():
    est = collapse.Config().estimate()
    assert est.models > 7000 and 30 < est.seconds < 3600  # about 75 s on our 2-core CPU
    with pytest.raises(study_dir.Refused, match="make seeds smaller"):
        collapse.Config(seeds=10**9).estimate()
