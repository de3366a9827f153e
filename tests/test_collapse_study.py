"""The collapse study end to end on a tiny configuration, and its CLI."""

import dataclasses
import json
import os

import numpy as np
import pytest

from tokdyn import analysis, cli, data, io
from tokdyn.studies import collapse

pytestmark = pytest.mark.fast_compile

TINY = dict(shapes=("aniso2",), n_tokens=(2, 4), seeds=6, n_ratios=5, n_steps=1000, phase_noise=(0.5, 1.5),
            phase_tokens=(4,), momentum=(0.0, 0.9), repulsion_rel=(0.0, 1e-3), phase_seeds=2, phase_ratios=5,
            convergence_runs=16)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("collapse"))
    cfg = collapse.Config(**TINY)
    summary = collapse.main(cfg, out, quiet=True)
    return cfg, out, summary


def test_outputs_and_threshold(study):
    cfg, out, summary = study
    for name in ("threshold_check.csv", "jacobian_check.csv", "convergence.csv", "phase.csv", "config.json",
                 "summary.json", "phase_collapse.png", "phase_groups.png", "phase_momentum.png", "phase_repulsion.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    thr = io.read_csv(os.path.join(out, "threshold_check.csv"))
    assert len(thr["shape"]) == len(cfg.shapes) * len(cfg.n_tokens)
    assert np.all(np.abs(thr["rel_error"]) <= 0.1)
    assert np.all(thr["rate_below"] <= 0.1) and np.all(thr["rate_above"] >= 0.9)
    # the predicted tau_c is the mean of 2 lambda_max over the seeds' datasets, recomputed here
    import jax

    from tokdyn.engine import sweep

    key = jax.random.fold_in(jax.random.key(cfg.root_seed), sum(map(ord, "threshold_aniso2_T2")))
    tcs = [2 * np.linalg.eigvalsh(np.cov(np.asarray(data.point_cloud(jax.random.fold_in(key, s), "aniso2",
                                                                      cfg.n_points, 1.0)).T, bias=True)).max()
           for s in range(cfg.seeds)]
    np.testing.assert_allclose(thr["tau_c_pred"][0], np.mean(tcs), rtol=1e-4)
    assert len(sweep.load(os.path.join(out, "sweeps", "threshold_aniso2_T2"))) == cfg.seeds * len(cfg.ratios())


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


def test_resume_skips_finished_sweeps(study):
    cfg, out, _ = study
    chunks = os.path.join(out, "sweeps", "threshold_aniso2_T4", "chunks")
    before = {f: os.path.getmtime(os.path.join(chunks, f)) for f in os.listdir(chunks)}
    rows = collapse.threshold_part(cfg, out)  # all chunks on disk: nothing recomputed
    thr = io.read_csv(os.path.join(out, "threshold_check.csv"))
    np.testing.assert_allclose([r["ratio_50"] for r in rows], thr["ratio_50"])
    assert before and {f: os.path.getmtime(os.path.join(chunks, f)) for f in os.listdir(chunks)} == before


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
