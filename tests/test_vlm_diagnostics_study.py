"""The vlm-diagnostics study (``tokdyn study vlm-diagnostics``) on the tiny random Qwen2.5-VL it builds without
``--model``: it runs end to end in-process, its grounding scores equal a direct computation from the model's
plain forward pass (NumPy log-softmax of its logits, the blank image's pixel rows built in NumPy), a rerun
reads every batch back without compiling or reading weights, and its output says the numbers are a random
model's; the checkpoint's SHA-256 is stamped and a changed checkpoint is refused; a bad ``--model`` or
``--instances`` exits 2 naming what is wrong."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")

from conftest import jax_compilations  # noqa: E402
from tokdyn import cli, io  # noqa: E402
from tokdyn.experiment import runner  # noqa: E402
from tokdyn.experiment import study as study_dir  # noqa: E402
from tokdyn.studies import vlm_diagnostics as vd  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
COMPILE = "/jax/core/compile/backend_compile_duration"
# the smallest run: two scenes of 56 x 56 pixels (4 x 4 patches, 2 x 2 merged tokens), the grounding analysis
TINY = vd.Config(
    analyses=("grounding",),
    n_instances=2,
    batch_size=2,
    image_size=56,
    scene_size=32,
    max_objects=2,
    noise_kinds=("gaussian", "blank"),
    noise_levels=(0.5,),
    noise_seeds=1,
    n_latents=1,
    n_tokens=2,
)


def log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("vlm") / "out")
    assert vd.main(TINY, out, quiet=True)
    return out


def test_runs_end_to_end_and_its_grounding_scores_are_the_forward_pass(tiny_run):
    out = tiny_run
    loaded = vd.open_checkpoint(TINY)
    inst = vd.make_instances(TINY)
    (group,) = vd.encode(inst, loaded, TINY)
    model, n = loaded.model, len(inst)
    rows = io.read_csv(f"{out}/grounding.csv")
    assert len(rows["score"]) == n * 2  # two instances x (one gaussian draw, the blank image) x one answer token
    # the answers are the scenes' visible objects, as digits
    answers = [str(int(c)) for c in np.asarray(io.read_csv(f"{out}/instances.csv")["answer"])]
    assert answers == inst.answers and set(answers) <= {"1", "2"}
    grid, d = np.repeat(group.grid, n, 0), group.pixels.shape[-1]
    t = group.prompt_length - 1  # the position predicting the answer's token
    tokens = group.answer_ids[:, 0]

    def logp(pixels):
        logits = np.asarray(model(group.plain, pixels.reshape(-1, d), grid))
        return log_softmax(logits[:, t])[np.arange(n), tokens]

    image = rows["noise"] == "gaussian"
    np.testing.assert_allclose(
        rows["logp_image"][image][np.argsort(rows["instance"][image])], logp(group.pixels), atol=1e-4
    )
    # a blank image: every pixel 0, normalised to -mean/std per channel (rows are channel, frame, patch, patch)
    proc = loaded.processor
    per_channel = -np.asarray(proc.image_mean) / np.asarray(proc.image_std)
    blank = np.broadcast_to(np.repeat(per_channel, d // 3).astype(np.float32), group.pixels.shape)
    b = rows["noise"] == "blank"
    np.testing.assert_allclose(rows["logp_noised"][b][np.argsort(rows["instance"][b])], logp(blank), atol=1e-4)
    np.testing.assert_allclose(rows["score"], rows["logp_image"] - rows["logp_noised"], atol=1e-9)
    assert np.abs(rows["score"]).max() > 1e-4  # the image matters to the random model's answer
    text = open(f"{out}/summary.md").read()
    assert text.startswith("**RANDOM MODEL") and "never a finding" in text and "## Grounding" in text
    stamp = study_dir.read_stamp(out)
    assert stamp["extra"]["model"]["directory"] == "" and "random" in stamp["extra"]["model"]


def test_a_rerun_reads_every_batch_back_without_compiling(tiny_run, capsys):
    before = open(f"{tiny_run}/grounding.csv").read()
    with jax_compilations() as events:
        assert vd.main(TINY, tiny_run)
    assert COMPILE not in events and open(f"{tiny_run}/grounding.csv").read() == before
    printed = capsys.readouterr().out
    assert "RANDOM MODEL" in printed and "nothing recomputed" in printed


def _stand_in(calls):
    return dataclasses.replace(vd.SPEC, run=lambda session, cfg: calls.append(1) or runner.Result({}), summary=None)


def test_the_checkpoint_is_stamped_and_a_changed_one_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, ckpt)
    cfg = dataclasses.replace(TINY, model=str(ckpt))
    out = str(tmp_path / "out")
    calls = []
    runner.run_study(_stand_in(calls), cfg, out, quiet=True, plots=False)
    model = study_dir.read_stamp(out)["extra"]["model"]
    weights = (ckpt / "model.safetensors").read_bytes()
    assert model["directory"] == str(ckpt.resolve())
    assert model["sha256"]["model.safetensors"] == hashlib.sha256(weights).hexdigest()
    runner.run_study(_stand_in(calls), cfg, out, quiet=True, plots=False)  # the same weights: resumed
    assert calls == [1, 1]
    (ckpt / "model.safetensors").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))  # one bit of a weight
    with pytest.raises(io.OutputConflict, match=r"checkpoint changed .*model\.safetensors.*--fresh"):
        vd.main(cfg, out, quiet=True)
    assert calls == [1, 1]
    with pytest.raises(io.OutputConflict, match="tiny random model"):  # the random model's directory
        vd.main(dataclasses.replace(cfg, model=""), out, quiet=True)
    runner.run_study(_stand_in(calls), cfg, out, quiet=True, plots=False, fresh=True)
    assert calls == [1, 1, 1]


def _exit(argv, capsys) -> tuple[int, str]:
    code = cli.main(["study", "vlm-diagnostics", *argv])
    return code, capsys.readouterr().err


def test_a_bad_model_exits_2_naming_the_layout(tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    code, err = _exit(["--model", str(tmp_path / "none"), *out], capsys)
    assert code == 2 and "is not a directory" in err and "config.json" in err
    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, ckpt)
    (ckpt / "tokenizer.json").unlink()
    code, err = _exit(["--model", str(ckpt), *out], capsys)
    assert code == 2 and "lacks tokenizer.json" in err and "Hugging Face layout" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "line, words",
    [
        ("not json", "line 2 is not JSON"),
        ('{"image": "a.png", "question": "q?"}', "line 2 needs a non-empty string 'answer'"),
        ('{"image": "missing.png", "question": "q?", "answer": "1"}', "line 2: the image"),
        ("[1, 2]", "line 2 must be a JSON object"),
    ],
)
def test_a_bad_instances_line_exits_2_naming_it(tmp_path, capsys, line, words):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    path = tmp_path / "items.jsonl"
    path.write_text('{"image": "a.png", "question": "How many?", "answer": "0"}\n' + line + "\n")
    code, err = _exit(["--instances", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and words in err, err
    assert not (tmp_path / "out").exists()
    code, err = _exit(["--instances", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "is not a file" in err


def test_a_good_instances_file_is_read(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((8, 6, 3), 7, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "items.jsonl").write_text(
        '{"image": "a.png", "question": "What?", "answer": "red"}\n\n'
        + json.dumps({"image": str(tmp_path / "a.png"), "question": "Q", "answer": "2"})
        + "\n"
    )
    inst = vd.read_jsonl(str(tmp_path / "items.jsonl"))
    assert len(inst) == 2 and inst.answers == ["red", "2"] and inst.masks is None
    assert inst.images[0].shape == (8, 6, 3) and (inst.images[1] == 7).all()
    assert len(vd.read_jsonl(str(tmp_path / "items.jsonl"), limit=1)) == 1


def test_config_refusals():
    for changes, words in [
        (dict(analyses=("narrowness",)), "does not yet tabulate attention narrowness"),
        (dict(analyses=("nope",)), "analyses"),
        (dict(image_size=60), "multiple of 28"),
        (dict(n_tokens=5, image_size=56), "n_tokens must be at most the 4 merged tokens"),
        (dict(latent_end="<|box_start|>"), "three different tokens"),
        (dict(noise_kinds=("salt",)), "noise_kinds"),
    ]:
        with pytest.raises(ValueError, match=words):
            dataclasses.replace(TINY, **changes).validate()
    assert set(vd.DECOMPOSITION_SETTINGS) <= set(vd.analyses.mediation.SETTINGS)
    assert set(vd.MEDIATION_KINDS) <= set(vd.analyses.mediation.INTERVENTIONS)
    assert set(vd.ANALYSES) == set(vd.FUNCTIONS) == set(vd.report.LINES)
    cfg = vd.Config.gpu("7b", model=str(FIXTURE))
    assert cfg.batch_size == vd.GPU_PRESETS["7b"]["batch_size"] and cfg.validate() is cfg


# the whole --quick default, every analysis, from the command line (about 1-2 min on two cores): the default
# run has test_runs_end_to_end_and_its_grounding_scores_are_the_forward_pass (the pipeline, one analysis)
@pytest.mark.full
def test_the_quick_command_runs_every_analysis_and_says_its_numbers_are_a_random_models(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["study", "vlm-diagnostics", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("RANDOM MODEL") == 2 and "Quick preset" in printed
    for name in ("instances", *vd.ANALYSES):
        assert (out / f"{name}.csv").exists(), name
    dec = io.read_csv(str(out / "decomposition.csv"))
    assert set(dec["setting"]) == set(vd.DECOMPOSITION_SETTINGS)
    med = io.read_csv(str(out / "mediation.csv"))
    assert set(med["path"]) == {"input_latent", "latent_answer"}
    per = io.read_csv(str(out / "perception.csv"))
    assert set(per["level"]) == {"patches", "merged"} and set(per["method"]) == {"baseline", "kmeans"}
    assert ((per["ari"] >= -1) & (per["ari"] <= 1)).all()
    record = study_dir.read_record(str(out))
    assert record["random_model"] is True and record["config"]["preset"] == "quick"


# a user's checkpoint directory (the fixture) through --model, its tokenizer and chat template, every analysis
# (about 2 min on two cores): the default run checks the stamp of a checkpoint and the grounding on the random
# model
@pytest.mark.full
def test_a_checkpoint_directory_runs_every_analysis(tmp_path):
    cfg = dataclasses.replace(
        vd.Config.quick(),
        model=str(FIXTURE),
        image_size=56,
        n_tokens=2,
        latent_start="{",
        latent_end="}",
        latent_fill="~",
    )
    out = str(tmp_path / "out")
    assert vd.main(cfg, out, quiet=True)
    loaded = vd.open_checkpoint(cfg)
    inst = vd.make_instances(cfg)
    (group,) = vd.encode(inst, loaded, cfg)
    assert loaded.random is False and group.answer_ids.shape[1] == 1
    # the "full" setting's answer is the plain forward pass's top token at the end of the latent block
    n, d = len(inst), group.pixels.shape[-1]
    grid = np.repeat(group.grid, n, 0)
    logits = np.asarray(loaded.model(group.block, group.pixels.reshape(-1, d), grid))
    want = (logits[:, -1].argmax(-1) == group.answer_ids[:, 0]).astype(float)
    dec = io.read_csv(f"{out}/decomposition.csv")
    full = dec["setting"] == "full"
    np.testing.assert_array_equal(dec["correct"][full][np.argsort(dec["instance"][full])], want[group.index])
    # latent -> answer, "zeros": the same as the plain forward pass of weights whose fill token embeds to zero
    zero = loaded.model.params["text"]["embed"].at[loaded.tokens.fill].set(0.0)
    params = {**loaded.model.params, "text": {**loaded.model.params["text"], "embed": zero}}
    edited = np.asarray(type(loaded.model)(loaded.model.config, params)(group.block, group.pixels.reshape(-1, d), grid))
    lp0, lp1 = log_softmax(logits[:, -1]), log_softmax(edited[:, -1])
    med = io.read_csv(f"{out}/mediation.csv")
    z = (med["path"] == "latent_answer") & (med["kind"] == "zeros")
    order = np.argsort(med["instance"][z])
    flips = (lp0.argmax(-1) != lp1.argmax(-1)).astype(float)[group.index]
    np.testing.assert_array_equal(med["flipped"][z][order], flips)
    kl = (np.exp(lp0) * (lp0 - lp1)).sum(-1)[group.index]
    np.testing.assert_allclose(med["kl"][z][order], kl, atol=1e-4 * max(1.0, kl.max()))
    assert kl.max() > 1e-4  # the latents matter to the answer
    assert not open(f"{out}/summary.md").read().startswith("**RANDOM")
