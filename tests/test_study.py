import dataclasses
import json

import jax
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from tokdyn import cli, data, dynamics, io
from tokdyn.engine import sweep
from tokdyn.experiment import study as study_dir
from tokdyn.studies import token_dynamics as td

TINY = td.Config(seeds=4, noise=(0.3, 0.9), n_clusters=(3, 4), dim=4, points_per_cluster=12)


@pytest.fixture(scope="module", autouse=True)
def as_the_command_runs():
    """Every study of this module runs under the matmul precision the command runs its studies under
    (``--matmul-precision``'s default): the command's run of TINY reuses the programs of the
    module's own runs of it."""
    with study_dir.matmul_precision():
        yield


def test_runs_match_public_api_and_sklearn():
    runs = td.simulate(TINY)
    assert runs["seed"].size == 4 * 2 * 2 * 4
    task = TINY.task()
    agree = checked = 0
    for i in range(0, runs["seed"].size, 5):
        seed, k, nz, name = int(runs["seed"][i]), int(runs["n_clusters"][i]), float(runs["noise"][i]), runs["method"][i]
        key = jax.random.fold_in(jax.random.key(TINY.root_seed), seed)
        c = data.gaussian_clusters(
            key,
            k,
            points_per_cluster=TINY.points_per_cluster,
            dim=TINY.dim,
            noise=np.float32(nz),
            center_box=TINY.center_box,
            max_clusters=task.max_clusters,
        )
        t0 = dynamics.forgy(c.x, c.init_noise, c.mask, TINY.n_tokens)
        r = dynamics.run(c.x, t0, dynamics.METHODS[name], mask=c.mask)
        valid = np.asarray(c.mask)
        yt, yp = np.asarray(c.labels)[valid], np.asarray(r.labels)[valid]
        sse = sum(((np.asarray(c.x)[valid][j] - np.asarray(r.tokens)[yp[j]]) ** 2).sum() for j in range(valid.sum()))
        # the sweep's per-run program and these public calls are two programs: a last-bit difference
        # can move a run's stopping step by one or a point near a tie to another token
        assert abs(runs["steps"][i] - int(r.steps)) <= 1
        checked += 1
        agree += (
            runs["steps"][i] == int(r.steps)
            and abs(runs["ari"][i] - adjusted_rand_score(yt, yp)) < 1e-5
            and abs(runs["nmi"][i] - normalized_mutual_info_score(yt, yp)) < 1e-5
            and abs(runs["sse"][i] - sse) < 1e-3 * max(1.0, sse)
            and bool(runs["collapsed"][i]) == (len(set(yp.tolist())) < min(k, TINY.n_tokens))
        )
    assert agree >= checked - 1, (agree, checked)


@pytest.mark.full
def test_methods_share_data_and_initial_tokens():
    """Within a seed and condition all methods start identically: with momentum and repulsion 0
    every 'method' is the baseline, so all four must give the same results."""
    cfg = td.Config(seeds=3, noise=(0.6,), n_clusters=(4,), dim=4, points_per_cluster=12)
    runs = td.simulate(cfg)
    base = runs["method"] == "baseline"
    inertia = runs["method"] == "inertia"
    assert not np.array_equal(runs["steps"][base], runs["steps"][inertia])
    # the baseline's row twice in one method table (a Config may not list a method twice)
    one = td.Config(**{**cfg.__dict__, "methods": ("baseline",)})
    task = dataclasses.replace(one.task(), methods=one.task().methods * 2)
    r2 = sweep.run(task, one.grid(2), key=jax.random.key(cfg.root_seed), common_random_numbers=True, progress=False)
    r2 = {"ari": r2["ari"][np.lexsort((r2["seed"], r2["method"]))]}
    np.testing.assert_array_equal(r2["ari"][:3], r2["ari"][3:])  # rows of one program: the same bits
    # another method table is another program: equal up to rounding, which a run near a split may
    # turn into another end; all but one run must agree
    assert np.sum(np.isclose(r2["ari"][:3], runs["ari"][base], rtol=0, atol=1e-6)) >= 2


def test_cli_writes_every_output(tmp_path, capsys):
    out = tmp_path / "td"
    rc = cli.main(
        [
            "study",
            "token-dynamics",
            "--out",
            str(out),
            "--seeds",
            "4",
            "--noise",
            "0.3,0.9",
            "--n-clusters",
            "3,4",
            "--dim",
            "4",
            "--points-per-cluster",
            "12",
            "--no-cache",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "published" in printed and "baseline" in printed
    runs = io.read_csv(out / "runs.csv")
    assert list(runs) == [
        "method",
        "n_clusters",
        "noise",
        "seed",
        "ari",
        "nmi",
        "sse",
        "steps",
        "converged",
        "collapsed",
    ]
    assert runs["seed"].size == 4 * 2 * 2 * 4
    summary = io.read_csv(out / "summary.csv")
    assert summary["method"].size == 4 * 2 * 2 and "ari_mean" in summary and "steps_std" in summary
    overall = io.read_csv(out / "overall.csv")
    for name in td.PUBLISHED_OVERALL:
        sel = runs["method"] == name
        assert abs(overall["ari_mean"][list(overall["method"]).index(name)] - runs["ari"][sel].mean()) < 1e-5
    tests = json.loads((out / "stat_tests.json").read_text())
    assert len(tests) == 3 * 4 and {"t", "p", "p_holm", "p_bonferroni", "d"} <= set(tests[0])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["seeds"] == 4 and "jax" in cfg["environment"]
    for name in ("ari_mean", "steps_mean", "collapsed_rate"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    # summary.md holds every condition's table; the terminal says which one it shows and where the rest is
    text = (out / "summary.md").read_text()
    assert text.count("### Noise") == 4 and "### Noise 0.3, K = 4 (the condition the paper tabulates)" in text
    section = text.split("### Noise 0.9, K = 3", 1)[1].split("###", 1)[0]
    sel = (runs["method"] == "baseline") & (runs["noise"] == 0.9) & (runs["n_clusters"] == 3)
    want = f"| baseline | {runs['ari'][sel].mean():.3f} ± {runs['ari'][sel].std(ddof=1):.3f} |"
    assert want in section, (want, section)
    assert "the one condition of 4 with published figures; every condition's table is in summary.md" in printed
    assert f"every table in {out / 'summary.md'}" in printed


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--seeds", "0"], "seeds"),
        (["--noise", "-0.3"], "noise"),
        (["--methods", "baseline,teleport"], "methods"),
        (["--temperature", "0"], "temperature"),
        (["--init", "random"], "init"),
        (["--root-seed=-1"], "root_seed must be an int in [0, 4294967295]"),
        (["--root-seed", str(2**32)], "root_seed must be an int in [0, 4294967295]"),
    ],
)
def test_cli_rejects_bad_arguments(argv, match, capsys):
    assert cli.main(["study", "token-dynamics", *argv]) == 2
    assert match in capsys.readouterr().err


SMALL = [
    "--seeds",
    "2",
    "--noise",
    "0.3",
    "--n-clusters",
    "3",
    "--dim",
    "2",
    "--points-per-cluster",
    "5",
    "--no-cache",
    "--no-plots",
    "--quiet",
]


def test_absurd_sizes_are_refused_naming_the_option(capsys, tmp_path):
    assert cli.main(["study", "token-dynamics", "--out", str(tmp_path / "x"), *SMALL, "--seeds", str(10**12)]) == 2
    assert "seeds" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
