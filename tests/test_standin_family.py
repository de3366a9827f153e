"""The families' contract (tokdyn.models.families), enforced: a stand-in family of its own design
(tests/standin_vl: a linear patch embedding and 2 x 2 merge as its vision tower, a two-block decoder with 1D
rotary positions, its own config.json, parameter tree, tensor names and image processor; nothing of
Qwen2.5-VL's but the contract's names) registered under the model_type "standin_vl" exposes every name of the
table; the one generation loop over its functions equals a plain float64 NumPy loop of the same architecture
(its logits at every step, its greedy tokens, a block forced or opened by the model, the fed-back latents);
the analyses build its Layout of generated text by field name; the vlm-diagnostics study opens its checkpoint
by the registry, estimates its cost from the family's own sizes and takes images of a side its 16-pixel
tokens divide (Qwen2.5-VL's 28 does not); its grounding scores are that NumPy forward pass's; and (full tier)
every analysis runs on it in both latent modes and writes every table, the clean run's answers and latents
those of the NumPy loop."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("safetensors")

import standin_vl  # noqa: E402 (tests/ is on sys.path: conftest.py)
from standin_vl import checkpoint, config, params  # noqa: E402
from test_families import TINY, lacks  # noqa: E402
from test_vlm_diagnostics_study import LINES, write_instances  # noqa: E402
from tokdyn import io  # noqa: E402
from tokdyn.models import families  # noqa: E402

CONFIG = config.Config(
    vision=config.Tower(patch=8, merge=2, channels=3, width=16),
    text=config.Decoder(vocab=128, width=32, depth=2, heads=4, kv_heads=2, ffn=48),
    image_token_id=120,
    video_token_id=121,
    vision_start_token_id=118,
    vision_end_token_id=119,
    eos_token_id=(2,),
)
# ids of the fixture's tokenizer (copied into the stand-in's checkpoint): the chat template's last token "\n",
# the study's block markers and fill (<|box_start|>, <|box_end|>, <|quad_start|>), the letter B, the stop token
NEWLINE, START, END, FILL, LETTER_B, EOS = 95, 122, 123, 124, 34, 2
SIZE = 2  # latents a block


def rigged(tree: dict) -> dict:
    """Random weights made to open a latent block after the prompt's last token ("\n"), answer B after a
    block's end marker and stop after B, so that the model writes its own blocks and readable answers: those
    three tokens embedded along orthonormal directions, longer than the other embeddings (the residual stream
    carries its input), and each next token's unembedding given that direction."""
    lm = tree["lm"]
    basis = np.linalg.qr(np.random.default_rng(7).standard_normal((CONFIG.text.width, 3)))[0].T  # (3, D)
    for q, (after, token) in zip(basis, ((NEWLINE, START), (END, LETTER_B), (LETTER_B, EOS))):
        lm["tok_emb"][after] = 4.0 * q
        lm["unembed"][:, token] += 4.0 * q
    return tree


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """The stand-in registered (for this module), and its checkpoint directory and parameter tree."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(families.FAMILIES, "standin_vl", "standin_vl")
        tree = rigged(params.random(CONFIG, seed=0))
        d = checkpoint.write(tmp_path_factory.mktemp("standin") / "ckpt", CONFIG, tree, like=TINY)
        (d / "latent_mode.json").write_text(
            json.dumps(dict(start="<|box_start|>", end="<|box_end|>", pad="<|quad_start|>", size=SIZE))
        )
        yield d, tree


# ---------------------------------------------------------------------------------------------- NumPy reference


def _rms(x, w, eps):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w


def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_tower(tree, pixels, rows, cols):
    """The image tokens' features (float64) of one image's pixel rows (rows * cols, patch_dim), which come in
    blocks of merge x merge patches."""
    m = CONFIG.vision.merge
    k = np.arange(rows * cols)
    block, inner = np.divmod(k, m * m)
    (br, bc), (a, b) = np.divmod(block, cols // m), np.divmod(inner, m)
    place = np.stack([(br * m + a) / (rows - 1), (bc * m + b) / (cols - 1)], -1)
    p = {n: np.asarray(v, np.float64) for n, v in tree["tower"]["patches"].items()}
    z = np.asarray(pixels, np.float64) @ p["w"] + p["b"] + place @ p["pos"]
    z = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))  # gelu, tanh form
    merge = {n: np.asarray(v, np.float64) for n, v in tree["tower"]["merge"].items()}
    return z.reshape(-1, m * m * z.shape[-1]) @ merge["w"] + merge["b"]


def np_decoder(tree, x):
    """The last block's outputs (T, D) over one row's input embeddings ``x`` (T, D), at positions 0 .. T - 1."""
    d = CONFIG.text
    hw, g, t = d.width // d.heads, d.heads // d.kv_heads, len(x)
    ang = np.arange(t)[:, None] / d.rope_base ** (np.arange(0, hw, 2) / hw)
    cos, sin = np.cos(np.concatenate([ang, ang], -1))[:, None], np.sin(np.concatenate([ang, ang], -1))[:, None]
    rot = lambda v: v * cos + np.concatenate([-v[..., hw // 2 :], v[..., : hw // 2]], -1) * sin  # noqa: E731
    causal = np.tril(np.ones((t, t), bool))
    for i in range(d.depth):
        p = {n: np.asarray(v[i], np.float64) for n, v in tree["lm"]["blocks"].items()}
        h = _rms(x, p["ln_attn"], d.eps)
        q, k = rot((h @ p["q"]).reshape(t, d.heads, hw)), rot((h @ p["k"]).reshape(t, d.kv_heads, hw))
        v = (h @ p["v"]).reshape(t, d.kv_heads, hw)
        out = np.zeros((t, d.heads, hw))
        for head in range(d.heads):
            s = np.where(causal, q[:, head] @ k[:, head // g].T / np.sqrt(hw), -np.inf)
            out[:, head] = np.exp(_log_softmax(s)) @ v[:, head // g]
        x = x + out.reshape(t, -1) @ p["o"]
        h = _rms(x, p["ln_ffn"], d.eps)
        gate = h @ p["gate"]
        x = x + (gate / (1 + np.exp(-gate)) * (h @ p["up"])) @ p["down"]
    return x


def np_generate(tree, ids, pixels, grid, n, *, block_at=None, stop=(EOS,), pad=0):
    """Greedy generation of ``n`` tokens after one prompt ``ids`` (its real tokens) with a latent block of
    :data:`SIZE` (start, end and fill of the study's markers), re-running the whole sequence every step:
    ``(tokens, log-probabilities (n, vocab), latents (whole blocks, SIZE, D))``."""
    lm = {k: np.asarray(v, np.float64) for k, v in tree["lm"].items() if k != "blocks"}
    emb = lm["tok_emb"]
    x = emb[np.asarray(ids)]
    x[np.asarray(ids) == CONFIG.image_token_id] = np_tower(tree, pixels, *grid[1:])
    inputs, tokens, logps, latents, starts = list(x), [], [], [], []
    phase, done = 0, False
    for i in range(n):
        normed = _rms(np_decoder(tree, np.stack(inputs))[-1], lm["ln_out"], CONFIG.text.eps)
        logits = normed @ lm["unembed"]
        logps.append(_log_softmax(logits))
        if done:
            token, nxt = pad, emb[pad]
        elif 1 <= phase <= SIZE:
            token, nxt = FILL, normed
            latents.append(normed)
            phase += 1
        elif phase == SIZE + 1:
            token, nxt, phase = END, emb[END], 0
        else:
            token = START if block_at == i else int(np.argmax(logits))
            phase = 1 if token == START else 0
            starts += [i] if token == START else []
            nxt = emb[token]
        done = done or token in stop
        tokens.append(token)
        inputs.append(nxt)
    whole = [k for k, s in enumerate(starts) if s + SIZE + 1 < n]  # a block the token limit cut left out
    latents = np.asarray(latents[: SIZE * len(whole)]).reshape(len(whole), SIZE, CONFIG.text.width)
    return np.asarray(tokens), np.stack(logps), latents


# ---------------------------------------------------------------------------------------------- the contract


def test_the_standin_exposes_the_contract_and_nothing_else_of_qwen(standin):
    assert not lacks(standin_vl), lacks(standin_vl)
    model = families.load(standin[0])
    assert families.family_of(model.config) is standin_vl and isinstance(model, standin_vl.Model)
    # its own names: none of Qwen2.5-VL's parameter keys, configuration fields or tensor names
    assert set(model.params) == {"tower", "lm"}
    assert set(model.params["lm"]) == {"tok_emb", "blocks", "ln_out", "unembed"}
    assert not {"dtype", "text_config"} & {f.name for f in dataclasses.fields(model.config)}
    assert not hasattr(model.config.text, "rms_norm_eps") and not hasattr(model.config.vision, "temporal_patch_size")
    raw = json.loads((standin[0] / "config.json").read_text())
    assert raw["model_type"] == "standin_vl" and "text_config" not in raw and "vision_config" not in raw
    assert all(n.split(".")[0] in ("tower", "lm", "decoder") for n in checkpoint.files(standin[0]))


def test_the_study_estimates_the_standin_by_its_own_sizes(standin):
    from tokdyn.studies import vlm_diagnostics as vd

    cfg = vd.Config(model=str(standin[0]))
    want = dict(layers=2, heads=4, kv=2, width=32, ffn=48, vocab=128, v_depth=1, v_width=16, v_ffn=0)
    assert cfg.sizes() == config.sizes(CONFIG) == want
    assert cfg.estimate().seconds < 3600  # not a 7B's hours


# ---------------------------------------------------------------------------------------------- generation


def test_the_generation_loop_over_the_standin_is_a_numpy_loop(standin):
    # three prompts of different lengths, left-padded: the first with a block forced after it (the block
    # mode), the second opening its own (its last token "\n"), the third ending otherwise (text first)
    from tokdyn.diagnostics import vlm
    from tokdyn.models.vlm import LatentMode

    model = families.load(standin[0])
    rng = np.random.default_rng(1)
    image = [CONFIG.vision_start_token_id, *[CONFIG.image_token_id] * 4, CONFIG.vision_end_token_id]
    prompts = [[116, *image, 40, 41, NEWLINE], [116, 44, *image, 45, 46, 47, 48, NEWLINE], [116, *image, 50, 51, 52]]
    width = max(map(len, prompts))
    ids = np.stack([np.pad(p, (width - len(p), 0)) for p in prompts])
    mask = np.stack([np.arange(width) >= width - len(p) for p in prompts])
    pixels = rng.standard_normal((3, 16, CONFIG.vision.patch_dim)).astype(np.float32)
    grid = np.asarray([[1, 4, 4]])
    n, mode = 10, LatentMode(START, END, FILL, SIZE)
    gen = model.generate(
        ids,
        pixels,
        grid,
        mask,
        max_new_tokens=n,
        latent=mode,
        block_at=[0, -1, -1],
        score_ids=tuple(range(CONFIG.text.vocab)),
        do_sample=False,
    )
    for r, p in enumerate(prompts):
        tokens, logp, latents = np_generate(standin[1], p, pixels[r], grid[0], n, block_at=0 if r == 0 else None)
        np.testing.assert_array_equal(gen.tokens[r], tokens)
        stop = int(gen.stop_steps[r])
        scale = np.abs(logp[: stop + 1]).max()
        np.testing.assert_allclose(gen.scores[r, : stop + 1], logp[: stop + 1], atol=1e-5 * scale, rtol=0)
        assert int(gen.blocks[r]) == len(latents)
        if len(latents):
            np.testing.assert_allclose(gen.latents[r, : len(latents)], latents, atol=1e-5 * np.abs(latents).max())
    # the first two rows: a block forced, or opened by the model, then the answer B and the stop
    for r in (0, 1):
        assert list(gen.tokens[r, :6]) == [START, FILL, FILL, END, LETTER_B, EOS]
    # the analyses' teacher-forced view of those blocks: the stand-in's own Layout, built by its field names
    prompts = vlm.Prompts(ids, mask, pixels, grid, np.arange(3), np.ones(3, bool))
    sub, batch, has = vlm.aligned(model, prompts, gen, vlm.Mode(mode, None, n, (), None))
    assert isinstance(sub.layout, standin_vl.adapter.Layout) and (has == (gen.blocks > 0)).all() and has[:2].all()
    got, rows = np.asarray(batch["input_ids"]), np.flatnonzero(has)
    assert (got[rows][:, list(sub.layout.markers)] == [START, END]).all()
    assert (got[rows][:, list(sub.layout.latents)] == FILL).all()
    assert (got[0, list(sub.layout.image)] == CONFIG.image_token_id).all() and sub.layout.length == got.shape[1]
    np.testing.assert_allclose(batch["latents"][rows], gen.latents[rows, 0])


# ---------------------------------------------------------------------------------------------- the study


def _study(standin, tmp_path, **changes):
    from tokdyn.studies import vlm_diagnostics as vd

    # 32-pixel images: 4 x 4 patches of 8 pixels, 2 x 2 tokens (a side Qwen2.5-VL's 28-pixel tokens do not divide)
    base = dict(model=str(standin[0]), n_instances=0, image_size=32, n_tokens=2, n_latents=0, new_tokens=12)
    if "instances" not in changes:
        base["instances"] = str(write_instances(tmp_path))
    cfg = dataclasses.replace(vd.Config.quick(), **{**base, **changes})
    out = tmp_path / "out"
    assert vd.main(cfg, str(out), quiet=True)
    return vd, cfg, out


def test_the_study_runs_grounding_on_the_standin_and_its_scores_are_the_numpy_forward_pass(standin, tmp_path):
    lines = [LINES[0], dict(LINES[1], question="How many now?")]  # one length bucket: one program
    path = write_instances(tmp_path, lines)
    vd, cfg, out = _study(standin, tmp_path, analyses=("grounding",), instances=str(path))
    rows = io.read_csv(str(out / "grounding.csv"))
    loaded = vd.open_checkpoint(cfg)
    assert loaded.family is standin_vl and loaded.size == SIZE  # the checkpoint's latent_mode.json
    inst = vd.make_instances(cfg, loaded.family)
    groups = {int(i): (g, r) for g in vd.encode(inst, loaded, cfg) for r, i in enumerate(g.index)}
    want = {}
    assert len({g.name for g, _ in groups.values()}) == 1
    for i in range(len(lines)):
        g, r = groups[i]
        ids = g.plain[r][g.plain_mask[r]]
        lm = {k: np.asarray(v, np.float64) for k, v in standin[1]["lm"].items() if k != "blocks"}
        x = lm["tok_emb"][ids]
        x[ids == CONFIG.image_token_id] = np_tower(standin[1], g.pixels[r], *g.grid[0, 1:])
        logp = _log_softmax(_rms(np_decoder(standin[1], x), lm["ln_out"], CONFIG.text.eps) @ lm["unembed"])
        answer = loaded.tokens.answer(inst.answers[i])
        for k, token in enumerate(answer):
            at = len(ids) - len(answer) - 1 + k
            assert ids[at + 1] == token
            want[i, k] = logp[at, token]
    assert len(rows["score"]) == 2 * len(want)  # a gaussian draw and the blank image, every answer token
    got = {(int(i), int(k)): v for i, k, v in zip(rows["instance"], rows["token"], rows["logp_image"])}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-4 * max(1.0, abs(value)))
    assert np.abs(rows["score"]).max() > 1e-4  # the image matters


# the whole study on the stand-in in both latent modes, every analysis (about 2 min each on two cores): the
# default run has the contract (test_the_standin_exposes_the_contract_and_nothing_else_of_qwen), the loop
# against NumPy (test_the_generation_loop_over_the_standin_is_a_numpy_loop) and the study's pipeline on one
# analysis (test_the_study_runs_grounding_on_the_standin_and_its_scores_are_the_numpy_forward_pass)
@pytest.mark.full
@pytest.mark.parametrize("latents", ["block", "generated"])
def test_every_analysis_runs_on_the_standin(standin, tmp_path, latents):
    vd, cfg, out = _study(standin, tmp_path, latents=latents)
    for name in ("instances", *vd.ANALYSES):
        assert (out / f"{name}.csv").exists(), name
    # the clean run's answers and first-block latents are the NumPy loop's
    loaded = vd.open_checkpoint(cfg)
    inst = vd.make_instances(cfg, loaded.family)
    t = loaded.tokens
    texts, latents_of = {}, {}
    for g in vd.encode(inst, loaded, cfg):
        for r, i in enumerate(g.index):
            ids = g.prompt[r][g.prompt_mask[r]]
            tokens, _, lat = np_generate(
                standin[1], ids, g.pixels[r], g.grid[0], cfg.new_tokens, block_at=0 if latents == "block" else None
            )
            assert list(tokens[: SIZE + 2]) == [START, FILL, FILL, END]  # a block after the prompt in either mode
            texts[int(i)] = t.decode(tokens[SIZE + 2 :], CONFIG.eos_token_id)
            latents_of[int(i)] = lat[0]
    acc = io.read_csv(str(out / "accuracy.csv"))
    none = acc["setting"] == "none"
    assert {int(i): str(x) for i, x in zip(acc["instance"][none], acc["text"][none])} == texts
    assert set(texts.values()) == {"B"} and (acc["blocks"][none] == 1).all()
    z = np.stack([latents_of[i] for i in sorted(latents_of)])  # (3, SIZE, D)
    u = z / np.linalg.norm(z, axis=-1, keepdims=True)
    pairs = [(a, b) for a in range(3) for b in range(a + 1, 3)]
    sim = io.read_csv(str(out / "similarity.csv"))
    across = sim["measure"] == "across"
    want = [np.mean([(u[a, s] * u[b, s]).sum() for a, b in pairs]) for s in range(SIZE)]
    np.testing.assert_allclose(sim["cosine"][across], want, atol=1e-4)
    assert set(acc["setting"]) == {"none", *vd.LATENT_KINDS} | ({"plain"} if latents == "block" else set())
    dec = io.read_csv(str(out / "decomposition.csv"))
    assert set(dec["setting"][dec["measure"] == "correct"]) == set(vd.DECOMPOSITION_SETTINGS)
    assert set(io.read_csv(str(out / "mediation.csv"))["path"]) == {"input_latent", "input_answer", "latent_answer"}
    for name in ("optimisation", "injection"):
        assert len(io.read_csv(str(out / f"{name}.csv"))["instance"]) == 3, name
