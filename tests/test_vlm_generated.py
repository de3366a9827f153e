"""The host side of the analyses on generated latents (``tokdyn.diagnostics.vlm_generated``), on hand-made
generations (no model): the answer step and the answer distribution over the options, its KL against NumPy's,
the latents' shift per step (NaN where a run wrote no block), the swap order over the valid rows, the split of
a tiled run, and the teacher-forced sequences that align every row's first block; the study's rows on them are
tabulated by the report with n and intervals."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from tokdyn.diagnostics import vlm_generated as vg

START, END, PAD, IMAGE, VEND = 50, 51, 52, 9, 8


@dataclasses.dataclass(frozen=True)
class Gen:  # the fields of a family's Generation the analyses read
    tokens: np.ndarray
    latents: np.ndarray
    n_blocks: np.ndarray
    block_steps: np.ndarray
    scores: np.ndarray
    score_ids: tuple
    stop_steps: np.ndarray
    latent: object

    def answer_ids(self, row, after_latents=False):
        return self.tokens[row]


def make_gen(rng, size=2):
    # row 0: text 3 4, block at step 2 (start, pad, pad, end), then the answer 61 ("B") at step 6
    # row 1: no block, the answer 60 ("A") at step 1; row 2: block at step 0, no option token after it
    tokens = np.array(
        [
            [3, 4, START, PAD, PAD, END, 61, 2, 0],
            [5, 60, 2, 0, 0, 0, 0, 0, 0],
            [START, PAD, PAD, END, 7, 7, 7, 7, 7],
        ]
    )
    scores = np.log(rng.dirichlet(np.ones(3), size=(3, 9)))  # (B, N, C) over score ids 60, 61, 62
    return Gen(
        tokens,
        rng.normal(size=(3, 1, size, 4)).astype(np.float32),
        np.array([1, 0, 1]),
        np.array([[2], [-1], [0]]),
        scores,
        (60, 61, 62),
        np.array([7, 2, 9]),
        SimpleNamespace(size=size, start=START, end=END, pad=PAD),
    )


def test_the_answer_step_and_distribution_over_the_options():
    gen = make_gen(np.random.default_rng(0))
    assert [vg.answer_step(gen, r, (60, 61, 62)) for r in range(3)] == [6, 1, 4]  # row 2: the first step after
    lp = vg.answer_logprobs(gen, [[0, 1], [0, 1, 2], []])
    want = gen.scores[0, 6, :2] - np.log(np.exp(gen.scores[0, 6, :2]).sum())
    np.testing.assert_allclose(lp[0, :2], want, atol=1e-12)
    assert np.isnan(lp[0, 2]) and np.isnan(lp[2]).all()  # past its options; an open question
    q = lp.copy()
    q[0, :2] = np.log([0.9, 0.1])
    kl = vg.answer_kl(lp, q)
    p = np.exp(lp[0, :2])
    assert kl[0] == pytest.approx(float((p * (np.log(p) - np.log([0.9, 0.1]))).sum()), abs=1e-12)
    assert kl[1] == 0.0 and np.isnan(kl[2])


def test_the_shift_per_latent_step_is_nan_where_a_run_wrote_no_block():
    rng = np.random.default_rng(1)
    a, b = make_gen(rng), make_gen(rng)
    s = vg.latent_shift(a, b)
    x, y = a.latents[0, 0], b.latents[0, 0]
    cos = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
    np.testing.assert_allclose(s.cosine_distance[0], 1 - cos, atol=1e-5)
    np.testing.assert_allclose(s.relative_l2[0], np.linalg.norm(x - y, axis=-1) / np.linalg.norm(x, axis=-1), atol=1e-5)
    assert np.isnan(s.cosine_distance[1]).all() and np.isfinite(s.cosine_distance[2]).all()


def test_swap_order_and_split():
    assert vg.swap_order(np.array([True, True, True, False])).tolist() == [1, 2, 0, 3]
    assert vg.swap_order(np.array([True, False])).tolist() == [0, 1]
    gen = make_gen(np.random.default_rng(2))
    tiled = dataclasses.replace(
        gen,
        **{
            f: np.concatenate([getattr(gen, f)] * 2)
            for f in ("tokens", "latents", "n_blocks", "block_steps", "scores", "stop_steps")
        },
    )
    first, second = vg.split(tiled, 2)
    np.testing.assert_array_equal(first.tokens, gen.tokens)
    np.testing.assert_array_equal(second.latents, gen.latents)


def test_block_sequences_align_every_rows_first_block():
    gen = make_gen(np.random.default_rng(3))
    ids = np.array(
        [
            [0, 1, VEND - 1, IMAGE, IMAGE, VEND, 20, 21],
            [1, VEND - 1, IMAGE, IMAGE, VEND, 22, 0, 0],
            [1, VEND - 1, IMAGE, IMAGE, VEND, 23, 24, 25],
        ]
    )
    mask = np.array([[0, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0], [1] * 8], bool)
    prompts = vg.Prompts(
        ids, mask, np.zeros((3, 4, 6), np.float32), np.array([[1, 4, 4]]), np.array([True, True, True])
    )
    out, m, has, latents = vg.block_sequences(prompts, gen, gen.latent, image_token=IMAGE, after_image=VEND)
    assert has.tolist() == [True, False, True]  # row 1 wrote no block: row 0's sequence stands in
    starts = [int(np.flatnonzero(row == START)[0]) for row in out]
    assert len(set(starts)) == 1 and (out[:, -1] == END).all() and (out[:, starts[0] + 1 : -1] == PAD).all()
    for r, src in ((0, 0), (2, 2), (1, 0)):  # the real tokens, in order, are the prompt's then the generated ones
        real = np.concatenate([ids[src][mask[src]], gen.tokens[src][: gen.block_steps[src, 0] + 4]])
        np.testing.assert_array_equal(out[r][m[r]], real)
        assert np.flatnonzero(out[r] == IMAGE).tolist() == [2, 3]  # the padding goes after the image
    np.testing.assert_array_equal(latents[1], gen.latents[0, 0])
    assert (
        vg.block_sequences(
            dataclasses.replace(prompts, valid=np.array([False, True, False])),
            gen,
            gen.latent,
            image_token=IMAGE,
            after_image=VEND,
        )
        is None
    )


def test_generated_rows_are_tabulated_with_n_and_intervals():
    from tokdyn.studies import vlm_diagnostics as vd

    acc = [
        dict(
            instance=i,
            benchmark="vstar",
            setting=s,
            correct=float(i % 2 or s == "none"),
            parsed=True,
            chance=0.25,
            blocks=int(i < 5),
        )
        for s in ("none", "zeros", "drop_block")
        for i in range(8)
    ]
    text = "\n".join(vd.report.accuracy_lines(acc))
    assert "| vstar | none | 1.000 [" in text and "(8/8)" in text and "| vstar | drop_block | 0.500 [" in text
    assert "5 of 8 instances wrote a latent block" in text


def test_the_decomposition_of_generated_latents_has_its_slots_only_row():
    """The decomposition on generated latents reads each setting from its intervention's run (slots only:
    drop_markers, markers only: drop_slots, no block: drop_block), and the report gives the slots-only row
    its Wilson interval (the closed form) and the share of the block's gain it keeps (the closed form, inside
    its bootstrap interval)."""
    from tokdyn.models.qwen2_5_vl.config import Config, TextConfig, VisionConfig
    from tokdyn.studies import vlm_diagnostics as vd

    n = 10
    right = {  # instances answering right (the answer A) under each run; the others answer B
        "none": 9,
        "drop_slots": 6,
        "drop_markers": 8,
        "zeros": 5,
        "noise": 4,
        "mean": 7,
        "swap": 7,
        "drop_block": 3,
    }

    def gen(k):  # instance i answers A (token 0) for i < k, else B (token 1); no block in the run
        tokens = (np.arange(n) >= k).astype(np.int64)[:, None]
        return Gen(
            tokens,
            np.zeros((n, 0, 2, 4), np.float32),
            np.zeros(n, int),
            np.zeros((n, 0), int),
            None,
            (),
            np.full(n, 1),
            None,
        )

    cfg = Config(
        VisionConfig(
            depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=8, fullatt_block_indexes=(0,)
        ),
        TextConfig(
            vocab_size=60,
            hidden_size=8,
            intermediate_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            mrope_section=(1, 1, 0),
        ),
        image_token_id=IMAGE,
    )
    ids = np.tile(np.array([[1, IMAGE, VEND, 20]]), (n, 1))
    prompts = vg.Prompts(
        ids, np.ones_like(ids, bool), np.zeros((n, 4, 6), np.float32), np.array([[1, 4, 4]]), np.ones(n, bool)
    )
    instances = SimpleNamespace(
        answers=["A"] * n, options_of=lambda i: ["cat", "dog"], file_of=lambda i: "mc", chance=lambda i: 0.5
    )
    tokens = SimpleNamespace(start=START, end=END, fill=PAD, decode=lambda ids, eos: "AB"[int(ids[0])])
    ctx = SimpleNamespace(
        cfg=SimpleNamespace(batch_size=n, n_latents=2),
        loaded=SimpleNamespace(model=SimpleNamespace(config=cfg), tokens=tokens),
        mcfg=cfg,
        instances=instances,
    )
    under = {k: gen(right[k]) for k in vd.generated.LATENT_KINDS}
    ctx._generated = {
        ("g", 0): dict(
            index=np.arange(n), valid=np.ones(n, bool), prompts=prompts, clean=gen(right["none"]), under=under
        )
    }
    rows = vd.generated.decomposition_rows(ctx, SimpleNamespace(name="g"), 0)
    assert list(dict.fromkeys(r["setting"] for r in rows)) == [
        "full",
        "markers_only",
        "slots_only",
        "slots_zeros",
        "slots_noise",
        "no_block",
    ]
    got = {s: sum(r["correct"] for r in rows if r["setting"] == s) for s in ("full", "markers_only", "slots_only")}
    assert got == {"full": 9, "markers_only": 6, "slots_only": 8}
    (line,) = [x for x in vd.report.decomposition_lines(rows, [0.5] * n) if x.startswith("| slots_only |")]
    z, k = 1.959963984540054, 8  # Wilson's interval of 8 of 10, in closed form
    mid, half = (
        (k / n + z**2 / (2 * n)) / (1 + z**2 / n),
        z / (1 + z**2 / n) * np.sqrt(k * (n - k) / n**3 + z**2 / (4 * n**2)),
    )
    assert f"| {k / n:.3f} [{mid - half:.3f}, {mid + half:.3f}] ({k}/{n}) |" in line
    share = (0.8 - 0.3) / (0.9 - 0.3)
    low, high = (float(v) for v in line.split("|")[3].split("[")[1].split("]")[0].split(","))
    assert f"| {share:.3f} [" in line and low <= share <= high and high - low > 0.05
