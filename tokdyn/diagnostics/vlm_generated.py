"""The latent-reasoning analyses on the latents a checkpoint writes itself while it generates: a model trained
with added latent tokens enters latent mode when it emits its start token, feeds its own last hidden state
back for ``size`` steps, then its end token, and goes on to the answer (the family's latent-mode generation:
``model.generate(..., latent=LatentMode(...), intervention=..., score_ids=...)``, for Qwen2.5-VL
:func:`tokdyn.models.qwen2_5_vl.generation.generate`). Each function here is one call of that generation
program over a batch of instances (times interventions, or times perturbed images), host-side around it:

- :func:`generate`: the clean run (greedy, the checkpoint's repetition penalty), and the answer distribution
  over the options' tokens at the answer step (:func:`answer_logprobs`);
- :func:`under_interventions`: the same prompts with the latents replaced as they are generated (zeros,
  noise at the latents' scale, another instance's, their mean, the slots dropped from attention, the markers
  dropped, the whole block dropped), every intervention one row block of one call;
- :func:`with_source`: the same prompts with latents of one's own swapped in (DMLR's optimised ones);
- :func:`under_images`: the same prompts with perturbed images (input -> latent), and with the latents held
  or swapped between the clean and the perturbed run (direct and indirect effects);
- :func:`latent_shift`: how far the latents of a block moved (:func:`tokdyn.diagnostics.mediation.shift`, per
  latent step); :func:`answer_kl`: KL of the answer distribution over the options;
- :func:`block_sequences`: each prompt with its generated text up to its first block's end, aligned so that
  every row's block sits at the same positions: the prompt the ``apply`` protocol's analyses read
  (:func:`tokdyn.diagnostics.vlm.concentration`, :func:`tokdyn.diagnostics.vlm.optimise`) with the generated
  latents written at the slots (:func:`tokdyn.diagnostics.vlm.with_latents`).

The family's ``latent`` module (``LatentMode``, ``Intervention``, ``Generation``) is reached through the
model's family (:func:`latent_module`), never imported by name.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType
from typing import Optional, Sequence

import numpy as np

from tokdyn.diagnostics import mediation as mediation_lib
from tokdyn.diagnostics.subjects import family_of

SETTINGS = ("none", "zeros", "noise", "mean", "swap", "drop_slots", "drop_markers", "drop_block")
"""The interventions on generated latents the analyses run (the family's ``latent.KINDS``): ``none`` (the
latents as computed), ``zeros``, ``noise`` (Gaussian at the latent's own RMS times ``scale``), ``mean`` (the
mean of the batch's clean latents at that block and step), ``swap`` (another instance's clean latents: a
cycle through the batch), ``drop_slots`` (the slots hidden from everything after the block, the markers
kept: the decomposition's markers only), ``drop_markers`` (the two markers hidden from everything after the
block, the slots kept: the decomposition's slots only), ``drop_block`` (both hidden: no block)."""


def supports(config) -> bool:
    """Whether the family of a model's ``config`` has latent-mode generation (its ``latent`` module)."""
    mod = getattr(family_of(config), "latent", None)
    return mod is not None and hasattr(mod, "Intervention") and hasattr(mod, "LatentMode")


def latent_module(model) -> ModuleType:
    """The ``latent`` module of ``model``'s family (``LatentMode``, ``Intervention``, ``Generation``); a
    ValueError when the family has no latent-mode generation (:func:`supports`)."""
    fam = family_of(model.config)
    mod = getattr(fam, "latent", None)
    if not supports(model.config):
        raise ValueError(
            f"{fam.__name__} has no latent-mode generation (its latent.LatentMode and latent.Intervention): "
            "this version of tokdyn cannot run the analyses on generated latents (--latents generated); use "
            "--latents block"
        )
    return mod


@dataclasses.dataclass(frozen=True)
class Prompts:
    """A batch of prompts to generate from (host arrays).

    Attributes:
      ids: (B, T) token ids, padded anywhere under ``mask``.
      mask: (B, T) bool, False at padding.
      pixels: (B, patches, patch_dim) one image per row.
      grid: (1, 3) the images' grid.
      valid: (B,) bool, False at rows that only pad the batch (they take part in nothing a row shares).
    """

    ids: np.ndarray
    mask: np.ndarray
    pixels: np.ndarray
    grid: np.ndarray
    valid: np.ndarray

    def tiled(self, k: int, pixels: Optional[np.ndarray] = None) -> "Prompts":
        """The batch repeated ``k`` times (rows ``j * B + i``), with ``pixels`` (k, B, patches, patch_dim)
        in place of the images when given."""
        px = (
            np.tile(self.pixels, (k, 1, 1))
            if pixels is None
            else np.asarray(pixels).reshape(-1, *self.pixels.shape[1:])
        )
        return Prompts(np.tile(self.ids, (k, 1)), np.tile(self.mask, (k, 1)), px, self.grid, np.tile(self.valid, k))


def _call(model, prompts: Prompts, latent, *, new_tokens: int, score_ids, key, intervention=None):
    kw = dict(max_new_tokens=new_tokens, latent=latent, score_ids=tuple(score_ids), key=key, return_generation=True)
    if "do_sample" in inspect.signature(model.generate).parameters:
        kw["do_sample"] = False  # greedy, as the benchmarks score (the checkpoint's repetition penalty kept)
    if intervention is not None:
        kw["intervention"] = intervention
    return model.generate(prompts.ids, prompts.pixels, prompts.grid, prompts.mask, **kw)


def split(gen, k: int) -> list:
    """A :class:`~tokdyn.models.qwen2_5_vl.latent.Generation` of ``k`` blocks of rows (as :meth:`Prompts.tiled` makes them) as ``k``
    Generations of B rows each."""
    b = len(gen.tokens) // k
    rows = lambda a, j: None if a is None else np.asarray(a)[j * b : (j + 1) * b]  # noqa: E731
    fields = ("tokens", "latents", "n_blocks", "block_steps", "scores", "stop_steps")
    return [dataclasses.replace(gen, **{f: rows(getattr(gen, f), j) for f in fields}) for j in range(k)]


def generate(model, prompts: Prompts, latent, *, new_tokens: int, score_ids: Sequence[int], key):
    """The clean latent-mode generation of ``prompts`` (greedy): a ``Generation`` with ``scores`` (B, N, C)
    the log-probabilities of ``score_ids`` at every step."""
    return _call(model, prompts, latent, new_tokens=new_tokens, score_ids=score_ids, key=key)


def swap_order(valid: np.ndarray) -> np.ndarray:
    """(B,) the row whose clean latents each row gets under ``swap``: the next valid row, cyclically (a
    padding row gets its own row; a batch of one valid row gets its own latents)."""
    rows = np.flatnonzero(valid)
    order = np.arange(len(valid))
    if len(rows) > 1:
        order[rows] = np.roll(rows, -1)
    return order


def under_interventions(
    model, prompts: Prompts, latent, clean, kinds: Sequence[str], *, new_tokens: int, score_ids, key, scale=1.0
) -> dict:
    """The generation of ``prompts`` under each intervention of ``kinds`` (names of :data:`SETTINGS`), in one
    call of ``len(kinds) x B`` rows: ``swap`` takes the clean latents of the next valid row
    (:func:`swap_order`), ``mean`` the mean of the valid rows' clean latents (padding rows left out), noise
    ``scale`` times the latent's RMS. Returns ``{kind: Generation}``."""
    lat = latent_module(model)
    kinds = tuple(kinds)
    b = len(prompts.ids)
    order = swap_order(prompts.valid)
    source = np.tile(np.asarray(clean.latents, np.float32)[order], (len(kinds), 1, 1, 1))
    blocks = np.tile(np.where(prompts.valid[order], np.asarray(clean.n_blocks)[order], 0), len(kinds))
    size, hidden = source.shape[2], source.shape[3]
    iv = lat.Intervention.make(
        [k for k in kinds for _ in range(b)],
        len(kinds) * b,
        size,
        hidden,
        scale,
        source,
        np.minimum(blocks, source.shape[1]),
    )
    gen = _call(
        model, prompts.tiled(len(kinds)), latent, new_tokens=new_tokens, score_ids=score_ids, key=key, intervention=iv
    )
    return dict(zip(kinds, split(gen, len(kinds))))


def with_source(model, prompts: Prompts, latent, source, blocks, *, new_tokens: int, score_ids, key):
    """The generation of ``prompts`` with each row's latents replaced by ``source`` (B, K, size, hidden) at
    its first ``blocks[b]`` blocks (the ``swap`` intervention of one's own latents: DMLR's optimised ones),
    computed as generated past them."""
    lat = latent_module(model)
    source = np.asarray(source, np.float32)
    iv = lat.Intervention.make("swap", len(source), source.shape[2], source.shape[3], 1.0, source, np.asarray(blocks))
    return _call(model, prompts, latent, new_tokens=new_tokens, score_ids=score_ids, key=key, intervention=iv)


def under_images(model, prompts: Prompts, latent, clean, perturbed, *, new_tokens: int, score_ids, key) -> dict:
    """The generation of ``prompts`` under N perturbed images ``perturbed`` (N, B, patches, patch_dim), in one
    call of ``3 N x B`` rows: ``total`` (the perturbed image, its own latents), ``direct`` (the perturbed image,
    the clean run's latents swapped in) and ``indirect`` (the clean image, the perturbed run's latents
    swapped in, from a first call of ``N x B`` rows). Returns ``{"total": [Generation] * N, "direct": ...,
    "indirect": ...}``."""
    lat = latent_module(model)
    n, b = len(perturbed), len(prompts.ids)
    total = _call(model, prompts.tiled(n, perturbed), latent, new_tokens=new_tokens, score_ids=score_ids, key=key)
    held = np.tile(np.asarray(clean.latents, np.float32), (n, 1, 1, 1))
    moved = np.asarray(total.latents, np.float32)
    k = max(held.shape[1], moved.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, k - a.shape[1]), (0, 0), (0, 0)))  # noqa: E731
    source = np.concatenate([pad(held), pad(moved)])
    blocks = np.concatenate([np.tile(np.asarray(clean.n_blocks), n), np.asarray(total.n_blocks)])
    iv = lat.Intervention.make("swap", 2 * n * b, source.shape[2], source.shape[3], 1.0, source, np.minimum(blocks, k))
    images = np.concatenate(
        [np.asarray(perturbed).reshape(n * b, *prompts.pixels.shape[1:]), np.tile(prompts.pixels, (n, 1, 1))]
    )
    both = _call(
        model,
        prompts.tiled(2 * n, images),
        latent,
        new_tokens=new_tokens,
        score_ids=score_ids,
        key=key,
        intervention=iv,
    )
    parts = split(both, 2 * n)
    return {"total": split(total, n), "direct": parts[:n], "indirect": parts[n:]}


def latent_shift(clean, other, block: int = 0) -> mediation_lib.Shift:
    """How far the latents of block ``block`` moved from ``clean`` to ``other`` (two Generations of the same
    rows): :func:`tokdyn.diagnostics.mediation.shift` per latent step, fields (B, size); NaN for a row where
    either run wrote no such block."""
    a, b = np.asarray(clean.latents, np.float32), np.asarray(other.latents, np.float32)
    if a.shape[1] <= block or b.shape[1] <= block:
        nan = np.full((len(a), a.shape[2]), np.nan)
        return mediation_lib.Shift(nan, nan)
    s = mediation_lib.shift(a[:, block], b[:, block])
    both = (np.asarray(clean.n_blocks) > block) & (np.asarray(other.n_blocks) > block)
    keep = lambda x: np.where(both[:, None], np.asarray(x, np.float64), np.nan)  # noqa: E731
    return mediation_lib.Shift(keep(s.cosine_distance), keep(s.relative_l2))


def answer_step(gen, row: int, score_ids: Sequence[int]) -> int:
    """The step at which row ``row`` writes its answer: the first step after its first block's end token
    (after the start of the run when it wrote no block) whose token is one of ``score_ids``, else the first
    step after the block (-1 when the run ends there)."""
    tokens = np.asarray(gen.tokens[row])
    first = 0
    if gen.latent is not None and int(gen.n_blocks[row]) > 0:
        first = int(gen.block_steps[row, 0]) + gen.latent.size + 2
    stop = int(gen.stop_steps[row]) if gen.stop_steps is not None else len(tokens)
    steps = np.arange(first, min(stop + 1, len(tokens)))
    hit = [s for s in steps if int(tokens[s]) in set(score_ids)]
    if hit:
        return int(hit[0])
    return int(first) if first < len(tokens) else -1


def answer_logprobs(gen, options: Sequence[Sequence[int]]) -> np.ndarray:
    """(B, C) each row's answer distribution over its options' tokens (``options[b]``: indices into the
    ``score_ids`` the run scored), log-probabilities renormalised over them, at its :func:`answer_step`; NaN
    rows where it has none, NaN columns past its options."""
    scores = np.asarray(gen.scores, np.float64)  # (B, N, C)
    width = max((len(o) for o in options), default=0)
    out = np.full((len(scores), width), np.nan)
    for r, opts in enumerate(options):
        if not len(opts):
            continue
        step = answer_step(gen, r, [gen.score_ids[i] for i in opts])
        if step < 0:
            continue
        lp = scores[r, step, list(opts)]
        m = lp.max()
        out[r, : len(opts)] = lp - m - np.log(np.exp(lp - m).sum())
    return out


def answer_kl(p, q) -> np.ndarray:
    """(B,) KL(P || Q) of two answer distributions of :func:`answer_logprobs` (NaN where either is)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    used = np.isfinite(p) & np.isfinite(q)
    with np.errstate(invalid="ignore"):
        terms = np.where(used, np.exp(np.where(used, p, 0.0)) * (np.where(used, p, 0.0) - np.where(used, q, 0.0)), 0.0)
    out = np.maximum(terms.sum(-1), 0.0)
    return np.where(used.any(-1), out, np.nan)


def block_sequences(prompts: Prompts, gen, latent, *, image_token: int, after_image: int, pad_id: int = 0):
    """Each row's prompt followed by its generated tokens up to its first block's end token, the rows aligned
    so that every block sits at the same positions: padding (``pad_id``, masked) inserted after the image
    (after its ``after_image`` token, the image's end marker). Rows without a block (and padding rows) take
    the first valid row's sequence and are marked invalid. Returns ``(ids (B, T'), mask (B, T'), valid (B,),
    latents (B, size, hidden))`` (the first block's latents, to write at the slots), or None when no valid
    row wrote a block."""
    size = latent.size
    has = prompts.valid & (np.asarray(gen.n_blocks) > 0)
    if not has.any():
        return None
    seqs = []
    for r in range(len(prompts.ids)):
        src = r if has[r] else int(np.flatnonzero(has)[0])
        real = prompts.ids[src][prompts.mask[src]]
        end = int(gen.block_steps[src, 0]) + size + 2
        seq = np.concatenate([real, np.asarray(gen.tokens[src][:end], real.dtype)])
        last = int(np.flatnonzero(seq == image_token)[-1]) if (seq == image_token).any() else -1
        at = last + 2 if last >= 0 and last + 1 < len(seq) and seq[last + 1] == after_image else last + 1
        seqs.append((seq, at))
    length = max(len(seq) for seq, _ in seqs)  # every row ends with its block: aligned ends align the blocks
    ids = np.full((len(seqs), length), pad_id, np.int64)
    mask = np.zeros((len(seqs), length), bool)
    for r, (seq, at) in enumerate(seqs):
        gap = length - len(seq)
        ids[r] = np.concatenate([seq[:at], np.full(gap, pad_id, seq.dtype), seq[at:]])
        mask[r] = np.concatenate([np.ones(at, bool), np.zeros(gap, bool), np.ones(len(seq) - at, bool)])
    src = np.where(has, np.arange(len(has)), int(np.flatnonzero(has)[0]))
    latents = np.asarray(gen.latents, np.float32)[src, 0]
    return ids, mask, has, latents


__all__ = [
    "Prompts",
    "SETTINGS",
    "answer_kl",
    "answer_logprobs",
    "answer_step",
    "block_sequences",
    "generate",
    "latent_module",
    "latent_shift",
    "split",
    "supports",
    "swap_order",
    "under_images",
    "under_interventions",
    "with_source",
]
