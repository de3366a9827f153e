"""Qwen2.5-VL's generation in text and latent mode against references made by ``transformers`` and PyTorch,
committed under ``tests/fixtures/qwen2_5_vl_latent`` (made by ``tests/fixtures/make_qwen2_5_vl_latent.py``):
the latent-mode loop written from the method's description, and ``transformers``' ``generate`` under the
checkpoint's published-form ``generation_config.json``. The decoding pieces are checked against NumPy. The
default tests need neither torch nor transformers; ``test_qwen2_5_vl_generation_full.py`` holds the rest."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("safetensors")

from tokdyn.models import qwen2_5_vl, vlm  # noqa: E402
from tokdyn.models.vlm import decoding, generation, interventions, latent  # noqa: E402
from test_qwen2_5_vl import reference  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_latent"
START, END, PAD = "<|latent_start|>", "<|latent_end|>", "<|latent_pad|>"
SIZE, STEPS = 4, 40
LATENT_RTOL = 1e-4
"""Largest difference of a latent allowed, as a fraction of the reference latents' largest magnitude: float32
rounding of the two programs is ~1e-6 of it, compounded over the fed-back steps."""


@pytest.fixture(scope="module")
def ref():
    return reference(FIXTURE)


@pytest.fixture(scope="module")
def model():
    return qwen2_5_vl.load(FIXTURE, dtype="float32")


def assert_latents_close(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    assert scale > 0.5
    err = np.abs(got - want).max()
    assert err <= LATENT_RTOL * scale, f"largest difference {err:.3g} exceeds {LATENT_RTOL} x {scale:.3g}"


def test_latent_generation_equals_reference_loop(model, ref):
    """Three prompts of different lengths (two images, one text) in one left-padded batch: 40 greedy steps
    under the checkpoint's repetition penalty give the reference loop's ids token for token, each row opening
    at least two latent blocks by itself, the latents within float32 rounding; feeding the pre-norm state back
    runs the same program (no second compile)."""
    versions = json.loads(str(ref["versions"]))
    assert set(versions) == {"transformers", "torch"}
    assert (ref["n_blocks"] >= 2).all() and (ref["margins"] > 1e-3).all()
    mode = vlm.LatentMode(START, END, PAD, SIZE)  # strings, resolved through the checkpoint's tokenizer
    args = (ref["ids"], ref["pixels"], ref["grid"], ref["mask"])
    generation.run.clear_cache()  # (another module may have compiled this program in this process)
    got = model.generate(*args, max_new_tokens=STEPS, do_sample=False, latent=mode)
    np.testing.assert_array_equal(got.tokens, ref["tokens"])
    np.testing.assert_array_equal(got.n_blocks, ref["n_blocks"])
    np.testing.assert_array_equal(got.block_steps, ref["block_steps"])
    assert_latents_close(got.latents, ref["latents"])
    pre = model.generate(
        *args, max_new_tokens=STEPS, do_sample=False, latent=mode.__class__(START, END, PAD, SIZE, "prenorm")
    )
    np.testing.assert_array_equal(pre.tokens, ref["prenorm_tokens"])
    assert_latents_close(pre.latents, ref["prenorm_latents"])
    assert generation.run._cache_size() == 1


DROPS = ("drop_markers", "drop_slots", "drop_block")
"""The drop kinds of the reference batch's rows 0, 1 and 2 in :func:`test_drop_kinds_equal_the_masked_forward_pass`."""


def masked_forward(model, ref, gen, kinds):
    """One forward pass (no cache) over each row's prompt and generated tokens, ``gen``'s latents written at
    its latent steps, each block's parts removed for the queries after it as ``kinds`` (one per row, None:
    nothing) say: its start marker and slots from its end marker on, its end marker after itself. Returns the
    final-norm states (B, L, hidden) and the logits (B, L, vocab), float64, L the prompt's and steps' length."""
    from tokdyn.models.qwen2_5_vl import inputs, positions, text, vision

    cfg, params = model.config, model.params
    t0, n = ref["ids"].shape[1], gen.tokens.shape[1]
    ids = np.concatenate([ref["ids"], gen.tokens], axis=1)
    real = np.concatenate([ref["mask"].astype(bool), np.ones_like(gen.tokens, bool)], axis=1)
    pos, _ = positions.rope_index(cfg, ids, ref["grid"], real)
    feats = inputs.image_features_jit(cfg, params, jnp.asarray(ref["pixels"]), vision.plan(cfg.vision, ref["grid"]))
    x = np.array(text.embed(params["text"], jnp.asarray(ids), feats, cfg.image_token_id, jnp.asarray(real)))
    length = t0 + n
    keys = np.tril(np.ones((length, length), bool))[None] & real[:, None, :]  # (B, query, key)
    for r, kind in enumerate(kinds):
        for j, s in enumerate(gen.block_steps[r, : gen.n_blocks[r]]):
            latent_steps = np.arange(s + 1, min(s + 1 + SIZE, n))
            x[r, t0 + latent_steps] = gen.latents[r, j, : len(latent_steps)]
            end = t0 + s + SIZE + 1
            if kind is None or end >= length:
                continue
            hide_slots, hide_markers = interventions.BY_NAME[kind].drops
            if hide_slots:
                keys[r, end:, t0 + s + 1 : end] = False
            if hide_markers:
                keys[r, end:, t0 + s] = False
                keys[r, end + 1 :, end] = False
    run = jax.jit(lambda x, pos, keys: text.decode(cfg.text, params["text"], x, pos, keys)[0])
    h = run(jnp.asarray(x), jnp.asarray(pos), jnp.asarray(keys))
    normed = text.final_norm(cfg.text, params["text"], h)
    logits = text.output_head(cfg.text, params["text"], normed)
    return np.asarray(normed, np.float64), np.asarray(logits, np.float64)


def test_drop_kinds_equal_the_masked_forward_pass(model, ref):
    """drop_markers, drop_slots and drop_block, one per row of the reference batch, run by the clean run's
    program (no second compile), give the reference loop's tokens; every latent equals the final-norm state of
    one forward pass over the prompt and the generated tokens with each block's parts masked for the queries
    after it (the start marker and the slots from the end marker on, the end marker after itself), and each
    text token is that pass's most likely under the repetition penalty (NumPy). Without the masks the pass
    gives other latents; drop_markers changes the clean run's tokens. A swap of one block of latents (DMLR's
    swapped back in) runs the same program too: each row's own first block gives the clean run again, the
    next row's moves the latents computed after it."""
    mode = vlm.LatentMode(128, 129, 130, SIZE)
    args = (ref["ids"], ref["pixels"], ref["grid"], ref["mask"])
    clean = model.generate(*args, max_new_tokens=STEPS, do_sample=False, latent=mode)  # the clean run's program
    before = generation.run._cache_size()
    hidden = ref["latents"].shape[-1]
    first = np.asarray(clean.latents[:, :1])
    swapped = []
    for rows in (np.arange(3), np.array([1, 2, 0])):
        iv = interventions.Intervention.make("swap", 3, SIZE, hidden, source=first[rows], source_blocks=[1] * 3)
        swapped.append(model.generate(*args, max_new_tokens=STEPS, do_sample=False, latent=mode, intervention=iv))
    np.testing.assert_array_equal(swapped[0].tokens, clean.tokens)
    assert_latents_close(swapped[0].latents, clean.latents)
    assert np.abs(swapped[1].latents[:, 1] - clean.latents[:, 1]).max() > 1e-2  # the next row's block is fed
    iv = interventions.Intervention.make(list(DROPS), len(DROPS), SIZE, hidden)
    got = model.generate(*args, max_new_tokens=STEPS, do_sample=False, latent=mode, intervention=iv)
    assert generation.run._cache_size() == before
    for r, kind in enumerate(DROPS):
        np.testing.assert_array_equal(got.tokens[r], ref[f"iv_{kind}_tokens"][r], err_msg=kind)
    assert not np.array_equal(got.tokens[0], ref["tokens"][0]) and got.n_blocks[0] >= 3

    t0, n = ref["ids"].shape[1], STEPS
    normed, logits = masked_forward(model, ref, got, DROPS)
    plain, _ = masked_forward(model, ref, got, (None,) * len(DROPS))
    want, unmasked = np.zeros_like(got.latents, np.float64), np.zeros_like(got.latents, np.float64)
    for r in range(len(DROPS)):
        for j, s in enumerate(got.block_steps[r, : got.n_blocks[r]]):
            steps = np.arange(s + 1, min(s + 1 + SIZE, n))  # latent step i feeds the state computed at step i - 1
            want[r, j, : len(steps)] = normed[r, t0 + steps - 1]
            unmasked[r, j, : len(steps)] = plain[r, t0 + steps - 1]
    assert_latents_close(got.latents, want)
    scale = np.abs(want).max()
    assert np.abs(unmasked - want)[0].max() > 100 * LATENT_RTOL * scale  # the masks matter
    seen = [set(ref["ids"][r][ref["mask"][r].astype(bool)].tolist()) for r in range(len(DROPS))]
    forced = np.zeros_like(got.tokens, bool)
    for r in range(len(DROPS)):
        for s in got.block_steps[r, : got.n_blocks[r]]:
            forced[r, s + 1 : s + SIZE + 2] = True
    checked = 0
    for r in range(len(DROPS)):
        for i in range(n):
            if not forced[r, i]:
                z = logits[r, t0 + i - 1]
                hit = np.isin(np.arange(len(z)), list(seen[r]))
                z = np.where(hit, np.where(z < 0, z * 1.05, z / 1.05), z)
                assert z[got.tokens[r, i]] >= z.max() - 1e-4 * np.abs(z).max(), (r, i)
                checked += 1
            seen[r].add(int(got.tokens[r, i]))
    assert checked >= 60


def test_block_mode_is_generation_with_a_forced_block(model, ref):
    """The block mode: block_at=0 forces each row's start token at the first step, then the model fills its
    block with its own final-norm states (checked against one forward pass over the prompt and the tokens with
    those latents written, as the latent run is), then its end token, then text; one row may be left to open
    its blocks itself (-1). The same program as the clean run (no second compile). feed="token" fills the block
    with the greedy tokens' embeddings (text-space) instead: other latents, same tokens' layout."""
    mode = vlm.LatentMode(128, 129, 130, SIZE)
    args = (ref["ids"], ref["pixels"], ref["grid"], ref["mask"])
    model.generate(*args, max_new_tokens=STEPS, do_sample=False, latent=mode)
    before = generation.run._cache_size()
    got = model.generate(*args, max_new_tokens=STEPS, do_sample=False, latent=mode, block_at=[0, 0, -1])
    assert generation.run._cache_size() == before
    np.testing.assert_array_equal(got.tokens[:2, 0], [128, 128])
    np.testing.assert_array_equal(got.tokens[:2, 1 : SIZE + 1], np.full((2, SIZE), 130))
    np.testing.assert_array_equal(got.tokens[:2, SIZE + 1], [129, 129])
    np.testing.assert_array_equal(got.block_steps[:2, 0], [0, 0])
    np.testing.assert_array_equal(got.tokens[2], ref["tokens"][2])  # the free row as in the clean run
    t0 = ref["ids"].shape[1]
    normed, _ = masked_forward(model, ref, got, (None,) * 3)
    want = np.zeros_like(got.latents, np.float64)
    for r in range(3):
        for j, st in enumerate(got.block_steps[r, : got.n_blocks[r]]):
            steps = np.arange(st + 1, min(st + 1 + SIZE, STEPS))
            want[r, j, : len(steps)] = normed[r, t0 + steps - 1]
    assert_latents_close(got.latents, want)
    text_arm = model.generate(
        *args, max_new_tokens=STEPS, do_sample=False, latent=vlm.LatentMode(128, 129, 130, SIZE, "token"), block_at=0
    )
    np.testing.assert_array_equal(text_arm.tokens[:, 0], [128] * 3)
    assert not np.allclose(text_arm.latents[:, 0], got.latents[:2, 0].repeat(2, 0)[:3])
    embed = np.asarray(model.params["text"]["embed"], np.float64)
    first = text_arm.latents[:, 0, 0]  # the first fed-back input: the embedding of one token of the vocabulary
    assert all(np.abs(embed - f).max(-1).min() < 1e-6 for f in first)


def test_a_block_cut_by_the_token_limit_is_marked_cut(model, ref):
    """A block the token limit cuts is counted as opened, marked incomplete (cut), holds only the latents
    written, and leaves no answer: Generation.cut, .blocks and .answer_start say so; the same run with room
    enough completes it. (The clean run's program: the block forced near the end of its 40 steps, its start a
    token the model does not open blocks with by itself.)"""
    mode = vlm.LatentMode(127, 129, 130, SIZE)
    args = (ref["ids"], ref["pixels"], ref["grid"], ref["mask"])
    cut = model.generate(*args, max_new_tokens=STEPS, do_sample=False, latent=mode, block_at=STEPS - 3)
    np.testing.assert_array_equal(cut.n_blocks, [1, 1, 1])
    np.testing.assert_array_equal(cut.cut, [True, True, True])
    np.testing.assert_array_equal(cut.blocks, [0, 0, 0])
    assert cut.latents.shape[2] == SIZE and (cut.latents[:, 0, :2] != 0).any() and not cut.latents[:, 0, 2:].any()
    assert [cut.answer_start(r) for r in range(3)] == [STEPS] * 3 and cut.text(_Ids(), after_latents=True)[0] == ""
    whole = model.generate(*args, max_new_tokens=STEPS, do_sample=False, latent=mode, block_at=STEPS - SIZE - 2)
    np.testing.assert_array_equal(whole.n_blocks, [1, 1, 1])
    np.testing.assert_array_equal(whole.cut, [False] * 3)
    assert [whole.answer_start(r) for r in range(3)] == [STEPS] * 3


class _Ids:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(int(i)) for i in ids if 0 <= i)


def test_reference_loop_refuses_other_versions_and_a_cache_the_model_does_not_take(ref, monkeypatch):
    """The fixture script and the latent benchmark run the reference loop only at the versions the committed
    reference records (one line naming both otherwise; a wheel's local label such as ``+cpu`` aside), feed the
    key/value cache by the name the model's ``forward`` declares (a cache under another name is swallowed by
    its ``**kwargs``: the loop would run without the prompt's context), and refuse a cache that did not grow."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script adds its folder
    spec = importlib.util.spec_from_file_location("make_latent", FIXTURE.parent / "make_qwen2_5_vl_latent.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    recorded = json.loads(str(ref["versions"]))
    assert maker.version_refusal(recorded) is None
    assert maker.version_refusal({**recorded, "torch": recorded["torch"].split("+")[0]}) is None
    refusal = maker.version_refusal({**recorded, "transformers": "5.0.0"})
    assert "\n" not in refusal and refusal.startswith(str(FIXTURE / "reference.npz"))
    assert f"made with transformers {recorded['transformers']}; installed: transformers 5.0.0 (pip install" in refusal

    class Current:
        def forward(self, input_ids=None, cache=None, **kwargs): ...

    class Earlier:
        def forward(self, input_ids=None, past_key_values=None, **kwargs): ...

    class Neither:
        def forward(self, input_ids=None, **kwargs): ...

    assert maker.cache_argument(Current()) == "cache" and maker.cache_argument(Earlier()) == "past_key_values"
    with pytest.raises(SystemExit, match=r"Neither\.forward takes its key/value cache by neither 'cache' nor"):
        maker.cache_argument(Neither())

    class Cache:
        def get_seq_length(self):
            return 86

    maker.Reference.check_cache(Cache(), 86)
    with pytest.raises(SystemExit, match=r"cache holds 86 positions where the prompt and the steps fed are 87"):
        maker.Reference.check_cache(Cache(), 87)


def test_published_generation_config_equals_transformers(model, ref):
    """The checkpoint's generation_config.json as Qwen2.5-VL publishes it (sampling at temperature 1e-06,
    repetition penalty 1.05): generate follows it and equals transformers' generate (sampled with a key,
    and greedy); without the penalty the tokens differ, as transformers' do; a stop token fills the row with
    the checkpoint's pad token (not 0), and decoding drops it."""
    cfg = model.generation_config
    assert cfg.do_sample and cfg.repetition_penalty == 1.05 and cfg.temperature == 1e-06 and cfg.pad_token_id == 112
    args = (ref["ids"], ref["pixels"], ref["grid"], ref["mask"])
    with pytest.raises(ValueError, match="do_sample"):  # the file says sample: a key is asked for
        model.generate(*args, max_new_tokens=16)
    sampled = model.generate(*args, max_new_tokens=16, key=jax.random.key(0))
    np.testing.assert_array_equal(sampled, ref["hf_sampled"])
    np.testing.assert_array_equal(model.generate(*args, max_new_tokens=16, do_sample=False), ref["hf_greedy"])
    plain = model.generate(*args, max_new_tokens=16, do_sample=False, repetition_penalty=1.0)
    np.testing.assert_array_equal(plain, ref["hf_greedy_plain"])
    stop = int(ref["stop_id"])
    stopped = model.generate(*args, max_new_tokens=16, do_sample=False, eos_token_id=stop, return_generation=True)
    width = ref["hf_stop"].shape[1]  # transformers ends the batch when every row has stopped
    np.testing.assert_array_equal(stopped.tokens[:, :width], ref["hf_stop"])
    np.testing.assert_array_equal(stopped.stop_steps, np.argmax(ref["hf_stop"] == stop, axis=1))
    after = np.arange(16)[None] > stopped.stop_steps[:, None]
    assert after.any() and (stopped.tokens[after] == 112).all()  # the checkpoint's pad token, not 0
    chat = vlm.Chat.load(FIXTURE)
    for row, text in enumerate(stopped.text(chat)):
        assert text == chat.decode(stopped.tokens[row, : stopped.stop_steps[row] + 1])
        assert chat.decode(stopped.tokens[row], skip_special_tokens=False).endswith("<|endoftext|>")


def test_generation_config_read_and_refused(tmp_path, model):
    """generation_config.json's fields are read with their types checked; a field transformers applies and
    tokdyn does not implement (beam search) is refused at generation, naming it; the neutral ones pass;
    max_length counts the prompt in, as transformers does."""
    cfg = decoding.GenerationConfig.from_dict(
        {
            "do_sample": True,
            "temperature": 0.7,
            "top_k": 20,
            "top_p": 0.8,
            "repetition_penalty": 1.05,
            "eos_token_id": [151645, 151643],
            "pad_token_id": 151643,
            "num_beams": 1,
            "transformers_version": "4.37.0",
        }
    )
    assert (cfg.top_k, cfg.top_p, cfg.eos_token_id, cfg.unhonoured) == (20, 0.8, (151645, 151643), ())
    beams = decoding.GenerationConfig.from_dict({"num_beams": 4})
    with pytest.raises(ValueError, match="num_beams=4"):
        beams.check()
    with pytest.raises(ValueError, match="num_beams=4"):
        model.generate(np.array([[5, 6, 7]]), generation_config=beams)
    short = decoding.GenerationConfig.from_dict({"max_length": 3})
    with pytest.raises(ValueError, match="max_length=3"):
        model.generate(np.array([[5, 6, 7]]), generation_config=short)
    for bad, match in (
        ({"temperature": -1}, "temperature"),
        ({"top_k": 1.5}, "top_k"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"eos_token_id": ["a"]}, "eos_token_id"),
        ({"top_p": 2.0}, "top_p"),
        ({"pad_token_id": [1, 2]}, "pad_token_id"),
    ):
        with pytest.raises(ValueError, match=match):
            decoding.GenerationConfig.from_dict(bad)
    (tmp_path / "generation_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        decoding.read(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": 5}')
    (tmp_path / "config.json").write_text('{"text_config": {"pad_token_id": 7}}')
    assert decoding.read(tmp_path).pad_token_id == 7  # config.json's pad id stands in


def test_resolve_follows_transformers_defaults():
    """A call's options over the checkpoint's: temperature 0 is greedy, a positive one samples, top_k
    defaults to 50 as in transformers, the pad id falls back to the first stop token; bad values named."""
    base = decoding.GenerationConfig(do_sample=True, temperature=0.5, eos_token_id=(3, 4))
    s = decoding.resolve(base, 10)
    assert (s.do_sample, s.temperature, s.top_k, s.pad) == (True, 0.5, 50, 3)
    assert not decoding.resolve(base, 10, temperature=0).do_sample
    assert decoding.resolve(None, 10, temperature=0.7).do_sample
    assert decoding.resolve(None, 10, top_k=None).top_k == 50 and decoding.resolve(None, 10, top_k=0).top_k == 0
    assert decoding.resolve(None, 10, top_p=0.0).top_p == 0.0  # transformers keeps the most likely token alone
    for kw, match in (
        (dict(top_p=1.5), "top_p"),
        (dict(repetition_penalty=0), "repetition_penalty"),
        (dict(eos_token_id=11), "eos_token_id"),
        (dict(pad_token_id=-1), "pad_token_id"),
        (dict(temperature=-1), "temperature"),
        (dict(min_p=2.0), "min_p"),
        (dict(temperature=float("inf")), "finite"),
        (dict(temperature=1e-40), "too small"),
        (dict(do_sample=True, temperature=0), "temperature > 0"),
    ):
        with pytest.raises(ValueError, match=match):
            decoding.resolve(None, 10, **kw)
    for kw in (dict(repetition_penalty=True), dict(top_k=True), dict(temperature=True), dict(eos_token_id=[True])):
        with pytest.raises(TypeError, match="bool|token ids"):
            decoding.resolve(None, 10, **kw)


def test_decoding_files_read_as_transformers_reads_them():
    """generation_config.json values transformers loads are loaded: ``{"do_sample": false, "temperature": 0.0}``
    (greedy) and ``top_p: 0.0``; a sampling file at temperature 0 is refused as transformers refuses it."""
    greedy = decoding.GenerationConfig.from_dict({"do_sample": False, "temperature": 0.0})
    assert not decoding.resolve(greedy, 10).do_sample
    assert decoding.GenerationConfig.from_dict({"top_p": 0.0}).top_p == 0.0
    with pytest.raises(ValueError, match="temperature"):
        decoding.GenerationConfig.from_dict({"do_sample": True, "temperature": 0.0})


def test_sampling_at_a_tiny_temperature_is_greedy():
    """Sampling at a tiny (but representable) temperature draws the most likely token, with logits far beyond
    what ``logits / temperature`` holds in float32 (it overflowed to +inf and drew garbage ids)."""
    rng = np.random.default_rng(3)
    logits = jnp.asarray(rng.normal(size=(64, 50)).astype(np.float32) * 30)
    knob = decoding.knobs(decoding.resolve(None, 50, do_sample=True, temperature=1e-30, top_k=0))
    keys = jax.random.split(jax.random.key(0), 64)
    got = np.asarray(decoding.choose(logits, keys, knob, sample=True))
    np.testing.assert_array_equal(got, np.argmax(np.asarray(logits), -1))


def test_penalty_and_filters_equal_numpy():
    """The repetition penalty (divide positive logits, multiply negative ones, of seen tokens), top-k, top-p
    and min-p equal a NumPy transcription of transformers' processors."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 30)).astype(np.float32)
    seen = rng.random((4, 30)) < 0.3
    got = np.asarray(decoding.penalise(jnp.asarray(logits), jnp.asarray(seen), 1.3))
    want = np.where(seen, np.where(logits < 0, logits * 1.3, logits / 1.3), logits)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    filtered = jax.jit(decoding.filter_logits)  # the knobs traced: one compilation for every setting
    for top_k, top_p, min_p in ((5, 1.0, 0.0), (0, 0.6, 0.0), (0, 1.0, 0.3), (7, 0.5, 0.1)):
        kept = np.isfinite(np.asarray(filtered(jnp.asarray(logits), top_k, top_p, min_p)))
        for row in range(4):
            x = logits[row].astype(np.float64)
            keep = np.ones(30, bool)
            if top_k:
                keep &= x >= np.sort(x)[-top_k]
            z = np.where(keep, x, -np.inf)
            order = np.argsort(z)  # ascending, as transformers' top-p sorts
            p = np.exp(z[order] - z.max())
            cum = np.cumsum(p / p.sum())
            drop = cum <= 1 - top_p
            drop[-1] = False
            keep[order[drop]] = False
            z = np.where(keep, x, -np.inf)
            p = np.exp(z - z.max())
            keep &= (p / p.sum()) >= min_p * (p / p.sum()).max()
            np.testing.assert_array_equal(kept[row], keep)


def test_latent_mode_and_intervention_checked(model):
    """LatentMode strings resolve through the checkpoint's tokenizer (an unknown one named, with the added
    tokens); ids are checked against the vocabulary and the stop tokens; Intervention.make names bad kinds,
    scales and sources; options are refused before anything compiles."""
    chat = vlm.Chat.load(FIXTURE)
    mode = vlm.LatentMode(START, END, PAD, SIZE).resolve(chat)
    assert (mode.start, mode.end, mode.pad) == (128, 129, 130)
    assert vlm.LatentMode.from_tokenizer(chat.tokenizer, START, END, PAD, 8).size == 8
    with pytest.raises(ValueError, match="<|latent_stop|>"):
        vlm.LatentMode("<|latent_stop|>", END, PAD, 4).resolve(chat)
    for args, match in (
        ((1, 1, 2, 4), "different"),
        ((1, 2, 3, 0), "size"),
        ((1, 2, 3, 4, "mean"), "feed"),
        ((-1, 2, 3, 4), "start"),
    ):
        with pytest.raises(ValueError, match=match):
            vlm.LatentMode(*args)
    ids = np.array([[5, 6, 7]])
    with pytest.raises(ValueError, match="vocabulary"):
        model.generate(ids, latent=vlm.LatentMode(128, 129, 999, 4), do_sample=False)
    with pytest.raises(ValueError, match="stop token"):
        model.generate(ids, latent=vlm.LatentMode(117, 129, 130, 4), do_sample=False)
    with pytest.raises(ValueError, match="need latent"):
        model.generate(ids, intervention=interventions.Intervention.make("zeros", 1, 4, 64), do_sample=False)
    with pytest.raises(ValueError, match="key"):
        model.generate(
            ids, latent=mode, intervention=interventions.Intervention.make("noise", 1, 4, 64), do_sample=False
        )
    with pytest.raises(ValueError, match="score_ids"):
        model.generate(ids, score_ids=[500], do_sample=False)
    for kw, match in (
        (dict(kinds="blur"), "blur"),
        (dict(kinds=["none"] * 3), "batch of 2"),
        (dict(kinds="zeros", scale=-1.0), "scale"),
        (dict(kinds="swap"), "source"),
        (dict(kinds="swap", source=np.zeros((2, 1, 5, 64))), "source"),
        (dict(kinds="swap", source=np.zeros((2, 1, 4, 64)), source_blocks=[2, 0]), "source_blocks"),
        (dict(kinds="swap", source=np.full((2, 1, 4, 64), np.nan)), "finite"),
        (dict(kinds="swap", source=np.full((2, 1, 4, 64), np.inf)), "finite"),
    ):
        kinds = kw.pop("kinds")
        with pytest.raises(ValueError, match=match):
            interventions.Intervention.make(kinds, 2, 4, 64, **kw)
    for kw, match in (
        (dict(kinds=True), "kind"),
        (dict(kinds=[False, "none"]), "kind"),
        (dict(kinds="zeros", scale=True), "scale"),
        (dict(kinds="swap", source=np.zeros((2, 1, 4, 64)), source_blocks=[1.5, 1]), "integer"),
        (dict(kinds="swap", source=np.zeros((2, 1, 4, 64)), source_blocks=[True, False]), "integer"),
    ):
        kinds = kw.pop("kinds")
        with pytest.raises((TypeError, ValueError), match=match):
            interventions.Intervention.make(kinds, 2, 4, 64, **kw)
    with pytest.raises(ValueError, match="size"):
        vlm.LatentMode(1, 2, 3, 10**6)  # bounded: a block never allocates by an absurd size


def test_intervene_equals_numpy():
    """Each kind of the one table fed back: zeros; Gaussian noise at scale x the latent vector's own RMS
    (replacing, or added); the pad token's embedding (fill); the source's latent at the same block and step for
    mean and swap (the computed one past the source's blocks or steps); the drop kinds feed the latent as
    computed."""
    rng = np.random.default_rng(1)
    kinds = list(interventions.KINDS)
    b, k, s, d = len(kinds), 3, 4, 16
    x = rng.normal(size=(b, d)).astype(np.float32) * 3
    fill = rng.normal(size=(d,)).astype(np.float32)
    source = rng.normal(size=(b, k, s, d)).astype(np.float32)
    blocks = np.array([3, 1, 0, 2, 3, 3, 2, 1, 2, 1])[:b]
    iv = interventions.Intervention.make(kinds, b, s, d, scale=0.5, source=source, source_blocks=blocks)
    block = np.array([0, 1, 0, 2, 1, 0, 1, 1, 2, 0])[:b]
    step = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])[:b]
    keys = jax.random.split(jax.random.key(0), b)
    intervene = jax.jit(interventions.intervene)
    got = np.asarray(intervene(iv, jnp.asarray(x), jnp.asarray(block), jnp.asarray(step), keys, jnp.asarray(fill)))
    row = {name: i for i, name in enumerate(kinds)}
    noise = {i: np.asarray(jax.random.normal(keys[i], (d,))) for i in (row["noise"], row["add_noise"])}
    rms = np.sqrt((x**2).mean(axis=1, keepdims=True))
    want = {
        "none": x[row["none"]],
        "zeros": np.zeros(d),
        "noise": 0.5 * rms[row["noise"]] * noise[row["noise"]],
        "add_noise": x[row["add_noise"]] + 0.5 * rms[row["add_noise"]] * noise[row["add_noise"]],
        "fill": fill,
        "mean": source[row["mean"], block[row["mean"]], step[row["mean"]]],
        "swap": source[row["swap"], block[row["swap"]], step[row["swap"]]],
    }
    assert set(want) | {n for n in kinds if n.startswith("drop")} == set(kinds)
    for name in kinds:
        np.testing.assert_allclose(got[row[name]], want.get(name, x[row[name]]), rtol=1e-5, atol=1e-6, err_msg=name)
    iv = interventions.Intervention.make("swap", b, s, d, source=source, source_blocks=blocks)
    got = np.asarray(intervene(iv, jnp.asarray(x), jnp.asarray(block), jnp.asarray(step), keys, jnp.asarray(fill)))
    assert np.allclose(got[1], x[1]) and np.allclose(got[0], source[0, 0, 0])  # row 1 holds one block only
    short = interventions.Intervention.make("swap", b, s, d, source=source[:, :, :2], source_blocks=blocks)
    got = np.asarray(intervene(short, jnp.asarray(x), jnp.asarray(block), jnp.asarray(step), keys, jnp.asarray(fill)))
    assert np.allclose(got[3], x[3]) and np.allclose(got[4], source[4, 1, 0])  # step 3 is past a 2-step source


def test_generation_text_drops_fill_and_latent_pads():
    """Generation.text: the answer without the pad fill after the stop token and without the latent pads;
    with after_latents, only what follows the last block."""

    class Chars:
        def decode(self, ids, skip_special_tokens=True):
            return "".join({1: "a", 2: "b", 9: "<s>", 8: "<e>", 7: "_", 0: "!", 5: "."}[int(i)] for i in ids)

    mode = latent.LatentMode(9, 8, 7, 2)
    tokens = np.array([[1, 9, 7, 7, 8, 2, 5, 0, 0], [9, 7, 7, 8, 1, 9, 7, 7, 8]])
    gen = latent.Generation(
        tokens,
        np.zeros((2, 2, 2, 3)),
        np.array([1, 2]),
        np.array([[1, -1], [0, 5]]),
        np.array([[True, False], [True, True]]),
        None,
        (),
        np.array([6, 9]),
        0,
        mode,
    )
    assert gen.text(Chars()) == ["a<s><e>b.", "<s><e>a<s><e>"]
    assert gen.text(Chars(), after_latents=True) == ["b.", ""]
    np.testing.assert_array_equal(gen.stopped, [True, False])


def test_programs_trace_abstractly():
    """programs() gives the latent-generation kernel and ShapeDtypeStruct arguments that trace without weights:
    the outputs' shapes at a small configuration, and the program lowers for CUDA on this CPU-only machine."""
    from tokdyn.models.qwen2_5_vl.config import Config, TextConfig, VisionConfig

    cfg = Config(
        VisionConfig(
            depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32, fullatt_block_indexes=(0,)
        ),
        TextConfig(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            mrope_section=(1, 1, 2),
        ),
        image_token_id=40,
    )
    fn, args = generation.programs(
        qwen2_5_vl, cfg, 3, 20, 6, latent_size=2, image_tokens=8, n_scores=4, source_blocks=2
    )
    out = jax.eval_shape(fn, *args)
    assert out["tokens"].shape == (3, 6) and out["states"].shape == (3, 6, 32) and out["scores"].shape == (3, 6, 4)
    assert "stablehlo" in fn.trace(*args).lower(lowering_platforms=("cuda",)).as_text()  # lowers for a GPU here


def test_grouped_attention_equals_attend():
    """attend_grouped (each group of query heads passed as its key/value head's extra queries) equals the
    block's attend, masks included."""
    from tokdyn.models.blocks import attention
    from tokdyn.models.qwen2_5_vl import text

    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(k1, (2, 3, 8, 16))
    k, v = jax.random.normal(k2, (2, 5, 2, 16)), jax.random.normal(k3, (2, 5, 2, 16))
    mask = jax.random.bernoulli(k4, 0.6, (2, 3, 5))
    both = jax.jit(lambda *a: (attention.attend(*a), text.attend_grouped(*a)))
    want, got = both(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_a_rows_noise_follows_its_instance_not_its_row(model, ref):
    """Noise keyed by each instance's own id (interventions.instance_keys): the rows permuted, or one row
    alone, give each instance the same tokens and latents; keyed by the row (one key), a permutation moves the
    draws."""
    mode = vlm.LatentMode(128, 129, 130, SIZE)
    hidden = ref["latents"].shape[-1]
    key = jax.random.key(11)
    ids = np.array([[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]])
    n = len(ids)
    kw = dict(max_new_tokens=16, do_sample=False, latent=mode, block_at=0)

    def run(order, keys):
        iv = interventions.Intervention.make("noise", len(order), SIZE, hidden, scale=2.0)
        return model.generate(ids[order], intervention=iv, key=keys, **kw)

    index = np.array([10, 11, 12])
    order = np.array([2, 0, 1])
    a = run(np.arange(n), interventions.instance_keys(key, index))
    b = run(order, interventions.instance_keys(key, index[order]))
    np.testing.assert_array_equal(b.tokens, a.tokens[order])
    np.testing.assert_allclose(b.latents, a.latents[order], rtol=1e-5, atol=1e-5 * np.abs(a.latents).max())
    rowwise = run(order, key)
    assert not np.allclose(rowwise.latents, a.latents[order])
