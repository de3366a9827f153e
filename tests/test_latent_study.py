"""The latent-reasoning study: outputs, resume, refusal of another configuration, the command line."""

import dataclasses
import os
import shutil

import pytest

import jax
import numpy as np

from conftest import child_env, compilation_cache_dir
from test_latent_train import TINY  # the same configuration: compilations are shared within a session
from tokdyn import cli, io, train
from tokdyn.models.latent import tasks, training
from tokdyn.studies import latent_reasoning as L

pytestmark = pytest.mark.fast_compile


# direct, a reference, has a budget of 200 steps and with this loose tolerance converges early
# (the window of 3 evaluations fills at step 80: steps 40, 60, 80); no_image keeps TINY's 40 steps
# and stops at its budget, unconverged
CONVERGING = L.Config(variants=("direct", "no_image"), tolerance=0.5, window=0.5, reference_steps=200, training=TINY)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The directory of an uninterrupted run of CONVERGING (copy it before writing to it)."""
    out = str(tmp_path_factory.mktemp("latent_study") / "whole")
    assert L.main(CONVERGING, out, quiet=True, plots=False)
    return out


def test_study_writes_outputs_and_resumes(tmp_path, study):
    cfg = CONVERGING
    assert not L.main(dataclasses.replace(cfg, max_minutes=1e-9), str(tmp_path / "s0"), quiet=True,
                      plots=False)  # out of time at once
    assert not os.path.exists(str(tmp_path / "s0" / "results" / "direct.json"))
    out = str(tmp_path / "s")
    shutil.copytree(study, out)
    acc = io.read_csv(os.path.join(out, "accuracy.csv"))
    assert len(acc["variant"]) == 2 * (len(tasks.FAMILIES) + 1) * TINY.seeds
    assert set(acc["family"]) == set(tasks.FAMILIES) | {"all"}
    optimum = tasks.question_only_optimum(TINY.task)
    for f in tasks.FAMILIES:
        np.testing.assert_allclose(acc["question_only"][acc["family"] == f], optimum[f])
    conv = io.read_csv(os.path.join(out, "convergence.csv"))
    assert conv["variant"].tolist() == ["direct", "direct", "no_image", "no_image"]
    assert conv["budget"].tolist() == [200, 200, 40, 40]  # the reference's own budget
    stopped = int(conv["steps"][0])
    assert conv["steps"].tolist() == [stopped, stopped, 40, 40] and 80 <= stopped < 200
    assert conv["converged"].tolist() == [1, 1, 0, 0]  # 40 steps cannot show a flat window: not converged
    curves = io.read_csv(os.path.join(out, "curves", "direct.csv"))
    assert curves["step"].tolist() == [s for s in range(20, stopped + 1, 20) for _ in (0, 1)]
    assert curves["seed"].tolist() == [0, 1] * (stopped // 20)
    assert {"val_all", "val_read", "answer_ce"} <= set(curves)
    tests = io.read_csv(os.path.join(out, "tests.csv"))
    assert set(tests["variant"]) == {"no_image"} and set(tests["against"]) == {"direct"}
    assert not tests["tested"].any() and np.isnan(tests["p"]).all()  # unconverged pairs are not compared
    conf = io.read_json(os.path.join(out, "config.json"))
    assert conf["training"]["steps"] == TINY.steps and conf["hparams"]["learning_rate"] == cfg.hparams.learning_rate
    res = io.read_json(os.path.join(out, "results", "direct.json"))
    assert res["nan_step"] == [-1, -1] and len(res["accuracy"]["all"]) == TINY.seeds
    with open(os.path.join(out, "summary.md")) as f:
        table = f.read()
    assert "| direct |" in table and "| no_image |" in table and "question-only optimum" in table
    mtime = os.path.getmtime(os.path.join(out, "results", "direct.json"))
    assert L.main(cfg, out, quiet=True, plots=True)  # finished variants are skipped
    assert os.path.getmtime(os.path.join(out, "results", "direct.json")) == mtime
    assert os.path.getsize(os.path.join(out, "learning_curves.png")) > 1000
    with pytest.raises(ValueError, match="different configuration"):
        L.main(dataclasses.replace(cfg, training=dataclasses.replace(TINY, steps=60)), out, quiet=True, plots=False)
    with pytest.raises(ValueError, match="different configuration"):
        L.main(dataclasses.replace(cfg, reference_steps=80), out, quiet=True, plots=False)
    with pytest.raises(ValueError, match="different configuration"):
        L.main(dataclasses.replace(cfg, hparams=training.Hparams(align_weight=0.5)), out, quiet=True, plots=False)
    # --no-train reports what is on disk, here one variant of three
    assert not L.main(dataclasses.replace(cfg, variants=("direct", "text"), train=False), out, quiet=True,
                      plots=False)
    assert set(io.read_csv(os.path.join(out, "accuracy.csv"))["variant"]) == {"direct"}
    with pytest.raises(ValueError, match="no config.json"):
        L.main(dataclasses.replace(cfg, train=False), str(tmp_path / "empty"), quiet=True, plots=False)


def test_study_continues_an_unfinished_variant_from_its_checkpoint(tmp_path):
    """A variant cut off after its first call resumes from the checkpoint to the uninterrupted result."""
    cfg = L.Config(variants=("direct",), reference_steps=0, training=TINY)
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    assert L.main(cfg, full, quiet=True, plots=False)
    pool = training.data(TINY).train
    train.train_many(training.trainer(TINY, "direct"), pool, *training.models(TINY, cfg.hparams),
                     checkpoint=os.path.join(cut, "checkpoints", "direct.npz"), stamp=training.stamp(TINY, "direct"),
                     max_calls=1)  # what a run stopped after one call leaves on disk
    assert L.main(cfg, cut, quiet=True, plots=False)
    assert io.read_csv(os.path.join(cut, "curves", "direct.csv"))["step"].tolist() == [40, 40]  # only the rest ran
    a, b = (io.read_json(os.path.join(d, "results", "direct.json"))["accuracy"] for d in (full, cut))
    assert a == b
    ckpts = [training.load(os.path.join(d, "checkpoints", "direct.npz"), TINY, "direct", cfg.hparams)
             for d in (full, cut)]
    for x, y in zip(jax.tree.leaves(ckpts[0]), jax.tree.leaves(ckpts[1])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_command_line_options():
    argv = ("study latent-reasoning --variants direct,text --seeds 2 --steps 40 --batch-size 8 --learning-rate 0.01 "
            "--width 16 --depth 1 --heads 2 --n-latents 2 --projection linear --align-weight 0.5 "
            "--curriculum-stages 1 --steps-per-call 20 --grid-size 3 --n-colours 2 --n-train 100 --n-test 20 "
            "--root-seed 3 --max-minutes 1.5 --train").split()
    args = cli.build_parser(argv).parse_args(argv)
    cfg = cli.config_from_args(L.Config, args)
    want = L.Config(variants=("direct", "text"), train=True, max_minutes=1.5, hparams=training.Hparams(
        learning_rate=0.01, align_weight=0.5), training=training.Config(
        task=tasks.Config(grid_size=3, n_colours=2, families=L.FAMILIES), seeds=2, steps=40, batch_size=8, width=16,
        depth=1, heads=2, n_latents=2, projection="linear", curriculum_stages=1, steps_per_call=20, n_train=100,
        n_test=20, root_seed=3))
    assert cfg == want
    no = ["study", "latent-reasoning", "--no-train"]
    assert cli.config_from_args(L.Config, cli.build_parser(no).parse_args(no)).train is False
    assert L.Config.quick().validate().training.steps < L.Config().training.steps
    with pytest.raises(ValueError, match="variant"):
        L.Config(variants=("direct", "dream")).validate()
    with pytest.raises(ValueError, match="max_minutes"):
        L.Config(max_minutes=0.0).validate()
    with pytest.raises(ValueError, match="reference_steps must be a multiple of steps_per_call=100, got 150"):
        L.Config(reference_steps=150).validate()
    assert L.training(L.Config(reference_steps=0), "text").steps == L.Config().training.steps
    assert L.training(L.Config(), "text").steps == L.Config().reference_steps
    assert L.training(L.Config(), "latent").steps == L.Config().training.steps


KILLED = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from tokdyn import io
from tokdyn.studies import latent_reasoning as L
from test_latent_study import CONVERGING
kill_after, saved = int(sys.argv[2]), []
original = io.save_pytree
def save(path, tree, **meta):  # a checkpoint write: the run dies right after the n-th one
    original(path, tree, **meta)
    saved.append(path)
    if len(saved) == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
io.save_pytree = save
L.main(CONVERGING, sys.argv[1], quiet=True, plots=False)
"""
def test_a_killed_study_resumes_to_the_same_results(tmp_path, study):
    """A study SIGKILLed (in a child process) right after the first checkpoint of its second
    variant and run again ends with the bits of the uninterrupted run: curves, results, test answers."""
    import signal
    import subprocess
    import sys

    killed = str(tmp_path / "killed")
    code = KILLED.format(tests=os.path.dirname(__file__))
    # the same compiler settings as the uninterrupted run, whose executables the child loads from
    # the session's compilation cache
    env = child_env(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=compilation_cache_dir())
    conv = io.read_csv(os.path.join(study, "convergence.csv"))
    first_of_second = int(conv["steps"][conv["variant"] == "direct"][0]) // TINY.steps_per_call + 1
    run = subprocess.run([sys.executable, "-c", code, killed, str(first_of_second)], env=env)
    assert run.returncode == -signal.SIGKILL
    assert os.path.exists(os.path.join(killed, "results", "direct.json"))
    assert not os.path.exists(os.path.join(killed, "results", "no_image.json"))
    assert os.path.exists(os.path.join(killed, "checkpoints", "no_image.npz"))
    assert L.main(CONVERGING, killed, quiet=True, plots=False)  # the rerun
    assert io.read_csv(os.path.join(killed, "curves", "no_image.csv"))["step"].tolist() == [20, 20, 40, 40]
    for rel in ("curves/direct.csv", "curves/no_image.csv", "accuracy.csv", "convergence.csv", "tests.csv"):
        assert open(os.path.join(study, rel)).read() == open(os.path.join(killed, rel)).read(), rel
    for name in ("direct", "no_image"):
        a, b = (np.load(os.path.join(d, "results", f"{name}.npz"))["answers"] for d in (study, killed))
        np.testing.assert_array_equal(a, b)
