"""A study of one's own (``--study-module``) that hands the sweep engine a knob out of its range,
run as a user would: exit 2 with the engine's message (no traceback) before the sweep is traced,
and nothing left in ``--out``, so the rerun with a valid value starts as in a new directory (as
tokdyn's own studies refuse such a value before any work)."""

import os
import re

import pytest

from tokdyn import cli
from tokdyn.experiment import registry


def _study_with_a_repulsion(path) -> None:
    """docs/studies/writing-a-study.md's study, with a field ``repulsion`` its ``validate`` does not
    check, handed to the sweep as an axis (``ClusterRun`` checks it)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "studies", "writing-a-study.md")) as f:
        text = re.search(r"runs this block -->\n```python\n(.*?)```", f.read(), re.S).group(1)
    text = text.replace("      root_seed: root PRNG seed.\n", "      root_seed: root PRNG seed.\n      repulsion: r.\n")
    text = text.replace("    root_seed: int = 0\n", "    root_seed: int = 0\n    repulsion: float = 0.0\n")
    text = text.replace("noise=[cfg.noise],", "noise=[cfg.noise], repulsion=[cfg.repulsion],")
    text = text.replace('name="collapse-vs-temperature"', 'name="cvt-knob"')
    assert "repulsion=[cfg.repulsion]" in text and "cvt-knob" in text
    path.write_text(text)


@pytest.fixture
def own_studies(monkeypatch):
    monkeypatch.setattr(registry, "_ADDED", {})
    registry.entry_point_entries.cache_clear()
    yield
    registry.entry_point_entries.cache_clear()


def test_a_plugin_study_given_an_out_of_range_knob_exits_2_before_any_work(tmp_path, capsys, own_studies):
    module = tmp_path / "cvt_knob.py"
    _study_with_a_repulsion(module)
    out = tmp_path / "out"
    args = ["--study-module", f"{module}:SPEC", "study", "cvt-knob", "--repulsion", "-1", "--seeds", "3"]
    code = cli.main([*args, "--out", str(out), "--quiet", "--no-cache"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "repulsion must be in [0, inf], got -1.0" in err and "Traceback" not in err
    assert not out.exists()  # stamped and emptied again: a rerun is not refused as another configuration
    given = tmp_path / "given"
    given.mkdir()  # a directory the user made stays, empty
    assert cli.main([*args, "--out", str(given), "--quiet", "--no-cache"]) == 2
    assert given.exists() and list(given.iterdir()) == []
