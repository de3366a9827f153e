"""Every study as a hostile user runs it, through the command registry: a repeated condition, an
absurd size, a tampered table under `tokdyn reproduce`, a source checkpoint rewritten without its
verification header. Each is refused (exit 2, naming the option or the file) or never judged --
before any work, and without touching what is on disk."""

import os
import shutil

import numpy as np
import pytest

import hostile
from tokdyn import cli, io, reproduce
from tokdyn.experiment import findings
from tokdyn.studies import latent_reasoning
from tokdyn.experiment import study as study_dir
from tokdyn.studies import latent_diagnostics
from tokdyn.studies import token_dynamics

STUDIES = [name for group, name in cli.COMMANDS if group == "study"]
ANALYSES = ("latent-diagnostics", "latent-optimisation", "organism-diagnostics")  # they read a --source directory

# one list of conditions per study, given with a value twice: (option, value)
REPEATED = {
    "token-dynamics": ("noise", "0.3,0.3"),
    "collapse": ("phase_noise", "0.5,1.0,0.5"),
    "visual-tokens": ("vocab_sizes", "5,51,5"),
    "latent-reasoning": ("variants", "direct,text,direct"),
    "latent-organisms": ("variants", "direct,latent,direct"),
    "organism-diagnostics": ("recipes", "latent,coconut,latent"),
    "latent-optimisation": ("perturbations", "blank,blank"),
    "latent-diagnostics": ("noise_sigmas", "0.25,0.25"),
    "grid-diffusion": ("models", "grid_ddpm,token_ar,grid_ddpm"),
    "scenes": ("temperatures", "0.01,0.1,0.01"),
    "video": ("predictors", "reinit,carry,reinit"),
    "vlm-diagnostics": ("noise_levels", "0.25,0.5,0.25"),
}

HUGE = 10**12
# absurd sizes, each refused naming its option (the token-dynamics study's are checked with it)
ABSURD = [
    ("collapse", "seeds", HUGE),
    ("collapse", "n_points", 12 * HUGE),
    ("collapse", "convergence_runs", HUGE),
    ("visual-tokens", "vocab_sizes", HUGE),
    ("visual-tokens", "batch_size", HUGE),
    ("visual-tokens", "hidden", HUGE),
    ("latent-reasoning", "n_latents", HUGE),
    ("latent-reasoning", "reference_steps", HUGE),
    ("latent-reasoning", "curriculum_stages", HUGE),
    ("latent-reasoning", "width", HUGE),
    ("latent-reasoning", "n_train", HUGE),
    ("latent-organisms", "n_train", HUGE),
    ("latent-organisms", "batch_size", HUGE),
    ("organism-diagnostics", "n_instances", HUGE),
    ("organism-diagnostics", "batch_size", HUGE),
    ("latent-optimisation", "n_pairs", HUGE),
    ("latent-optimisation", "n_iters", HUGE),
    ("latent-diagnostics", "probe_steps", HUGE),
    ("latent-diagnostics", "n_resamples", HUGE),
    ("grid-diffusion", "grid", HUGE),
    ("grid-diffusion", "depth", HUGE),
    ("grid-diffusion", "width", HUGE),
    ("scenes", "size", HUGE),
    ("scenes", "iterations", HUGE),
    ("scenes", "batch_size", HUGE),
    ("video", "seeds", HUGE),
    ("video", "size", HUGE),
    ("video", "frames", HUGE),
    ("vlm-diagnostics", "n_instances", HUGE),
    ("vlm-diagnostics", "batch_size", HUGE),
    ("vlm-diagnostics", "image_size", 28 * HUGE),
    ("vlm-diagnostics", "optimiser_pairs", HUGE),
    ("vlm-diagnostics", "n_latents", HUGE),
]


def _argv(study, tmp_path, *options):
    extra = ["--source", str(tmp_path / "src")] if study in ANALYSES else []
    return ["study", study, *options, *extra, "--out", str(tmp_path / "out"), "--quiet", "--no-plots"]


def _nothing_written(tmp_path):
    out = tmp_path / "out"
    assert not out.exists() or not os.listdir(out), sorted(os.listdir(out))
    assert not (tmp_path / "src").exists()


def test_every_study_command_has_its_cases():
    assert set(REPEATED) == set(STUDIES)
    assert {s for s, *_ in ABSURD} == set(STUDIES) - {"token-dynamics"}


@pytest.mark.parametrize("study", STUDIES)
def test_case2_repeated_condition_exit2(study, tmp_path, capsys):
    option, value = REPEATED[study]
    code, err = hostile.run(_argv(study, tmp_path, "--" + option.replace("_", "-"), value), capsys)
    assert code == 2, err
    assert option in err and "more than once" in err and "Traceback" not in err, err
    _nothing_written(tmp_path)


@pytest.mark.parametrize("study, option, value", ABSURD, ids=[f"{s}-{o}" for s, o, _ in ABSURD])
def test_case6_absurd_size_exit2(study, option, value, tmp_path, capsys):
    code, err = hostile.run(_argv(study, tmp_path, "--" + option.replace("_", "-"), value), capsys)
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert option in last and "Traceback" not in err, err
    _nothing_written(tmp_path)


# ---------------------------------------------------------------------------------------------- case 4: tables


TINY_TD = token_dynamics.Config(seeds=10, noise=(0.3,), n_clusters=(3,), methods=("baseline", "inertia"))


def _published_from(runs):
    """The 'published' table our own run reproduces: each method's mean over seeds of every metric."""
    method = np.asarray(runs["method"]).astype(str)
    return {
        m: {k: float(np.mean(findings.per_seed(runs, method == m, k))) for k in ("ari", "nmi", "steps", "collapsed")}
        for m in ("baseline", "inertia")
    }


def test_case4_tampered_table_not_judged(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "study_config", lambda name, quick, out: TINY_TD)
    out = str(tmp_path / "repro")
    argv = ["reproduce", "--studies", "token-dynamics", "--out", out, "--quiet", "--no-plots"]
    assert hostile.run(argv, capsys)[0] == 0
    path = os.path.join(out, "token-dynamics", "runs.csv")
    original = open(path, "rb").read()
    runs = io.read_csv(path)
    monkeypatch.setattr(token_dynamics.published, "PUBLISHED_OVERALL", _published_from(runs))
    assert token_dynamics.published_findings(runs)[0].verdict == "reproduced"
    # the hostile edit: inertia's ARI lowered by 0.2, which would refute finding 1a if it were judged
    tampered = dict(
        runs, ari=np.where(np.asarray(runs["method"]).astype(str) == "inertia", runs["ari"] - 0.2, runs["ari"])
    )
    io.write_csv(path, tampered)
    assert token_dynamics.published_findings(io.read_csv(path))[0].verdict == "refuted"
    # reporting only (the study not run again): the finding is open, naming the file
    a, b = reproduce.findings(out)[:2]
    assert a.verdict == b.verdict == "open"
    assert "token-dynamics/runs.csv" in a.basis and "verification" in a.basis, a.basis
    # reproduce reruns a study whose tables fail their verification: recomputed, then judged
    code, err = hostile.run(argv, capsys)
    assert code == 0, err
    assert "runs.csv" in err  # said, naming the file
    assert open(path, "rb").read() == original
    assert io.read_json(os.path.join(out, "config.json"))["verdicts"]["1a"] == "reproduced"
    assert os.listdir(os.path.join(out, "token-dynamics", "corrupt"))  # the tampered table, set aside
    # a changed record is no better: it fails its own checksum, and the findings stay open
    io.write_csv(path, tampered)
    record = os.path.join(out, "token-dynamics", "config.json")
    text = io.read_json(record)
    text["outputs"]["runs.csv"] = io.file_sha256(path)  # the record made to agree with the tampered table
    with open(record, "w") as f:
        f.write(__import__("json").dumps(text))
    a, b = reproduce.findings(out)[:2]
    assert a.verdict == b.verdict == "open" and "config.json" in a.basis, a.basis


# ---------------------------------------------------------------------------------------------- case 4: a source


def _diagnose(src, out) -> list:
    return [
        "study",
        "latent-diagnostics",
        "--source",
        str(src),
        "--variants",
        "latent",
        "--reference=",
        "--n-instances",
        "40",
        "--perturbations",
        "shuffle",
        "--noise-sigmas=",
        "--probe-steps",
        "20",
        "--n-resamples",
        "50",
        "--out",
        str(out),
        "--quiet",
        "--no-plots",
    ]


def test_case4_headerless_source_checkpoint_refused(tmp_path, monkeypatch, capsys):
    """A finished variant whose checkpoint was rewritten by plain ``np.savez`` (the source's result,
    answers and curve whole): refused naming the checkpoint, left where it is, nothing trained."""
    from test_latent_train import TINY

    source_cfg = latent_reasoning.Config(reference_steps=0, training=TINY, variants=("latent",))
    monkeypatch.setattr(
        latent_diagnostics.Config, "reasoning", lambda self: latent_reasoning.Config(reference_steps=0, training=TINY)
    )
    src = tmp_path / "src"
    latent_reasoning.open_study(source_cfg, str(src), quiet=True).release()
    p = latent_reasoning.paths(str(src), "latent")
    answers = np.zeros((TINY.seeds, TINY.n_test), np.int32)
    curve = b"step,seed,val_all\n40,0,0.5\n40,1,0.5\n"
    os.makedirs(os.path.dirname(p["curve"]))
    with open(p["curve"], "wb") as f:
        f.write(curve)
    io.save_npz(p["answers"], answers=answers, curve_csv=np.frombuffer(curve, np.uint8), steps=40)
    latent_reasoning.write_result(
        p["result"],
        {
            "variant": "latent",
            "steps": 40,
            "budget": 40,
            "converged": [True, True],
            "answers_sha256": latent_reasoning.answers_digest(answers),
        },
    )
    os.makedirs(os.path.dirname(p["checkpoint"]))
    with open(p["checkpoint"], "wb") as f:
        np.savez(f, meta_step=np.asarray(40), **{io.LEAF_PREFIX + ".params['w']": np.ones(3)})
    before = open(p["checkpoint"], "rb").read()
    code, err = hostile.run(_diagnose(src, tmp_path / "out"), capsys)
    assert code == 2, err
    assert p["checkpoint"] in err and "verification header" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    assert open(p["checkpoint"], "rb").read() == before and not (src / "checkpoints" / "corrupt").exists()
    with pytest.raises(io.OutputConflict, match="latent.npz"):  # the library call, too
        latent_reasoning.load_variant(source_cfg, str(src), "latent")
    assert open(p["checkpoint"], "rb").read() == before


@pytest.mark.slow
def test_case4_scrambled_trained_checkpoint_refused(tmp_path, monkeypatch, capsys, tiny_reasoner):
    """The issue's case on a trained reasoner: its checkpoint's weights scrambled and saved by plain
    ``np.savez`` (the study ran on it, exit 0, accuracy at chance): refused naming the file."""
    cfg, trained = tiny_reasoner
    monkeypatch.setattr(
        latent_diagnostics.Config,
        "reasoning",
        lambda self: latent_reasoning.Config(reference_steps=0, training=cfg.training),
    )
    src = tmp_path / "src"
    shutil.copytree(trained, src)
    latent_reasoning.verify_source(cfg, str(src), ["latent"])  # a whole source passes
    study_dir.read_record(str(src))
    ckpt = src / "checkpoints" / "latent.npz"
    arrays = io.load_npz(str(ckpt))
    rng = np.random.default_rng(0)
    scrambled = {
        k: rng.permutation(v.ravel()).reshape(v.shape) if k.startswith(io.LEAF_PREFIX) else v for k, v in arrays.items()
    }
    with open(ckpt, "wb") as f:
        np.savez(f, **scrambled)  # the same names and shapes, no verification header
    before = ckpt.read_bytes()
    code, err = hostile.run(_diagnose(src, tmp_path / "out"), capsys)
    assert code == 2, err
    assert str(ckpt) in err and "verification header" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    assert ckpt.read_bytes() == before and not (src / "checkpoints" / "corrupt").exists()  # left as it is
