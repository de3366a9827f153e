"""The visual-tokens study end to end on a tiny configuration, with resume."""

import os

import numpy as np

from tokdyn import report
from tokdyn.studies import visual_tokens as vt


def test_study_writes_outputs_and_resumes(tmp_path):
    sc = vt.StudyConfig(vocab_sizes=(5,), grids=((3, 2),), modes=("gumbel_st",), budgets=(100,), seeds=2, hidden=16,
                        batch_size=16, parts=("main",))
    out = str(tmp_path / "vt")
    vt.main(sc, out, quiet=True, plots_on=False)
    t = report.read_csv(os.path.join(out, "results.csv"))
    for col in ("vocab_size", "grid", "colours", "mode", "steps", "seed", "accuracy", "dominant_freq", "collapsed",
                "entropy", "uniqueness", "min_hamming", "sensitivity_kl"):
        assert col in t
    assert len(t["seed"]) == 2 and np.all(t["accuracy"] == 1.0)
    assert os.path.exists(os.path.join(out, "summary.md")) and os.path.exists(os.path.join(out, "config.json"))
    part = os.path.join(out, "parts", "main.csv")
    mtime = os.path.getmtime(part)
    timings = vt.main(sc, out, quiet=True, plots_on=False)  # finished part is skipped
    assert os.path.getmtime(part) == mtime and "main_s" not in timings
