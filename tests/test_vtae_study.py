"""The visual-tokens study end to end on tiny configurations, as a hostile user runs it: killed at
random moments, its files truncated, other parts selected, given empty lists and absurd sizes (the
cases every study shares -- paths it cannot write, another configuration, --fresh -- are in
test_study_runner.py)."""

import contextlib
import io as io_
import json
import os
import shutil
import warnings

import numpy as np
import pytest

import hostile
import killing
from conftest import compilation_cache_dir
from tokdyn import cli, io, train
from tokdyn.experiment import study as study_dir
from tokdyn.studies import visual_tokens as vt

# the cell of the main part and the two of the curriculum part, one seed each: 3 small programs
TINY = [
    "study",
    "visual-tokens",
    "--quick",
    "--vocab-sizes",
    "5",
    "--grids",
    "3x2",
    "--modes",
    "gumbel_st",
    "--budgets",
    "20",
    "--seeds",
    "1",
    "--hidden",
    "8",
    "--batch-size",
    "8",
    "--parts",
    "main,curriculum",
]
RESULTS = ("results.csv", "summary.md")


def test_a_micro_run_trains_its_cell_and_its_diagnostics_stay_in_their_ranges(tmp_path):
    """The study end to end in the default run at a micro size (the main part's one cell of TINY:
    V = 5, 3 x 3 grids of 2 colours, 20 steps, one seed): one row, its diagnostics inside their
    ranges (accuracy and the dominant prediction's share in [1/V, 1], the prediction entropy in
    [0, ln V] nats), the collapse flag the documented rule (dominant share > 0.9), the grid
    uniqueness and minimum Hamming distance consistent (every grid distinct iff the closest two
    differ somewhere). The full tier runs both parts with their reruns, kills and damaged files."""
    argv = [a for a in TINY if a != "main,curriculum"] + ["main"]
    assert argv[argv.index("--parts") + 1] == "main"
    out = tmp_path / "micro"
    assert cli.main([*argv, "--out", str(out), "--quiet", "--no-plots", "--no-cache"]) == 0
    t = study_dir.read_table(str(out), "results.csv")
    assert t["part"].tolist() == ["main"] and t["vocab_size"].tolist() == [5] and t["steps"].tolist() == [20]
    v = 5
    assert 0 <= t["accuracy"][0] <= 1 and 1 / v - 1e-6 <= t["dominant_freq"][0] <= 1
    assert 0 <= t["entropy"][0] <= np.log(v) + 1e-6 and 0 <= t["uniqueness"][0] <= 1
    assert bool(t["collapsed"][0]) == (t["dominant_freq"][0] > 0.9)
    assert (t["uniqueness"][0] == 1.0) == (t["min_hamming"][0] >= 1) and t["min_hamming"][0] <= 3 * 3
    assert t["nan_step"].tolist() == [-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two uninterrupted runs in this process: ``A`` with figures (its stdout kept: --quiet), then
    ``B`` without (its programs compiled already). The kill tests run the command in child
    processes that read this session's compilation cache (``cache``: the programs of ``A`` and
    ``B``, compiled alike, are loaded, not compiled again)."""
    root = tmp_path_factory.mktemp("vt")
    a, b = root / "A", root / "B"
    stdout = io_.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli.main([*TINY, "--out", str(a), "--quiet", "--no-cache"]) == 0
    assert cli.main([*TINY, "--out", str(b), "--no-plots", "--quiet", "--no-cache"]) == 0
    yield dict(root=root, cache=compilation_cache_dir(), A=a, B=b, stdout=stdout.getvalue())


def rerun(args, capsys) -> str:
    """``tokdyn ARGS`` run again in this process (exit 0): what it said, its warnings and stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main([*map(str, args), "--no-cache"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    return err + " ".join(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))


@pytest.mark.full
def test_outputs_and_record(runs):
    a = runs["A"]
    t = io.read_csv(a / "results.csv")
    for col in (
        "part",
        "vocab_size",
        "grid",
        "colours",
        "mode",
        "steps",
        "seed",
        "accuracy",
        "dominant_freq",
        "collapsed",
        "entropy",
        "uniqueness",
        "min_hamming",
        "sensitivity_kl",
    ):
        assert col in t
    assert list(t["part"]) == ["main", "curriculum", "curriculum"] and list(t["steps"]) == [20, 20, 20]
    assert runs["stdout"] == ""  # --quiet: nothing on stdout
    assert "Where collapse does and does not occur" in (a / "summary.md").read_text()
    for name in ("grids.png", "heatmap_accuracy_gumbel_st.png", "heatmap_collapse_gumbel_st.png"):
        assert (a / name).stat().st_size > 0, name
    assert not (runs["B"] / "grids.png").exists()  # --no-plots
    record = json.loads((a / "config.json").read_text())
    assert {"study", "config", "tokdyn", "sources", "environment", "timings", "parts"} <= set(record)
    assert record["study"] == "visual-tokens" and record["config"]["budgets"] == [20]
    assert record["parts"] == ["main", "curriculum"]
    stamp = json.load(open(a / study_dir.STAMP))
    assert "parts" not in stamp["config"]  # a selection: a rerun may choose other parts
    cells = sorted(os.listdir(a / "parts" / "main_cells"))
    assert cells == ["000_V5_3x3x2_gumbel_st_20.json"]
    killing.same_files(a, runs["B"], RESULTS)  # figures or not, the same results


@pytest.mark.full
def test_killed_midway_resumes_to_the_same_files(runs):
    """SIGKILL as soon as the main part is written (the curriculum part not yet run), then the same
    command: the files of an uninterrupted run."""
    killing.resumes_after_a_kill_at(
        [*TINY, "--no-plots", "--quiet", "--out", runs["root"] / "K"],
        runs["cache"],
        runs["B"],
        RESULTS,
        os.path.join("parts", "main.json"),
    )


@pytest.mark.slow  # the kills at random moments; the full run (-m full) keeps the kill midway above
def test_killed_at_random_moments_resumes_to_the_same_files(runs, tmp_path):
    killing.resumes_after_timed_kills(TINY, tmp_path, runs["B"], RESULTS, seed=3, low=0.4)


@pytest.mark.full
def test_truncated_cells_parts_and_the_figure_model_are_named_and_recomputed(runs, tmp_path, capsys):
    d = tmp_path / "D"
    shutil.copytree(runs["A"], d)
    hurt = [
        d / "parts" / "main.json",
        d / "parts" / "main_cells" / "000_V5_3x3x2_gumbel_st_20.json",
        d / "parts" / "curriculum.json",
        d / "parts" / "curriculum_cells" / "000_all_types.json",
        d / "parts" / "grids.npz",
    ]
    for path in hurt:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    err = rerun([*TINY, "--out", d], capsys)
    for path in hurt:
        assert f"{path} could not be read back" in err and "truncated" in err
        assert any(n.startswith(path.name) for n in os.listdir(path.parent / "corrupt"))
    killing.same_files(runs["A"], d, RESULTS)
    assert (d / "grids.png").stat().st_size > 0


@pytest.mark.full
def test_parts_select_what_runs_and_reuse_what_is_done(runs, tmp_path, capsys):
    d = tmp_path / "D"
    shutil.copytree(runs["A"], d)
    only = [*TINY[:-1], "curriculum", "--out", d, "--no-plots"]
    err = rerun(only, capsys)
    assert "part curriculum: done already" in err
    assert list(io.read_csv(d / "results.csv")["part"]) == ["curriculum", "curriculum"]
    assert not [f for f in os.listdir(d) if f.startswith("heatmap_")]  # of the main part, not selected now
    err = rerun([*TINY, "--out", d, "--no-plots"], capsys)
    assert "part main: done already" in err
    killing.same_files(runs["A"], d, RESULTS)


REFUSED = [  # the cases, and more of the same kind: (options, words the message holds)
    (["--parts", ""], "parts must list at least one value"),
    (["--budgets", ""], "budgets must list at least one value"),
    (["--vocab-sizes", ""], "vocab_sizes must list at least one value"),
    (["--modes", ""], "modes must list at least one value"),
    (["--grids", ""], "grids must list at least one value"),
    (["--hidden", "0"], "hidden must be an int >= 1, got 0"),
    (["--batch-size", "0"], "batch_size must be an int >= 1, got 0"),
    (["--embed-dim", "0"], "embed_dim must be an int >= 1, got 0"),
    (["--embed-dim", "1000"], "embed_dim must be at most 29"),
    (["--grammar-sentences", "0"], "grammar_sentences must be an int >= 1"),
    (["--zipf-exponent", "nan"], "zipf_exponent must be finite"),
    (["--learning-rate", "inf"], "learning_rate must be finite"),
    (["--root-seed", "-1"], "root_seed must be an int in [0, 4294967295]"),
    (["--seeds", "1000000000"], "make seeds smaller"),
    (["--seeds", str(10**12)], "make seeds smaller"),
    (["--vocab-sizes", "100000"], "make vocab_sizes smaller"),
    (["--hidden", str(10**9)], "make hidden smaller"),
    (["--batch-size", str(10**8)], "make batch_size smaller"),
    (["--grammar-sentences", str(10**12)], "make grammar_sentences smaller"),
    (["--budgets", str(10**10)], "budgets must be at most 2,147,483,647"),
    (["--budgets", str(10**9 + 7)], "make budgets smaller"),  # a prime: one call of 10^9 steps' logs
]


@pytest.mark.parametrize("options, words", REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_bad_options_exit_2_before_any_work(options, words, tmp_path, capsys):
    hostile.refused_before_any_work([*TINY, *options], words, tmp_path, capsys)


def test_estimate_names_the_option_and_the_time():
    est = vt.Config().estimate()
    assert est.option and est.models == 5 * len(vt.Config().models())
    assert 1800 < est.seconds < 3 * 3600  # the default run took about 53 min on our 2-core CPU
    with pytest.raises(study_dir.Refused, match="make seeds smaller"):
        vt.Config(seeds=10**9).estimate()


@pytest.mark.parametrize(
    "acc, dom, drop, V, n, c, want",
    [
        (0.995, 0.01, 0.0, 5000, 8, 5, "reconstructs"),
        (0.30, 0.01, 0.0, 1000, 3, 2, "capacity"),  # 2^9 = 512 < 1000
        (0.50, 0.01, 0.0, 512, 3, 2, "plateau"),  # 2^9 = 512 patterns suffice
        (0.01, 0.95, 0.10, 51, 5, 3, "collapse"),
        (0.20, 0.50, 0.05, 51, 5, 3, "too few steps"),
        (0.20, 0.50, 0.01, 51, 5, 3, "plateau"),
    ],
)
def test_cell_verdict(acc, dom, drop, V, n, c, want):
    assert vt.cell_verdict(acc, dom, drop, V, n, c) == want
    # a flat loss still at chance (> 0.9 ln V) is not a plateau of a trained model
    if want == "plateau":
        assert vt.cell_verdict(acc, dom, drop, V, n, c, ce_last=0.95) == "at chance"
        assert vt.cell_verdict(acc, dom, drop, V, n, c, ce_last=0.5) == "plateau"


def test_log_every_keeps_a_call_small():
    assert [train.log_interval(b) for b in (10, 20, 50, 100, 300, 2000)] == [1, 1, 2, 5, 10, 50]
    assert train.log_interval(10**9) == 25_000_000  # 40 calls
    assert train.log_interval(10**9 + 7) == 10**9 + 7  # a prime: one call (refused by the estimate)
