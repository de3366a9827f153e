"""`tokdyn sweep token-dynamics` and `tokdyn plot heatmap`: outputs, consistency with the study,
resume and refusals, bad input."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import killing
from conftest import child_env
from tokdyn import cli, io
from tokdyn.engine import sweep
from tokdyn.experiment import study
from tokdyn.stats import summary
from tokdyn.studies import token_dynamics as td
from tokdyn.studies import token_dynamics_sweep as tds

SMALL = [
    "--temperature",
    "0.5,2",
    "--repulsion",
    "0,0.1",
    "--momentum",
    "0,0.5",
    "--noise",
    "0.3",
    "--n-clusters",
    "3,4",
    "--seeds",
    "4",
    "--dim",
    "2",
    "--points-per-cluster",
    "10",
    "--no-cache",
    "--n-resamples",
    "200",
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sw") / "run")
    assert (
        cli.main(["sweep", "token-dynamics", "--out", out, "--chunk-size", "7", "--no-plots", "--quiet", *SMALL]) == 0
    )
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
        sel = (
            (res["temperature"] == settings["temperature"][i])
            & (res["repulsion"] == settings["repulsion"][i])
            & (res["momentum"] == settings["momentum"][i])
        )
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
    cfg = tds.Config(
        temperature="1",
        repulsion="0.05",
        momentum="0.5",
        noise="0.3",
        n_clusters="3,4",
        seeds=4,
        dim=2,
        points_per_cluster=10,
    )
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
    assert (
        cli.main(["sweep", "token-dynamics", "--out", swept, "--quiet", "--no-plots", "--chunk-size", "7", *changed])
        == 2
    )  # a usage error: the directory holds another sweep
    assert "another configuration (temperature: 0.5,2 there, 0.5,3 now)" in capsys.readouterr().err
    before = sweep.load(swept)
    chunk = sorted(os.listdir(os.path.join(swept, "chunks")))[1]
    os.remove(os.path.join(swept, "chunks", chunk))  # a lost chunk is redone when the command runs again
    assert (
        cli.main(["sweep", "token-dynamics", "--out", swept, "--quiet", "--no-plots", "--chunk-size", "7", *SMALL]) == 0
    )
    after = sweep.load(swept)
    for f in ("ari", "steps", "index"):
        np.testing.assert_array_equal(after[f], before[f])


@pytest.mark.parametrize(
    "args, match",
    [
        (["--temperature", "logspace:0:1:5"], "logspace endpoints must be > 0"),
        (["--repulsion", "linspace:0:1"], "'repulsion'"),
        (["--momentum", "0,1.5"], "momentum"),
        (["--n-clusters", "2.5"], "n_clusters values must be integers"),
        (["--noise", ","], "'noise' has no values"),
    ],
)
def test_bad_axes_are_named(args, match, tmp_path, capsys):
    assert cli.main(["sweep", "token-dynamics", "--out", str(tmp_path / "x"), "--quiet", *args]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything ran


def test_plot_heatmap(swept, capsys):
    assert (
        cli.main(
            [
                "plot",
                "heatmap",
                swept,
                "--x",
                "temperature",
                "--y",
                "repulsion",
                "--metric",
                "steps",
                "--where",
                "momentum=0.5",
            ]
        )
        == 0
    )
    path = capsys.readouterr().out.strip()
    assert os.path.exists(path) and path.endswith(".png")
    cond = io.read_csv(os.path.join(swept, "summary.csv"))
    job = tds.heatmap_job(swept, cond, "temperature", "repulsion", "steps", where={"momentum": 0.5})
    res = sweep.load(swept)
    sel = (res["temperature"] == 2.0) & (res["repulsion"] == 0.0) & (res["momentum"] == 0.5)
    np.testing.assert_allclose(job["z"][0][1], res["steps"][sel].mean())
    xy = ["--x", "temperature", "--y", "repulsion"]
    for argv, match in (
        (["--x", "temperature", "--y", "temperature"], "different axes"),
        (["--x", "nope", "--y", "repulsion"], "x='nope' is not an axis"),
        ([*xy, "--metric", "foo"], "metric='foo'"),
        ([*xy, "--where", "momentum"], "name=value"),
        ([*xy, "--where", "momentum=7"], "where=momentum=7: the sweep's momentum takes the values [0.0, 0.5]"),
        ([*xy, "--where", "temperature=2"], "where fixes 'temperature', which the heatmap spans"),
        ([*xy, "--where", "momentum=0,momentum=0.5"], "where fixes 'momentum' twice"),
        ([*xy, "--stat", "median"], "stat"),
        ([*xy, "--where", "nope=1"], "where='nope' is not an axis"),
    ):
        assert cli.main(["plot", "heatmap", swept, *argv]) == 2, argv  # every usage error: 2, never a traceback
        assert match in capsys.readouterr().err, argv


def test_plot_heatmap_of_no_sweep_a_damaged_or_unfinished_one(swept, tmp_path, capsys):
    xy = ["--x", "temperature", "--y", "repulsion"]
    assert cli.main(["plot", "heatmap", str(tmp_path / "nothing"), *xy]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert cli.main(["plot", "heatmap", str(tmp_path), *xy]) == 2
    assert "no sweep found" in capsys.readouterr().err
    d = str(tmp_path / "copy")
    shutil.copytree(swept, d)
    chunk = os.path.join(d, "chunks", sorted(os.listdir(os.path.join(d, "chunks")))[3])
    os.remove(chunk)  # an unfinished sweep (killed, say)
    assert cli.main(["plot", "heatmap", d, *xy]) == 2
    assert "unfinished sweep (1 chunk(s) missing, the first for runs [21, 28))" in capsys.readouterr().err
    shutil.copy(os.path.join(swept, "chunks", os.path.basename(chunk)), chunk)
    manifest = os.path.join(d, "manifest.json")
    text = open(manifest).read()
    open(manifest, "w").write(text[: len(text) // 3])  # issue 31, case 4: a truncated manifest
    assert cli.main(["plot", "heatmap", d, *xy]) == 2
    assert f"{manifest} is corrupt (not readable JSON" in capsys.readouterr().err
    open(manifest, "w").write(text)
    data = open(chunk, "rb").read()
    open(chunk, "wb").write(data[:-10])  # damaged after the sweep finished, summary.csv cut short too
    summary_csv = os.path.join(d, "summary.csv")
    whole = open(summary_csv).read()
    open(summary_csv, "w").write(whole[: len(whole) // 2])
    assert cli.main(["plot", "heatmap", d, *xy]) == 2
    err = capsys.readouterr().err
    assert chunk in err and "truncated" in err and "run the sweep command again" in err
    shutil.copy(os.path.join(swept, "chunks", os.path.basename(chunk)), chunk)
    assert cli.main(["plot", "heatmap", d, *xy]) == 0  # summary.csv recomputed from the chunks
    assert open(summary_csv).read() == whole
    open(summary_csv, "w", newline="").write(whole[:-4])  # the last number cut inside: every row still there
    assert cli.main(["plot", "heatmap", d, *xy]) == 0
    assert open(summary_csv).read() == whole


@pytest.mark.full
def test_identical_on_one_and_four_devices(tmp_path):
    """The token-dynamics sweep in a fresh process with 4 forced host devices gives the same bits
    as this process (chunk 7: chunks padded unevenly over the devices)."""
    import subprocess
    import sys

    cfg = tds.Config(
        temperature="0.5,2",
        repulsion="0,0.1",
        momentum="",
        noise="",
        n_clusters="3,5",
        seeds=3,
        dim=2,
        points_per_cluster=10,
    )
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
    one = sweep.run(
        cfg.task(),
        cfg.grid(),
        key=jax.random.key(0),
        common_random_numbers=True,
        chunk_size=1024,
        progress=False,
        devices=jax.devices()[:1],
    )
    for f in ("ari", "steps", "sse"):
        np.testing.assert_array_equal(four[f], one[f])


# ---------------------------------------------------------------------------------------------- issue 31


ONE = [
    "--temperature",
    "1",
    "--repulsion",
    "0",
    "--momentum",
    "0",
    "--noise",
    "0.3",
    "--n-clusters",
    "3",
    "--no-cache",
    "--quiet",
]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--seeds", "4000000000"], "needs about 89.4 TiB at once, more than the"),  # issue 31, case 8: no 5.5-day ETA
        (["--seeds", str(10**12)], "seeds=1000000000000 makes 1,000,000,000,000 runs"),
        (
            ["--seeds", "3000000", "--temperature", "linspace:0.1:2:2000"],
            "runs (temperature (2000) x repulsion (1) x "
            "momentum (1) x noise (1) x n_clusters (1) x "
            "3000000 seeds), more than the 4,294,967,295",
        ),
        (
            ["--root-seed", str(2**32)],
            "root_seed must be an int in [0, 4294967295] (a PRNG key keeps 32 bits of it: a larger seed would repeat a smaller one's draws), got 4294967296",
        ),
        (["--seeds", "100", "--n-resamples", str(10**9)], "make n_resamples smaller"),
        (["--seeds", "100000000", "--chunk-size", "100000000"], "chunk_size makes an array of"),
        (["--seeds", "0"], "seeds must be an int >= 1"),
    ],
)
def test_absurd_sizes_exit_2_naming_the_option_before_any_work(args, match, tmp_path, capsys):
    assert cli.main(["sweep", "token-dynamics", "--out", str(tmp_path / "x"), *ONE, *args]) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert not (tmp_path / "x").exists()  # refused before any work: nothing written


def test_a_long_sweep_says_so_up_front(capsys):
    cfg = tds.Config(seeds=5000).validate()  # 24.75 million runs: fits, but takes hours
    est = cfg.estimate()
    assert est.models == 4950 * 5000 and est.seconds > 3600 and est.option
    lines = []
    study.check_resources(tds.STUDY, est, note=lines.append)
    assert "will take about" in lines[0] and "hours" in lines[0] and "24,750,000 models or runs" in lines[0]


@pytest.mark.full
def test_a_sweep_into_a_token_dynamics_study_is_refused_and_fresh_clears_it(tmp_path, capsys):
    """Issue 31, case 6: the sweep once overwrote a token-dynamics study's summary.csv and
    config.json; now it is refused naming the study, and --fresh starts afresh leaving nothing of it."""
    d = str(tmp_path / "td")
    assert (
        cli.main(
            [
                "study",
                "token-dynamics",
                "--seeds",
                "2",
                "--dim",
                "2",
                "--points-per-cluster",
                "8",
                "--noise",
                "0.3",
                "--n-clusters",
                "3",
                "--no-cache",
                "--quiet",
                "--out",
                d,
            ]
        )
        == 0
    )
    before = {f: open(os.path.join(d, f), "rb").read() for f in ("summary.csv", "config.json", "runs.csv")}
    plots = os.listdir(os.path.join(d, "plots"))
    assert plots
    argv = ["sweep", "token-dynamics", "--out", d, "--no-plots", *SMALL]
    assert cli.main(argv) == 2
    assert "holds the 'token-dynamics' study, not 'token-dynamics-sweep'" in capsys.readouterr().err
    assert {f: open(os.path.join(d, f), "rb").read() for f in before} == before
    assert cli.main([*argv, "--fresh"]) == 0
    left = set(os.listdir(d))
    assert not left & {"runs.csv", "overall.csv", "stat_tests.json", "plots"}, left  # no stale file
    assert json.load(open(os.path.join(d, "config.json")))["study"] == "token-dynamics-sweep"
    assert cli.main(["study", "token-dynamics", "--seeds", "2", "--no-cache", "--quiet", "--out", d]) == 2
    assert "holds the 'token-dynamics-sweep' study, not 'token-dynamics'" in capsys.readouterr().err


def test_damaged_chunks_and_manifest_are_named_set_aside_and_recomputed(swept, tmp_path, capsys):
    d = str(tmp_path / "copy")
    shutil.copytree(swept, d)
    ref = sweep.load(d)
    names = sorted(c for c in os.listdir(os.path.join(d, "chunks")) if c.endswith(".npz"))
    cut = os.path.join(d, "chunks", names[2])
    data = open(cut, "rb").read()
    open(cut, "wb").write(data[: len(data) // 2])
    altered = os.path.join(d, "chunks", names[4])
    data = bytearray(open(altered, "rb").read())
    data[-40] ^= 1  # one bit flipped: the checksum, not the zip, catches it
    open(altered, "wb").write(bytes(data))
    manifest = os.path.join(d, "manifest.json")
    open(manifest, "w").write(open(manifest).read()[:200])
    argv = ["sweep", "token-dynamics", "--out", d, "--chunk-size", "7", "--no-plots", *SMALL]
    with pytest.warns(RuntimeWarning) as caught:
        assert cli.main(argv) == 0
    said = " ".join(str(w.message) for w in caught)
    for path in (cut, altered, manifest):
        assert path in said and "set aside" in said, said
    assert "truncated" in said and "SHA-256" in said
    res = sweep.load(d)
    for f in ("ari", "steps", "sse", "index"):
        np.testing.assert_array_equal(res[f], ref[f])
    for f in ("summary.csv", "settings.csv", "pareto.csv"):
        assert open(os.path.join(d, f)).read() == open(os.path.join(swept, f)).read()
    stamp = os.path.join(d, "study.json")  # the directory's stamp: refused naming it (the study runner's rule)
    open(stamp, "w").write(open(stamp).read()[:50])
    assert cli.main(argv) == 2
    assert f"{stamp} cannot be read" in capsys.readouterr().err


PART = """
import json, sys
from tokdyn.studies import token_dynamics_sweep as tds
cfg = tds.Config(**json.loads(sys.argv[1]))
tds.main(cfg, sys.argv[2], quiet=True, plots=False, part=(int(sys.argv[3]), 2))
"""


@pytest.mark.full
def test_two_processes_share_one_sweep_directory(swept, tmp_path):
    """Two processes started at once on one new directory (part 1 may come first: it waits for
    part 0's stamp): part 0 writes the analysis once both parts' chunks are there, the same bytes
    as one process's."""
    cfg = tds.Config(**json.load(open(os.path.join(swept, "config.json")))["config"])
    d = str(tmp_path / "shared")
    env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PART, json.dumps(dataclasses.asdict(cfg)), d, str(i)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 0)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for f in ("summary.csv", "settings.csv", "pareto.csv", "study.json"):
        assert open(os.path.join(d, f)).read() == open(os.path.join(swept, f)).read(), f
    with pytest.raises(study.Refused, match="fresh=True with part"):
        tds.main(cfg, d, quiet=True, fresh=True, part=(0, 2))


def _kill_after_chunks(args, cache, out, chunks: int) -> int:
    """Start ``tokdyn ARGS --out OUT`` and SIGKILL it as soon as ``out/chunks`` holds ``chunks``
    chunk files (a moment inside the sweep, whatever the machine's speed); returns how many it held."""
    d = os.path.join(out, "chunks")
    count = lambda: len([c for c in os.listdir(d) if c.endswith(".npz")]) if os.path.isdir(d) else 0  # noqa: E731
    p = subprocess.Popen(
        [sys.executable, "-m", "tokdyn.cli", *map(str, args), "--out", str(out)],
        env=killing.env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while p.poll() is None and count() < chunks:
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return count()


@pytest.mark.full
def test_sigkill_midway_then_resume_is_identical(tmp_path):
    """The sweep command killed (SIGKILL) once it holds 5 of its 25 chunks, then run again, ends
    with the files of an uninterrupted run, byte for byte, and no chunk set aside."""
    args = [*KILLED, "--chunk-size", "64"]  # 1,600 runs in 25 chunks
    cache, killed = tmp_path / "cache", tmp_path / "killed"
    code, _, err = killing.run_cli([*args, "--out", tmp_path / "whole"], cache)
    assert code == 0, err
    held = _kill_after_chunks(args, cache, killed, 5)
    assert held < 25 and not os.path.exists(killed / "config.json"), held  # killed inside the sweep
    code, _, err = killing.run_cli([*args, "--out", killed], cache)
    assert code == 0, err
    killing.same_files(tmp_path / "whole", killed, ["summary.csv", "settings.csv", "pareto.csv", "study.json"])
    a, b = sweep.load(str(tmp_path / "whole")), sweep.load(str(killed))
    for f in ("ari", "steps", "sse", "nmi", "index"):
        np.testing.assert_array_equal(a[f], b[f])
    assert not os.path.exists(killed / "chunks" / "corrupt")  # a kill never leaves half a chunk


KILLED = [
    "sweep",
    "token-dynamics",
    "--temperature",
    "0.5,2",
    "--repulsion",
    "0,0.1",
    "--momentum",
    "0",
    "--noise",
    "0.3",
    "--n-clusters",
    "3",
    "--seeds",
    "400",
    "--dim",
    "2",
    "--points-per-cluster",
    "10",
    "--n-resamples",
    "200",
    "--no-plots",
    "--quiet",
]


@pytest.mark.slow  # four kills at random moments; the full run (-m full) keeps the kill midway above
def test_sigkill_at_random_moments_then_resume_is_identical(tmp_path):
    """The sweep command killed (SIGKILL) at random moments, each run resuming the last one's
    chunks (three kills at a random number of finished chunks, then one at a random time, which
    may fall in the start, the sweep or the analysis), ends with the files of an uninterrupted
    run, byte for byte."""
    args = [*KILLED[:-4], "--chunk-size", "64", *KILLED[-4:]]  # 1,600 runs in 25 chunks
    cache, killed = tmp_path / "cache", tmp_path / "killed"
    code, seconds, err = killing.run_cli([*args, "--out", tmp_path / "whole"], cache)
    assert code == 0, err
    rng = np.random.default_rng(31)
    held = [_kill_after_chunks(args, cache, killed, int(t)) for t in np.sort(rng.choice(np.arange(1, 21), 3, False))]
    assert min(held) < 25 and not os.path.exists(killed / "config.json"), held  # killed inside the sweep
    killing.kill_at_random_moments([*args, "--out", killed], cache, seconds / 2, kills=1, seed=31)
    killing.same_files(tmp_path / "whole", killed, ["summary.csv", "settings.csv", "pareto.csv", "study.json"])
    a, b = sweep.load(str(tmp_path / "whole")), sweep.load(str(killed))
    for f in ("ari", "steps", "sse", "nmi", "index"):
        np.testing.assert_array_equal(a[f], b[f])
    assert not os.path.exists(killed / "chunks" / "corrupt")  # a kill never leaves half a chunk
