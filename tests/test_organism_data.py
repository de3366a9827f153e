"""The organism as Qwen2.5-VL data and checkpoint files (:mod:`tokdyn.models.organism`): the tasks' images,
questions, options and captions against a NumPy reader of the text that solves each question from the grid;
the JSONL instances through the ``vlm-diagnostics`` study's reader; the tokenizer's round trip; the checkpoint
writer through ``qwen2_5_vl.load``, ``config.read`` and ``Chat.load``, its refusals and its atomicity; and the
committed checkpoint made by ``tests/fixtures/make_organism_checkpoint.py`` (through the writer) against what
``transformers`` made of it: the processor's ids and pixels, the logits. The ``full`` tests remake it with
``transformers`` when it is installed at the versions the script names."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

from tokenizers import pre_tokenizers  # noqa: E402

from tokdyn.diagnostics import choices  # noqa: E402
from tokdyn.models import qwen2_5_vl, vlm  # noqa: E402
from tokdyn.data import grid_tasks as latent_tasks  # noqa: E402
from tokdyn.models.organism import checkpoint, tasks, tokenizer  # noqa: E402
from tokdyn.models.qwen2_5_vl import saving  # noqa: E402
from tokdyn.studies.vlm_diagnostics import instances as study_instances  # noqa: E402
from tokdyn.studies.vlm_diagnostics.checkpoint import tiny_params  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "organism_tiny"
MAKER = Path(__file__).parent / "fixtures" / "make_organism_checkpoint.py"
CFG = tasks.Config()  # G = 4, C = 4, 28-pixel cells, 4 options
N = 300
RTOL = 1e-4
"""Largest logit difference allowed, as a fraction of the reference's largest magnitude (float32 rounding of
two programs is ~1e-6 of it; a wrong weight, position or token moves logits by 1e-2 of it or more)."""


@pytest.fixture(scope="module")
def batch():
    return jax.tree.map(np.asarray, tasks.generate(jax.random.key(3), N, CFG))


@pytest.fixture(scope="module")
def items(batch):
    return tasks.examples(batch, CFG)


@pytest.fixture(scope="module")
def tok():
    return tokenizer.build()


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE / "reference.npz") as f:
        return {k: f[k] for k in f.files}


# ---- a reader of the questions, independent of the generators ------------------------------------------------

NAMES = {name: k for k, name in enumerate(tasks.COLOUR_NAMES)}
TURNS = {  # the operation's words -> what NumPy does to the grid
    "rotated 90 degrees anticlockwise": lambda a: np.rot90(a, 1),
    "rotated 180 degrees": lambda a: np.rot90(a, 2),
    "rotated 90 degrees clockwise": lambda a: np.rot90(a, -1),
    "mirrored left to right": lambda a: a[:, ::-1],
    "flipped upside down": lambda a: a[::-1, :],
}


def cells(image: np.ndarray, p: int) -> np.ndarray:
    """The grid of colour values an image shows: each p x p block one colour of the palette (checked)."""
    g = image.shape[0] // p
    blocks = image.reshape(g, p, g, p, 3).transpose(0, 2, 1, 3, 4).reshape(g, g, p * p, 3)
    assert (blocks == blocks[:, :, :1]).all(), "a cell is not one colour"
    match = (blocks[:, :, 0, None, :] == tasks.COLOURS[None, None]).all(-1)  # (g, g, palette)
    assert (match.sum(-1) == 1).all(), "a cell's colour is not exactly one of the palette's"
    return match.argmax(-1)


def fallen(grid: np.ndarray) -> np.ndarray:
    out = np.zeros_like(grid)
    for c in range(grid.shape[1]):
        col = [x for x in grid[:, c] if x]
        out[grid.shape[0] - len(col) :, c] = col
    return out


def solve(grid: np.ndarray, question: str, caption: str) -> str:
    """The answer's text of ``question`` about ``grid``, read from the words alone (rows and columns from 1);
    the caption's words checked against the same reading."""
    name = lambda k: tasks.COLOUR_NAMES[k]  # noqa: E731
    if m := re.fullmatch(r"What colour is the cell in row (\d+), column (\d+)\?", question):
        r, c = int(m[1]) - 1, int(m[2]) - 1
        assert caption == f"Look at row {r + 1}, column {c + 1}."
        return name(grid[r, c])
    if m := re.fullmatch(
        r"Imagine the grid (.+)\. What colour is the cell in row (\d+), column (\d+) then\?", question
    ):
        turned = TURNS[m[1]](grid)
        r, c = int(m[2]) - 1, int(m[3]) - 1
        src = re.fullmatch(r"It is the cell in row (\d+), column (\d+) of the grid as shown\.", caption)
        assert grid[int(src[1]) - 1, int(src[2]) - 1] == turned[r, c]
        return name(turned[r, c])
    if m := re.fullmatch(
        r"Imagine every coloured cell falling to the bottom of its column\. How many (\w+) cells are in row (\d+) "
        r"then\?",
        question,
    ):
        row = fallen(grid)[int(m[2]) - 1]
        assert caption == f"Row {m[2]} would read: {', '.join(name(x) for x in row)}."
        return str(int((row == NAMES[m[1]]).sum()))
    if m := re.fullmatch(
        r"Imagine every (\w+) cell turning (\w+)\. How many (\w+) cells are in row (\d+) then\?", question
    ):
        assert m[2] == m[3] and m[1] != m[2]
        row = np.where(grid == NAMES[m[1]], NAMES[m[2]], grid)[int(m[4]) - 1]
        assert caption == f"Row {m[4]} would read: {', '.join(name(x) for x in row)}."
        return str(int((row == NAMES[m[2]]).sum()))
    m = re.fullmatch(
        r"Start at the (\w+) cell and move (\d+) (up|down) and (\d+) (left|right), wrapping around the edges\. "
        r"What colour is the cell you reach\?",
        question,
    )
    assert m, question
    (starts,) = np.nonzero((grid == NAMES[m[1]]).ravel())  # the marker is the only cell of its colour
    assert len(starts) == 1
    g = grid.shape[0]
    r, c = divmod(int(starts[0]), g)
    er = (r + (-1 if m[3] == "up" else 1) * int(m[2])) % g
    ec = (c + (-1 if m[5] == "left" else 1) * int(m[4])) % g
    assert (
        caption == f"The {m[1]} cell is in row {r + 1}, column {c + 1}; the move ends in row {er + 1}, column {ec + 1}."
    )
    return name(grid[er, ec])


# ---- tasks ------------------------------------------------------------------------------------------------------


def test_images_are_palette_cells_the_processor_keeps_as_drawn(batch, items):
    """Every cell a 28 x 28 block of its palette colour (the grid read back from the pixels); the image's side
    a multiple of 28 the processor does not resize, G^2 image tokens (16 to 64 for G = 4..8); the helper image
    the helper grid drawn the same way."""
    p = CFG.cell_pixels
    for i, ex in enumerate(items[:40]):
        assert ex.image.shape == ex.helper.shape == (CFG.image_size,) * 2 + (3,) and ex.image.dtype == np.uint8
        np.testing.assert_array_equal(cells(ex.image, p), batch.task.image[i])
        np.testing.assert_array_equal(cells(ex.helper, p), batch.task.helper[i])
    processor = qwen2_5_vl.ImageProcessor()
    for g in (4, 6, 8):
        cfg = tasks.Config(latent_tasks.Config(grid_size=g, n_colours=4))
        side = cfg.image_size
        assert processor.target_size(side, side) == (side, side)
        image = np.asarray(tasks.render(np.zeros((g, g), np.int32), cfg))
        out = processor(image)
        assert out["image_grid_thw"].tolist() == [[1, side // 14, side // 14]]
        assert cfg.image_tokens == out["pixel_values"].shape[0] // 4 == g * g
    with pytest.raises(ValueError, match="cell_pixels"):
        tasks.Config(latent_tasks.Config(grid_size=5), cell_pixels=14).validate()
    with pytest.raises(ValueError, match="n_colours"):
        tasks.Config(latent_tasks.Config(n_colours=11)).validate()


def test_every_answer_follows_from_the_words_and_the_grid(batch, items):
    """A reader of the question's words (rows and columns from 1, the operations' words as NumPy reads them),
    solving it on the grid shown, picks the option of the answer letter, for every family; the caption states
    the same intermediate step."""
    seen = set()
    for ex in items:
        want = solve(cells(ex.image, CFG.cell_pixels), ex.question, ex.caption)
        assert ex.options[tasks.LETTERS.index(ex.answer)] == want, (ex.question, ex.options, ex.answer)
        seen.add(ex.family)
    assert seen == set(tasks.FAMILIES)


def test_options_hold_the_answer_once_among_distinct_distractors(batch, items):
    """K distinct options of the family's answer space, the answer once at its letter; the letter uniform over
    the K positions, the distractors a uniform choice among the other values (chi-square tests, p > 1e-4)."""
    from scipy.stats import chisquare

    k = CFG.n_options
    for ex in items:
        space = CFG.answer_space(ex.family)
        assert len(ex.options) == len(set(ex.options)) == k and set(ex.options) <= set(space)
        assert ex.options.count(ex.options[tasks.LETTERS.index(ex.answer)]) == 1
    letters = np.bincount([tasks.LETTERS.index(ex.answer) for ex in items], minlength=k)
    assert chisquare(letters).pvalue > 1e-4, letters
    # colour families: 5 values, 4 options: the one value left out is uniform over the 4 other than the answer
    left_out = []
    for ex, value in zip(items, tasks.answer_value(batch.task, CFG)):
        if ex.family in tasks.COLOUR_FAMILIES:
            (out,) = set(range(CFG.task.n_colours + 1)) - {tasks.COLOUR_NAMES.index(o) for o in ex.options}
            left_out.append((out - int(value)) % (CFG.task.n_colours + 1) - 1)  # 0..3 relative to the answer
    assert chisquare(np.bincount(left_out, minlength=4)).pvalue > 1e-4
    with pytest.raises(ValueError, match="n_options"):
        tasks.Config(n_options=6).validate()  # the colours' space holds 5 values


def test_the_same_key_draws_the_same_instances(batch):
    """Instance i of ``generate(key, n)`` is ``sample(fold_in(key, i), its family)``, its task the Flax
    organism's; an offset continues the same stream; another key draws others."""
    key = jax.random.key(3)
    sample = jax.jit(lambda k, family: tasks.sample(k, family, CFG))  # one compilation for every family
    for i in (0, 7, 123):
        one = sample(jax.random.fold_in(key, i), batch.task.family[i])
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[i]), jax.tree.map(np.asarray, one), batch)
    same = latent_tasks.generate(key, 5, CFG.task)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[:5]), jax.tree.map(np.asarray, same), batch.task)
    later = jax.tree.map(np.asarray, tasks.generate(key, 3, CFG, offset=4))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[4:7]), later, batch)
    other = jax.tree.map(np.asarray, tasks.generate(jax.random.key(4), 3, CFG))
    assert not np.array_equal(other.task.image, batch.task.image[:3])
    # inside a transformation: one vmapped draw of n, the same instances as the blocks drawn from Python
    traced = jax.jit(lambda k: tasks.generate(k, 3, CFG, offset=4))(key)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), traced, later)


def test_the_jsonl_instances_are_read_by_the_study(tmp_path, items):
    """``write_jsonl`` writes what the study's ``read_jsonl`` takes: the same images (PNG), questions, options and
    answer letters, the prompt of ``choices.prompt``; a path that is not ``.jsonl`` or no instances refused."""
    path = tasks.write_jsonl(tmp_path / "organism.jsonl", items[:6])
    read = study_instances.read_jsonl(str(path))
    assert len(read) == 6 and read.files == ["organism"] * 6
    for i, ex in enumerate(items[:6]):
        np.testing.assert_array_equal(read.images[i], ex.image)
        assert (read.questions[i], read.options[i], read.answers[i]) == (ex.question, ex.options, ex.answer)
        assert read.prompt(i) == choices.prompt(ex.question, ex.options)
    row = json.loads(path.read_text().splitlines()[2])
    np.testing.assert_array_equal(qwen2_5_vl.processor.load_image(tmp_path / row["helper"]), items[2].helper)
    assert row["caption"] == items[2].caption and row["family"] == items[2].family
    with pytest.raises(ValueError, match="jsonl"):
        tasks.write_jsonl(tmp_path / "organism.txt", items[:1])
    with pytest.raises(ValueError, match="empty"):
        tasks.write_jsonl(tmp_path / "none.jsonl", [])


# ---- tokenizer --------------------------------------------------------------------------------------------------


def test_the_tokenizer_round_trips_and_holds_the_tasks_words(tok, items):
    """Every chat of the tasks (system, the question with its options as the study writes them, the caption and a
    latent block in the answer) decodes back to itself, each piece of Qwen2's pre-tokenisation one token; any
    other text falls back to bytes and round-trips too; the special tokens are Qwen's, in its order, then the
    three latent ones."""
    assert tokenizer.INSTRUCTION == choices.INSTRUCTION
    assert set(tokenizer.bytes_to_unicode().values()) == set(pre_tokenizers.ByteLevel.alphabet())
    template = vlm.chat.render
    specials = tokenizer.SPECIAL_TOKENS + tokenizer.LATENT_TOKENS
    for ex in items[:50]:
        messages = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": choices.prompt(ex.question, ex.options)}],
            },
            {"role": "assistant", "content": f"{ex.caption}\n<|latent_start|><|latent_pad|><|latent_end|>{ex.answer}"},
        ]
        text = template(tokenizer.CHAT_TEMPLATE, messages, add_generation_prompt=False)
        enc = tok.encode(text)
        assert tok.decode(enc.ids, skip_special_tokens=False) == text
        plain = text
        for s in specials:
            plain = plain.replace(s, "\x00")
        pieces = [p for part in plain.split("\x00") for p, _ in tok.pre_tokenizer.pre_tokenize_str(part)]
        assert len(enc.ids) == len(pieces) + sum(text.count(s) for s in specials), "a piece fell back to bytes"
    odd = "Zürich ☃ 12\tx"
    ids = tok.encode(odd).ids
    assert tok.decode(ids) == odd and max(ids) < 256  # bytes only
    n = tok.get_vocab_size(with_added_tokens=True)
    assert [tok.token_to_id(s) for s in specials] == list(range(n - len(specials), n))


def test_chat_gives_transformers_ids(reference, tok):
    """The committed checkpoint's tokenizer and template through tokdyn's ``Chat``: the text, the ids (image
    placeholders expanded) and the pixels ``transformers``' processor gave, and the same ids from the tokenizer
    built today (the writer's output has not drifted from what ``transformers`` saw)."""
    chat = vlm.Chat.load(FIXTURE)
    for family in ("read", "path"):
        messages = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": str(reference[f"{family}_prompt"])}],
            }
        ]
        assert chat.render(messages) == str(reference[f"{family}_text"])
        enc = chat.encode(messages, [reference[f"{family}_image"]])
        np.testing.assert_array_equal(enc["input_ids"], reference[f"{family}_ids"])
        np.testing.assert_array_equal(enc["image_grid_thw"], reference[f"{family}_grid"])
        np.testing.assert_allclose(enc["pixel_values"], reference[f"{family}_pixels"], rtol=0, atol=1e-6)
        text = chat.decode(enc["input_ids"], skip_special_tokens=False)
        assert tok.encode(text).ids == enc["input_ids"][0].tolist()
    assert tok.encode(str(reference["latent_text"])).ids == reference["latent_ids"].tolist()
    assert chat.tokenizer.encode(str(reference["latent_text"])).ids == reference["latent_ids"].tolist()


# ---- checkpoint -------------------------------------------------------------------------------------------------


def test_the_committed_checkpoint_gives_transformers_logits(reference):
    """``qwen2_5_vl.load`` of the directory the writer made gives the logits ``transformers``'
    ``from_pretrained`` gave on an image and a question of the tasks; its weights are the script's draw in
    bfloat16, its latent mode the one written (the other prompt and greedy decoding: the full tier)."""
    versions = json.loads(str(reference["versions"]))
    assert {"transformers", "torch", "tokenizers", "processor"} <= set(versions)
    model = qwen2_5_vl.load(FIXTURE, dtype="float32")
    got = np.asarray(model(reference["read_ids"], reference["read_pixels"], reference["read_grid"]), np.float64)
    want = reference["read_logits"].astype(np.float64)
    scale = np.abs(want).max()
    assert scale > 0.5
    assert np.abs(got - want).max() <= RTOL * scale
    cfg = checkpoint.tiny_config(tokenizer.build())
    drawn = jax.tree.map(lambda a: np.asarray(np.asarray(a).astype(jax.numpy.bfloat16), np.float32), tiny_params(cfg))
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, model.params), drawn)
    assert checkpoint.read_latent_mode(FIXTURE) == {
        "start": "<|latent_start|>",
        "end": "<|latent_end|>",
        "pad": "<|latent_pad|>",
        "size": 4,
    }


def shapes_3b():
    vision = qwen2_5_vl.VisionConfig(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=2048,
        window_size=112,
        fullatt_block_indexes=(7, 15, 23, 31),
        tokens_per_second=2,
    )
    text = qwen2_5_vl.TextConfig(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return qwen2_5_vl.Config(vision=vision, text=text, eos_token_id=(151645, 151643), dtype="bfloat16")


def test_config_json_reads_back_for_tiny_and_3b_shapes(tok):
    """``config.json`` of a configuration reads back to it (``config.from_dict``) for the tiny organism and for
    Qwen2.5-VL-3B's shapes (tied embeddings, four full-attention vision blocks); the image processor's and the
    generation's files too."""
    from tokdyn.models.qwen2_5_vl import config as config_lib
    from tokdyn.models.qwen2_5_vl import decoding

    tiny = dataclasses.replace(checkpoint.tiny_config(tok), dtype="float32")
    for cfg in (tiny, shapes_3b(), dataclasses.replace(tiny, eos_token_id=(5,))):
        assert config_lib.from_dict(json.loads(saving.json_text(saving.config_dict(cfg)))) == cfg
    processor = qwen2_5_vl.ImageProcessor(min_pixels=28 * 28 * 16, max_pixels=28 * 28 * 64)
    assert qwen2_5_vl.ImageProcessor.from_dict(saving.preprocessor_dict(processor)) == processor
    gen = decoding.GenerationConfig.from_dict(saving.generation_dict(tiny, pad_token_id=3))
    assert (gen.do_sample, gen.eos_token_id, gen.pad_token_id, gen.repetition_penalty) == (
        False,
        tiny.eos_token_id,
        3,
        1.0,
    )


@pytest.fixture(scope="module")
def tiny(tok):
    cfg = checkpoint.tiny_config(tok)
    return cfg, tiny_params(cfg)


LATENT = vlm.LatentMode(*tokenizer.LATENT_TOKENS, size=4)


def test_the_writer_round_trips_through_load(tmp_path, tok, tiny):
    """A float32 checkpoint loads back to the same parameters, configuration, processor, decoding and latent mode;
    a bfloat16 one to the parameters rounded to bfloat16; a sharded one (shards of at most 64 kB, an index) to the
    same parameters; a rewrite of the writer's own directory replaces it."""
    from tokdyn.models.qwen2_5_vl import config as config_lib

    cfg, params = tiny
    out = checkpoint.write(tmp_path / "f32", cfg, params, latent_mode=LATENT, tokenizer=tok)
    model = qwen2_5_vl.load(out)
    assert model.config == dataclasses.replace(cfg, dtype="float32") == config_lib.read(out)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, model.params), params)
    assert model.generation_config.do_sample is False and model.generation_config.eos_token_id == cfg.eos_token_id
    assert qwen2_5_vl.ImageProcessor.read(out) == qwen2_5_vl.ImageProcessor()
    assert vlm.Chat.load(out).tokenizer.to_str() == tok.to_str()
    assert checkpoint.read_latent_mode(out) == {"start": LATENT.start, "end": LATENT.end, "pad": LATENT.pad, "size": 4}
    marker = json.loads((out / checkpoint.MARKER).read_text())
    assert sorted(marker["files"]) == sorted(p.name for p in out.iterdir() if p.name != checkpoint.MARKER)

    half = checkpoint.write(tmp_path / "bf16", cfg, params, latent_mode=None, tokenizer=tok, dtype="bfloat16")
    assert not (half / checkpoint.LATENT_FILE).exists()
    rounded = jax.tree.map(lambda a: np.asarray(a).astype(jax.numpy.bfloat16), params)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, qwen2_5_vl.load(half).params), rounded)

    sharded = checkpoint.write(
        tmp_path / "shards", cfg, params, latent_mode=LATENT, tokenizer=tok, max_shard_bytes=65536
    )
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3 and not (sharded / "model.safetensors").exists()
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, qwen2_5_vl.load(sharded).params), params)

    again = checkpoint.write(out, cfg, params, latent_mode=None, tokenizer=tok, dtype="bfloat16")
    assert not (again / checkpoint.LATENT_FILE).exists() and qwen2_5_vl.config.read(again).dtype == "bfloat16"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_writer_refuses_what_it_did_not_write_and_bad_input(tmp_path, tok, tiny):
    """A directory of other files (or of the writer's files and one more) is refused and left as it was; a tree
    of another configuration, ids other than the tokenizer's, a latent mode the tokenizer lacks or a bad dtype
    are refused before anything is written."""
    cfg, params = tiny
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not written by"):
        checkpoint.write(foreign, cfg, params, latent_mode=LATENT, tokenizer=tok)
    assert [p.name for p in foreign.iterdir()] == ["config.json"]
    mine = checkpoint.write(tmp_path / "mine", cfg, params, latent_mode=LATENT, tokenizer=tok)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        checkpoint.write(mine, cfg, params, latent_mode=LATENT, tokenizer=tok)
    assert (mine / "notes.txt").read_text() == "mine"

    new = tmp_path / "new"
    bad_tree = jax.tree.map(lambda a: a, params)
    bad_tree["text"]["norm"] = np.ones(7, np.float32)
    with pytest.raises(ValueError, match=re.escape("params['text']['norm'] has shape (7,)")):
        checkpoint.write(new, cfg, bad_tree, latent_mode=LATENT, tokenizer=tok)
    del bad_tree["text"]["norm"]
    with pytest.raises(ValueError, match="lacks 1 array"):
        checkpoint.write(new, cfg, bad_tree, latent_mode=LATENT, tokenizer=tok)
    with pytest.raises(ValueError, match="image_token_id"):
        checkpoint.write(new, dataclasses.replace(cfg, image_token_id=5), params, latent_mode=LATENT, tokenizer=tok)
    with pytest.raises(ValueError, match="vocab_size"):
        small = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=300))
        checkpoint.write(new, small, params, latent_mode=LATENT, tokenizer=tok)
    with pytest.raises(ValueError, match="'<|think|>'"):
        checkpoint.write(
            new,
            cfg,
            params,
            latent_mode=dict(start="<|think|>", end="<|latent_end|>", pad="<|latent_pad|>", size=4),
            tokenizer=tok,
        )
    with pytest.raises(ValueError, match="dtype"):
        checkpoint.write(new, cfg, params, latent_mode=LATENT, tokenizer=tok, dtype="int8")
    assert not new.exists()


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.pop("size"), "field 'size' is missing"),
        (lambda d: d.update(mode="norm"), "field 'mode' is not one of"),
        (lambda d: d.update(feed="mean"), "feed is 'mean'"),
        (lambda d: d.update(start="<|latent_begin|>"), "start is '<|latent_begin|>'"),
        (lambda d: d.update(end="latent"), "end is 'latent'"),
        (lambda d: d.update(pad=""), "pad is ''"),
        (lambda d: d.update(pad="<|latent_start|>"), "three different tokens"),
        (lambda d: d.update(size=0), "size is 0"),
        (lambda d: d.update(size=True), "size is True"),
        (lambda d: d.update(size="4"), "size is '4'"),
        (lambda d: d.update(size=10_000), "size is 10000"),
    ],
)
def test_bad_latent_mode_files_are_refused(tmp_path, edit, match):
    """``latent_mode.json`` that lacks a field or holds another, names a token the tokenizer lacks (or text of
    several tokens), repeats one, or states a size that is not an integer in [1, MAX_SIZE]: refused naming the file,
    the field and the value."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, ckpt, ignore=shutil.ignore_patterns("reference.npz", "model.safetensors"))
    path = ckpt / checkpoint.LATENT_FILE
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=re.escape(match)) as err:
        checkpoint.read_latent_mode(ckpt)
    assert str(path) in str(err.value)


def test_latent_mode_files_that_are_missing_or_not_objects_are_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, ckpt, ignore=shutil.ignore_patterns("reference.npz", "model.safetensors"))
    path = ckpt / checkpoint.LATENT_FILE
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="latent_mode.json"):
        checkpoint.read_latent_mode(ckpt)
    path.write_text("{")
    with pytest.raises(ValueError, match="not a JSON file"):
        checkpoint.read_latent_mode(ckpt)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="latent_mode.json"):
        checkpoint.read_latent_mode(ckpt)


def test_an_interrupted_write_leaves_the_old_checkpoint_or_none(tmp_path, tok, tiny, monkeypatch):
    """A write stopped part-way (here by KeyboardInterrupt as the tokenizer's files are written) leaves no
    directory at a new target, the previous checkpoint intact at an existing one, and no temporary folder."""
    cfg, params = tiny
    old = checkpoint.write(tmp_path / "ckpt", cfg, params, latent_mode=LATENT, tokenizer=tok)
    before = {p.name: p.read_bytes() for p in old.iterdir()}

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer, "files", stop)
    for target in (tmp_path / "fresh", old):
        with pytest.raises(KeyboardInterrupt):
            checkpoint.write(target, cfg, params, latent_mode=None, tokenizer=tok, dtype="bfloat16")
    assert not (tmp_path / "fresh").exists()
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# ---- full tier: transformers ----------------------------------------------------------------------------------


def maker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_organism_checkpoint", MAKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.full
def test_transformers_opens_a_fresh_checkpoint_as_tokdyn_does(tmp_path):
    """With transformers installed at the script's versions: a checkpoint written now through the writer is opened
    by ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` and the processor (``AutoProcessor``, or its
    tokenizer and image processor where torchvision is missing) to the logits tokdyn's ``load`` gives on both
    prompts, the same ids as the committed reference (default-tier check:
    ``test_the_committed_checkpoint_gives_transformers_logits``)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    m = maker()
    problem = m.version_mismatch()
    if problem:
        pytest.skip(problem)
    fresh = m.make(tmp_path / "ckpt")
    model = qwen2_5_vl.load(tmp_path / "ckpt", dtype="float32")
    with np.load(FIXTURE / "reference.npz") as f:
        committed = {k: f[k] for k in f.files}
    for family in m.FAMILIES:
        np.testing.assert_array_equal(fresh[f"{family}_ids"], committed[f"{family}_ids"])
        got = np.asarray(model(fresh[f"{family}_ids"], fresh[f"{family}_pixels"], fresh[f"{family}_grid"]))
        want = fresh[f"{family}_logits"]
        assert np.abs(got - want).max() <= RTOL * np.abs(want).max()
        np.testing.assert_allclose(want, committed[f"{family}_logits"], rtol=0, atol=RTOL * np.abs(want).max())


@pytest.mark.full
def test_the_committed_checkpoint_decodes_as_transformers(reference):
    """tokdyn's greedy decoding under the checkpoint's ``generation_config.json`` gives ``transformers``'
    tokens, and the second prompt's logits match too (default-tier check:
    ``test_the_committed_checkpoint_gives_transformers_logits``)."""
    model = qwen2_5_vl.load(FIXTURE, dtype="float32")
    for family in ("read", "path"):
        ids, pixels, grid = (reference[f"{family}_{k}"] for k in ("ids", "pixels", "grid"))
        got = np.asarray(model(ids, pixels, grid))
        want = reference[f"{family}_logits"]
        assert np.abs(got - want).max() <= RTOL * np.abs(want).max()
        np.testing.assert_array_equal(
            model.generate(ids, pixels, grid, max_new_tokens=6), reference[f"{family}_greedy"]
        )


@pytest.mark.full
def test_a_killed_write_leaves_no_half_checkpoint(tmp_path):
    """A process killed (SIGKILL) while it writes the weights of a checkpoint leaves nothing at the target (a
    ``*.tmp`` folder beside it) and an earlier checkpoint there intact (default-tier check, with an exception:
    ``test_an_interrupted_write_leaves_the_old_checkpoint_or_none``)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import os, signal, sys
        from tokdyn.models.organism import checkpoint, tokenizer
        from tokdyn.models.qwen2_5_vl import saving
        from tokdyn.studies.vlm_diagnostics.checkpoint import tiny_params
        tok = tokenizer.build()
        cfg = checkpoint.tiny_config(tok)
        params = tiny_params(cfg)
        if sys.argv[1] == "kill":
            real = saving.write_weights
            def killed(*args, **kwargs):
                real(*args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
            saving.write_weights = killed
        checkpoint.write(sys.argv[2], cfg, params, latent_mode=None, tokenizer=tok)
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = lambda *a: subprocess.run([sys.executable, "-c", script, *a], env=env, capture_output=True)  # noqa: E731
    assert run("kill", str(tmp_path / "fresh")).returncode == -9
    assert not (tmp_path / "fresh").exists()
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert run("write", str(tmp_path / "old")).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}
    assert run("kill", str(tmp_path / "old")).returncode == -9
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before
