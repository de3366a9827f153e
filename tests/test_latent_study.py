"""The latent-reasoning study: outputs, resume (also after SIGKILLs at random moments), damaged
files named and recomputed, refusal of absurd sizes, the command line (another configuration:
test_study_runner.py, for every study)."""

import dataclasses
import os
import shutil
import warnings

import pytest

import jax
import numpy as np

import killing
from test_latent_train import TINY  # the same configuration: compilations are shared within a session
from tokdyn import cli, io, train
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import evaluation, training
from tokdyn.studies import latent_reasoning


# direct, a reference, has a budget of 200 steps and with this loose rule converges early (no rise
# by more than 0.5 for 40 steps, at least 50 steps done, the loss not consulted: it stops at step 60
# at the earliest); no_image keeps TINY's 40 steps and stops at its budget, unconverged (one
# evaluation after its first cannot show a plateau)
CONVERGING = latent_reasoning.Config(
    variants=("direct", "no_image"),
    patience=0.2,
    min_fraction=0.25,
    min_delta=0.5,
    loss_delta=0.0,
    reference_steps=200,
    training=TINY,
)
ARGS = [
    "study",
    "latent-reasoning",
    "--variants",
    "direct,no_image",
    "--patience",
    "0.2",
    "--min-fraction",
    "0.25",
    "--min-delta",
    "0.5",
    "--loss-delta",
    "0",
    "--reference-steps",
    "200",
    "--grid-size",
    "3",
    "--n-colours",
    "2",
    "--families",
    ",".join(tasks.FAMILIES),
    "--width",
    "16",
    "--depth",
    "1",
    "--heads",
    "2",
    "--n-latents",
    "2",
    "--steps",
    "40",
    "--steps-per-call",
    "20",
    "--batch-size",
    "16",
    "--n-train",
    "400",
    "--n-test",
    "40",
    "--n-val",
    "40",
    "--seeds",
    "2",
    "--warmup",
    "5",
    "--quiet",
    "--no-plots",
]  # CONVERGING on the command line
RESULTS = [
    "curves/direct.csv",
    "curves/no_image.csv",
    "results/direct.json",
    "results/no_image.json",
    "accuracy.csv",
    "convergence.csv",
    "tests.csv",
]


def same_answers(a, b):
    for name in ("direct", "no_image"):
        np.testing.assert_array_equal(latent_reasoning.read_answers(a, name), latent_reasoning.read_answers(b, name))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The directory of an uninterrupted command-line run of CONVERGING, in this process (its
    compilations, and its data, are shared with the other tests; copy the directory before writing
    to it)."""
    out = str(tmp_path_factory.mktemp("latent_study") / "whole")
    assert cli.main([*ARGS, "--out", out]) == 0
    return out


def test_the_command_line_config_is_the_tests():
    assert cli.config_from_args(latent_reasoning.Config, cli.build_parser(ARGS).parse_args(ARGS)) == CONVERGING


@pytest.mark.full
def test_study_writes_outputs_and_resumes(tmp_path, study):
    cfg = CONVERGING
    assert not latent_reasoning.main(
        dataclasses.replace(cfg, max_minutes=1e-9), str(tmp_path / "s0"), quiet=True, plots=False
    )  # out of time at once
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
    assert conv["steps"].tolist() == [stopped, stopped, 40, 40] and 60 <= stopped < 200
    assert conv["converged"].tolist() == [1, 1, 0, 0]  # 40 steps cannot show a plateau: not converged
    curves = io.read_csv(os.path.join(out, "curves", "direct.csv"))
    assert curves["step"].tolist() == [s for s in range(20, stopped + 1, 20) for _ in (0, 1)]
    assert curves["seed"].tolist() == [0, 1] * (stopped // 20)
    assert {"val_all", "val_read", "answer_ce"} <= set(curves)
    tests = io.read_csv(os.path.join(out, "tests.csv"))
    assert set(tests["variant"]) == {"no_image"} and set(tests["against"]) == {"direct"}
    assert not tests["tested"].any() and np.isnan(tests["p"]).all()  # unconverged pairs are not compared
    conf = io.read_json(os.path.join(out, "config.json"))
    assert conf["study"] == "latent-reasoning" and conf["variants"] == ["direct", "no_image"]
    assert conf["config"]["training"]["train"]["steps"] == TINY.train.steps
    assert conf["config"]["hparams"]["learning_rate"] == cfg.hparams.learning_rate
    assert conf["config"]["variants"] == conf["selection"]["variants"] == ["direct", "no_image"]  # the whole config
    res = latent_reasoning.read_result(os.path.join(out, "results", "direct.json"))
    assert res["nan_step"] == [-1, -1] and len(res["accuracy"]["all"]) == TINY.seeds
    # each seed is tested with its state at its best held-out accuracy (the first step reaching it)
    assert res["tested"] == "best"
    for s in range(TINY.seeds):
        val = curves["val_all"][curves["seed"] == s]
        assert res["tested_step"][s] == curves["step"][curves["seed"] == s][int(np.argmax(val))]
    ckpt = os.path.join(out, "checkpoints", "direct.npz")
    best = training.load_best(ckpt, latent_reasoning.training(cfg, "direct"), "direct", cfg.hparams)
    assert best.step.tolist() == res["tested_step"]
    _, params, tc = latent_reasoning.load_variant(cfg, out, "direct")  # what the diagnostics read: the tested state
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(best.state.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    answers, _ = evaluation.answers(tc, "direct", params, latent_reasoning.splits(cfg).test)
    np.testing.assert_array_equal(np.asarray(answers), latent_reasoning.read_answers(out, "direct"))
    with open(os.path.join(out, "summary.md")) as f:
        table = f.read()
    assert "| direct |" in table and "| no_image |" in table and "question-only optimum" in table
    mtime = os.path.getmtime(os.path.join(out, "results", "direct.json"))
    assert latent_reasoning.main(cfg, out, quiet=True, plots=True)  # finished variants are skipped
    assert os.path.getmtime(os.path.join(out, "results", "direct.json")) == mtime
    assert os.path.getsize(os.path.join(out, "learning_curves.png")) > 1000
    # another configuration is refused before any work, naming what differs; variants may change
    fewer = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, steps=60))
    for other, words in (
        (dataclasses.replace(cfg, training=fewer), "training.train.steps: 40"),
        (dataclasses.replace(cfg, reference_steps=80), "reference_steps: 200 there, 80 now"),
        (dataclasses.replace(cfg, hparams=training.Hparams(align_weight=0.5)), "hparams.align_weight"),
        (dataclasses.replace(cfg, devices=0), "devices: 1 there, 0 now"),
        (dataclasses.replace(cfg, tested="final"), "tested"),
    ):
        with pytest.raises(io.OutputConflict, match=words):
            latent_reasoning.main(other, out, quiet=True, plots=False)
    # --no-train reports what is on disk, here one variant of three
    assert not latent_reasoning.main(
        dataclasses.replace(cfg, variants=("direct", "text"), train=False), out, quiet=True, plots=False
    )
    assert set(io.read_csv(os.path.join(out, "accuracy.csv"))["variant"]) == {"direct"}
    with pytest.raises(ValueError, match="holds no latent-reasoning study"):
        latent_reasoning.main(dataclasses.replace(cfg, train=False), str(tmp_path / "empty"), quiet=True, plots=False)
    assert not os.path.exists(tmp_path / "empty")
    # --fresh removes the old configuration's files (its variants and figures) and starts afresh
    fresh = latent_reasoning.Config(variants=("no_image",), reference_steps=0, training=TINY)
    assert latent_reasoning.main(fresh, out, quiet=True, plots=False, fresh=True)
    assert sorted(os.listdir(os.path.join(out, "results"))) == ["no_image.json", "no_image.npz"]
    assert not os.path.exists(os.path.join(out, "learning_curves.png"))
    assert io.read_json(os.path.join(out, "config.json"))["config"]["reference_steps"] == 0


@pytest.mark.full
def test_tested_final_answers_with_the_last_state(tmp_path):
    """With tested='final' the test answers and the state the analyses read are the last step's."""
    # no_image (here and below): the variant the study fixture trains on TINY's schedule, whose
    # compiled training and evaluation these tests share
    cfg = latent_reasoning.Config(variants=("no_image",), reference_steps=0, training=TINY, tested="final")
    out = str(tmp_path / "final")
    assert latent_reasoning.main(cfg, out, quiet=True, plots=False)
    res = latent_reasoning.read_result(os.path.join(out, "results", "no_image.json"))
    assert res["tested"] == "final" and res["tested_step"] == [TINY.train.steps] * TINY.seeds
    last = training.load(os.path.join(out, "checkpoints", "no_image.npz"), TINY, "no_image", cfg.hparams)
    _, params, tc = latent_reasoning.load_variant(cfg, out, "no_image")
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(last.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    answers, _ = evaluation.answers(tc, "no_image", last.params, latent_reasoning.splits(cfg).test)
    np.testing.assert_array_equal(np.asarray(answers), latent_reasoning.read_answers(out, "no_image"))


def truncate(path, keep=2 / 3):
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


def stop_recorded(whole, seen):
    """``train.train_many`` (``whole``) whose evaluation's stop rule also records each step it is
    asked about in ``seen``."""

    def many(*args, evaluation, **kw):
        stop = evaluation.stop
        spy = dataclasses.replace(evaluation, stop=lambda *s: seen.append(s[0]) or stop(*s))
        return whole(*args, evaluation=spy, **kw)

    return many


@pytest.mark.full
def test_study_continues_an_unfinished_variant_from_its_checkpoint(tmp_path, monkeypatch):
    """A variant cut off after its first call resumes from the checkpoint to the uninterrupted
    result; with its curve damaged, it is trained again from the start, to the same result."""
    cfg = latent_reasoning.Config(variants=("no_image",), reference_steps=0, training=TINY)
    full, cut, bad = (str(tmp_path / d) for d in ("full", "cut", "bad"))
    assert latent_reasoning.main(cfg, full, quiet=True, plots=False)
    whole = train.train_many
    monkeypatch.setattr(train, "train_many", lambda *a, **kw: whole(*a, **{**kw, "max_calls": 1}))
    assert not latent_reasoning.main(cfg, cut, quiet=True, plots=False)  # what a run stopped after one call leaves
    monkeypatch.setattr(train, "train_many", whole)
    assert io.read_csv(os.path.join(cut, "curves", "no_image.csv"))["step"].tolist() == [20, 20]
    shutil.copytree(cut, bad)
    calls = []
    monkeypatch.setattr(train, "train_many", stop_recorded(whole, calls))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert latent_reasoning.main(cfg, cut, quiet=True, plots=False)
    assert not [w for w in caught if "set aside" in str(w.message)]  # a clean resume sets nothing aside
    assert calls == [40]  # only the rest ran
    truncate(os.path.join(bad, "curves", "no_image.csv"), 0.9)
    with pytest.warns(RuntimeWarning, match=r"curves/no_image.csv does not hold the learning curve of .*no_image.npz"):
        assert latent_reasoning.main(cfg, bad, quiet=True, plots=False)
    assert calls == [40, 20, 40]  # trained again from the start
    assert os.listdir(os.path.join(bad, "curves", "corrupt")) and os.listdir(
        os.path.join(bad, "checkpoints", "corrupt")
    )
    killing.same_files(full, cut, ["curves/no_image.csv", "results/no_image.json", "accuracy.csv"])
    killing.same_files(full, bad, ["curves/no_image.csv", "results/no_image.json", "accuracy.csv"])
    # a checkpoint that keeps no best state (as an earlier tokdyn wrote it) is set aside and the
    # variant trained again from the start, to the same result
    old = str(tmp_path / "old")
    shutil.copytree(cut, old)
    for f in ("results/no_image.json", "results/no_image.npz"):
        os.remove(os.path.join(old, f))
    ck = os.path.join(old, "checkpoints", "no_image.npz")
    state, curves, _ = train.load_checkpoint(ck, training.init_states(TINY, "no_image", cfg.hparams))
    train.save_checkpoint(ck, state, curves, training.stamp(TINY, "no_image"))  # no best state
    with pytest.warns(RuntimeWarning, match="keeps no best state"):
        assert latent_reasoning.main(cfg, old, quiet=True, plots=False)
    assert calls == [40, 20, 40, 20, 40]
    killing.same_files(full, old, ["curves/no_image.csv", "results/no_image.json", "accuracy.csv"])
    ckpts = [
        training.load(os.path.join(d, "checkpoints", "no_image.npz"), TINY, "no_image", cfg.hparams)
        for d in (full, cut)
    ]
    for x, y in zip(jax.tree.leaves(ckpts[0]), jax.tree.leaves(ckpts[1])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------------------------- micro runs
# The three studies of the trained reasoners in the default run, end to end at a micro size, in one
# module so that their programs compile once (the task's draws, the training step, the evaluation).
# Their full runs: test_study_writes_outputs_and_resumes here, test_latent_diagnostics_study.py's and
# test_latent_optimisation.py's test_study_writes_its_tables.

# One latent step (TINY has two): every program of the three studies unrolls the model once per latent
# step, and none of the properties checked below depends on how many there are.
MICRO = latent_reasoning.Config(
    reference_steps=0,
    variants=("latent",),
    training=dataclasses.replace(
        TINY,
        seeds=1,
        n_latents=1,
        n_train=100,
        n_val=20,
        n_test=20,
        train=train.Config(steps=4, steps_per_call=4, warmup=1),
    ),
)


@pytest.fixture(scope="module")
def micro_source(tmp_path_factory):
    """A latent-reasoning directory of MICRO, its ``latent`` variant trained for 4 steps (read only)."""
    out = str(tmp_path_factory.mktemp("micro") / "source")
    assert latent_reasoning.main(MICRO, out, quiet=True, plots=False)
    return out


def test_a_micro_run_tables_the_answers_it_kept_and_the_majority_baseline(micro_source):
    """latent-reasoning: the accuracy table is the kept test answers scored against the test set's,
    family by family (NumPy), and the chance column each family's most frequent training answer's
    accuracy on the test set (NumPy)."""
    acc = io.read_csv(os.path.join(micro_source, "accuracy.csv"))
    data = training.data(MICRO.training)
    answers = latent_reasoning.read_answers(micro_source, "latent")[0]
    truth, fam = np.asarray(data.test.answer), np.asarray(data.test.family)
    train_answer, train_fam = np.asarray(data.train.answer), np.asarray(data.train.family)
    assert set(acc["family"]) == set(MICRO.training.task.families) | {"all"} and set(acc["variant"]) == {"latent"}
    for f in MICRO.training.task.families:
        i, row = tasks.FAMILIES.index(f), acc["family"] == f
        np.testing.assert_allclose(acc["accuracy"][row], (answers[fam == i] == truth[fam == i]).mean())
        majority = np.bincount(train_answer[train_fam == i]).argmax()
        np.testing.assert_allclose(acc["chance"][row], (truth[fam == i] == majority).mean())
    conv = io.read_csv(os.path.join(micro_source, "convergence.csv"))
    assert conv["budget"].tolist() == [4] and conv["steps"].tolist() == [4]


def test_a_micro_diagnostics_run_decomposes_the_sources_answers(micro_source, tmp_path, monkeypatch):
    """latent-diagnostics: the decomposition's ``full`` setting is the source's model answering as
    the source study recorded (its kept answers, one last-bit argmax tie at most), every mediation
    rate is a share (where defined), every divergence at least 0, and the latents' participation
    ratio lies in [1, width]."""
    from tokdyn.studies import latent_diagnostics

    monkeypatch.setattr(latent_diagnostics.Config, "reasoning", lambda self: MICRO)
    cfg = latent_diagnostics.Config(
        source=micro_source, variants=("latent",), reference="", midway=False, n_instances=20,
        perturbations=("shuffle",), noise_sigmas=(), interventions=("zeros",), settings=("full", "no_block"),
        probe_steps=5, n_resamples=20,
    )  # fmt: skip
    out = str(tmp_path / "diagnostics")
    assert latent_diagnostics.main(cfg, out, quiet=True, plots=False)
    dec = io.read_csv(os.path.join(out, "decomposition.csv"))
    truth = np.asarray(training.data(MICRO.training).test.answer)[:20]
    kept = (latent_reasoning.read_answers(micro_source, "latent")[0, :20] == truth).mean()
    full = (dec["stage"] == "final") & (dec["setting"] == "full")
    np.testing.assert_allclose(dec["accuracy"][full], kept, rtol=0, atol=1 / 20 + 1e-9)
    med = io.read_csv(os.path.join(out, "mediation.csv"))
    changed, kl = med["changed"][np.isfinite(med["changed"])], med["kl"][np.isfinite(med["kl"])]
    assert changed.size and np.all((changed >= 0) & (changed <= 1)) and np.all(kl >= -1e-6)
    col = io.read_csv(os.path.join(out, "collapse.csv"))
    pr = col["participation_ratio"]
    assert len(pr) == MICRO.training.n_latents and np.all((pr >= 1 - 1e-6) & (pr <= MICRO.training.width + 1e-6))


def test_a_micro_optimisation_run_starts_from_the_sources_answers(micro_source, tmp_path, monkeypatch):
    """latent-optimisation: the ``before`` row is the source's kept answers' accuracy, and the
    best-of evolution strategy never ends below the reward it started from (its candidates include
    the start)."""
    from tokdyn.studies import latent_optimisation

    monkeypatch.setattr(latent_optimisation.Config, "reasoning", lambda self: MICRO)
    cfg = latent_optimisation.Config(
        source=micro_source, variants=("latent",), methods=("es_entropy_best",), grounding_variants=(),
        perturbations=("blank",), n_instances=20, top_k=2, n_iters=2, n_pairs=1, learning_rate=0.5,
        sweep_method="es_entropy_best", sweep_learning_rates=(),
    )  # fmt: skip
    out = str(tmp_path / "optimisation")
    assert latent_optimisation.main(cfg, out, quiet=True, plots=False)
    table = io.read_csv(os.path.join(out, "optimiser.csv"))
    truth = np.asarray(training.data(MICRO.training).test.answer)[:20]
    kept = (latent_reasoning.read_answers(micro_source, "latent")[0, :20] == truth).mean()
    before = (table["method"] == "before") & (table["family"] == "all")
    np.testing.assert_allclose(table["accuracy"][before], kept, rtol=0, atol=1 / 20 + 1e-9)
    es = (table["method"] == "es_entropy_best") & (table["family"] == "all")
    assert es.sum() == 1 and np.all(table["reward_after"][es] >= table["reward_before"][es])


def test_command_line_options():
    argv = (
        "study latent-reasoning --variants direct,text --seeds 2 --steps 40 --batch-size 8 --learning-rate 0.01 "
        "--width 16 --depth 1 --heads 2 --n-latents 2 --projection linear --align-weight 0.5 "
        "--curriculum-stages 1 --steps-per-call 20 --grid-size 3 --n-colours 2 --n-train 100 --n-test 20 "
        "--root-seed 3 --max-minutes 1.5 --train"
    ).split()
    args = cli.build_parser(argv).parse_args(argv)
    cfg = cli.config_from_args(latent_reasoning.Config, args)
    want = latent_reasoning.Config(
        variants=("direct", "text"),
        train=True,
        max_minutes=1.5,
        hparams=training.Hparams(learning_rate=0.01, align_weight=0.5),
        training=training.Config(
            task=tasks.Config(grid_size=3, n_colours=2, families=latent_reasoning.FAMILIES),
            seeds=2,
            batch_size=8,
            width=16,
            depth=1,
            heads=2,
            n_latents=2,
            projection="linear",
            curriculum_stages=1,
            n_train=100,
            n_test=20,
            root_seed=3,
            train=train.Config(steps=40, steps_per_call=20, warmup=200),
        ),
    )
    assert cfg == want
    no = ["study", "latent-reasoning", "--no-train"]
    assert cli.config_from_args(latent_reasoning.Config, cli.build_parser(no).parse_args(no)).train is False
    assert (
        latent_reasoning.Config.quick().validate().training.train.steps < latent_reasoning.Config().training.train.steps
    )
    with pytest.raises(ValueError, match="variant"):
        latent_reasoning.Config(variants=("direct", "dream")).validate()
    with pytest.raises(ValueError, match="max_minutes"):
        latent_reasoning.Config(max_minutes=0.0).validate()
    with pytest.raises(ValueError, match="reference_steps must be a multiple of steps_per_call=100, got 150"):
        latent_reasoning.Config(reference_steps=150).validate()
    assert (
        latent_reasoning.training(latent_reasoning.Config(reference_steps=0), "text").train.steps
        == latent_reasoning.Config().training.train.steps
    )
    assert latent_reasoning.training(latent_reasoning.Config(), "text").train == dataclasses.replace(
        latent_reasoning.Config().training.train, steps=latent_reasoning.Config().reference_steps
    )
    assert (
        latent_reasoning.training(latent_reasoning.Config(), "latent").train.steps
        == latent_reasoning.Config().training.train.steps
    )


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--quick", "--variants", "direct", "--n-train", "1000000000000"], "n_train"),
        (["--seeds", "1000000000"], "seeds"),
        (["--quick", "--seeds", str(10**12)], "seeds"),
        (["--quick", "--steps", str(10**13), "--steps-per-call", "1"], "steps"),
        (["--quick", "--batch-size", str(10**9)], "batch_size"),
        (["--quick", "--devices", "64"], "devices must be at most"),
        (["--quick", "--root-seed", str(2**32)], "root_seed must be at most"),
        (["--quick", "--variants", ""], "variants must name at least one"),
        (["--quick", "--max-minutes", "nan"], "max_minutes"),
        (["--quick", "--tested", "last"], "tested"),
        (["--quick", "--no-train"], "holds no latent-reasoning study"),
    ],
)
def test_absurd_or_impossible_options_exit_2_before_any_work(tmp_path, capsys, argv, words):
    out = tmp_path / "out"
    assert cli.main(["study", "latent-reasoning", *argv, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow  # 23 s of child processes; the full run (-m full) keeps the kill tests of the collapse, visual-token,
# sweep and training layers, and this study's own resume and damaged-part tests
def test_a_study_killed_at_random_moments_resumes_to_the_same_results(tmp_path, monkeypatch):
    """SIGKILLed at random moments of a run (timed by an uninterrupted run with the compilations
    cached, as every later run has them) and run again: the bits of the uninterrupted runs."""
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    cache = tmp_path / "cache"
    whole, again, out = str(tmp_path / "whole"), str(tmp_path / "again"), str(tmp_path / "killed")
    code, _, err = killing.run_cli([*ARGS, "--out", whole], cache)  # compiles, into the children's cache
    assert code == 0, err[-3000:]
    code, seconds, err = killing.run_cli([*ARGS, "--out", again], cache)
    assert code == 0, err[-3000:]
    killing.same_files(whole, again, RESULTS)
    # moments 0.66, 0.37, 0.18 of a run: in the training, then into the resumed runs' start-up or training
    hit = killing.kill_at_random_moments([*ARGS, "--out", out], cache, seconds, kills=3, seed=0)
    assert len(hit) >= 2, hit
    killing.same_files(whole, out, RESULTS)
    same_answers(whole, out)


@pytest.mark.full
def test_damaged_files_of_a_finished_variant_are_named_set_aside_and_recomputed(tmp_path, monkeypatch):
    """Truncated, each kind in turn: the curve (restored from its copy in the answers), the result
    and the answers (recomputed from the final checkpoint), the checkpoint (trained again): each is
    named in a warning, set aside to corrupt/, and the study ends with the same bits."""
    cfg = latent_reasoning.Config(variants=("no_image",), reference_steps=0, training=TINY)
    full, out = str(tmp_path / "full"), str(tmp_path / "out")
    assert latent_reasoning.main(cfg, full, quiet=True, plots=False)
    shutil.copytree(full, out)
    files = ["curves/no_image.csv", "results/no_image.json", "results/no_image.npz", "accuracy.csv"]
    whole = train.train_many
    steps = []
    monkeypatch.setattr(train, "train_many", stop_recorded(whole, steps))
    for damaged, retrained in (
        (["curves/no_image.csv"], False),
        (["results/no_image.json", "results/no_image.npz"], False),
        (["checkpoints/no_image.npz"], True),
    ):
        for rel in damaged:
            truncate(os.path.join(out, rel))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert latent_reasoning.main(cfg, out, quiet=True, plots=False)
        said = " ".join(str(w.message) for w in caught)
        for rel in damaged:
            assert os.path.join(out, rel) in said and "set aside" in said, (rel, said)
            assert any(
                n.startswith(os.path.basename(rel))
                for n in os.listdir(os.path.join(out, os.path.dirname(rel), "corrupt"))
            ), rel
        assert bool(steps) == retrained, (damaged, steps)
        steps.clear()
        killing.same_files(full, out, [f for f in files if not f.endswith(".npz")])
        np.testing.assert_array_equal(
            latent_reasoning.read_answers(full, "no_image"), latent_reasoning.read_answers(out, "no_image")
        )
