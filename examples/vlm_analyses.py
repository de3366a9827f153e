"""The latent-reasoning analyses on Qwen2.5-VL (tokdyn.diagnostics.vlm), worked through on the tiny
random checkpoint of the tests, or on a checkpoint directory of one's own (--model DIR, with --image files).

The tiny checkpoint has random weights: its numbers show what each analysis reports and are no finding. Every
instance asks one question of its image; the block of --latents slots sits between two marker tokens; the
reference answer of an instance is the answer the model gives with its own imagined block (so the full
block is right by construction and each setting's accuracy is the share of answers it keeps). Usage:

    python examples/vlm_analyses.py [--model DIR --image a.png b.png ...] [--latents 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from tokdyn.diagnostics import dmlr, mediation
from tokdyn.models import qwen2_5_vl
from tokdyn.diagnostics import vlm as an
from tokdyn.models.qwen2_5_vl import adapter as qa

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=None, help="a Qwen2.5-VL checkpoint directory (default: the tiny one)")
parser.add_argument("--image", nargs="*", default=[], help="image files (with --model; one grid for all)")
parser.add_argument("--latents", type=int, default=4)
args = parser.parse_args()

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "qwen2_5_vl_tiny"
directory = Path(args.model) if args.model else FIXTURE
model = qwen2_5_vl.load(directory, dtype="float32")
proc = qwen2_5_vl.ImageProcessor.read(directory)
cfg = model.config
if args.image:
    from PIL import Image

    out = proc([np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in args.image])
    grid = out["image_grid_thw"][:1]
    pixels = out["pixel_values"].reshape(len(args.image), -1, out["pixel_values"].shape[-1])
    # markers and fill: three token ids the prompt does not otherwise use (a real latent model has its own)
    start, end, fill = cfg.text.vocab_size - 3, cfg.text.vocab_size - 2, cfg.text.vocab_size - 1
else:
    with np.load(FIXTURE / "reference.npz") as f:
        px0, grid = f["proc0_pixels"], f["proc0_grid"]
    pixels = np.stack([px0, px0[::-1], -px0, 0.5 * px0]).astype(np.float32)  # four images of one grid
    start, end, fill = 100, 101, 102
b = len(pixels)
n_image = int(np.prod(grid[0])) // cfg.vision.spatial_merge_size**2
before = [cfg.vision_start_token_id, *[cfg.image_token_id] * n_image, cfg.vision_end_token_id, 40, 41]
ids = np.stack([qa.prompt(before, [42, 9], args.latents, start, end, fill)] * b)
lay = qa.layout(cfg, ids, start, end)
batch = qa.make_batch(cfg, ids, pixels, grid)
sub = an.subject(cfg, grid, lay)
key = jax.random.key(0)

# causal mediation (CapImagine): two image perturbations, both imagination arms
pert = an.perturb_pixels(key, batch["pixel_values"], proc, noises=(("gaussian", 0.5), ("blank", 0.0)))
print("causal mediation: share of answers flipped [mean KL] per perturbation (gaussian 0.5, blank)")
for arm in an.ARMS:
    m = an.mediation(key, sub, model.params, batch, pert, arm=arm)
    cells = {
        f: " ".join(
            f"{float(np.mean(getattr(m, f).flipped[n])):.2f} [{float(np.mean(getattr(m, f).kl[n])):.3f}]"
            for n in range(2)
        )
        for f in ("total", "direct", "indirect")
    }
    shift = np.asarray(m.latent_shift.cosine_distance).mean((1, 2))
    print(f"  {arm:6s} arm: total {cells['total']} | direct {cells['direct']} | indirect {cells['indirect']}")
    print(f"  {arm:6s} arm: block moved (cosine distance) {shift[0]:.3f} {shift[1]:.3f}")
    flips = np.asarray(m.effects.flipped).mean(1)
    print(f"  {arm:6s} arm: latent -> answer flips " + " ".join(f"{k} {v:.2f}" for k, v in zip(an.KINDS, flips)))
answers = np.asarray(an.mediation(key, sub, model.params, batch, pert, arm="latent").answer)

# decomposition (Beyond Visual Memory), latent arm
d = an.decomposition(key, sub, model.params, batch, answers=answers, arm="latent")
kept = an.gain_kept(np.asarray(d.correct), mediation.ALL_SETTINGS)
acc = np.asarray(d.correct).mean(1)
print("decomposition: accuracy (gain kept) per setting")
for s, a in zip(mediation.ALL_SETTINGS, acc):
    print(f"  {s:13s} {a:.2f} ({kept[s]:.2f})")
ent = np.asarray(d.concentration.entropy)
print(
    f"attention entropy over the {len(lay.image)} image tokens: latent slots {np.nanmean(ent[:, :-1]):.3f}, "
    f"answer {np.nanmean(ent[:, -1]):.3f} nats (uniform: {np.log(len(lay.image)):.3f})"
)

# DMLR: grounding of the prompt's tokens, then the latent optimisation over two seeds
s = np.asarray(
    an.grounding(
        key,
        sub,
        model.params,
        batch,
        proc,
        positions=list(range(lay.length - 1)),
        tokens=ids[:, 1:],
        noises=(("gaussian", 0.5),),
        n_seeds=2,
    )
)
after = s[..., lay.image[-1] :]
print(f"grounding S after the image: mean {after.mean():.4f}, share above 0.01: {(after > 0.01).mean():.2f}")
search = dmlr.Hparams(learning_rate=0.5, sigma=0.5, sigma_decay=0.95)  # steps of half the latents' RMS entry
r = an.optimise(key, sub, model.params, batch, dmlr.Config(n_iters=10, n_pairs=4), search, seeds=(0, 1))
print(
    f"DMLR: reward {float(np.mean(r.reward_before)):.4f} -> {float(np.mean(r.reward_best)):.4f}; "
    f"answers changed {float(np.mean(np.asarray(r.answer_best) != np.asarray(r.answer_before))):.2f}"
)
