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
