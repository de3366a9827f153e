"""``tokdyn sweep token-dynamics`` as a user drives it: several rules in one sweep, paired by seed
(built-in methods and a rule module's rules in one ``--method``), a rule's own knob as an axis
(``--knob NAME=VALUES``), every method named in the tables, and the ``--quick`` preset."""

import os
import re

import numpy as np
import pytest

from tokdyn import cli, io
from tokdyn.engine import sweep
from tokdyn.studies import token_dynamics_sweep as tds

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "own_rule.py")
SMALL = [
    "--temperature",
    "",
    "--repulsion",
    "",
    "--momentum",
    "",
    "--noise",
    "0.3,0.9",
    "--n-clusters",
    "3",
    "--seeds",
    "3",
    "--dim",
    "2",
    "--points-per-cluster",
    "10",
    "--n-resamples",
    "100",
    "--no-cache",
    "--quiet",
    "--no-plots",
]


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    """A rule module written as a user would: the Lloyd rule of examples/own_rule.py, and the
    built-in rule under another name (a rule identical to the baseline)."""
    path = tmp_path_factory.mktemp("rules") / "my_rules.py"
    path.write_text(
        open(EXAMPLE).read() + "\nRULES = {'lloyd': LLOYD, 'same': dataclasses.replace(dynamics.BUILTIN, "
        "name='same')}\n"
    )
    return f"{path}:RULES"


@pytest.fixture(scope="module")
def paired(rules, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("paired") / "sweep")
    argv = [
        "sweep",
        "token-dynamics",
        "--out",
        out,
        "--rule-module",
        rules,
        "--method",
        "baseline,same,lloyd",
        "--knob",
        "step_size=0.5,1",
        *SMALL,
    ]
    assert cli.main(argv) == 0
    return out, argv


@pytest.mark.full
def test_builtin_and_own_rules_in_one_sweep_paired_by_seed(paired):
    out, _ = paired
    settings = io.read_csv(os.path.join(out, "settings.csv"))
    assert list(settings["method_name"]) == ["baseline", "same", "lloyd", "lloyd"]
    assert list(settings["method"]) == [0, 1, 2, 2]
    assert np.isnan(settings["step_size"][:2]).all() and list(settings["step_size"][2:]) == [0.5, 1.0]
    summary = io.read_csv(os.path.join(out, "summary.csv"))
    assert set(summary["method_name"]) == {"baseline", "same", "lloyd"}
    pareto = open(os.path.join(out, "pareto.csv")).read().splitlines()
    assert pareto[0].split(",")[:3] == ["method", "method_name", "step_size"]
    report = open(os.path.join(out, "report.md")).read()
    assert "method=lloyd, step_size=1" in report and "method=1" not in report
    assert "Paired by seed" in report and re.search(
        r"\| same \| method=same \| Δ=\+0\.000 \[\+0\.000, \+0\.000\]", report
    )
    # one engine sweep per rule, the same root key: a rule identical to the baseline gives its results seed by seed
    groups = sorted(os.listdir(os.path.join(out, "groups")))
    assert groups == ["0-builtin", "1-same", "2-lloyd"]
    base, same = (sweep.load(os.path.join(out, "groups", g)) for g in groups[:2])
    np.testing.assert_array_equal(base["seed"], same["seed"])
    np.testing.assert_array_equal(base["noise"], same["noise"])
    np.testing.assert_allclose(base["ari"], same["ari"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(base["steps"], same["steps"])
    lloyd = sweep.load(os.path.join(out, "groups", groups[2]))
    assert len(lloyd) == 2 * 2 * 3 and set(lloyd.grid.names) == {"noise", "n_clusters", "method", "step_size"}
    # every group is stamped with its rule's code, and the rule module's group with the module's
    # (the baseline and the built-in rule under another name do not use it)
    for g in groups:
        code = sweep.read_manifest(os.path.join(out, "groups", g))["code"]
        assert set(code) == ({"fn", "module my_rules"} if g == "2-lloyd" else {"fn"}), (g, code)
    assert len({sweep.read_manifest(os.path.join(out, "groups", g))["code"]["fn"] for g in groups}) == 3


@pytest.mark.full
def test_paired_sweep_resumes_and_refuses_a_changed_rule(paired, rules, tmp_path, capsys):
    out, argv = paired
    assert cli.main(argv) == 0  # every group's chunks are there: nothing is run again
    path = rules.rpartition(":")[0]
    changed = tmp_path / "changed"
    import shutil

    shutil.copytree(out, changed)
    text = open(path).read()
    try:
        with open(path, "w") as f:  # a comment changes no code: every group keeps its results
            f.write(text + "\n# an edit\n")
        assert cli.main([a if a != out else str(changed) for a in argv]) == 0
        with open(path, "w") as f:
            f.write(text + "\nEXTRA = 1\n")
        assert cli.main([a if a != out else str(changed) for a in argv]) == 2
        err = capsys.readouterr().err
        assert "module 'my_rules'" in err and "2-lloyd" in err, err
    finally:
        with open(path, "w") as f:
            f.write(text)


def test_unknown_or_bad_knobs_exit_2_naming_them(rules, tmp_path, capsys):
    base = ["sweep", "token-dynamics", "--out", str(tmp_path / "never"), "--rule-module", rules]
    cases = [
        (
            ["--method", "baseline,lloyd", "--knob", "stepsize=0.5,1"],
            r"knob: 'stepsize' is not a knob of the rule "
            r"'lloyd'.*\['step_size'\]",
        ),
        (["--method", "baseline", "--knob", "step_size=0.5,1"], r"knob: 'step_size': method names no rule"),
        (["--method", "lloyd", "--knob", "step_size=1,1"], r"step_size lists 1.0 more than once"),
        (["--method", "lloyd", "--knob", "step_size"], r"knob expects NAME=VALUES"),
        (["--method", "lloyd", "--knob", "noise=1"], r"knob: 'noise' has an option of its own"),
        (["--method", "lloyd", "--knob", "step_size=1;step_size=2"], r"knob: 'step_size' is given twice"),
        (["--method", "lloyd", "--knob", "step_size=logspace:0:1:3"], r"step_size.*logspace endpoints must be > 0"),
    ]
    for args, pattern in cases:
        assert cli.main([*base, *args, *SMALL]) == 2, args
        err = capsys.readouterr().err
        assert re.search(pattern, err), (pattern, err)
    assert not os.path.exists(tmp_path / "never")
    with pytest.raises(ValueError, match="stepsize"):
        tds.Config(
            rule_module=rules, method="lloyd", knob="stepsize=1", temperature="", repulsion="", momentum=""
        ).validate()


@pytest.mark.full
def test_quick_preset_says_so_in_the_report(tmp_path):
    assert tds.Config.quick().validate().runs() < 1000
    with pytest.raises(ValueError, match="preset"):
        tds.Config(preset="fast").validate()
    out = str(tmp_path / "quick")
    assert (
        cli.main(
            ["sweep", "token-dynamics", "--quick", "--seeds", "2", "--out", out, "--no-cache", "--quiet", "--no-plots"]
        )
        == 0
    )
    first = open(os.path.join(out, "report.md")).readline()
    assert first.startswith("Quick preset:")
    assert io.read_json(os.path.join(out, "config.json"))["config"]["preset"] == "quick"
