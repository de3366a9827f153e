"""The latent-reasoning analyses on a vision-language model (tokdyn.diagnostics.vlm), worked through on the tiny
random Qwen2.5-VL checkpoint of the tests, or on a checkpoint directory of one's own (--model DIR, with --image
files).

The tiny checkpoint has random weights: its numbers show what each analysis reports and are no finding. Every
instance asks one question of its image; the latent block is forced right after the prompt (the block mode:
generation with its start token forced at the first step, the block filled with the model's own states), then
the model answers. Every analysis runs that one generation: the clean run, the interventions of the one table
(tokdyn.models.vlm.interventions) and perturbed images; the block and the answer teacher-forced for the
attention, the grounding score and DMLR. The documentation's pages on the decomposition, the mediation and DMLR
show its sections (docs/concepts/vlm-*.md). Usage:

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

# -- the model, the images, the latent tokens -------------------------------------------------------------------
FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "qwen2_5_vl_tiny"
directory = Path(args.model) if args.model else FIXTURE
model = qwen2_5_vl.load(directory, dtype="float32")
chat = vlm.Chat.load(directory)  # its tokenizer, chat template and image processor
cfg = model.config
if args.image:
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in args.image]
    # markers and fill: three token ids the prompt does not otherwise use (a latent checkpoint has its own:
    # vlm.LatentMode.read(directory) reads them from its latent_mode.json)
    start, end, fill = cfg.text.vocab_size - 3, cfg.text.vocab_size - 2, cfg.text.vocab_size - 1
else:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (56, 56, 3), np.uint8) for _ in range(4)]  # four images of one grid
    start, end, fill = 100, 101, 102

# -- the prompts, the block mode and the clean run ---------------------------------------------------------------
question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many objects?"}]}]
batch = chat.encode_batch([question] * len(images), images)  # left-padded, one grid
b = len(images)
prompts = an.Prompts(
    batch["input_ids"],
    batch["attention_mask"].astype(bool),
    batch["pixel_values"],
    batch["image_grid_thw"][:1],
    index=np.arange(b),  # each row's instance id in the whole set: its keys and its sources follow it
    valid=np.ones(b, bool),
)
key = jax.random.key(0)
latent = vlm.LatentMode(start, end, fill, args.latents)
# block_at=0: the start token forced at the first step (the block mode); None lets the model open its blocks
mode = an.Mode(latent, block_at=0, new_tokens=args.latents + 12, score_ids=tuple(range(10, 20)), key=key)
options = [list(range(10))] * b  # each instance's options: indices into score_ids
clean = an.generate(model, prompts, mode)
print(f"the block forced at step 0 in every row: {clean.block_steps[:, 0].tolist()}; whole: {clean.blocks.tolist()}")


def chosen(gen) -> np.ndarray:
    """Each row's option read where its answer is written (after its last whole block): the most likely of its
    options there, -1 where the run left no answer (a block cut by the token limit)."""
    lp = an.answer_logprobs(gen, options)
    return np.where(np.isfinite(lp).any(1), np.argmax(np.nan_to_num(lp, nan=-np.inf), axis=1), -1)


# -- every intervention of the one table, in one call; swap and mean from the other instances of the set --------
src = interventions.set_sources(jax.random.fold_in(key, 8), clean.latents, clean.blocks)
partner = np.maximum(src.partner, 0)
swap = (clean.latents[partner], np.where(src.partner >= 0, clean.blocks[partner], 0))  # the partner's blocks
sources = {"swap": swap, "mean": src.mean_of_others(clean.latents, clean.blocks)}
kinds = [k for k in interventions.KINDS if k != "none"]
under = an.under_interventions(model, prompts, mode, kinds, sources=sources)  # {kind: Generation}

# -- decomposition (Beyond Visual Memory): each setting a kind of the table ---------------------------------------
runs = {s: clean if k == "none" else under[k] for s, k in an.SETTINGS.items()}
reference = chosen(clean)  # the reference answers here: the model's own with its whole block
correct = np.stack([(chosen(g) == reference) & (reference >= 0) for g in runs.values()])  # (settings, B)
kept = an.gain_kept(correct, tuple(runs))  # NaN where the whole block gains nothing over no block
print("decomposition: accuracy (gain kept) per setting, against the answers with the whole block")
for s, c in zip(runs, correct):
    print(f"  {s:13s} {c.mean():.2f} ({kept[s]:.2f})")

# -- latent -> answer (CapImagine): flips where both answers were read, KL where the answer is written ----------
base, own = an.answer_logprobs(clean, options), chosen(clean)
print("latent -> answer: answers flipped (of those read in both runs), mean KL from the clean answer distribution")
for kind, gen in under.items():
    now = chosen(gen)
    read = (own >= 0) & (now >= 0)
    kl = np.nanmean(an.answer_kl(base, an.answer_logprobs(gen, options)))
    print(f"  {kind:13s} {int((own != now)[read].sum())}/{int(read.sum())}  KL {kl:.3g}")

# -- input -> latent and input -> answer (CapImagine): a perturbed image, the latents held or swapped ------------
noised = an.perturb_pixels(key, prompts.pixels, chat.processor, noises=(("gaussian", 0.5),), index=prompts.index)
images = an.under_images(model, prompts, mode, clean, np.asarray(noised))
moved = an.latent_shift(clean, images["total"][0])
print(f"input -> latent: the block moved by cosine distance {np.nanmean(moved.cosine_distance):.4f}")
for effect in ("total", "direct", "indirect"):
    kl = an.answer_kl(base, an.answer_logprobs(images[effect][0], options))
    print(f"input -> answer ({effect}): mean KL {np.nanmean(kl):.4f}")

# -- the attention's concentration on the image at the block, teacher-forced ------------------------------------
sub, fed, has = an.aligned(model, prompts, clean, mode)  # the prompt and its generated block, positions kept
conc = an.concentration(sub, model.params, fed, top_k=2)  # fields (B, L + 1): each slot, then the end marker
print(f"attention entropy over the {len(sub.layout.image)} image tokens at the slots: {np.nanmean(conc.entropy):.3f}")

# -- DMLR's latent optimisation of the block, teacher-forced -------------------------------------------------------
search = dmlr.Hparams(learning_rate=0.5, sigma=0.5, sigma_decay=0.95)  # steps of half the latents' RMS entry
r = an.optimise(key, sub, model.params, fed, dmlr.Config(n_iters=10, n_pairs=4), search, seeds=(0, 1))
print(f"DMLR: reward {float(np.mean(r.reward_before)):.4f} -> {float(np.mean(r.reward_best)):.4f}")

# -- grounding (DMLR): S of a known answer's tokens, teacher-forced after the prompt, under a noised image -------
answer = np.tile(chat.text_ids("3"), (b, 1))  # (B, n) the answer's tokens
ids = np.concatenate([prompts.ids, answer], axis=1)
mask = np.concatenate([prompts.mask, np.ones(answer.shape, bool)], axis=1)
t = prompts.ids.shape[1]
plain = an.subject(cfg, prompts.grid, qwen2_5_vl.adapter.layout(cfg, ids))  # no block
scored = qwen2_5_vl.adapter.make_batch(cfg, ids, prompts.pixels, prompts.grid, mask)
s = an.grounding(
    key,
    plain,
    model.params,
    scored,
    chat.processor,
    positions=tuple(range(t - 1, t - 1 + answer.shape[1])),  # the positions that predict the answer's tokens
    tokens=answer,
    noises=(("gaussian", 0.5),),
    n_seeds=2,
    index=prompts.index,
)  # (noises, seeds, B, n)
print(f"grounding: S of the answer's tokens, mean {float(np.mean(s)):.4f} over {s.size} scores")
