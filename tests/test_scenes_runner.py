"""The scenes command as a hostile user runs it: killed at random moments it resumes to the tables
of an uninterrupted run (no learning-curve row lost); bad options and absurd sizes exit 2 naming
the option before any work (output paths that cannot be written: test_study_runner.py, for every
study)."""

import dataclasses
import os

import pytest

import hostile
import killing
from tokdyn.experiment import study as study_dir
from tokdyn.studies import object_discovery

# a small study whose learned model trains over 8 checkpoints (a third of a run's time, so that kills hit it)
KILLED = [
    "study",
    "scenes",
    "--size",
    "12",
    "--max-objects",
    "2",
    "--n-train",
    "64",
    "--n-val",
    "8",
    "--n-test",
    "12",
    "--methods",
    "baseline",
    "--temperatures",
    "0.1",
    "--position-scales",
    "1.0",
    "--dyn-steps",
    "16",
    "--no-kmeans",
    "--learned",
    "slot_attention",
    "--seeds",
    "2",
    "--train-steps",
    "160",
    "--batch-size",
    "2",
    "--slot-size",
    "8",
    "--encoder-channels",
    "4",
    "--decoder-hidden",
    "4",
    "--eval-every",
    "20",
    "--n-curve",
    "4",
    "--n-examples",
    "2",
    "--no-plots",
    "--quiet",
]


@pytest.mark.slow  # 42 s of child processes; the full run (-m full) keeps the kill tests of the collapse, visual-token,
# sweep and training layers, and this study's own resume and damaged-part tests
def test_killed_at_random_moments_it_resumes_to_the_tables_of_an_uninterrupted_run(tmp_path):
    """SIGKILL at random moments (fixed methods, training between and during checkpoints, test
    scores, tables), then the same command: byte-identical tables and every curve row."""
    cache = tmp_path / "cache"
    code, _, err = killing.run_cli(KILLED + ["--out", tmp_path / "a"], cache)  # compiles
    assert code == 0, err[-2000:]
    code, seconds, err = killing.run_cli(KILLED + ["--out", tmp_path / "b"], cache)
    assert code == 0, err[-2000:]
    out = tmp_path / "c"
    hit = killing.kill_at_random_moments(KILLED + ["--out", out], cache, seconds, kills=2, seed=7, low=0.1, high=0.7)
    if not hit:  # the machine ran faster than when it was timed: kill earlier, in a new directory
        out = tmp_path / "c2"
        hit = killing.kill_at_random_moments(
            KILLED + ["--out", out], cache, seconds, kills=2, seed=7, low=0.05, high=0.35
        )
    assert hit, "no kill hit a running process"
    names = ("results.csv", "learning_curve.csv")  # summary.md holds the training minutes
    killing.same_files(tmp_path / "a", tmp_path / "b", names)
    killing.same_files(tmp_path / "b", out, names)
    with open(out / "learning_curve.csv") as f:
        assert len(f.read().splitlines()) == 1 + 8 * 2  # 8 checkpoints x 2 seeds, none lost
    assert not os.path.exists(out / "parts" / "corrupt")


QUICK = ["--quick", "--quiet", "--no-plots", "--no-cache"]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--seeds", "1000000000"], "seeds"),  # issue 31, case 8: hung with no output
        (["--seeds", str(10**12)], "seeds"),  # a traceback
        (["--n-train", str(10**12)], "n_train"),
        (["--n-test", str(10**9)], "n_test"),
        (["--size", str(10**5)], "size"),
        (["--train-steps", str(10**12), "--eval-every", "10"], "train_steps must be at most"),
        (["--root-seed", str(10**20)], "root_seed"),
        (["--methods", "baseline,baseline"], "methods lists 'baseline' more than once"),
        (["--methods", "", "--learned", "", "--no-kmeans"], "nothing to run"),
        (["--temperatures", ""], "temperatures"),
        (["--position-scales", ""], "position_scales"),
        (["--encoder-channels", ""], "encoder_channels"),
        (["--n-curve", "1000"], "n_curve"),
        (["--n-examples", "1000"], "n_examples"),
        (["--fourier-bands", "100"], "fourier_bands"),
        (["--learning-rate", "nan"], "learning_rate"),
        (["--batch-size", "0"], "batch_size"),
    ],
)
def test_bad_options_and_absurd_sizes_exit_2_naming_the_option_before_any_work(extra, words, tmp_path, capsys):
    hostile.refused_before_any_work(["study", "scenes", *QUICK, *extra], words, tmp_path, capsys)


def test_the_estimate_names_the_option_and_says_when_it_is_long():
    assert object_discovery.Config.quick().estimate().memory < 2**30
    with pytest.raises(study_dir.Refused, match="n_train"):
        dataclasses.replace(object_discovery.Config.quick(), n_train=10**8).estimate()
    lines = []
    study_dir.check_resources(
        "scenes", dataclasses.replace(object_discovery.Config(), train_steps=100_000).estimate(), note=lines.append
    )
    assert lines and "hours" in lines[0]
