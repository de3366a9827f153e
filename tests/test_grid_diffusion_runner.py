"""The grid-diffusion study end to end, as a hostile user would run it: its outputs; killed at
random moments it resumes to the same files; corrupt parts are named, set aside and recomputed;
an autoencoder of other settings is never reused; another choice of models leaves no stale
outputs; bad options and absurd sizes exit 2 naming the option before any work."""

import dataclasses
import os

import numpy as np
import pytest

import hostile
import killing
from tokdyn import cli, io
from tokdyn.experiment import study as study_dir
from tokdyn.studies import grid_diffusion

CFG = grid_diffusion.Config(
    sentences=200,
    ae_steps=100,
    models=("token_ar", "grid_d3pm_absorbing"),
    single_models=(),
    T=8,
    width=16,
    depth=1,
    steps=20,
    batch_size=16,
    seeds=2,
    n_samples=8,
    ddim_steps=0,
    n_resamples=20,
)
TABLES = ("results.csv", "samples.txt", "summary.md")  # the outputs a rerun must reproduce byte for byte


def argv(cfg: grid_diffusion.Config, out, *extra, cache: bool = False) -> list[str]:
    """The command line of ``cfg`` (every field spelled out); ``cache``: with JAX's persistent
    compilation cache (child processes), else ``--no-cache`` (in this process)."""
    return [
        "study",
        "grid-diffusion",
        "--out",
        str(out),
        "--quiet",
        *([] if cache else ["--no-cache"]),
        *hostile.options(cfg),
        *extra,
    ]


read, copy = hostile.read, hostile.copy


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished study of CFG (with its figures)."""
    out = str(tmp_path_factory.mktemp("gd") / "done")
    assert grid_diffusion.main(CFG, out, quiet=True)
    return out


@pytest.mark.full
def test_outputs_record_and_a_rerun_that_reads_everything_back(finished, tmp_path):
    for name in TABLES + ("kernels.png", "denoising.png", "learning_curves.png", "config.json", "study.json"):
        assert os.path.exists(os.path.join(finished, name)), name
    table = io.read_csv(os.path.join(finished, "results.csv"))
    assert list(table["model"]) == ["token_ar"] * 2 + ["grid_d3pm_absorbing"] * 2
    assert "seconds" not in table  # timings live in config.json: the tables are reproducible
    record = io.read_json(os.path.join(finished, "config.json"))
    assert record["study"] == "grid-diffusion" and record["autoencoder_accuracy"] == 1.0
    assert record["config"]["models"] == list(CFG.models) and record["config"]["ae_steps"] == 100
    assert set(record["timings"]["models_s"]) == {"sequence/token_ar", "sequence/grid_d3pm_absorbing"}
    assert "jax" in record["environment"]
    out = copy(finished, tmp_path)
    parts = sorted(os.listdir(os.path.join(out, "parts")))
    assert parts == [
        "autoencoder.npz",
        "sequence__grid_d3pm_absorbing.npz",
        "sequence__grid_d3pm_absorbing_nll.npz",
        "sequence__token_ar.npz",
        "sequence__token_ar_nll.npz",
    ]
    times = {p: os.path.getmtime(os.path.join(out, "parts", p)) for p in parts}
    assert grid_diffusion.main(CFG, out, quiet=True, plots=False)  # everything read back, nothing recomputed
    assert times == {p: os.path.getmtime(os.path.join(out, "parts", p)) for p in parts}
    for name in TABLES:
        assert read(os.path.join(out, name)) == read(os.path.join(finished, name)), name
    assert os.path.exists(os.path.join(out, "kernels.png"))  # the same configuration's figures stay


@pytest.mark.full
def test_another_choice_of_models_reuses_the_parts_and_leaves_no_stale_outputs(finished, tmp_path):
    out = copy(finished, tmp_path)
    part = os.path.join(out, "parts", "sequence__grid_d3pm_absorbing.npz")
    t = os.path.getmtime(part)
    assert grid_diffusion.main(dataclasses.replace(CFG, models=("token_ar",)), out, quiet=True, plots=False)
    assert list(io.read_csv(os.path.join(out, "results.csv"))["model"]) == ["token_ar"] * 2
    assert not [f for f in os.listdir(out) if f.endswith(".png")]  # the other run's figures are gone
    assert io.read_json(os.path.join(out, "config.json"))["config"]["models"] == ["token_ar"]
    assert grid_diffusion.main(CFG, out, quiet=True, plots=False)  # back to both: the kept part is read, not retrained
    assert os.path.getmtime(part) == t
    for name in TABLES:
        assert read(os.path.join(out, name)) == read(os.path.join(finished, name)), name


@pytest.mark.full
def test_truncated_parts_are_named_set_aside_and_recomputed(finished, tmp_path):
    """Issue 31, case 4: a truncated part used to stop every rerun with a raw BadZipFile."""
    out = copy(finished, tmp_path)
    damaged = ["autoencoder.npz", "sequence__token_ar.npz", "sequence__grid_d3pm_absorbing_nll.npz"]
    hostile.truncated_parts_recomputed(argv(CFG, out, "--no-plots"), CFG, out, finished, damaged, TABLES)


@pytest.mark.full
def test_an_autoencoder_of_other_settings_is_never_reused(tmp_path, capsys):
    """Issue 31, case 2: killed right after parts/autoencoder.npz was written, then rerun with
    --ae-steps 10: the 100-step autoencoder was reused (accuracy 1.0 where 10 steps give less)."""
    out = str(tmp_path / "gd")
    study = study_dir.Study.open(
        out, "grid-diffusion", CFG, selection=grid_diffusion.SPEC.selection
    )  # what main does first ...
    grid_diffusion.autoencoder(CFG, study)  # ... then the autoencoder part; killed here
    study.release()
    part = os.path.join(out, "parts", "autoencoder.npz")
    kept = read(part)
    short = dataclasses.replace(CFG, ae_steps=10, models=("token_ar",))
    assert cli.main(argv(short, out)) == 2
    err = capsys.readouterr().err
    assert "ae_steps: 100 there, 10 now" in err and "--fresh" in err
    assert read(part) == kept and sorted(os.listdir(out)) == ["parts", "study.json"]
    assert cli.main(argv(short, out, "--fresh", "--no-plots")) == 0
    accuracy = io.read_json(os.path.join(out, "config.json"))["autoencoder_accuracy"]
    assert accuracy == grid_diffusion.autoencoder(short)[2] < 1.0  # what a fresh 10-step autoencoder decodes
    assert str(io.load_npz(part)["stamp"]).endswith(study_dir.digest(grid_diffusion.autoencoder_key(short)))
    assert grid_diffusion.autoencoder_key(short) != grid_diffusion.autoencoder_key(CFG)
    assert grid_diffusion.autoencoder_key(dataclasses.replace(CFG, steps=7, lam=0.5)) == grid_diffusion.autoencoder_key(
        CFG
    )


@pytest.mark.slow  # 22 s of child processes; the full run (-m full) keeps the kill tests of the collapse, visual-token,
# sweep and training layers, and this study's own resume and damaged-part tests
def test_killed_at_random_moments_it_resumes_to_the_files_of_an_uninterrupted_run(tmp_path):
    """SIGKILL at random moments (corpus, autoencoder, model, likelihood, tables), then the same
    command: byte-identical tables, nothing set aside as corrupt."""
    cache = tmp_path / "cache"
    cfg = dataclasses.replace(CFG, models=("token_ar",))
    code, _, err = killing.run_cli(argv(cfg, tmp_path / "a", "--no-plots", cache=True), cache)  # compiles
    assert code == 0, err[-2000:]
    code, seconds, err = killing.run_cli(argv(cfg, tmp_path / "b", "--no-plots", cache=True), cache)
    assert code == 0, err[-2000:]
    out = tmp_path / "c"
    hit = killing.kill_at_random_moments(
        argv(cfg, out, "--no-plots", cache=True), cache, seconds, kills=3, seed=5, low=0.1, high=0.7
    )
    if not hit:  # the machine ran faster than when it was timed: kill earlier, in a new directory
        out = tmp_path / "c2"
        hit = killing.kill_at_random_moments(
            argv(cfg, out, "--no-plots", cache=True), cache, seconds, kills=3, seed=5, low=0.05, high=0.35
        )
    assert hit, "no kill hit a running process"
    killing.same_files(tmp_path / "a", tmp_path / "b", TABLES)
    killing.same_files(tmp_path / "b", out, TABLES)
    assert not os.path.exists(out / "parts" / "corrupt")


QUICK = ["--quick", "--models", "token_ar", "--single-models", "", "--quiet", "--no-plots", "--no-cache"]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--seeds", "1000000000"], "seeds"),  # issue 31, case 8: took 6 GB in 20 s
        (["--seeds", str(10**12)], "seeds"),  # a traceback
        (["--sentences", str(10**10)], "sentences"),
        (["--T", str(10**10)], "T"),
        (["--n-resamples", str(10**9)], "n_resamples"),
        (["--steps", str(10**10)], "steps must be at most"),
        (["--root-seed", str(10**20)], "root_seed"),
        (["--models", "token_ar,token_ar"], "models lists 'token_ar' more than once"),
        (["--models", "", "--single-models", ""], "models and single_models must not both be empty"),
        (["--learning-rate", "nan"], "learning_rate"),
        (["--lam", "inf"], "lam"),
        (["--batch-size", "0"], "batch_size"),
        (["--width", "0"], "width"),
        (["--colours", "1"], "colours"),
    ],
)
def test_bad_options_and_absurd_sizes_exit_2_naming_the_option_before_any_work(extra, words, tmp_path, capsys):
    hostile.refused_before_any_work(["study", "grid-diffusion", *QUICK, *extra], words, tmp_path, capsys)


def test_a_micro_run_writes_its_table_and_samples_words_of_the_grammar(tmp_path):
    """The study end to end in the default run at a micro size (60 sentences, a 5-step autoencoder,
    the token autoregressive model alone, 5 steps, one seed, 4 samples): one row, its shares in
    [0, 1], its divergences at least 0, its held-out likelihood a positive number of nats, and every
    sampled word a word of the grammar (the samples decoded through the corpus's vocabulary). The full
    tier runs the grid models with their reruns, kills and damaged parts (the tests above)."""
    from tokdyn.models.vtae import corpus

    cfg = dataclasses.replace(
        CFG, sentences=60, ae_steps=5, models=("token_ar",), T=4, width=8, steps=5, batch_size=8, seeds=1, n_samples=4
    )
    out = str(tmp_path / "micro")
    assert grid_diffusion.main(cfg, out, quiet=True, plots=False)
    t = study_dir.read_table(out, "results.csv")
    assert (
        t["model"].tolist() == ["token_ar"] and t["scope"].tolist() == ["sequence"] and t["nan_step"].tolist() == [-1]
    )
    for share in ("distinct_1", "distinct_2", "grammatical_bigrams", "grammatical_sentences", "novel"):
        assert 0 <= t[share][0] <= 1, share
    assert t["unigram_kl"][0] >= 0 and t["bigram_kl"][0] >= 0 and 0 < t["nll"][0] < np.inf
    assert t["train_loss_last"][0] < t["train_loss_first"][0]  # five steps of Adam lower the loss
    vocab = set(corpus.grammar_vocab()[0])
    text = open(os.path.join(out, "samples.txt")).read().splitlines()
    assert text[0] == "== sequence/token_ar (seed 0, first 4 of 4)" and len(text[1:5]) == 4
    assert all(set(line.split()) <= vocab for line in text[1:5]), text


def test_the_estimate_names_the_option_and_says_when_it_is_long():
    assert grid_diffusion.Config.quick().estimate().memory < 2**30
    big = dataclasses.replace(grid_diffusion.Config.quick(), batch_size=4_000_000)
    with pytest.raises(study_dir.Refused, match="batch_size"):
        big.estimate()
    lines = []
    study_dir.check_resources(
        "grid-diffusion", dataclasses.replace(grid_diffusion.Config(), steps=300_000).estimate(), note=lines.append
    )
    assert lines and "hours" in lines[0]
