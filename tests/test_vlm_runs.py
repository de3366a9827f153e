"""The host side of the analyses over generation (tokdyn.diagnostics.vlm) and the set's sources of the one table
of interventions (tokdyn.models.vlm.interventions), on hand-made generations: where the answer is written (after
the last whole block; none after a cut block), the answer distribution and its KL against NumPy's, the latents'
shift per step (NaN where a run wrote no whole block), the split of a tiled run, the sources of swap and mean
taken from other instances of the whole set whatever the batching, the teacher-forced sequences that align
every row's first block with explicit positions (a generated placeholder token is never read as an image), and
the report's paired differences."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import stats as sps

from tokdyn.diagnostics import vlm
from tokdyn.models.vlm import interventions
from tokdyn.models.vlm.latent import Generation, LatentMode

START, END, PAD = 50, 51, 52
FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"


def make_gen(rng, size=2):
    # row 0: text 3 4, block at step 2 (start, pad, pad, end), the answer 61 ("B") at step 6
    # row 1: no block, the answer 60 ("A") at step 1
    # row 2: a block at step 0, another at step 4, the answer 62 at step 8 (after the second block)
    # row 3: a block at step 6 the token limit (9 steps) cut: no answer
    tokens = np.array(
        [
            [3, 4, START, PAD, PAD, END, 61, 2, 0],
            [5, 60, 2, 0, 0, 0, 0, 0, 0],
            [START, PAD, PAD, END, START, PAD, PAD, END, 62],
            [3, 60, 4, 5, 6, 7, START, PAD, PAD],
        ]
    )
    scores = np.log(rng.dirichlet(np.ones(3), size=(4, 9)))  # (B, N, C) over score ids 60, 61, 62
    return Generation(
        tokens,
        rng.normal(size=(4, 2, size, 4)).astype(np.float32),
        np.array([1, 0, 2, 1]),
        np.array([[2, -1], [-1, -1], [0, 4], [6, -1]]),
        np.array([[True, False], [False, False], [True, True], [False, False]]),
        scores,
        (60, 61, 62),
        np.array([7, 2, 9, 9]),
        0,
        LatentMode(START, END, PAD, size),
    )


def test_the_answer_is_read_where_it_is_written():
    """After the last whole block (row 2: its second), at the first option token; a cut block leaves no answer
    (-1, an empty text, cut); the distribution renormalised over the options; the KL as NumPy's."""
    gen = make_gen(np.random.default_rng(0))
    np.testing.assert_array_equal(gen.blocks, [1, 0, 2, 0])
    np.testing.assert_array_equal(gen.cut, [False, False, False, True])
    assert [vlm.answer_step(gen, r, (60, 61, 62)) for r in range(4)] == [6, 1, 8, -1]
    assert gen.answer_ids(3, after_latents=True).size == 0 and gen.answer_ids(2, after_latents=True).tolist() == [62]
    lp = vlm.answer_logprobs(gen, [[0, 1], [0, 1, 2], [0, 1, 2], [0, 1]])
    want = gen.scores[0, 6, :2] - np.log(np.exp(gen.scores[0, 6, :2]).sum())
    np.testing.assert_allclose(lp[0, :2], want, atol=1e-12)
    assert np.isnan(lp[0, 2]) and np.isnan(lp[3]).all()
    np.testing.assert_allclose(np.exp(lp[2]), np.exp(gen.scores[2, 8]) / np.exp(gen.scores[2, 8]).sum(), atol=1e-12)
    q = lp.copy()
    q[0, :2] = np.log([0.9, 0.1])
    kl = vlm.answer_kl(lp, q)
    p = np.exp(lp[0, :2])
    assert kl[0] == pytest.approx(float((p * (np.log(p) - np.log([0.9, 0.1]))).sum()), abs=1e-12)
    assert kl[1] == 0.0 and np.isnan(kl[3])


def test_the_shift_is_nan_where_a_run_wrote_no_whole_block():
    rng = np.random.default_rng(1)
    a, b = make_gen(rng), make_gen(rng)
    s = vlm.latent_shift(a, b)
    x, y = a.latents[0, 0], b.latents[0, 0]
    cos = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
    np.testing.assert_allclose(s.cosine_distance[0], 1 - cos, atol=1e-5)
    np.testing.assert_allclose(s.relative_l2[0], np.linalg.norm(x - y, axis=-1) / np.linalg.norm(x, axis=-1), atol=1e-5)
    assert np.isnan(s.cosine_distance[1]).all() and np.isnan(s.cosine_distance[3]).all()  # none; a cut block
    first, second = vlm.split(a.rows(np.r_[0:4, 0:4]), 2)
    np.testing.assert_array_equal(first.tokens, a.tokens) and np.testing.assert_array_equal(second.latents, a.latents)


def test_the_sources_are_other_instances_of_the_whole_set_whatever_the_batching():
    """swap: a cycle through the instances that wrote a block (each its next one, never itself; none for an
    instance alone); mean: every OTHER instance's latents at the block and step; the sums of any split of the
    set into batches equal the whole set's, so a row's source never depends on its batch."""
    rng = np.random.default_rng(2)
    n, k, s, d = 7, 2, 3, 4
    lat = rng.normal(size=(n, k, s, d))
    blocks = np.array([1, 2, 0, 2, 1, 0, 2])
    whole = interventions.set_sources(jax.random.key(0), lat, blocks)
    for split in ([0, 7], [0, 1, 7], [0, 3, 5, 7]):
        total = count = None
        for a, b in zip(split[:-1], split[1:]):
            total, count = interventions.accumulate(total, count, lat[a:b], blocks[a:b])
        np.testing.assert_allclose(total, whole.total, atol=1e-12) and np.testing.assert_array_equal(count, whole.count)
    p = whole.partner
    has = blocks > 0
    assert (p[~has] == -1).all() and (p[has] != np.flatnonzero(has)).all() and set(p[has]) == set(np.flatnonzero(has))
    mean, leading = whole.mean_of_others(lat[3:5], blocks[3:5])
    others = [i for i in range(n) if i != 3 and blocks[i] > 1]  # instance 3's block 1: the others that wrote one
    np.testing.assert_allclose(mean[0, 1], lat[others, 1].mean(0), atol=1e-6)
    assert leading.tolist() == [2, 2]
    alone = interventions.set_sources(jax.random.key(0), lat[:1], blocks[:1])
    assert alone.partner.tolist() == [-1] and alone.mean_of_others(lat[:1], blocks[:1])[1].tolist() == [0]


@pytest.fixture(scope="module")
def tiny():
    from tokdyn.models import qwen2_5_vl

    return qwen2_5_vl.load(FIXTURE, dtype="float32")


def test_aligned_rows_read_only_the_prompts_image_and_continue_its_positions(tiny):
    """Each row's prompt and generated tokens up to its first whole block, padded so that every block sits at
    the same positions; the generated tokens' positions continue each prompt's; a generated image or video
    placeholder is a token like any other (the layout's image tokens are the prompt's), and the attention's
    concentration runs on the rows (no video refused, no image feature scattered there)."""
    cfg = tiny.config
    grid = np.array([[1, 4, 4]])  # 2 x 2 merged tokens
    img = [cfg.vision_start_token_id, *[cfg.image_token_id] * 4, cfg.vision_end_token_id]
    ids = np.array([[1, *img, 7, 8], [0, 1, *img, 9]])
    mask = np.array([[1] * 9, [0] + [1] * 8], bool)
    size = 2
    mode = vlm.Mode(LatentMode(40, 41, 42, size), 0, 9, (), jax.random.key(0))
    tokens = np.array(
        [
            [cfg.video_token_id, 40, 42, 42, 41, cfg.image_token_id, 3, 0, 0],
            [40, 42, 42, 41, 5, 6, 0, 0, 0],
        ]
    )
    gen = Generation(
        tokens,
        np.random.default_rng(3).normal(size=(2, 1, size, cfg.text.hidden_size)).astype(np.float32),
        np.array([1, 1]),
        np.array([[1], [0]]),
        np.array([[True], [True]]),
        None,
        (),
        np.array([9, 9]),
        0,
        mode.latent,
    )
    px = np.random.default_rng(4).normal(size=(2, 16, cfg.vision.patch_dim)).astype(np.float32)
    prompts = vlm.Prompts(ids, mask, px, grid, np.array([3, 8]), np.array([True, True]))
    sub, batch, has = vlm.aligned(tiny, prompts, gen, mode)
    lay = sub.layout
    assert has.tolist() == [True, True] and lay.markers == (10, 13) and lay.latents == (11, 12)
    assert lay.image == (2, 3, 4, 5)  # the prompt's image tokens alone
    got = np.asarray(batch["input_ids"])
    assert got[0, 9] == cfg.video_token_id and (got[:, 10] == 40).all() and (got[:, 13] == 41).all()
    from tokdyn.models.qwen2_5_vl import positions

    pos, nxt = positions.rope_index(cfg, ids, np.repeat(grid, 2, 0), mask)
    p = np.asarray(batch["positions"])  # (B, 3, T)
    assert (p[0, :, 9:14] == nxt[0] + np.arange(5)).all()
    assert (p[1, :, 10:14] == nxt[1] + np.arange(4)).all()
    assert not np.asarray(batch["attention_mask"])[1, 9]  # the padding that aligns row 1's block
    conc = vlm.concentration(sub, tiny.params, batch, top_k=2)
    assert np.isfinite(np.asarray(conc.entropy)).all()


def test_paired_differences_and_an_undefined_gain():
    """The report's paired difference of accuracy (its interval over instances) and McNemar's exact p from the
    discordant instances; the gain kept undefined, saying why, when the block lowers accuracy."""
    from tokdyn.studies import vlm_diagnostics as vd

    before = {i: float(i < 8) for i in range(12)}
    after = {i: float(i < 3 or i == 10) for i in range(12)}  # 5 right -> wrong, 1 wrong -> right
    cell = vd.report.paired_cell(before, after)
    p = sps.binomtest(5, 6, 0.5).pvalue
    assert cell.startswith("-0.333 [") and f"1 up, 5 down, McNemar p = {p:.3g}" in cell and "n = 12" in cell
    rows = [
        dict(instance=i, measure="correct", setting=s, correct=float(i < k))
        for i in range(12)
        for s, k in (("full", 3), ("no_block", 6), ("markers_only", 4))
    ]
    text = "\n".join(vd.report.decomposition_lines(rows, [0.25] * 12))
    assert "is below no block's" in text and "the block lowers accuracy" in text
    assert "| markers_only | 0.333 [" in text and "| – | 0.083 [" in text  # no gain kept; the paired difference


def test_flips_and_cut_answers_are_counted_where_they_are_read():
    """An answer flips only where both runs' answers were read (a run without one counts in neither
    direction); the accuracy table counts a cut answer apart from the unparsable ones and out of the rate."""
    from tokdyn.studies import vlm_diagnostics as vd

    flipped = vd.analyses.flip
    assert flipped("A", "B") == 1.0 and flipped("A", "A") == 0.0
    assert np.isnan(flipped(None, "A")) and np.isnan(flipped("A", None)) and np.isnan(flipped(None, None))
    rows = [
        dict(instance=i, benchmark="b", setting="none", correct=c, parsed=p, cut=k, chance=0.25)
        for i, (c, p, k) in enumerate(
            [(1.0, True, False), (0.0, False, False), (np.nan, False, True), (1.0, True, False)]
        )
    ]
    text = "\n".join(vd.report.accuracy_lines(rows))
    assert "| b | none | 0.667 [" in text and "(2/3) | 1 | 1 | 0.250 |" in text
