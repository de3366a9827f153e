"""The examples run as a user runs them (a fresh Python process, their built-in defaults but fewer
seeds) and print what they promise."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.full
def test_own_rule_prints_paired_statistics_against_the_baseline(tmp_path):
    out = tmp_path / "own_rule"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "own_rule.py"), "--seeds", "5", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "paired t-tests of ARI against the baseline (5 seeds per condition" in lines[0]
    assert lines[1].split() == ["method", "K", "noise", "mean", "dARI", "t", "p", "p_holm", "d_z"]
    rows = [line.split() for line in lines[2:] if re.match(r"lloyd(_damped)? ", line)]
    tests = json.loads((out / "stat_tests.json").read_text())
    assert len(rows) == len(tests) == 2 * 2 * 2  # the rule's two settings x K x noise
    for row, t in zip(rows, tests):
        assert row[0] == t["method"] and int(row[1]) == t["n_clusters"] and float(row[2]) == t["noise"]
        assert abs(float(row[3]) - t["mean_diff"]) <= 1e-4 and abs(float(row[5]) - t["p"]) <= 5e-3 * t["p"]  # 3 digits
        assert 0 <= t["p"] <= t["p_holm"] <= 1 and t["n"] == 5
    runs = (out / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 3 * 2 * 2 * 5  # baseline and the two settings x K x noise x seeds


@pytest.mark.full
def test_vlm_analyses_prints_every_analysis_on_the_tiny_model(tmp_path):
    """examples/vlm_analyses.py runs each analysis on the tiny checkpoint in the block mode and prints its rows:
    the forced block whole in every row, every decomposition setting with its gain kept (undefined on this
    model, whose answers no setting moves: the full block gains nothing over no block), every intervention of
    the table with its flips (of the answers read in both runs) and KL, the three input -> answer effects, the
    concentration, DMLR and the grounding score. The docs' pages show its sections (tests/test_docs_vlm.py)."""
    pytest.importorskip("safetensors")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "vlm_analyses.py")],
        capture_output=True,
        text=True,
        timeout=900,
        env=child_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    from tokdyn.diagnostics import vlm
    from tokdyn.models.vlm import interventions

    assert "the block forced at step 0 in every row: [0, 0, 0, 0]; whole: [1, 1, 1, 1]" in out
    for setting in vlm.SETTINGS:
        assert re.search(rf"^  {setting} +[01]\.\d\d \((nan|-?\d\.\d\d)\)$", out, re.M), setting
    assert re.search(r"^  full +1\.00 \(", out, re.M)  # the reference answers are the full block's
    for kind in interventions.KINDS[1:]:
        assert re.search(rf"^  {kind} +\d/4  KL ", out, re.M), kind
    for effect in ("total", "direct", "indirect"):
        assert f"input -> answer ({effect}): mean KL" in out
    assert "input -> latent: the block moved by cosine distance" in out
    assert "attention entropy over the 4 image tokens at the slots" in out and "DMLR: reward" in out
    assert out.rstrip().splitlines()[-1].startswith("grounding: S of the answer's tokens")
