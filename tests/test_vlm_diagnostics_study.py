"""The vlm-diagnostics study (``tokdyn study vlm-diagnostics``) on the tiny random Qwen2.5-VL it builds without
``--model``: it runs end to end in-process on instances of different prompt and answer lengths padded to one
bucket (one program for them all), its grounding scores equal a direct computation from the model's plain
forward pass on each prompt unpadded (NumPy log-softmax of its logits, the blank image's pixel rows built in
NumPy), a rerun reads every batch back without compiling or reading weights, and its output says the numbers
are a random model's; the checkpoint's files and the instances (every image's bytes) are stamped, and a
changed one is refused naming it; a bad ``--model``, ``--instances`` line or latent marker exits 2 naming what
is wrong, before any work; the summary gives n and an interval for every rate, the chance level, and a
sentence where a value is undefined."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import stats as sps

pytest.importorskip("safetensors")

from conftest import jax_compilations  # noqa: E402
from tokdyn import cli, io  # noqa: E402
from tokdyn.diagnostics import choices, vlm  # noqa: E402
from tokdyn.experiment import findings, runner  # noqa: E402
from tokdyn.experiment import study as study_dir  # noqa: E402
from tokdyn.studies import vlm_diagnostics as vd  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
COMPILE = "/jax/core/compile/backend_compile_duration"
# three questions of different lengths and answers of one, two and one token (the last a multiple-choice line)
LINES = [
    {"image": "a.png", "question": "How many?", "answer": "3"},
    {"image": "b.png", "question": "How many red objects are in this picture, counted carefully?", "answer": "12"},
    {"image": "a.png", "question": "Which one?", "options": ["a cube", "a ball", "a cone"], "answer": "a ball"},
]


def write_instances(folder: Path, lines=LINES, name="items.jsonl") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for image in ("a.png", "b.png"):
        if not (folder / image).exists():
            Image.fromarray(rng.integers(0, 255, (40, 30, 3), np.uint8)).save(folder / image)
    path = folder / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def tiny(instances: str) -> vd.Config:
    """The smallest run: 56 x 56 images (4 x 4 patches, 2 x 2 merged tokens), the grounding analysis."""
    return vd.Config(
        instances=instances,
        analyses=("grounding",),
        n_instances=0 if instances else 2,
        scene_size=32,
        max_objects=2,
        batch_size=2,
        image_size=56,
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
    folder = tmp_path_factory.mktemp("vlm")
    cfg = tiny(str(write_instances(folder)))
    vlm.grounding_scores.jitted.clear_cache()  # (another module may have compiled its program in this process)
    assert vd.main(cfg, str(folder / "out"), quiet=True)
    return cfg, str(folder / "out"), vlm.grounding_scores.jitted._cache_size()


def test_runs_end_to_end_and_its_grounding_scores_are_the_forward_pass(tiny_run):
    cfg, out, programs = tiny_run
    loaded = vd.open_checkpoint(cfg)
    inst = vd.make_instances(cfg)
    (group,) = vd.encode(inst, loaded, cfg)  # three prompt lengths, answers of 1 and 2 tokens: one bucket
    assert programs == 1  # the two batches (of different lengths) ran one program
    assert group.prompt.shape[1] == group.prompt_length and group.answer_ids.shape[1] == 2
    rows = io.read_csv(f"{out}/grounding.csv")
    assert len(rows["score"]) == 2 * (1 + 2 + 1)  # (a gaussian draw, the blank image) x the answers' tokens
    assert list(io.read_csv(f"{out}/instances.csv")["answer"]) == ["3", "12", "B"]  # the option's letter
    # the reference: each prompt unpadded (the model's own prompt and answer ids), left-padded to one batch
    t, mcfg = loaded.tokens, loaded.config
    seqs = [np.concatenate([t.prompt(mcfg, inst.prompt(i), 4), t.answer(inst.answers[i])]) for i in range(3)]
    width = max(map(len, seqs))
    ids = np.stack([np.pad(s, (width - len(s), 0)) for s in seqs])
    mask = np.stack([np.arange(width) >= width - len(s) for s in seqs])
    d = group.pixels.shape[-1]
    grid = np.repeat(group.grid, 3, 0)

    def logp(pixels):  # (instance, token) -> log p of the answer's token
        lp = log_softmax(loaded.model(ids, pixels.reshape(-1, d), grid, mask))
        out = {}
        for i in range(len(seqs)):
            n = len(t.answer(inst.answers[i]))
            for k in range(n):
                pos = width - n - 1 + k
                out[i, k] = lp[i, pos, ids[i, pos + 1]]
        return out

    image = logp(group.pixels)
    proc = loaded.processor  # a blank image: every pixel 0, normalised to -mean/std per channel
    per_channel = -np.asarray(proc.image_mean) / np.asarray(proc.image_std)
    blank = logp(np.broadcast_to(np.repeat(per_channel, d // 3).astype(np.float32), group.pixels.shape))
    for r in range(len(rows["score"])):
        key = (int(rows["instance"][r]), int(rows["token"][r]))
        assert rows["logp_image"][r] == pytest.approx(image[key], abs=1e-4)
        if rows["noise"][r] == "blank":
            assert rows["logp_noised"][r] == pytest.approx(blank[key], abs=1e-4)
    np.testing.assert_allclose(rows["score"], rows["logp_image"] - rows["logp_noised"], atol=1e-9)
    assert np.abs(rows["score"]).max() > 1e-4  # the image matters to the random model's answer
    text = open(f"{out}/summary.md").read()
    assert text.startswith("**RANDOM MODEL") and "never a finding" in text and "## Grounding" in text
    stamp = study_dir.read_stamp(out)
    assert stamp["extra"]["model"]["directory"] == "" and "random" in stamp["extra"]["model"]


def test_a_rerun_reads_every_batch_back_without_compiling(tiny_run, capsys):
    cfg, out, _ = tiny_run
    before = open(f"{out}/grounding.csv").read()
    with jax_compilations() as events:
        assert vd.main(cfg, out)
    assert COMPILE not in events and open(f"{out}/grounding.csv").read() == before
    printed = capsys.readouterr().out
    assert "RANDOM MODEL" in printed and "nothing recomputed" in printed


def test_the_draws_do_not_depend_on_the_batching():
    loaded = vd.open_checkpoint(vd.Config())
    px = np.random.default_rng(1).normal(size=(3, 16, loaded.config.vision.patch_dim)).astype(np.float32)
    kw = dict(noises=(("gaussian", 0.5),), n_seeds=2)
    key = jax.random.key(3)
    whole = np.asarray(vlm.perturb_pixels(key, px, loaded.processor, index=np.array([5, 6, 7]), **kw))
    alone = np.asarray(vlm.perturb_pixels(key, px[1:2], loaded.processor, index=np.array([6]), **kw))
    np.testing.assert_array_equal(whole[:, 1:2], alone)
    assert np.abs(whole[0] - whole[1]).max() > 0  # the two seeds draw differently


def _stand_in(calls):
    return dataclasses.replace(vd.SPEC, run=lambda session, cfg: calls.append(1) or runner.Result({}), summary=None)


def test_the_checkpoint_is_stamped_and_a_changed_one_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, ckpt)
    cfg = dataclasses.replace(tiny(""), model=str(ckpt), latent_start="{", latent_end="}", latent_fill="~")
    out = str(tmp_path / "out")
    calls = []
    runner.run_study(_stand_in(calls), cfg, out, quiet=True, plots=False)
    model = study_dir.read_stamp(out)["extra"]["model"]
    weights = (ckpt / "model.safetensors").read_bytes()
    assert model["directory"] == str(ckpt.resolve())
    assert model["sha256"]["model.safetensors"] == hashlib.sha256(weights).hexdigest()
    for name in ("tokenizer.json", "preprocessor_config.json", "generation_config.json", "chat_template"):
        assert name in model["sha256"], name
    runner.run_study(_stand_in(calls), cfg, out, quiet=True, plots=False)  # the same files: resumed
    assert calls == [1, 1]
    (ckpt / "model.safetensors").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))  # one bit of a weight
    with pytest.raises(io.OutputConflict, match=r"checkpoint changed .*model\.safetensors.*--fresh"):
        vd.main(cfg, out, quiet=True)
    (ckpt / "model.safetensors").write_bytes(weights)
    for name, edit in (
        ("tokenizer.json", lambda s: s.replace('"<|im_end|>"', '"<|im_end|>" ', 1)),
        ("chat_template", lambda s: s.replace("You are a helpful assistant.", "You are terse.")),
        ("generation_config.json", lambda s: s.replace("}", ', "repetition_penalty": 1.05}', 1)),
    ):
        file = ckpt / ("chat_template.jinja" if name == "chat_template" else name)
        text = file.read_text()
        file.write_text(edit(text))
        with pytest.raises(io.OutputConflict, match=rf"SHA-256 of .*{name}.* differs"):
            vd.main(cfg, out, quiet=True)
        file.write_text(text)
    with pytest.raises(io.OutputConflict, match="tiny random model"):  # the random model's directory
        vd.main(dataclasses.replace(cfg, model=""), out, quiet=True)
    runner.run_study(_stand_in(calls), cfg, out, quiet=True, plots=False)
    assert calls == [1, 1, 1]


def test_changed_instances_are_refused_naming_the_image_or_the_file(tmp_path):
    from PIL import Image

    path = write_instances(tmp_path)
    cfg = tiny(str(path))
    out = str(tmp_path / "out")
    calls = []
    runner.run_study(_stand_in(calls), cfg, out, quiet=True, plots=False)
    stamp = study_dir.read_stamp(out)["extra"]["instances"]
    assert stamp["images"][0] == stamp["images"][2] == hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(tmp_path / "b.png")  # another image, the same name
    with pytest.raises(io.OutputConflict, match=r"image of instance 2 is another .*--fresh"):
        vd.main(cfg, out, quiet=True)
    lines = [dict(line) for line in LINES]
    lines[0]["answer"] = "4"  # an answer changed: the file's SHA-256
    write_instances(tmp_path, lines)
    with pytest.raises(io.OutputConflict, match=r"instances changed \(the SHA-256 of .*items\.jsonl differs"):
        vd.main(cfg, out, quiet=True)
    assert calls == [1]
    runner.run_study(_stand_in(calls), cfg, out, quiet=True, plots=False, fresh=True)
    assert calls == [1, 1]


def _exit(argv, capsys) -> tuple[int, str]:
    code = cli.main(["study", "vlm-diagnostics", *argv])
    return code, capsys.readouterr().err


def test_a_bad_model_or_marker_exits_2_before_any_work(tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    code, err = _exit(["--model", str(tmp_path / "none"), *out], capsys)
    assert code == 2 and "is not a directory" in err and "config.json" in err
    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, ckpt)
    marks = ["--latent-end", "<|box_end|>", "--latent-fill", "<|quad_start|>"]
    code, err = _exit(["--model", str(ckpt), "--latent-start", "<|no_such_token|>", *marks, *out], capsys)
    assert code == 2 and "latent_start='<|no_such_token|>' is not a token" in err and "Traceback" not in err
    assert "its added tokens: " in err and "<|box_start|>" in err  # the checkpoint's own added tokens listed
    code, err = _exit(["--model", str(ckpt), "--latent-start", "<|box_start|>", *out], capsys)
    assert code == 2 and "go together" in err
    code, err = _exit(["--model", str(ckpt), "--image-size", "60", *out], capsys)
    assert code == 2 and "image_size must be a multiple of 28" in err and "--image-size 56" in err
    (ckpt / "tokenizer.json").unlink()
    code, err = _exit(["--model", str(ckpt), *out], capsys)
    assert code == 2 and "lacks tokenizer.json" in err and "Hugging Face layout" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("package", ["jinja2", "tokenizers", "safetensors"])
def test_a_checkpoint_without_the_models_extra_exits_2_naming_it_before_any_work(
    tmp_path, capsys, monkeypatch, package
):
    """The README's ``pip install -e .`` alone: the checkpoint's weights, tokenizer and chat template need
    the ``models`` extra, said in one line before anything is read or written."""
    monkeypatch.setitem(sys.modules, package, None)  # as if the extra were not installed
    code, err = _exit(["--model", str(FIXTURE), "--out", str(tmp_path / "out")], capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err
    assert f"needs the package '{package}' of the 'models' extra" in line and 'pip install -e ".[models]"' in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "line, words",
    [
        ("not json", "line 2 is not JSON"),
        ('{"image": "a.png", "question": "q?"}', "line 2 needs a non-empty string 'answer'"),
        ('{"image": "missing.png", "question": "q?", "answer": "1"}', "line 2: the image"),
        ("[1, 2]", "line 2 must be a JSON object"),
        ('{"image": "a.png", "question": "q?", "options": "ab", "answer": "A"}', "line 2: options must be a list"),
        ('{"image": "a.png", "question": "q?", "options": ["x", "y"], "answer": "C"}', "line 2: answer 'C' is neither"),
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


def test_instances_files_are_read_with_their_options(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((8, 6, 3), 7, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "items.jsonl").write_text(
        '{"image": "a.png", "question": "What?", "answer": "red"}\n\n'
        + json.dumps({"image": str(tmp_path / "a.png"), "question": "Q", "answer": "2"})
        + "\n"
    )
    write_instances(tmp_path, LINES, "mc.jsonl")
    inst = vd.read_jsonl(str(tmp_path / "items.jsonl"))
    assert len(inst) == 2 and inst.answers == ["red", "2"] and inst.masks is None
    assert inst.images[0].shape == (8, 6, 3) and (inst.images[1] == 7).all()
    assert len(vd.read_jsonl(str(tmp_path / "items.jsonl"), limit=1)) == 1
    both = vd.read_files(f"{tmp_path / 'items.jsonl'},{tmp_path / 'mc.jsonl'}")
    assert [both.file_of(i) for i in range(len(both))] == ["items"] * 2 + ["mc"] * 3
    assert both.answers[-1] == "B" and both.options_of(4) == ("a cube", "a ball", "a cone")
    assert both.prompt(4).splitlines() == ["Which one?", "A. a cube", "B. a ball", "C. a cone", choices.INSTRUCTION]
    assert both.chance(4) == pytest.approx(1 / 3) and np.isnan(both.chance(0))
    with pytest.raises(ValueError, match="same name"):
        vd.read_files(f"{tmp_path / 'items.jsonl'},{tmp_path / 'items.jsonl'}")


def test_instance_images_are_read_as_transformers_reads_them(tmp_path):
    # transparency composited on white (the image processor's rule), a 16-bit image refused naming its mode
    from PIL import Image

    from tokdyn.models.qwen2_5_vl import processor

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: white once composited
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    Image.fromarray((np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)).save(tmp_path / "wide.png")
    (tmp_path / "a.jsonl").write_text(json.dumps({"image": "clear.png", "question": "Q", "answer": "1"}) + "\n")
    inst = vd.read_jsonl(str(tmp_path / "a.jsonl"))
    np.testing.assert_array_equal(inst.images[0], processor.load_image(tmp_path / "clear.png"))
    assert (inst.images[0] == 255).all()
    (tmp_path / "b.jsonl").write_text(json.dumps({"image": "wide.png", "question": "Q", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match="line 1: the image .*wide.png.* cannot be read .*I;16"):
        vd.read_jsonl(str(tmp_path / "b.jsonl"))


def test_every_line_is_read_and_a_long_question_pads_only_its_own_group(tmp_path):
    """--n-instances 0 (the default) reads every line of a file; prompts are grouped by their text's length
    bucket, so one long question gets a group of its own instead of padding every prompt to its length."""
    long = dict(LINES[0], question=" ".join(["how many objects are there"] * 40) + "?")
    path = write_instances(tmp_path, LINES * 7 + [long])
    cfg = dataclasses.replace(tiny(str(path)), n_instances=0)
    assert vd.Config().n_instances == 0 and cfg.count_instances() == 22
    loaded = vd.open_checkpoint(cfg)
    inst = vd.make_instances(cfg)
    assert len(inst) == 22
    groups = vd.encode(inst, loaded, cfg)
    assert sorted(len(g.index) for g in groups) == [1, 21]
    short, alone = sorted(groups, key=lambda g: len(g.index), reverse=True)
    assert short.prompt.shape[1] < alone.prompt.shape[1] and alone.index.tolist() == [21]
    # the estimate reads the questions' buckets: the long one raises the mean text by its own bucket alone
    plain = dataclasses.replace(cfg, instances=str(write_instances(tmp_path, LINES * 7, name="short.jsonl")))
    assert cfg.text_tokens() > plain.text_tokens() >= 32
    assert cfg.work(22)["training"] > plain.work(22)["training"]


def test_a_decoding_setting_generation_refuses_exits_2_before_any_work(tmp_path, capsys):
    """A generation_config.json field tokdyn's generation does not implement (num_beams 4) is refused when the
    study checks its inputs, naming the field, before any work (it once stopped the run midway)."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, ckpt)
    gen = json.loads((ckpt / "generation_config.json").read_text())
    (ckpt / "generation_config.json").write_text(json.dumps(dict(gen, num_beams=4)))
    out = tmp_path / "out"
    code, err = _exit(["--model", str(ckpt), "--out", str(out), "--analyses", "grounding"], capsys)
    assert code == 2 and "num_beams=4" in err and "Traceback" not in err, err
    assert not out.exists()


def test_the_analyses_at_a_micro_size_on_the_random_model(tmp_path, capsys):
    """Every analysis over generation (accuracy, decomposition, mediation, similarity, DMLR without and with
    its injection) on the tiny random model at a micro size: each table written with its rows in range (the
    accuracy's settings the clean run, plain and every intervention; the decomposition's every setting; the
    mediation's three paths; rates in [0, 1], KLs >= 0), the report's paired columns present. The random model
    opens a block of its own after the forced one, which the run says on stderr and at the
    top of its summary. The full tier runs the --quick preset and checkpoints end to end."""
    cfg = dataclasses.replace(
        tiny(""),
        analyses=("accuracy", "decomposition", "mediation", "similarity", "optimisation", "injection"),
        n_instances=2,
        noise_kinds=("blank",),
        optimiser_iters=1,
        optimiser_pairs=1,
        new_tokens=11,
    )
    out = tmp_path / "out"
    assert vd.main(cfg, str(out), quiet=True)
    acc = io.read_csv(str(out / "accuracy.csv"))
    assert {"plain", "none", *vd.LATENT_KINDS} == set(acc["setting"])
    dec = io.read_csv(str(out / "decomposition.csv"))
    assert set(dec["setting"][dec["measure"] == "correct"]) == set(vd.DECOMPOSITION_SETTINGS)
    med = io.read_csv(str(out / "mediation.csv"))
    assert set(med["path"]) == {"input_latent", "input_answer", "latent_answer"}
    kl = med["kl"][np.isfinite(med["kl"])]
    assert kl.size and (kl >= 0).all()
    for name in ("optimisation", "injection"):
        rows = io.read_csv(str(out / f"{name}.csv"))
        assert len(rows["instance"]) == 2 and np.isfinite(rows["reward_best"]).all()
    text = (out / "summary.md").read_text()
    assert "vs none (paired)" in text and "vs full (paired)" in text and "McNemar" in text
    err = capsys.readouterr().err
    assert "of 2 instances opened a second block by themselves after the forced one" in err, err
    assert "**Warning: " in text and "opened a second block by themselves" in text


def test_config_refusals_and_the_time_estimate(tmp_path):
    for changes, words in [
        (dict(analyses=("narrowness",)), "analyses"),
        (dict(latent_start="<|box_start|>", latent_end="<|box_start|>", latent_fill="x"), "three different tokens"),
        (dict(latent_end="<|box_start|>"), "go together"),
        (dict(n_latents=10, new_tokens=16), "no room for a block of 10 latents"),
        (dict(noise_kinds=("salt",)), "noise_kinds"),
        (dict(latents="dreamed"), "latents"),
        (dict(new_tokens=0), "new_tokens"),
    ]:
        with pytest.raises(ValueError, match=words):
            dataclasses.replace(tiny(""), **changes).validate()
    for changes, words in [  # against the model's vision tower, once its configuration is read (check)
        (dict(image_size=60), r"multiple of 28 \(the model's patch_size 14 x spatial_merge_size 2\), got 60"),
        (dict(n_tokens=5, image_size=56), "n_tokens must be at most the 4 merged tokens"),
    ]:
        cfg = dataclasses.replace(tiny(""), **changes).validate()
        with pytest.raises(ValueError, match=words):
            cfg.check_image(vd.tiny_config())
    assert set(vd.DECOMPOSITION_SETTINGS) == set(vlm.SETTINGS)  # each a kind of the one table
    assert set(vlm.SETTINGS.values()) - {"none"} <= set(vd.LATENT_KINDS)
    assert set(vd.ANALYSES) == set(vd.FUNCTIONS) == set(vd.report.LINES)
    cfg = vd.Config.gpu("7b", model=str(FIXTURE))
    assert cfg.batch_size == vd.GPU_PRESETS["7b"]["batch_size"] and cfg.validate() is cfg
    # the estimate: each analysis's compiles, and the forward passes' work, which grows with the instances
    small, large = vd.Config().estimate(), dataclasses.replace(vd.Config(), n_instances=64).estimate()
    assert (
        small.seconds >= sum(vd.config.COMPILE_SECONDS.values()) and large.work["training"] > 3 * small.work["training"]
    )
    path = write_instances(tmp_path)
    assert dataclasses.replace(vd.Config(), instances=str(path), n_instances=0).count_instances() == 3
    gen = dataclasses.replace(vd.Config(), latents="generated", new_tokens=64).estimate()
    assert gen.work["training"] > 0 and gen.work["training"] != small.work["training"]  # its generations counted
    seven = vd.Config.gpu("7b", model=str(FIXTURE)).sizes()
    assert seven["layers"] == 2  # the checkpoint's own config.json


def _rows(acc_full, acc_none, n=12):
    rows = []
    for i in range(n):
        for s, acc in (("full", acc_full), ("markers_only", acc_full), ("no_block", acc_none)):
            rows.append(dict(instance=i, measure="correct", setting=s, correct=float(i < acc * n)))
    return rows


def test_the_summary_gives_n_intervals_chance_and_says_why_a_value_is_undefined():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice" (or any) warning
        text = "\n".join(vd.report.decomposition_lines(_rows(0.75, 0.25), [0.25] * 12))
        low, high = sps.binomtest(9, 12).proportion_ci(method="wilson")
        assert f"| full | 0.750 [{low:.3f}, {high:.3f}] (9/12) |" in text and "Chance here: 0.250" in text
        assert f"| markers_only | 0.750 [{low:.3f}, {high:.3f}] (9/12) | 1.000 [" in text  # gain kept, bootstrapped
        zero = "\n".join(vd.report.decomposition_lines(_rows(0.0, 0.0), [0.25] * 12))
        assert "| full | 0.000 [0.000, " in zero and "| – |" in zero
        assert "is undefined (–): accuracy is 0 under every setting" in zero
        per = [
            dict(
                instance=i,
                level="patches",
                method="baseline",
                ari=np.nan,
                fg_ari=np.nan,
                collapsed=0.0,
                n_used=2.0,
                ari_kmeans=0.5 + 0.1 * i,
            )
            for i in range(4)
        ]
        text = "\n".join(vd.report.perception_lines(per))
        assert "| patches | baseline | – (n = 0) | – (n = 0) |" in text and "come without object masks" in text
        kmeans = findings.seed_interval([0.5, 0.6, 0.7, 0.8], findings.SCORE)
        assert findings.interval(*kmeans[:3]) + " (n = 4)" in text
        acc = [
            dict(instance=i, benchmark=b, setting="plain", correct=float(i % 2), parsed=i != 3, chance=0.25)
            for b in ("vstar", "hr")
            for i in range(6)
        ]
        text = "\n".join(vd.report.accuracy_lines(acc))
        assert "| vstar | plain | 0.500 [" in text and "(3/6) | 1 | 0 | 0.250 |" in text and "| hr | plain |" in text


# the whole --quick default, every analysis, from the command line (about 3 min on two cores): the default
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
    assert set(dec["setting"][dec["measure"] == "correct"]) == set(vd.DECOMPOSITION_SETTINGS)
    att = dec["measure"] == "attention"
    assert ((dec["patch_share"][att] >= 0) & (dec["patch_share"][att] <= 1)).all()
    med = io.read_csv(str(out / "mediation.csv"))
    assert set(med["path"]) == {"input_latent", "input_answer", "latent_answer"}
    per = io.read_csv(str(out / "perception.csv"))
    assert set(per["level"]) == {"patches", "merged"} and set(per["method"]) == {"baseline", "kmeans"}
    assert ((per["ari"] >= -1) & (per["ari"] <= 1)).all()
    sim = io.read_csv(str(out / "similarity.csv"))
    assert set(sim["measure"]) == {"across", "steps"}
    record = study_dir.read_record(str(out))
    assert record["random_model"] is True and record["config"]["preset"] == "quick"


# a user's checkpoint directory (the fixture) through --model, its tokenizer and chat template, multiple-choice
# instances scored from generated text, every analysis (about 3 min on two cores): the default run holds the
# generation loop to the reference loop (test_qwen2_5_vl_generation) and the study's pipeline on one analysis
@pytest.mark.full
def test_a_checkpoint_directory_runs_every_analysis(tmp_path):
    # the checkpoint's generation_config.json as the published Qwen2.5-VL ones: sampling at a tiny temperature;
    # the study decodes greedily all the same (no key asked for)
    model = tmp_path / "model"
    shutil.copytree(FIXTURE, model)
    gen = json.loads((model / "generation_config.json").read_text())
    gen.update(do_sample=True, temperature=1e-6, top_k=1, top_p=0.001, repetition_penalty=1.05)
    (model / "generation_config.json").write_text(json.dumps(gen))
    path = write_instances(tmp_path)
    cfg = dataclasses.replace(
        vd.Config.quick(),
        model=str(model),
        instances=str(path),
        n_instances=0,
        image_size=56,
        n_tokens=2,
        latent_start="{",
        latent_end="}",
        latent_fill="~",
    )
    out = str(tmp_path / "out")
    assert vd.main(cfg, out, quiet=True)
    # the clean run's answers, straight from the model: the block forced after each prompt
    loaded = vd.open_checkpoint(cfg)
    inst = vd.make_instances(cfg)
    groups = vd.encode(inst, loaded, cfg)
    mode = loaded.latent_mode(cfg.n_latents)
    want = {}
    for g in groups:
        got = loaded.model.generate(
            g.prompt,
            g.pixels,
            g.grid,
            g.prompt_mask,
            max_new_tokens=cfg.new_tokens,
            latent=mode,
            block_at=0,
            do_sample=False,
        )
        assert (got.block_steps[:, 0] == 0).all()
        for r, i in enumerate(g.index):
            want[int(i)] = loaded.tokens.decode(got.answer_ids(r, after_latents=True), loaded.config.eos_token_id)
    acc = io.read_csv(f"{out}/accuracy.csv")
    none = acc["setting"] == "none"
    for i, text in zip(acc["instance"][none], acc["text"][none]):
        assert ("" if isinstance(text, float) else str(text)) == want[int(i)]
    assert set(acc["setting"]) == {"plain", "none", *vd.LATENT_KINDS}
    dec = io.read_csv(f"{out}/decomposition.csv")
    full = (dec["setting"] == "full") & (dec["measure"] == "correct")
    by = {int(i): c for i, c in zip(acc["instance"][none], acc["correct"][none])}
    for i, c in zip(dec["instance"][full], dec["correct"][full]):  # the decomposition's full block is the clean run
        assert c == by[int(i)] or (np.isnan(c) and np.isnan(by[int(i)]))
    text = open(f"{out}/summary.md").read()
    assert not text.startswith("**RANDOM") and "## Accuracy of the generated answers" in text


LATENT_FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_latent"
LATENT_MARKS = ["--latent-start", "<|latent_start|>", "--latent-end", "<|latent_end|>", "--latent-fill"]


def test_generated_latents_need_the_checkpoints_tokens_and_blocks(tmp_path, capsys):
    """--latents generated on a checkpoint with no latent_mode.json and no flags exits 2 asking for them; with
    its start and pad tokens swapped (the model then never opens a block) the clean pass finds no block and
    exits 2 naming the likely cause, instead of tables of interventions that did nothing; a latent_mode.json
    that disagrees with the tokenizer is refused naming the file."""
    path = write_instances(tmp_path, LINES[2:3])
    base = ["--model", str(LATENT_FIXTURE), "--instances", str(path), "--image-size", "56", "--n-tokens", "2"]
    base += ["--latents", "generated"]
    code, err = _exit([*base, "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "has no latent_mode.json" in err and "--latent-start" in err
    assert not (tmp_path / "a").exists()
    swapped = [
        *base,
        "--latent-start",
        "<|latent_pad|>",
        "--latent-end",
        "<|latent_end|>",
        "--latent-fill",
        "<|latent_start|>",
        "--n-latents",
        "4",
        "--new-tokens",
        "14",
        "--analyses",
        "accuracy",
    ]
    code, err = _exit([*swapped, "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "no instance of 1 wrote a whole latent block" in err and "right way round" in err, err
    ckpt = tmp_path / "ckpt"
    shutil.copytree(LATENT_FIXTURE, ckpt)
    (ckpt / "latent_mode.json").write_text(
        json.dumps(dict(start="<|no_such|>", end="<|latent_end|>", pad="<|latent_pad|>", size=4))
    )
    code, err = _exit(["--model", str(ckpt), *base[2:8], "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "latent_mode.json disagrees with the checkpoint's tokenizer" in err, err


# the latent checkpoint in block mode (a run of its own, about 5 CPU-s): it opens blocks of its own after the
# forced one, which the run says on stderr and at the top of its summary; the default run has the same warning
# from the random model (test_the_analyses_at_a_micro_size_on_the_random_model)
@pytest.mark.full
def test_a_latent_checkpoint_in_block_mode_says_it_opens_blocks_of_its_own(tmp_path, capsys):
    path = write_instances(tmp_path, LINES[2:3])
    base = ["--model", str(LATENT_FIXTURE), "--instances", str(path), "--image-size", "56", "--n-tokens", "2"]
    marks = [*LATENT_MARKS, "<|latent_pad|>", "--n-latents", "4", "--new-tokens", "30", "--analyses", "accuracy"]
    code, err = _exit([*base, *marks, "--out", str(tmp_path / "d")], capsys)
    assert code == 0 and "opened a second block by themselves" in err, err
    assert "**Warning: " in (tmp_path / "d" / "summary.md").read_text()


# the tiny checkpoint with added latent tokens that enters latent mode by itself, through --latents generated
# and multiple-choice instances, every analysis (about 4 min on two cores): the clean run's latents and the
# blank image's are read back from the model's own generation and compared in NumPy; the default run holds
# the loop and its interventions to the reference loop (test_qwen2_5_vl_generation) and the sources to their
# rule (test_vlm_runs)
@pytest.mark.full
def test_a_latent_checkpoint_runs_every_analysis_on_its_generated_latents(tmp_path):
    path = write_instances(tmp_path, LINES[2:] + [dict(LINES[2], image="b.png", answer="C")])
    ckpt = tmp_path / "ckpt"
    shutil.copytree(LATENT_FIXTURE, ckpt)
    vd_mode = dict(start="<|latent_start|>", end="<|latent_end|>", pad="<|latent_pad|>", size=4)
    (ckpt / "latent_mode.json").write_text(json.dumps(vd_mode))  # read with no latent flags
    cfg = dataclasses.replace(
        vd.Config.quick(),
        model=str(ckpt),
        instances=str(path),
        n_instances=0,
        image_size=56,
        n_tokens=2,
        latents="generated",
        n_latents=0,
        new_tokens=40,
        noise_kinds=("blank",),
    )
    out = tmp_path / "out"
    assert vd.main(cfg, str(out), quiet=True)
    for name in ("instances", *vd.ANALYSES):
        assert (out / f"{name}.csv").exists(), name
    text = (out / "summary.md").read_text()
    assert "--latents generated" in text and "wrote a whole latent block" in text
    acc = io.read_csv(str(out / "accuracy.csv"))
    assert {"none", "zeros", "drop_block"} <= set(acc["setting"]) and "plain" not in set(acc["setting"])
    # the clean run and the blank image's, straight from the model's generation
    loaded = vd.open_checkpoint(cfg)
    assert loaded.size == 4
    inst = vd.make_instances(cfg)
    (group,) = vd.encode(inst, loaded, cfg)
    model, t = loaded.model, loaded.tokens
    lat = loaded.latent_mode(4)
    proc = loaded.processor
    per_channel = -np.asarray(proc.image_mean) / np.asarray(proc.image_std)
    blank = np.broadcast_to(np.repeat(per_channel, group.pixels.shape[-1] // 3).astype(np.float32), group.pixels.shape)
    runs = [
        model.generate(
            group.prompt,
            px,
            group.grid,
            group.prompt_mask,
            max_new_tokens=40,
            latent=lat,
            do_sample=False,
            return_generation=True,
        )
        for px in (group.pixels, blank)
    ]
    clean, dark = runs
    assert (clean.blocks > 0).all()
    z = np.asarray(clean.latents, np.float64)[:, 0]  # (2, 4, D)
    u = z / np.linalg.norm(z, axis=-1, keepdims=True)
    sim = io.read_csv(str(out / "similarity.csv"))
    across = sim["measure"] == "across"
    np.testing.assert_allclose(sim["cosine"][across], (u[0] * u[1]).sum(-1), atol=1e-4)
    med = io.read_csv(str(out / "mediation.csv"))
    rows = med["path"] == "input_latent"
    w = np.asarray(dark.latents, np.float64)[:, 0]
    want = 1 - (u * (w / np.linalg.norm(w, axis=-1, keepdims=True))).sum(-1)  # (2, 4)
    got = np.full((2, 4), np.nan)
    for i, step, c in zip(med["instance"][rows], med["step"][rows], med["cosine_distance"][rows]):
        got[int(i), int(step) - 1] = c
    np.testing.assert_allclose(got, want, atol=1e-4)
    texts = [t.decode(clean.answer_ids(r, after_latents=True), loaded.config.eos_token_id) for r in range(2)]
    none = acc["setting"] == "none"
    read = [
        "" if isinstance(x, float) and np.isnan(x) else str(x)
        for x in acc["text"][none][np.argsort(acc["instance"][none])]
    ]
    assert read == texts
    # swap and mean from the other instance of the set whatever the batching: batch size 1 gives the same rows
    one = tmp_path / "one"
    assert vd.main(dataclasses.replace(cfg, batch_size=1, analyses=("accuracy",)), str(one), quiet=True)
    acc1 = io.read_csv(str(one / "accuracy.csv"))
    for kind in ("swap", "mean"):
        a = sorted(zip(acc["instance"][acc["setting"] == kind], acc["text"][acc["setting"] == kind]))
        b = sorted(zip(acc1["instance"][acc1["setting"] == kind], acc1["text"][acc1["setting"] == kind]))
        assert [str(x) for x in a] == [str(x) for x in b] and len(a) == 2
