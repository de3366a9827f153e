"""`tokdyn sweep token-dynamics` and `tokdyn plot heatmap`: outputs, consistency with the study,
resume and refusals, bad input."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import child_env
from tokdyn import cli, io
from tokdyn.engine import sweep
from tokdyn.stats import summary
from tokdyn.studies import token_dynamics as td
from tokdyn.studies import token_dynamics_sweep as tds

SMALL = ["--temperature", "0.5,2", "--repulsion", "0,0.1", "--momentum", "0,0.5", "--noise", "0.3",
         "--n-clusters", "3,4", "--seeds", "4", "--dim", "2", "--points-per-cluster", "10", "--no-cache",
         "--n-resamples", "200"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sw") / "run")
    assert cli.main(["sweep", "token-dynamics", "--out", out, "--chunk-size", "7", "--no-plots", "--quiet", *SMALL]) == 0
    return out


def test_outputs_are_consistent(swept):
    res = sweep.load(swept)
    assert len(res) == 2 * 2 * 2 * 1 * 2 * 4
    cond = io.read_csv(os.path.join(swept, "summary.csv"))
    ref = summary.condition_stats(res, tds.METRICS)
    for k in ("ari_mean", "steps_mean", "collapsed_mean"):
        np.testing.assert_allclose(cond[k], ref[k], rtol=1e-9)
    settings = io.read_csv(os.path.join(swept, "settings.csv"))
    assert len(settings["temperature"]) == 8
    # pooled over noise and K, per seed, then averaged: equals the plain mean over the setting's runs
    for i in range(8):
        sel = ((res["temperature"] == settings["temperature"][i]) & (res["repulsion"] == settings["repulsion"][i])
               & (res["momentum"] == settings["momentum"][i]))
        np.testing.assert_allclose(settings["ari_mean"][i], res["ari"][sel].mean(), rtol=1e-6)
        assert settings["ari_low"][i] <= settings["ari_mean"][i] <= settings["ari_high"][i]
    front = io.read_csv(os.path.join(swept, "pareto.csv"))
    steps, ari = settings["steps_mean"], settings["ari_mean"]
    for s, a in zip(front["steps_mean"], front["ari_mean"]):  # nothing dominates a front point
        assert not np.any((steps <= s) & (ari >= a) & ((steps < s) | (ari > a)))
    assert len(front["steps_mean"]) == int(settings["on_front"].astype(bool).sum()) >= 1
    text = open(os.path.join(swept, "report.md")).read()
    assert "Best regimes" in text and "Pareto front" in text
    cfg = json.load(open(os.path.join(swept, "config.json")))
    assert cfg["config"]["seeds"] == 4 and cfg["timings"]["n_runs"] == len(res)


def test_sweep_agrees_with_the_study(swept):
    """The study is a preset of the same engine: its inertia+repulsion rows at (K, noise) equal a
    sweep at temperature 1, momentum 0.5, repulsion 0.05 (same root seed, same seeds)."""
    study = td.Config(seeds=4, noise=(0.3,), n_clusters=(3, 4), dim=2, points_per_cluster=10)
    runs = td.simulate(study)
    cfg = tds.Config(temperature="1", repulsion="0.05", momentum="0.5", noise="0.3", n_clusters="3,4", seeds=4, dim=2,
                     points_per_cluster=10)
    res = sweep.run(cfg.task(), cfg.grid(), key=jax.random.key(0), common_random_numbers=True, progress=False)
    sel = runs["method"] == "inertia+repulsion"
    order = np.lexsort((res["seed"], res["noise"], res["n_clusters"]))  # the study's row order
    # the study takes its knobs from a method table, the sweep from its axes: two programs, equal up
    # to float32 rounding, which may move a run near a split elsewhere: all but one run must agree
    same = np.ones(len(order), bool)
    for f in ("ari", "steps", "sse"):
        same &= np.isclose(res[f][order], runs[f][sel], rtol=1e-5, atol=1e-6)
    assert same.sum() >= len(same) - 1, same


def test_resume_and_refusals(swept, tmp_path, capsys):
    changed = [a if a != "0.5,2" else "0.5,3" for a in SMALL]
    assert cli.main(["sweep", "token-dynamics", "--out", swept, "--quiet", "--no-plots", "--chunk-size", "7",
                     *changed]) == 2  # a usage error: the directory holds another sweep
    assert "different arguments" in capsys.readouterr().err
    before = sweep.load(swept)
    chunk = sorted(os.listdir(os.path.join(swept, "chunks")))[1]
    os.remove(os.path.join(swept, "chunks", chunk))  # a lost chunk is redone when the command runs again
    assert cli.main(["sweep", "token-dynamics", "--out", swept, "--quiet", "--no-plots", "--chunk-size", "7",
                     *SMALL]) == 0
    after = sweep.load(swept)
    for f in ("ari", "steps", "index"):
        np.testing.assert_array_equal(after[f], before[f])


@pytest.mark.parametrize("args, match", [
    (["--temperature", "logspace:0:1:5"], "logspace endpoints must be > 0"),
    (["--repulsion", "linspace:0:1"], "'repulsion'"),
    (["--momentum", "0,1.5"], "momentum"),
    (["--n-clusters", "2.5"], "n_clusters values must be integers"),
    (["--noise", ","], "'noise' has no values"),
])
def test_bad_axes_are_named(args, match, tmp_path, capsys):
    assert cli.main(["sweep", "token-dynamics", "--out", str(tmp_path / "x"), "--quiet", *args]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything ran


def test_plot_heatmap(swept, capsys):
    assert cli.main(["plot", "heatmap", swept, "--x", "temperature", "--y", "repulsion", "--metric", "steps",
                     "--where", "momentum=0.5"]) == 0
    path = capsys.readouterr().out.strip()
    assert os.path.exists(path) and path.endswith(".png")
    cond = io.read_csv(os.path.join(swept, "summary.csv"))
    job = tds.heatmap_job(swept, cond, "temperature", "repulsion", "steps", where={"momentum": 0.5})
    res = sweep.load(swept)
    sel = (res["temperature"] == 2.0) & (res["repulsion"] == 0.0) & (res["momentum"] == 0.5)
    np.testing.assert_allclose(job["z"][0][1], res["steps"][sel].mean())
    for argv, match in ((["--x", "temperature", "--y", "temperature"], "different axes"),
                        (["--x", "nope", "--y", "repulsion"], "x='nope' is not an axis"),
                        (["--x", "temperature", "--y", "repulsion", "--metric", "foo"], "metric='foo'"),
                        (["--x", "temperature", "--y", "repulsion", "--where", "momentum"], "name=value")):
        assert cli.main(["plot", "heatmap", swept, *argv]) in (1, 2)
        assert match in capsys.readouterr().err


def test_identical_on_one_and_four_devices(tmp_path):
    """The token-dynamics sweep in a fresh process with 4 forced host devices gives the same bits
    as this process (chunk 7: chunks padded unevenly over the devices)."""
    import subprocess
    import sys

    cfg = tds.Config(temperature="0.5,2", repulsion="0,0.1", momentum="", noise="", n_clusters="3,5", seeds=3, dim=2,
                     points_per_cluster=10)
    code = (
        "import sys, numpy as np, jax\n"
        "from tokdyn.engine import sweep\n"
        "from tokdyn.studies import token_dynamics_sweep as tds\n"
        "assert len(jax.devices()) == 4\n"
        f"cfg = tds.{cfg!r}\n"
        "r = sweep.run(cfg.task(), cfg.grid(), key=jax.random.key(0), common_random_numbers=True, chunk_size=7,"
        " progress=False)\n"
        "np.savez(sys.argv[1], ari=r['ari'], steps=r['steps'], sse=r['sse'])\n"
    )
    env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    path = str(tmp_path / "four.npz")
    subprocess.run([sys.executable, "-c", code, path], check=True, env=env)
    four = np.load(path)
    one = sweep.run(cfg.task(), cfg.grid(), key=jax.random.key(0), common_random_numbers=True, chunk_size=1024,
                    progress=False, devices=jax.devices()[:1])
    for f in ("ari", "steps", "sse"):
        np.testing.assert_array_equal(four[f], one[f])
