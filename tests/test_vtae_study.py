"""The visual-tokens study end to end on a tiny configuration, with resume."""

import os

import numpy as np
import pytest

from tokdyn import io
from tokdyn.studies import visual_tokens as vt


def test_study_writes_outputs_and_resumes(tmp_path):
    sc = vt.Config(vocab_sizes=(5,), grids=((3, 2),), modes=("gumbel_st",), budgets=(100,), seeds=2, hidden=16,
                   batch_size=16, parts=("main",))
    out = str(tmp_path / "vt")
    vt.main(sc, out, quiet=True, plots=False)
    t = io.read_csv(os.path.join(out, "results.csv"))
    for col in ("vocab_size", "grid", "colours", "mode", "steps", "seed", "accuracy", "dominant_freq", "collapsed",
                "entropy", "uniqueness", "min_hamming", "sensitivity_kl"):
        assert col in t
    assert len(t["seed"]) == 2 and np.all(t["accuracy"] == 1.0)
    assert os.path.exists(os.path.join(out, "summary.md")) and os.path.exists(os.path.join(out, "config.json"))
    part = os.path.join(out, "parts", "main.csv")
    mtime = os.path.getmtime(part)
    timings = vt.main(sc, out, quiet=True, plots=False)  # finished part is skipped
    assert os.path.getmtime(part) == mtime and "main_s" not in timings


def test_cli_runs_the_study_with_no_plots_and_quiet(tmp_path, capsys):
    from tokdyn import cli

    out = str(tmp_path / "cli")
    rc = cli.main(["study", "visual-tokens", "--out", out, "--vocab-sizes", "5", "--grids", "3x2", "--modes",
                   "gumbel_st", "--budgets", "20", "--seeds", "1", "--hidden", "8", "--batch-size", "8", "--parts", "main",
                   "--no-plots", "--quiet"])
    assert rc in (0, None)
    t = io.read_csv(os.path.join(out, "results.csv"))
    assert len(t["seed"]) == 1 and capsys.readouterr().out == ""
    assert not os.path.exists(os.path.join(out, "grids.png"))
    assert "Where collapse does and does not occur" in open(os.path.join(out, "summary.md")).read()


@pytest.mark.parametrize("acc, dom, drop, V, n, c, want", [
    (0.995, 0.01, 0.0, 5000, 8, 5, "reconstructs"),
    (0.30, 0.01, 0.0, 1000, 3, 2, "capacity"),  # 2^9 = 512 < 1000
    (0.50, 0.01, 0.0, 512, 3, 2, "plateau"),  # 2^9 = 512 patterns suffice
    (0.01, 0.95, 0.10, 51, 5, 3, "collapse"),
    (0.20, 0.50, 0.05, 51, 5, 3, "too few steps"),
    (0.20, 0.50, 0.01, 51, 5, 3, "plateau"),
])
def test_cell_verdict(acc, dom, drop, V, n, c, want):
    assert vt.cell_verdict(acc, dom, drop, V, n, c) == want
    # a flat loss still at chance (> 0.9 ln V) is not a plateau of a trained model
    if want == "plateau":
        assert vt.cell_verdict(acc, dom, drop, V, n, c, ce_last=0.95) == "at chance"
        assert vt.cell_verdict(acc, dom, drop, V, n, c, ce_last=0.5) == "plateau"


def test_main_part_resumes_cell_by_cell(tmp_path):
    sc = vt.Config(vocab_sizes=(5,), grids=((3, 2),), modes=("gumbel_st", "vq"), budgets=(20,), seeds=1,
                   hidden=8, batch_size=8, parts=("main",))
    out = str(tmp_path / "vt")
    vt.main(sc, out, quiet=True, plots=False)
    first = io.read_csv(os.path.join(out, "results.csv"))
    cells = sorted(os.listdir(os.path.join(out, "parts", "main_cells")))
    assert len(cells) == 2
    # a run cut off after the first cell: the part file and the second cell are missing
    os.remove(os.path.join(out, "parts", "main.csv"))
    os.remove(os.path.join(out, "parts", "main_cells", cells[1]))
    kept = os.path.join(out, "parts", "main_cells", cells[0])
    mtime = os.path.getmtime(kept)
    vt.main(sc, out, quiet=True, plots=False)
    again = io.read_csv(os.path.join(out, "results.csv"))
    assert os.path.getmtime(kept) == mtime
    np.testing.assert_array_equal(first["mode"], again["mode"])
    np.testing.assert_allclose(first["accuracy"], again["accuracy"])
    np.testing.assert_allclose(first["loss_norm"], again["loss_norm"], rtol=1e-6)
