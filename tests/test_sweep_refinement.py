"""``tokdyn sweep token-dynamics --method ...,refinement``: the package's variational-refinement rule
(``tokdyn.refinement.REFINEMENT``, ``engine.runs.PACKAGE_RULES``) is a method of the sweep without a
rule module, its knobs axes by ``--knob``; its runs are the token-dynamics study's for the same seeds
(common random numbers: the same data and initial tokens), and a rule module may not take its name
for another rule."""

import json
import os
import re

import numpy as np
import pytest

from conftest import jax_compilations
from tokdyn import cli, refinement
from tokdyn.engine import sweep
from tokdyn.engine.runs import PACKAGE_RULES
from tokdyn.studies import token_dynamics as td
from tokdyn.studies import token_dynamics_sweep as tds

SIZES = ["--noise", "0.3,0.9", "--n-clusters", "3,4", "--seeds", "4", "--dim", "2", "--points-per-cluster", "10"]
PAIRED = [
    "--method",
    "baseline,refinement",
    "--knob",
    "step_size=0.5,1",
    "--temperature",
    "",
    "--repulsion",
    "",
    "--momentum",
    "",
    *SIZES,
    "--n-resamples",
    "200",
    "--no-cache",
    "--quiet",
    "--no-plots",
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("refinement") / "sweep")
    assert cli.main(["sweep", "token-dynamics", "--out", out, *PAIRED]) == 0
    return out


@pytest.mark.full
def test_refinement_is_a_method_of_the_sweep_and_its_runs_are_the_studys(swept):
    cfg = tds.Config(method="baseline,refinement", knob="step_size=0.5,1", temperature="", repulsion="", momentum="")
    assert cfg.rules()["refinement"] is PACKAGE_RULES["refinement"] is refinement.REFINEMENT
    assert [rule for rule, _ in cfg.method_groups()] == [None, refinement.REFINEMENT]
    groups = sorted(os.listdir(os.path.join(swept, "groups")))
    assert groups == ["0-builtin", "1-refinement"]
    base = sweep.load(os.path.join(swept, "groups", groups[0]))
    own = sweep.load(os.path.join(swept, "groups", groups[1]))
    assert set(own.grid.names) == {"noise", "n_clusters", "method", "step_size"} and len(own) == 2 * 2 * 2 * 4
    manifest = sweep.read_manifest(os.path.join(swept, "groups", groups[1]))
    assert set(manifest["code"]) == {"fn"}  # no rule module: the rule's code is in the run function's digest
    # the study's runs of the same seeds: baseline and refinement (at its default step size, 1)
    study = td.simulate(
        td.Config(
            seeds=4,
            noise=(0.3, 0.9),
            n_clusters=(3, 4),
            dim=2,
            points_per_cluster=10,
            methods=("baseline", "refinement"),
        )
    )
    for name, res, sel in (
        ("baseline", base, np.ones(len(base), bool)),
        ("refinement", own, np.isclose(own["step_size"], 1.0)),
    ):
        rows = np.flatnonzero(sel)
        order = rows[np.lexsort((res["seed"][rows], res["noise"][rows], res["n_clusters"][rows]))]  # the study's
        mine = study["method"] == name
        assert len(order) == mine.sum() == 16
        np.testing.assert_array_equal(res["seed"][order], study["seed"][mine])
        # two programs (the study's task and the sweep's), equal up to float32 rounding, which may move
        # a run near a split: all but one run must agree
        same = np.ones(len(order), bool)
        for f in ("ari", "steps", "sse"):
            same &= np.isclose(res[f][order], study[f][mine], rtol=1e-5, atol=1e-6)
        assert same.sum() >= len(same) - 1, (name, same)
    # the step size is the settings' difference: half steps take more steps to converge
    half = np.isclose(own["step_size"], 0.5)
    assert own["steps"][half].mean() > own["steps"][~half].mean()
    # the merged tables and the report name it
    settings = open(os.path.join(swept, "settings.csv")).read().splitlines()
    assert [row.split(",")[1] for row in settings[1:]] == ["baseline", "refinement", "refinement"]
    report = open(os.path.join(swept, "report.md")).read()
    assert "Method indices: 0 = baseline, 1 = refinement" in report and "| refinement |" in report
    assert json.load(open(os.path.join(swept, "config.json")))["config"]["rule_module"] == ""


@pytest.mark.full
def test_the_same_sweep_through_a_rule_module_naming_the_rule_itself_is_the_same(swept, tmp_path):
    out = str(tmp_path / "module")
    argv = ["sweep", "token-dynamics", "--out", out, "--rule-module", "tokdyn.refinement:REFINEMENT", *PAIRED]
    assert cli.main(argv) == 0
    for g in ("0-builtin", "1-refinement"):
        a, b = sweep.load(os.path.join(swept, "groups", g)), sweep.load(os.path.join(out, "groups", g))
        for f in a.fields:
            np.testing.assert_array_equal(a[f], b[f], err_msg=f)  # one program, one result
    assert open(os.path.join(swept, "summary.csv")).read() == open(os.path.join(out, "summary.csv")).read()


def test_refinement_in_the_sweep_is_refused_like_any_rule_before_anything_compiles(tmp_path, capsys):
    other = tmp_path / "clash.py"
    other.write_text(
        "import dataclasses\nfrom tokdyn import refinement\n"
        "RULES = {'refinement': dataclasses.replace(refinement.REFINEMENT, "
        "hparams=refinement.Hparams(step_size=0.5))}\n"
    )
    no_axes = ["--temperature", "", "--repulsion", "", "--momentum", ""]
    cases = [
        (["--method", "refinement"], r"temperature: method names rule 'refinement', whose knobs are \['step_size', "),
        (
            ["--method", "baseline,refinement", *no_axes, "--knob", "beta=0,1"],
            r"knob: 'beta' is not a knob of the rule 'refinement', whose knobs are",
        ),
        (
            ["--method", "baseline", *no_axes, "--knob", "step_size=0.5,1"],
            r"knob: 'step_size': method names no rule of rule_module \(none given\) nor of the package "
            r"\(\['refinement'\]\)",
        ),
        (
            ["--rule-module", f"{other}:RULES", "--method", "refinement", *no_axes],
            r"rule_module .*'refinement' is the name of one of the package's rules",
        ),
    ]
    with jax_compilations() as compiled:
        for argv, pattern in cases:
            code = cli.main(["sweep", "token-dynamics", "--out", str(tmp_path / "never"), "--no-cache", *argv])
            err = capsys.readouterr().err
            assert code == 2, (argv, err)
            assert re.search(pattern, err), (pattern, err)
    assert compiled == []
    assert not os.path.exists(tmp_path / "never")
