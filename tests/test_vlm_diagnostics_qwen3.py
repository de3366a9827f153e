"""The vlm-diagnostics study on the second family, Qwen3-VL: the tiny latent-reasoning checkpoint
``tests/fixtures/qwen3_vl_latent`` (``make_qwen3_vl_latent.py``: its ``latent_mode.json`` read when no latent flag
is given), through ``tokdyn study vlm-diagnostics --latents generated``, the family found by its ``config.json``
(no option names it). The default run: the command on two instances, the similarity analysis (the clean pass of
generation with the blocks the model opens itself, its latents' cosines equal to NumPy's of the model's own
generation), and an image side of Qwen2.5-VL's factor refused before any work; the full tier: every analysis,
the generated latents and the blank image's read back from the model's own generation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")

from test_vlm_diagnostics_study import LINES, write_instances  # noqa: E402
from tokdyn import cli, io  # noqa: E402
from tokdyn.studies import vlm_diagnostics as vd  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen3_vl_latent"
NEW_TOKENS = 64  # room for every instance's first block (the model opens it after 20 to 40 tokens here)


def unit(z):
    z = np.asarray(z, np.float64)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def clean_runs(cfg, blank=False):
    """The model's own generation of the study's instances, group by group (with ``blank``, every image black):
    what the study's clean pass must hold. Returns ``(first block's latents (N, 4, D), whole blocks (N,), answer
    texts (N,))`` by instance."""
    loaded = vd.open_checkpoint(cfg)
    latents, blocks, texts = {}, {}, {}
    for group in vd.encode(vd.make_instances(cfg), loaded, cfg):
        pixels = group.pixels
        if blank:
            proc = loaded.processor
            per_channel = -np.asarray(proc.image_mean) / np.asarray(proc.image_std)
            pixels = np.broadcast_to(np.repeat(per_channel, pixels.shape[-1] // 3).astype(np.float32), pixels.shape)
        gen = loaded.model.generate(
            group.prompt,
            pixels,
            group.grid,
            group.prompt_mask,
            max_new_tokens=NEW_TOKENS,
            latent=loaded.latent_mode(loaded.size),
            do_sample=False,
        )
        for r, i in enumerate(group.index):
            latents[int(i)], blocks[int(i)] = np.asarray(gen.latents[r, 0], np.float64), int(gen.blocks[r])
            ids = gen.answer_ids(r, after_latents=True)
            texts[int(i)] = loaded.tokens.decode(ids, loaded.config.eos_token_id)
    order = sorted(latents)
    return np.stack([latents[i] for i in order]), np.asarray([blocks[i] for i in order]), [texts[i] for i in order]


def test_a_qwen3_vl_latent_checkpoint_runs_the_command(tmp_path, capsys):
    """--latents generated on the Qwen3-VL checkpoint, its latent_mode.json read: exit 0, every instance writes a
    whole block, and the similarity across instances at each latent step is the mean pairwise cosine (NumPy) of
    the model's own first-block latents. An image side that is a multiple of 28 but not of 32 (Qwen3-VL's patch
    16 x merge 2) exits 2 naming it, before any work."""
    path = write_instances(tmp_path, [LINES[0], dict(LINES[0], image="b.png", answer="4")])  # one prompt length
    base = ["study", "vlm-diagnostics", "--model", str(FIXTURE), "--instances", str(path), "--n-tokens", "2"]
    base += ["--latents", "generated", "--analyses", "similarity", "--batch-size", "2"]
    code = cli.main([*base, "--image-size", "56", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert (
        code == 2 and "image_size must be a multiple of 32 (the model's patch_size 16 x spatial_merge_size 2)" in err
    ), err
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "out"
    assert cli.main([*base, "--image-size", "64", "--new-tokens", str(NEW_TOKENS), "--out", str(out)]) == 0
    text = (out / "summary.md").read_text()
    assert "--latents generated" in text and not text.startswith("**Warning")
    cfg = vd.Config(
        model=str(FIXTURE), instances=str(path), image_size=64, n_tokens=2, latents="generated", new_tokens=NEW_TOKENS
    )
    latents, blocks, _ = clean_runs(cfg)
    assert (blocks > 0).all()
    u = unit(latents)  # (2, 4, D)
    sim = io.read_csv(str(out / "similarity.csv"))
    across = sim["measure"] == "across"
    np.testing.assert_allclose(sim["cosine"][across], (u[0] * u[1]).sum(-1), atol=1e-4)


# every analysis on the Qwen3-VL checkpoint's generated latents (about 3 min on two cores): the default run has
# test_a_qwen3_vl_latent_checkpoint_runs_the_command (the family through the command, generated latents), and
# the analyses are written once for every family (test_vlm_diagnostics_study's, on Qwen2.5-VL)
@pytest.mark.full
def test_a_qwen3_vl_latent_checkpoint_runs_every_analysis(tmp_path):
    path = write_instances(tmp_path, [LINES[0], LINES[2], dict(LINES[2], image="b.png", answer="C")])
    cfg = dataclasses.replace(
        vd.Config.quick(),
        model=str(FIXTURE),
        instances=str(path),
        n_instances=0,
        image_size=64,
        n_tokens=2,
        latents="generated",
        n_latents=0,
        new_tokens=NEW_TOKENS,
        noise_kinds=("blank",),
    )
    out = tmp_path / "out"
    assert vd.main(cfg, str(out), quiet=True)
    for name in ("instances", *vd.ANALYSES):
        assert (out / f"{name}.csv").exists(), name
    text = (out / "summary.md").read_text()
    assert "--latents generated" in text and not text.startswith("**Warning")
    acc = io.read_csv(str(out / "accuracy.csv"))
    assert {"none", *vd.LATENT_KINDS} <= set(acc["setting"]) and "plain" not in set(acc["setting"])
    latents, blocks, texts = clean_runs(cfg)
    dark, dark_blocks, _ = clean_runs(cfg, blank=True)
    assert (blocks > 0).all() and (dark_blocks > 0).all()
    u = unit(latents)  # (3, 4, D)
    sim = io.read_csv(str(out / "similarity.csv"))
    across = sim["measure"] == "across"
    pairs = [(0, 1), (0, 2), (1, 2)]
    want = np.mean([(u[i] * u[j]).sum(-1) for i, j in pairs], axis=0)
    np.testing.assert_allclose(sim["cosine"][across], want, atol=1e-4)
    med = io.read_csv(str(out / "mediation.csv"))
    rows = med["path"] == "input_latent"
    want = 1 - (u * unit(dark)).sum(-1)  # (3, 4): the blank image's latents' distance
    got = np.full(want.shape, np.nan)
    for i, step, c in zip(med["instance"][rows], med["step"][rows], med["cosine_distance"][rows]):
        got[int(i), int(step) - 1] = c
    np.testing.assert_allclose(got, want, atol=1e-4)
    none = acc["setting"] == "none"
    read = [
        "" if isinstance(x, float) and np.isnan(x) else str(x)
        for x in acc["text"][none][np.argsort(acc["instance"][none])]
    ]
    assert read == texts
