"""Data safety of sweeps and of the token-dynamics studies, case by case: a list of conditions is a
set (case 2), results are keyed by the code that made them (case 3), nothing unverified is read as a
result (case 4), runs that blew up are counted and never averaged in (case 5), and size refusals
name the option to change (case 6)."""

import json
import os
import shutil
import uuid
import warnings

import jax
import numpy as np
import pytest

from tokdyn import cli, io
from tokdyn.engine import sweep
from tokdyn.engine.sweep import Grid
from tokdyn.experiment import study
from tokdyn.stats import summary
from tokdyn.studies import token_dynamics as td
from tokdyn.studies import token_dynamics_sweep as tds

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "own_rule.py")
TINY = [
    "--repulsion",
    "0",
    "--momentum",
    "0",
    "--noise",
    "0.3",
    "--n-clusters",
    "3",
    "--seeds",
    "2",
    "--dim",
    "2",
    "--points-per-cluster",
    "10",
    "--n-resamples",
    "50",
    "--no-cache",
    "--quiet",
    "--no-plots",
]
GRID = Grid(seeds=3, a=[0.5, 1.0], b=[1.0, 2.0])


def f_ab(key, a, b):
    return {"y": a * b + jax.random.normal(key)}


def _run(fn, out, **kw):
    return sweep.run(fn, GRID, key=jax.random.key(0), chunk_size=4, out=out, progress=False, **kw)


def _chunks(out):
    d = os.path.join(out, "chunks")
    return sorted(os.path.join(d, c) for c in os.listdir(d) if c.endswith(".npz"))


# ---------------------------------------------------------------------------------------------- case 2


def test_case2_grid_refuses_repeated_value():
    for axes, words in (
        ({"noise": [0.3, 0.3]}, "axis 'noise' lists 0.3 more than once"),
        ({"k": [3, 4, 3]}, "axis 'k' lists 3 more than once"),
        ({"t": [1.0, 1.0 + 1e-12]}, "one value"),
    ):  # one value in float32
        with pytest.raises(ValueError, match=words):
            Grid(seeds=2, **axes)
    for text, words in (
        ("0.3,0.3", "noise lists 0.3 more than once"),
        ("linspace:1:1:3", "'linspace:1:1:3' gives one value several times"),
        ("logspace:2:2:2", "logspace:2:2:2"),
    ):
        with pytest.raises(ValueError, match=words):
            sweep.parse_axis("noise", text)
    assert sweep.parse_axis("noise", "0.3,0.6").tolist() == [0.3, 0.6]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--noise", "0.3,0.3"], "noise lists 0.3 more than once"),
        (["--n-clusters", "3,3"], "n_clusters lists 3 more than once"),
        (["--methods", "baseline,baseline"], "methods lists 'baseline' more than once"),
    ],
)
def test_case2_cli_noise_repeated_exit2(args, words, tmp_path, capsys):
    out = tmp_path / "study"
    assert (
        cli.main(
            ["study", "token-dynamics", "--seeds", "3", "--out", str(out), "--quiet", "--no-plots", "--no-cache", *args]
        )
        == 2
    )
    assert words in capsys.readouterr().err
    assert not out.exists()  # refused before anything ran


@pytest.mark.parametrize(
    "args, words",
    [
        (["--noise", "0.3,0.3"], "noise lists 0.3 more than once"),
        (["--temperature", "linspace:1:1:3"], "'linspace:1:1:3' gives one value several times"),
        (["--method", "baseline,baseline"], "method lists 'baseline' more than once"),
    ],
)
def test_case2_sweep_axes_repeated_exit2(args, words, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "token-dynamics", "--out", str(out), "--temperature", "1", *TINY, *args]
    assert cli.main(argv) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- case 3


def test_case3_changed_function_body_refused(tmp_path):
    d = str(tmp_path / "s")

    def f(key, a, b):
        return {"y": a * b}

    first = f

    def f(key, a, b):  # noqa: F811 (the same name and qualname, another body)
        return {"y": a + b}

    assert sweep.code_digest(first) != sweep.code_digest(f) and sweep.task.fn_id(first) == sweep.task.fn_id(f)
    _run(first, d)
    with pytest.raises(
        io.OutputConflict,
        match=r"the rule's code changed since these results \(the code of .*test_case3_changed_function_body_refused"
        r"\.<locals>\.f differ\).*--fresh",
    ):
        _run(f, d)
    with pytest.raises(io.OutputConflict, match=r"fn \(.*\.f there, .*<lambda> now\)"):  # another lambda
        _run(lambda key, a, b: {"y": a * b}, d)
    again = _run(first, d)  # the same code resumes
    np.testing.assert_array_equal(again["y"], (again["a"] * again["b"]).astype(np.float32))


def test_case3_code_digest_covers_closures_defaults_and_values():
    def make(scale):
        return lambda key, a: {"y": scale * a}

    assert sweep.code_digest(make(1.0)) != sweep.code_digest(make(2.0))
    assert sweep.code_digest(make(np.ones(3))) != sweep.code_digest(make(np.zeros(3)))
    assert sweep.code_digest(make(1.0)) == sweep.code_digest(make(1.0))

    def g(key, a, c=1.0):
        return {"y": c * a}

    g2 = lambda key, a, c=2.0: g(key, a, c)  # noqa: E731
    assert sweep.code_digest(g2) != sweep.code_digest(lambda key, a, c=3.0: g(key, a, c))
    import functools

    assert sweep.code_digest(functools.partial(g, c=1.0)) != sweep.code_digest(functools.partial(g, c=2.0))
    cyc = []
    cyc.append(cyc)
    assert sweep.code_digest(lambda key, a: {"y": a * len(cyc)})  # a cycle is cut, not followed forever
    task = tds.Config(temperature="1", repulsion="0", momentum="0", noise="0.3", n_clusters="3").task()
    assert sweep.code_digest(task) == sweep.code_digest(
        tds.Config(temperature="1", repulsion="0", momentum="0", noise="0.3", n_clusters="3").task()
    )


def test_case3_changed_output_fields_refused(tmp_path):
    d = str(tmp_path / "s")
    _run(f_ab, d)
    m = sweep.read_manifest(d)
    assert m["outputs"] == {"y": "float32[]"} and m["code"]["fn"] == sweep.code_digest(f_ab)

    def more(key, a, b):
        return {**f_ab(key, a, b), "z": a}

    more.__qualname__ = f_ab.__qualname__
    with pytest.raises(io.OutputConflict, match=r"output fields \(y there, y, z now\)"):
        _run(more, d)


def test_case3_manifest_before_code_keys_is_another_sweep(tmp_path):
    d = str(tmp_path / "s")
    _run(f_ab, d)
    path = os.path.join(d, "manifest.json")
    m = json.load(open(path))
    for k in ("code", "outputs", "checksum"):
        m.pop(k)
    m["format"] = 1
    m["checksum"] = sweep.store.json_digest(m)
    json.dump(m, open(path, "w"))
    with pytest.raises(io.OutputConflict, match="written before sweeps recorded the code.*--fresh"):
        _run(f_ab, d)


def _rules_file(tmp_path) -> str:
    path = tmp_path / f"rules_{uuid.uuid4().hex[:8]}.py"  # a module name of its own in sys.modules
    shutil.copy(EXAMPLE, path)
    return str(path)


def test_case3_changed_rule_module_file_refused(tmp_path, capsys):
    rules = _rules_file(tmp_path)
    out = str(tmp_path / "sweep")
    argv = [
        "sweep",
        "token-dynamics",
        "--out",
        out,
        "--rule-module",
        f"{rules}:RULES",
        "--method",
        "lloyd",
        *TINY,
        "--temperature",
        "",
        "--repulsion",
        "",
        "--momentum",
        "",
    ]
    assert cli.main(argv) == 0
    key = "module " + os.path.splitext(os.path.basename(rules))[0]
    assert sweep.read_manifest(out)["code"][key] == sweep.digest.source_digest(rules)
    with open(rules, "a") as f:  # a helper of the rule may live anywhere in the file: any change of code counts
        f.write("\nEXTRA = 1  # edited\n")
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "the rule's code changed since these results (module " in err and "--fresh" in err, err
    assert os.path.splitext(os.path.basename(rules))[0] in err, err
    assert cli.main(argv + ["--fresh"]) == 0
    assert sweep.read_manifest(out)["code"][key] == sweep.digest.source_digest(rules)
    assert tds.load_rules(f"{rules}:RULES")["lloyd"].step.__module__  # the file as it is now was loaded


def test_case3_study_rule_code_stamped(tmp_path):
    from tokdyn import dynamics

    base = tds.load_rules(f"{EXAMPLE}:RULES")["lloyd"]

    def step(tokens, points, hp, s, key):
        return base.step(tokens, points, hp, s, key) * 0.5

    other = dynamics.Rule(base.init, step, hparams=base.hparams, name="lloyd")
    cfg = td.Config(seeds=2, noise=(0.3,), n_clusters=(3,), dim=2, points_per_cluster=10, methods=("lloyd",))
    rec = td._rules_record({"lloyd": base})
    assert rec["rules_code"]["lloyd"] == sweep.code_digest(base) != sweep.code_digest(other)
    out = str(tmp_path / "study")
    td.main(cfg, out, rules={"lloyd": base}, quiet=True, plots=False)
    with pytest.raises(io.OutputConflict, match="rules_code"):
        td.main(cfg, out, rules={"lloyd": other}, quiet=True, plots=False)


# ---------------------------------------------------------------------------------------------- case 4


def test_case4_plain_savez_chunk_recomputed(tmp_path):
    d = str(tmp_path / "s")
    ref = _run(f_ab, d)
    chunk = _chunks(d)[1]
    good = io.load_npz(chunk)
    forged = dict(good, y=np.ones_like(good["y"]))  # every value 1, its index and stamp kept
    np.savez(chunk[:-4], **forged)  # a plain .npz: no verification header
    with pytest.warns(RuntimeWarning, match="verification header|CorruptFile|no verification"):
        again = _run(f_ab, d)
    np.testing.assert_array_equal(again["y"], ref["y"])
    assert io.is_verified(chunk) and len(os.listdir(os.path.join(d, "chunks", "corrupt"))) == 1
    # a chunk without its stamp (written with a checksum, but by something else) is not read either
    np.testing.assert_array_equal(sweep.load(d)["y"], ref["y"])
    io.save_npz(chunk, **{k: v for k, v in forged.items() if k != sweep.CHUNK_STAMP})
    with pytest.raises(ValueError, match="carries no stamp"):
        sweep.load(d)
    with pytest.warns(RuntimeWarning, match="carries no stamp"):
        np.testing.assert_array_equal(_run(f_ab, d)["y"], ref["y"])


def test_case4_manifest_without_checksum_rewritten_chunks_kept(tmp_path):
    d = str(tmp_path / "s")
    ref = _run(f_ab, d)
    path = os.path.join(d, "manifest.json")
    m = json.load(open(path))
    m.pop("checksum")
    json.dump(m, open(path, "w"))
    with pytest.raises(io.CorruptFile, match="no checksum"):
        sweep.read_manifest(d)
    before = {c: os.stat(c).st_mtime_ns for c in _chunks(d)}
    with pytest.warns(RuntimeWarning, match="written anew"):
        again = _run(f_ab, d)
    np.testing.assert_array_equal(again["y"], ref["y"])
    assert {c: os.stat(c).st_mtime_ns for c in _chunks(d)} == before  # every finished chunk kept
    assert "checksum" in sweep.read_manifest(d)


def test_case4_chunk_dir_or_symlink_set_aside(tmp_path):
    d, other = str(tmp_path / "s"), str(tmp_path / "o")
    ref = _run(f_ab, d)
    sweep.run(f_ab, GRID, key=jax.random.key(1), chunk_size=4, out=other, progress=False)
    chunks = _chunks(d)
    os.remove(chunks[0])
    os.mkdir(chunks[0])  # a directory where a chunk should be
    target = _chunks(other)[1]
    os.remove(chunks[1])
    os.symlink(target, chunks[1])  # a link to another sweep's chunk
    target_bytes = open(target, "rb").read()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _run(f_ab, d)
    said = " ".join(str(w.message) for w in caught)
    assert "is a directory" in said and "symbolic link" in said, said
    np.testing.assert_array_equal(again["y"], ref["y"])
    assert os.path.isfile(chunks[0]) and not os.path.islink(chunks[1]) and io.is_verified(chunks[1])
    assert open(target, "rb").read() == target_bytes  # never followed, never written through


SWEEP = [
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
    "3",
    "--dim",
    "2",
    "--points-per-cluster",
    "10",
    "--n-resamples",
    "50",
    "--no-cache",
    "--quiet",
    "--no-plots",
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("safety") / "sweep")
    assert cli.main(["sweep", "token-dynamics", "--out", out, *SWEEP]) == 0
    return out


def test_case4_tampered_summary_not_plotted(swept, tmp_path, capsys):
    d = str(tmp_path / "copy")
    shutil.copytree(swept, d)
    path = os.path.join(d, "summary.csv")
    whole = open(path).read()
    cond = io.read_csv(path)
    cond["ari_mean"] = cond["ari_mean"] + 0.15
    io.write_csv(path, cond)  # a well-formed table with every ARI raised
    xy = ["--x", "temperature", "--y", "repulsion"]
    with pytest.warns(RuntimeWarning, match="summary.csv is not the table the sweep wrote.*SHA-256"):
        assert cli.main(["plot", "heatmap", d, *xy]) == 0
    assert open(path).read() == whole  # recomputed from the verified chunks
    res = sweep.load(d)
    job = tds.heatmap_job(d, tds.read_table(d, "summary.csv")[0], "temperature", "repulsion", "ari")
    sel = (res["temperature"] == 2.0) & (res["repulsion"] == 0.1)
    np.testing.assert_allclose(job["z"][1][1], res["ari"][sel].mean(), rtol=1e-6)
    os.remove(os.path.join(d, tds.TABLES))  # no record of it: not trusted either
    with pytest.warns(RuntimeWarning, match="no SHA-256 of it is recorded"):
        assert cli.main(["plot", "heatmap", d, *xy]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the table written and recorded: read without a word
        assert cli.main(["plot", "heatmap", d, *xy]) == 0


# ---------------------------------------------------------------------------------------------- case 5


def test_case5_nan_runs_counted_and_marked(swept, tmp_path):
    d = str(tmp_path / "copy")
    shutil.copytree(swept, d)
    cfg = tds.Config(**json.load(open(os.path.join(d, "config.json")))["config"])
    res = sweep.load(d)
    blown = (res["temperature"] == 0.5) & (res["repulsion"] == 0.0)  # one condition: every run blew up
    inf_run = int(np.flatnonzero((res["temperature"] == 2.0) & (res["repulsion"] == 0.1))[0])
    for path in _chunks(d):  # what a blow-up looks like today: sse NaN, ARI 0, collapse 1
        z = io.load_npz(path)
        idx = z["index"]
        z["sse"] = np.where(blown[idx], np.nan, z["sse"]).astype(np.float32)
        z["ari"] = np.where(blown[idx], 0.0, z["ari"]).astype(np.float32)
        z["collapsed"] = np.where(blown[idx], True, z["collapsed"])
        z["nmi"] = np.where(idx == inf_run, np.inf, z["nmi"]).astype(np.float32)
        io.save_npz(path, **z)
    tds.analyse(d, cfg, plots=False)
    cond = io.read_csv(os.path.join(d, "summary.csv"))
    i = int(np.flatnonzero((cond["temperature"] == 0.5) & (cond["repulsion"] == 0.0))[0])
    j = int(np.flatnonzero((cond["temperature"] == 2.0) & (cond["repulsion"] == 0.1))[0])
    assert cond["sse_nan"][i] == 3 and cond["nonfinite"][i] == 3 and cond["ari_nan"][i] == 0
    assert np.isnan(cond["collapsed_mean"][i]) and np.isnan(cond["ari_mean"][i])  # no rate over blown-up runs
    assert cond["nmi_nan"][j] == 1 and cond["nonfinite"][j] == 1 and cond["ari_n"][j] == 2  # inf counted too
    assert np.isfinite(cond["nmi_mean"][j])
    assert cond["nonfinite"].sum() == 4
    settings = io.read_csv(os.path.join(d, "settings.csv"))
    k = int(np.flatnonzero((settings["temperature"] == 0.5) & (settings["repulsion"] == 0.0))[0])
    assert settings["nonfinite"][k] == 3 and np.isnan(settings["collapsed_mean"][k])
    report = open(os.path.join(d, "report.md")).read()
    assert "2 of 4 condition(s) had non-finite runs: 4 of 12 runs" in report
    assert "excludes them" in report and "⚠ 3" in report


def test_case5_summary_counts_inf_and_nan_per_metric():
    grid = Grid(seeds=4, a=[1.0, 2.0])
    cols = grid.rows()
    x = np.array([1.0, np.nan, np.inf, 2.0, -np.inf, 3.0, 4.0, 5.0])
    y = np.arange(8.0)
    res = sweep.SweepResult({**cols, "x": x, "y": y}, ("x", "y"), grid)
    t = summary.condition_stats(res)
    assert t["x_nan"].tolist() == [2, 1] and t["y_nan"].tolist() == [0, 0]
    assert t["x_mean"].tolist() == [1.5, 4.0] and t["y_mean"].tolist() == [1.5, 5.5]
    t = summary.condition_stats(res, require_finite=("x",))
    assert t["nonfinite"].tolist() == [2, 1] and t["y_mean"].tolist() == [1.5, 6.0] and t["y_n"].tolist() == [2, 3]
    m = summary.marginal(t, [], ["y"])
    assert m["y_n"].tolist() == [5] and m["y_mean"][0] == pytest.approx((0 + 3 + 5 + 6 + 7) / 5)


def test_case5_study_summarise_and_tests_drop_nonfinite_runs():
    cfg = td.Config(seeds=4, noise=(0.3,), n_clusters=(3,), methods=("baseline", "inertia"))
    n = 8
    runs = dict(
        method=np.repeat(np.array(["baseline", "inertia"]), 4),
        n_clusters=np.full(n, 3),
        noise=np.full(n, 0.3, np.float32),
        seed=np.tile(np.arange(4), 2),
    )
    runs.update(
        ari=np.array([0.5, 0.6, 0.7, 0.8, 0.0, 0.7, 0.8, 0.9]),
        nmi=np.full(n, 0.5),
        sse=np.array([1.0, 1, 1, 1, np.nan, 1, 1, 1]),
        steps=np.full(n, 5),
        converged=np.ones(n, bool),
        collapsed=np.array([0, 0, 0, 0, 1, 0, 0, 0], bool),
    )
    rows, overall = td.summarise(runs, cfg)
    inertia = next(r for r in overall if r["method"] == "inertia")
    assert inertia["n_runs"] == 4 and inertia["n_nonfinite"] == 1
    assert inertia["collapsed_mean"] == 0.0 and inertia["ari_mean"] == pytest.approx(0.8)
    (t,) = td.stat_tests(runs, cfg)
    assert t["n"] == 3 and t["n_dropped"] == 1 and t["mean_diff"] == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------- case 6


def test_case6_sweep_size_names_option(tmp_path, monkeypatch):
    big = tds.Config(
        temperature="1",
        repulsion="0",
        momentum="0",
        noise="0.3",
        n_clusters="3",
        seeds=100,
        points_per_cluster=300000,
        dim=30,
    ).validate()
    est = big.estimate()  # once refused: "chunk_size makes an array of ...: make chunk_size smaller", unasked
    limit = big.chunk_limit()
    assert limit is not None and big.chunk() == limit and limit * 900000 * 30 < 2**31 * 100
    with pytest.raises(study.Refused, match="make chunk_size smaller"):  # a chunk_size given too large: named
        tds.Config(**{**big.__dict__, "chunk_size": 100}).validate().estimate()
    one = tds.Config(
        temperature="1",
        repulsion="0",
        momentum="0",
        noise="0.3",
        n_clusters="3",
        seeds=3,
        points_per_cluster=300000,
        dim=30,
    ).validate()
    est = one.estimate()  # one run's data and working set make the memory: its sizes are named
    assert est.option == tds.STRUCTURE_OPTIONS
    with pytest.raises(study.Refused, match="make points_per_cluster, dim or n_tokens smaller"):
        study.check_resources(tds.STUDY, est, memory=10**6)
    small = tds.Config(
        temperature="1", repulsion="0", momentum="0", noise="0.3", n_clusters="3", seeds=2, dim=2, points_per_cluster=10
    ).validate()
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(study.Refused) as e:
        tds.check_disk(small, str(tmp_path / "x"))
    assert "0.0 GiB" not in str(e.value) and "1,000 bytes is free" in str(e.value)
    assert "KiB" in str(e.value) or "bytes of chunk files" in str(e.value)


def _digest_of(tmp_path, name: str, source: str):
    """code_digest of ``run`` defined by ``source`` in a module file ``name``.py (loaded as the
    module ``digested``, so that only the source differs between two calls)."""
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("digested", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sweep.code_digest(module.run)


def test_code_digest_ignores_layout_comments_and_docstrings_but_not_code(tmp_path):
    plain = "def run(key, a, b):\n    return {'y': a * b + 1.0}\n"
    reworded = (
        "def run(\n    key,\n    a,\n    b,\n):  # the same code, laid out otherwise\n"
        '    """A docstring."""\n    # a comment\n    return {"y": (a * b) + 1.0}\n'
    )
    changed = "def run(key, a, b):\n    return {'y': a * b + 2.0}\n"
    renamed = "def run(key, a, c):\n    return {'y': a * c + 1.0}\n"
    base = _digest_of(tmp_path, "plain", plain)
    assert _digest_of(tmp_path, "reworded", reworded) == base  # a resumable sweep stays resumable
    assert _digest_of(tmp_path, "changed", changed) != base
    assert _digest_of(tmp_path, "renamed", renamed) != base
