"""Every study as a hostile user runs it, through the command registry: a repeated condition, an
absurd size, a tampered table under `tokdyn reproduce`. Each is refused (exit 2, naming the option or the file) or never judged --
before any work, and without touching what is on disk."""

import os

import numpy as np
import pytest

import hostile
from tokdyn import cli, io, reproduce
from tokdyn.experiment import findings
from tokdyn.studies import token_dynamics

STUDIES = [name for group, name in cli.COMMANDS if group == "study"]
ANALYSES = ("latent-diagnostics",)  # it reads a --source directory

# one list of conditions per study, given with a value twice: (option, value)
REPEATED = {
    "token-dynamics": ("noise", "0.3,0.3"),
    "collapse": ("phase_noise", "0.5,1.0,0.5"),
    "visual-tokens": ("vocab_sizes", "5,51,5"),
    "latent-reasoning": ("variants", "direct,latent,direct"),
    "latent-diagnostics": ("recipes", "latent,coconut,latent"),
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
    ("latent-reasoning", "n_train", HUGE),
    ("latent-reasoning", "batch_size", HUGE),
    ("latent-diagnostics", "n_instances", HUGE),
    ("latent-diagnostics", "batch_size", HUGE),
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
