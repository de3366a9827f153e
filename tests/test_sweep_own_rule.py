"""``tokdyn sweep token-dynamics --rule-module FILE.py:NAME --method ...``: a user's update rule (the
one of examples/own_rule.py) swept from the command line, its settings as the method axis, its runs
those of the rule itself with the sweep's common random numbers; every bad ``--rule-module`` (and
a method axis it cannot run) is a usage error naming the option, before anything is compiled."""

import json
import os
import re

import jax
import numpy as np
import pytest

from conftest import jax_compilations
from tokdyn import cli
from tokdyn.engine import sweep
from tokdyn.engine.runs import ClusterRun
from tokdyn.studies import token_dynamics_sweep as tds

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "own_rule.py")
OWN = [
    "--rule-module",
    f"{EXAMPLE}:RULES",
    "--method",
    "lloyd,lloyd_damped",
    "--temperature",
    "",
    "--repulsion",
    "",
    "--momentum",
    "",
]
SMALL = [
    "--noise",
    "0.3,0.9",
    "--n-clusters",
    "3,4",
    "--seeds",
    "4",
    "--dim",
    "2",
    "--points-per-cluster",
    "10",
    "--n-resamples",
    "200",
    "--no-cache",
    "--quiet",
    "--no-plots",
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("own") / "sweep")
    assert cli.main(["sweep", "token-dynamics", "--out", out, *OWN, *SMALL]) == 0
    return out


def test_the_users_rule_is_swept_by_name(swept):
    res = sweep.load(swept)
    assert len(res) == 2 * 2 * 2 * 4  # method x noise x K x seeds
    names = ("lloyd", "lloyd_damped")
    cfg = json.load(open(os.path.join(swept, "config.json")))
    assert cfg["config"]["rule_module"] == f"{EXAMPLE}:RULES" and cfg["config"]["method"] == ",".join(names)
    assert "Method indices: 0 = lloyd, 1 = lloyd_damped" in open(os.path.join(swept, "report.md")).read()
    # each run is the rule's own run at that setting's knobs (the sweep's key: fold_in(root, seed))
    rules = tds.load_rules(f"{EXAMPLE}:RULES")
    structure = tds.Config(dim=2, points_per_cluster=10).structure()
    for m, name in enumerate(names):
        run = ClusterRun(**structure, max_clusters=4, rule=rules[name])
        for seed in range(4):
            sel = np.flatnonzero(
                (res["method"] == m) & (res["seed"] == seed) & (res["n_clusters"] == 4) & np.isclose(res["noise"], 0.9)
            )
            assert sel.size == 1
            ref = run(jax.random.fold_in(jax.random.key(0), seed), n_clusters=4, noise=0.9)
            assert int(res["steps"][sel[0]]) == int(ref["steps"])
            np.testing.assert_allclose(res["ari"][sel[0]], float(ref["ari"]), rtol=1e-6, atol=1e-6)
    # the knob is the settings' difference: the damped moves take more steps to converge
    steps = [res["steps"][res["method"] == m].mean() for m in range(2)]
    assert steps[1] > steps[0]
    settings = open(os.path.join(swept, "settings.csv")).read().splitlines()
    assert settings[0].startswith("method,method_name") and len(settings) == 3
    assert [row.split(",")[1] for row in settings[1:]] == list(names)  # every setting named


def test_the_same_command_resumes_and_another_rule_module_is_refused(swept, tmp_path, capsys):
    assert cli.main(["sweep", "token-dynamics", "--out", swept, *OWN, *SMALL]) == 0  # nothing left to run
    other = tmp_path / "other_rules.py"
    other.write_text(open(EXAMPLE).read())
    changed = [a if not a.endswith(":RULES") else f"{other}:RULES" for a in OWN]
    assert cli.main(["sweep", "token-dynamics", "--out", swept, *changed, *SMALL]) == 2
    assert "rule_module" in capsys.readouterr().err


def _write(tmp_path, stem, text):
    path = tmp_path / f"{stem}.py"
    path.write_text(
        "from typing import NamedTuple\nimport dataclasses\nfrom tokdyn import dynamics\n"
        "import jax.numpy as jnp\n" + text
    )
    return str(path)


def _bad_cases(tmp_path):
    rule = (
        "class K(NamedTuple):\n    s: float = 1.0\n"
        "def step(t, points, hp, s, key):\n    return t * hp.s\n"
        "A = dynamics.Rule(lambda p, t, hp: t, step, hparams=K(), name='a')\n"
        "def step2(t, points, hp, s, key):\n    return t - hp.s\n"
        "B = dynamics.Rule(lambda p, t, hp: t, step2, hparams=K(), name='b')\n"
    )
    two = _write(
        tmp_path,
        "rules_two",
        rule + "RULES = {'a': A, 'b': B}\nNAMELESS = dataclasses.replace(A, name='')\n"
        "BUILTIN_NAME = {'baseline': A}\nNOT_RULES = {'a': 3}\nEMPTY = {}\n",
    )
    boom = _write(tmp_path, "rules_boom", "raise RuntimeError('boom at import')\n")
    axes = ["--temperature", "", "--repulsion", "", "--momentum", ""]
    return [  # (arguments, pattern of the message)
        (["--rule-module", "no_colon", "--method", "a"], r"rule_module must be module:NAME"),
        (["--rule-module", f"{two}:", "--method", "a"], r"rule_module must be module:NAME"),
        (["--rule-module", str(tmp_path / "missing.py") + ":RULES", "--method", "a"], r"rule_module .*cannot import"),
        (["--rule-module", "tokdyn.no_such_module:RULES", "--method", "a"], r"rule_module .*ModuleNotFoundError"),
        (["--rule-module", f"{boom}:RULES", "--method", "a"], r"rule_module .*RuntimeError: boom at import"),
        (["--rule-module", f"{two}:MISSING", "--method", "a"], r"rule_module .*has no attribute 'MISSING'"),
        (["--rule-module", f"{two}:K", "--method", "a"], r"rule_module .*must be a tokdyn.dynamics.Rule"),
        (["--rule-module", f"{two}:NOT_RULES", "--method", "a"], r"rule_module .*\['a'\] must be a tokdyn.dynamics"),
        (["--rule-module", f"{two}:EMPTY", "--method", "a"], r"rule_module .*non-empty dict"),
        (["--rule-module", f"{two}:NAMELESS", "--method", "a"], r"rule_module .*has no name"),
        (
            ["--rule-module", f"{two}:BUILTIN_NAME", "--method", "a"],
            r"rule_module .*'baseline' is the name of a "
            r"built-in",
        ),
        (["--rule-module", f"{two}:RULES", "--method", "c", *axes], r"method must be one of \[.*'a'.*'b'.*\], got 'c'"),
        # several rules run in one sweep (tests/test_frictions_sweep.py); a knob none of them has is named
        (
            ["--rule-module", f"{two}:RULES", "--method", "baseline,a", "--knob", "t=1,2", *axes],
            r"knob: 't' is not a knob of the rule 'a' of rule_module, whose knobs are \['s'\]",
        ),
        (
            ["--rule-module", f"{two}:RULES", "--method", "a,b", *axes, "--damping", "0.5"],
            r"damping: method names rules 'a' \(knobs \['s'\]\), 'b' \(knobs \['s'\]\)",
        ),
        (["--rule-module", f"{two}:RULES", "--method", "a"], r"temperature: method names rule 'a'.*knobs are \['s'\]"),
        (
            [
                "--rule-module",
                f"{two}:RULES",
                "--method",
                "a",
                "--temperature",
                "",
                "--repulsion",
                "",
                "--momentum",
                "",
                "--damping",
                "0.5",
            ],
            r"damping: method names rule 'a'",
        ),
    ]


def test_bad_rule_modules_are_usage_errors_before_anything_compiles(tmp_path, capsys):
    cases = _bad_cases(tmp_path)
    with jax_compilations() as compiled:
        for argv, pattern in cases:
            code = cli.main(["sweep", "token-dynamics", "--out", str(tmp_path / "never"), "--no-cache", *argv])
            err = capsys.readouterr().err
            assert code == 2, (argv, err)
            assert re.search(pattern, err), (pattern, err)
    assert compiled == []
    assert not os.path.exists(tmp_path / "never")
    # the same values in Python: a ValueError naming the option
    with pytest.raises(ValueError, match="rule_module"):
        tds.Config(rule_module="no_colon").validate()
    # a rule module is optional: the built-in methods still run as before
    assert tds.Config(method="baseline,inertia").validate().rule() is None
