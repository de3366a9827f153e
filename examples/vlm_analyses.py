"""The latent-reasoning analyses on a vision-language model (tokdyn.diagnostics.vlm), worked through on the tiny
random Qwen2.5-VL checkpoint of the tests, or on a checkpoint directory of one's own (--model DIR, with --image
files).

The tiny checkpoint has random weights: its numbers show what each analysis reports and are no finding. Every
instance asks one question of its image; the latent block is forced right after the prompt (the block mode:
generation with its start token forced at the first step, the block filled with the model's own states), then
the model answers. Every analysis runs that one generation: the clean run, the interventions of the one table
(tokdyn.models.vlm.interventions) and perturbed images. Usage:

    python examples/vlm_analyses.py [--model DIR --image a.png b.png ...] [--latents 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from tokdyn.diagnostics import dmlr
from tokdyn.diagnostics import vlm as an
from tokdyn.models import qwen2_5_vl, vlm
from tokdyn.models.vlm import interventions

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=None, help="a Qwen2.5-VL checkpoint directory (default: the tiny one)")
parser.add_argument("--image", nargs="*", default=[], help="image files (with --model; one grid for all)")
parser.add_argument("--latents", type=int, default=4)
args = parser.parse_args()

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "qwen2_5_vl_tiny"
directory = Path(args.model) if args.model else FIXTURE
model = qwen2_5_vl.load(directory, dtype="float32")
chat = vlm.Chat.load(directory)
cfg = model.config
if args.image:
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in args.image]
    # markers and fill: three token ids the prompt does not otherwise use (a real latent model has its own)
    start, end, fill = cfg.text.vocab_size - 3, cfg.text.vocab_size - 2, cfg.text.vocab_size - 1
else:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (56, 56, 3), np.uint8) for _ in range(4)]  # four images of one grid
    start, end, fill = 100, 101, 102
question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many objects?"}]}]
batch = chat.encode_batch([question] * len(images), images)  # left-padded, one grid
b = len(images)
prompts = an.Prompts(
    batch["input_ids"],
    batch["attention_mask"].astype(bool),
    batch["pixel_values"],
    batch["image_grid_thw"][:1],
    np.arange(b),
    np.ones(b, bool),
)
key = jax.random.key(0)
mode = an.Mode(vlm.LatentMode(start, end, fill, args.latents), 0, args.latents + 12, tuple(range(10, 20)), key)
options = [list(range(10))] * b

clean = an.generate(model, prompts, mode)
print(f"the block forced at step 0 in every row: {clean.block_steps[:, 0].tolist()}; whole: {clean.blocks.tolist()}")

# latent -> answer: every kind of the one table; swap and mean from the other instances of this set
src = interventions.set_sources(jax.random.fold_in(key, 8), clean.latents, clean.blocks)
swap = (clean.latents[np.maximum(src.partner, 0)], np.where(src.partner >= 0, clean.blocks, 0))
sources = {"swap": swap, "mean": src.mean_of_others(clean.latents, clean.blocks)}
kinds = [k for k in interventions.KINDS if k not in ("none", "add_noise")]
under = an.under_interventions(model, prompts, mode, kinds, sources=sources)
base = an.answer_logprobs(clean, options)
print("latent -> answer: mean KL of the answer distribution from the clean run's")
for kind, gen in under.items():
    print(f"  {kind:13s} {np.nanmean(an.answer_kl(base, an.answer_logprobs(gen, options))):.3g}")

# input -> latent and input -> answer (CapImagine): a perturbed image, the latents held or swapped
pert = np.asarray(an.perturb_pixels(key, prompts.pixels, chat.processor, noises=(("gaussian", 0.5),)))
images = an.under_images(model, prompts, mode, clean, pert)
moved = an.latent_shift(clean, images["total"][0])
print(f"input -> latent: the block moved by cosine distance {np.nanmean(moved.cosine_distance):.4f}")
for effect in ("total", "direct", "indirect"):
    kl = an.answer_kl(base, an.answer_logprobs(images[effect][0], options))
    print(f"input -> answer ({effect}): mean KL {np.nanmean(kl):.4f}")

# the block teacher-forced: the attention's concentration on the image, and DMLR's latent optimisation
sub, fed, has = an.aligned(model, prompts, clean, mode)
conc = an.concentration(sub, model.params, fed, top_k=2)
print(f"attention entropy over the {len(sub.layout.image)} image tokens at the slots: {np.nanmean(conc.entropy):.3f}")
search = dmlr.Hparams(learning_rate=0.5, sigma=0.5, sigma_decay=0.95)  # steps of half the latents' RMS entry
r = an.optimise(key, sub, model.params, fed, dmlr.Config(n_iters=10, n_pairs=4), search, seeds=(0, 1))
print(f"DMLR: reward {float(np.mean(r.reward_before)):.4f} -> {float(np.mean(r.reward_best)):.4f}")
