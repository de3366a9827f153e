"""A sweep's provenance, attacked as a user would: a result is keyed by all the user's code that made
it (a helper module the rule imports included), an output never shadows a column, a directory that
is not the sweep's is never written into, and bad arguments get a clear error before any work."""

from __future__ import annotations

import importlib
import os
import sys

import jax
import numpy as np
import pytest

from tokdyn import cli, io
from tokdyn.engine import sweep
from tokdyn.engine.sweep import Grid, parse_axis
from tokdyn.engine.sweep.digest import changed_since_import, module_digests, source_digest
from hostile import run as run_cli

KEY = jax.random.key(0)
GRID = Grid(2, a=[1.0, 2.0])


def twice(key, a):
    return {"y": a * 2.0}


# ---------------------------------------------------------------------------------------------- item 1

RULE = """
from typing import NamedTuple

import jax.numpy as jnp

import rhelp
from tokdyn import dynamics


class Knobs(NamedTuple):
    step_size: float = 1.0


def step(tokens, points, hp, s, key):
    d2 = jnp.sum((points.x[:, None] - tokens[None]) ** 2, axis=-1)
    a = jax_one_hot(jnp.argmin(d2, axis=1), tokens.shape[0]) * points.weights[:, None]
    sums = a.T @ points.x1
    means = jnp.where(sums[:, -1:] > 0, sums[:, :-1] / jnp.maximum(sums[:, -1:], 1.0), tokens)
    return rhelp.move(tokens, means, hp.step_size)


def jax_one_hot(i, n):
    return (i[:, None] == jnp.arange(n)[None]).astype(jnp.float32)


RULES = {"hl": dynamics.Rule(lambda points, tokens, hp: tokens, step, hparams=Knobs(), name="hl")}
"""
HELP = "def move(tokens, means, step_size):\n    return tokens + step_size * (means - tokens)\n"
SMALL = ["--noise", "0.3", "--n-clusters", "3", "--seeds", "2", "--dim", "2", "--points-per-cluster", "8"]
SMALL += ["--n-steps", "5", "--temperature", "", "--repulsion", "", "--momentum", "", "--n-resamples", "20"]
SMALL += ["--quiet", "--no-plots"]


@pytest.fixture
def rule_beside_helper(tmp_path, monkeypatch):
    """``myrule2.py`` importing ``rhelp.py`` beside it (on the path, as the user's folder is)."""
    (tmp_path / "myrule2.py").write_text(RULE)
    (tmp_path / "rhelp.py").write_text(HELP)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("myrule2", "rhelp"):
        sys.modules.pop(name, None)


@pytest.mark.full
def test_helper_module_edited_after_a_partial_sweep_is_refused_naming_it(rule_beside_helper, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "token-dynamics", "--out", out, "--rule-module", f"{rule_beside_helper}/myrule2.py:RULES"]
    argv += ["--method", "baseline,hl", "--knob", "step_size=0.25,0.5", *SMALL]
    code, err = run_cli(argv, capsys)
    assert code == 0, err
    groups = sorted(os.listdir(out / "groups"))
    manifests = {g: sweep.read_manifest(str(out / "groups" / g)) for g in groups}
    base, rule = groups
    assert set(manifests[base]["code"]) == {"fn"}  # the baseline does not use the user's modules
    assert manifests[rule]["code"]["module rhelp"] == source_digest(str(rule_beside_helper / "rhelp.py"))
    assert "module myrule2" in manifests[rule]["code"]
    # a comment-only edit of the rule module changes no code: every group keeps its results
    with open(rule_beside_helper / "myrule2.py", "a") as f:
        f.write("# tuned later\n")
    code, err = run_cli(argv, capsys)
    assert code == 0, err
    # killed part-way: the rule group's last chunk is missing; then the helper is edited
    chunks = sorted((out / "groups" / rule / "chunks").glob("*.npz"))
    chunks[-1].unlink()
    before = {p.name: p.read_bytes() for p in chunks[:-1]}
    (rule_beside_helper / "rhelp.py").write_text(HELP.replace("step_size *", "0.05 * step_size *"))
    code, err = run_cli(argv, capsys)
    assert code == 2 and "module 'rhelp'" in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in chunks[:-1]} == before  # nothing of the old code's touched
    assert not chunks[-1].exists()  # and nothing of the new code's mixed in


def test_file_edited_after_import_never_stamps_the_code_that_runs(tmp_path, monkeypatch):
    (tmp_path / "umod.py").write_text("def f(key, a):\n    return {'y': a * 2.0}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        umod = importlib.import_module("umod")
        first = module_digests(umod.f)
        (tmp_path / "umod.py").write_text("def f(key, a):\n    return {'y': a * 3.0}\n")  # edited mid-run
        assert module_digests(umod.f) == first and changed_since_import(umod.f) == ["umod"]
        res = sweep.run(umod.f, GRID, key=KEY, out=str(tmp_path / "s"), progress=False)
        assert list(res["y"]) == [2.0, 2.0, 4.0, 4.0]  # the code that ran...
        assert sweep.read_manifest(str(tmp_path / "s"))["code"]["module umod"] == first["umod"]  # ...is the stamp
        umod = importlib.reload(umod)  # the file as it is now
        with pytest.raises(io.OutputConflict, match="module 'umod'"):
            sweep.run(umod.f, GRID, key=KEY, out=str(tmp_path / "s"), progress=False)
    finally:
        sys.modules.pop("umod", None)


# ---------------------------------------------------------------------------------------------- item 3


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda key, a: {"seed": a * 10, "index": a * 100}, "'index'"),
        (lambda key, a: {"a": a * 10}, "the grid's axis 'a'"),
        (lambda key, a: {"v": jax.numpy.ones(2) * a, "v_1": a}, "element 1 of the output 'v'"),
    ],
    ids=["seed-and-index", "axis", "flattened-column"],
)
def test_output_named_like_a_column_is_refused_before_any_work(fn, words, tmp_path):
    with pytest.raises(ValueError, match=words):
        sweep.run(fn, GRID, key=KEY, out=str(tmp_path / "s"), progress=False)
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------------------- item 4


def test_sweep_into_a_directory_it_did_not_write_is_refused_and_nothing_moved(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("notes")
    (d / "manifest.json").write_text('{"mine": true}')
    with pytest.raises(io.OutputConflict, match="notes.txt"):
        sweep.run(twice, GRID, key=KEY, out=str(d), progress=False)
    assert (
        sorted(os.listdir(d)) == ["manifest.json", "notes.txt"]
        and (d / "manifest.json").read_text() == '{"mine": true}'
    )
    (d / "notes.txt").unlink()  # a manifest.json of the user's alone is not a sweep's either
    with pytest.raises(io.OutputConflict, match="not a sweep's manifest"):
        sweep.run(twice, GRID, key=KEY, out=str(d), progress=False)
    assert os.listdir(d) == ["manifest.json"]


def test_study_stamp_name_is_the_studys():
    from tokdyn.experiment import study

    assert sweep.store.STUDY_STAMP == study.STAMP


def test_sweep_out_an_existing_file_is_a_clear_error(tmp_path):
    f = tmp_path / "results"
    f.write_text("x")
    for out in (f, f / "sub"):
        with pytest.raises(io.OutputConflict, match="is a file|which is a file"):
            sweep.run(twice, GRID, key=KEY, out=str(out), progress=False)
    assert f.read_text() == "x"


# ---------------------------------------------------------------------------------------------- item 6


def test_sweep_key_an_int_is_a_type_error_naming_key():
    with pytest.raises(TypeError, match=r"key must be one PRNG key, jax.random.key\(seed\), got 0"):
        sweep.run(twice, GRID, key=0, progress=False)


def test_grid_of_too_many_runs_is_refused_before_allocating():
    with pytest.raises(ValueError, match="1,000,000,000,000,000 runs.*at most 4,294,967,295"):
        Grid(10**9, a=np.arange(1e6))


def test_parse_axis_linspace_of_a_billion_values_is_refused_before_allocating():
    with pytest.raises(ValueError, match="n=1,000,000,000 values; an axis holds at most 10,000,000"):
        parse_axis("a", "linspace:0:1:1000000000")


@pytest.mark.parametrize("text", ["1,,2", "1,2,", ",1"])
def test_parse_axis_empty_value_between_commas_is_refused(text):
    with pytest.raises(ValueError, match="empty value"):
        parse_axis("a", text)


@pytest.mark.parametrize("values", [[np.nan, 1.0], [np.nan, np.nan]], ids=["one-nan", "two-nans"])
def test_grid_nan_axis_value_is_refused_naming_the_axis(values):
    with pytest.raises(ValueError, match=r"axis 'a' holds nan \(at position 0\)"):
        Grid(a=values)
    with pytest.raises(ValueError, match="holds nan"):
        parse_axis("a", "0.5,nan")


def test_only_the_users_modules_are_digested():
    """A module of the user's is digested whole; tokdyn's own modules and installed packages are
    keyed by tokdyn's version, not digested."""
    assert list(module_digests(twice)) == ["hostile", __name__]  # and the user's modules it imports
    assert sweep.digest.user_modules(np.mean) == [] and sweep.digest.user_modules(cli.main) == []
