"""Training any family's model with its latent mode, as the published latent-reasoning methods train it: the
forward pass of a teacher-forced sequence whose latent block is the model's own fed-back states, and the losses
on it, pure and traceable (``jit``, ``vmap`` over seeds, ``grad`` through the feedback).

A training sequence, per row (every row of one layout, :class:`Layout`)::

    [prompt (left-padded, with its image)] [start] [L latents] [end] [tail: caption tokens, answer tokens]

- the prompt is read in one chunk (the family's ``embed_prompt`` and ``decode_cached``);
- with a block, the start marker is fed as a token, then each of the ``L`` latent inputs is the final-norm state
  the step before computed (``feed="norm"``, the same rule as latent-mode generation,
  :mod:`tokdyn.models.vlm.generation`), a short ``lax.scan`` of cached steps, so the gradient flows through
  every fed-back state (``feed="pause"``: the pad token's embedding at each slot, no feedback: the markers-only
  baseline, whose markers, pads and tail are known tokens read in one chunk); then the end marker;
- the tail is teacher-forced in one chunk: its logits predict each tail token from the one before (the first
  from the end marker, or from the prompt's last token without a block); with fed-back latents the prompt's
  last token predicts the start marker (the model learns to open its block itself).

Positions continue the prompt's, one per token, latent steps included, as generation runs them: a model trained
here generates what it was trained on (a test holds the latents and the answer's logits equal to
:func:`tokdyn.models.vlm.generation.generate` with the block forced after the prompt).

The losses (:func:`losses`): the cross-entropy of the answer's tokens, of the start marker (with fed-back
latents), of the caption's (the ``text`` recipe and
a curriculum's remaining caption), and the alignment of the latents to a helper image's visual features
(:data:`ALIGNMENTS`), each a mean over the tokens or latents of the batch; the alignment's targets carry no
gradient.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from tokdyn.models.blocks import attention

FEEDS = ("norm", "pause")
"""What a training block's slots get: the final-norm state the step before computed (``"norm"``) or the pad
token's embedding (``"pause"``: markers and slots, nothing fed back)."""
ALIGNMENTS = ("mirage", "lvr", "monet")
"""The alignments of the latents to a helper image's visual features: ``mirage`` (1 - cos between the mean
latent and the mean helper feature), ``lvr`` (the mean squared error between latent i and the mean helper
feature of the i-th group), ``monet`` (1 - cos between latent i and the model's own final-norm states over the
i-th group of the helper image's tokens, read as a prompt of the image alone). The helper's tokens are split
into ``L`` contiguous groups, one per latent (:func:`groups`)."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """The static shape of a batch of training sequences.

    Attributes:
      fam: the family package (its ``model`` module provides :data:`tokdyn.models.vlm.family.LOOP` and
        ``image_features``).
      cfg: the model's configuration.
      grid: one image's grid ``(t, h, w)`` (every image of the batch of that grid).
      prompt: T, the prompts' padded length.
      n_latents: L, latents a block holds (0: no block).
      tail: the tail's tokens (caption and answer, padded).
      feed: one of :data:`FEEDS`.
    """

    fam: object
    cfg: object
    grid: tuple
    prompt: int
    n_latents: int
    tail: int
    feed: str = "norm"

    @property
    def plan(self):
        """The family's vision plan of one image (``vision.plan`` of its ``grid``), made on the host."""
        import numpy as np

        return self.fam.vision.plan(self.cfg.vision, np.asarray([self.grid]))

    @property
    def length(self) -> int:
        """The whole sequence's slots: T, the block and its markers, the tail."""
        return self.prompt + (self.n_latents + 2 if self.n_latents else 0) + self.tail


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch of training sequences (every field traced; B rows).

    Attributes:
      ids: (B, T) the prompts' token ids, left-padded.
      mask: (B, T) True at the prompts' real tokens.
      positions: (3, B, T) the prompts' positions (the family's ``rope_index``).
      next_pos: (B,) each row's first position after its prompt.
      pixels: (B, patches, patch_dim) one image per row, of the layout's grid.
      tail: (B, K) the tail's token ids (caption then answer, right-padded).
      tail_weight: (B, K) float, the weight of each tail token in its loss (0 at padding).
      is_answer: (B, K) bool, True at the answer's tokens (the others are the caption's).
      markers: (3,) the latent start, end and pad token ids.
      helper: (B, patches, patch_dim) each row's helper image (for the alignments), or the images again.
    """

    ids: jax.Array
    mask: jax.Array
    positions: jax.Array
    next_pos: jax.Array
    pixels: jax.Array
    tail: jax.Array
    tail_weight: jax.Array
    is_answer: jax.Array
    markers: jax.Array
    helper: jax.Array


def visual(lay: Layout, params, pixels):
    """The images' features of ``pixels`` (B, patches, patch_dim), one image a row, in the order
    ``embed_prompt`` takes them (every leaf's image tokens of every row on axis -2). Traced."""
    fam, cfg = lay.fam.model, lay.cfg
    plan = lay.plan
    per_row = jax.vmap(lambda px: fam.image_features(cfg, params, px, plan))(pixels)

    def flat(a):  # (B, ..., F, D) -> (..., B * F, D)
        a = jnp.moveaxis(a, 0, -3)
        return a.reshape(a.shape[:-3] + (-1, a.shape[-1]))

    return jax.tree_util.tree_map(flat, per_row), per_row


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Forward:
    """What :func:`forward` hands back: ``latents`` (B, L, D) the fed-back inputs of the block (empty without
    one), ``logits`` (B, K, vocab) float32 each tail token's prediction, ``image`` the images' features per row
    (the family's, leading axis B), ``opening`` (B, vocab) float32 the prediction after the prompt (where a
    model trained with a block learns to open it: :func:`losses`' ``start_ce``)."""

    latents: jax.Array
    logits: jax.Array
    image: object
    opening: jax.Array


def forward(lay: Layout, params, batch: Batch) -> Forward:
    """The teacher-forced pass over the batch's sequences (module docstring). Traced; differentiable in
    ``params`` through the fed-back latents."""
    fam, cfg = lay.fam.model, lay.cfg
    b, t = batch.ids.shape
    n_lat, k = lay.n_latents, lay.tail
    slots = jnp.arange(lay.length)
    cache = fam.new_cache(cfg, b, lay.length, fam.param_dtype(params))
    valid = jnp.zeros((b, lay.length), bool).at[:, :t].set(batch.mask).at[:, t:].set(True)
    feats, per_row = visual(lay, params, batch.pixels)
    x, extra = fam.embed_prompt(cfg, params, batch.ids, batch.mask, feats)
    start, end, pad = batch.markers[0], batch.markers[1], batch.markers[2]

    def run(x, first, cache, extra=None, i=0):  # x (B, n, D) at slots first + i .. first + i + n - 1
        n = x.shape[1]
        if first < t:  # the prompt, at its own positions
            pos = batch.positions
        else:  # after it: one position a token, from the row's next one
            pos = jnp.broadcast_to((batch.next_pos[:, None] + (first - t + i) + jnp.arange(n))[None], (3, b, n))
        query = jnp.broadcast_to(first + i + jnp.arange(n), (b, n))
        mask = attention.causal_mask(query, slots, valid)
        return fam.decode_cached(cfg, params, x, pos, mask, cache, first + i, extra)

    h, cache = run(x, 0, cache, extra)
    last = h[:, -1]  # the prompt's last state
    latents = jnp.zeros((b, 0, x.shape[-1]), x.dtype)
    first = t
    if n_lat and lay.feed == "pause":
        # nothing is fed back: the markers, the pads and the tail are known tokens, read in one chunk
        fill = fam.embed_tokens(cfg, params, pad)
        tokens = jnp.concatenate([start[None], jnp.broadcast_to(pad, (n_lat,)), end[None]])
        inputs = jnp.concatenate(
            [
                jnp.broadcast_to(fam.embed_tokens(cfg, params, tokens), (b, n_lat + 2, x.shape[-1])),
                fam.embed_tokens(cfg, params, batch.tail[:, :-1]),
            ],
            axis=1,
        )
        h, _ = run(inputs.astype(x.dtype), first, cache)
        latents = jnp.broadcast_to(fill.astype(x.dtype), (b, n_lat, x.shape[-1]))
        preds = h[:, n_lat + 1 :]  # the end marker's state onward
    elif n_lat:
        h, cache = run(jnp.broadcast_to(fam.embed_tokens(cfg, params, start), (b, 1, x.shape[-1])), first, cache)
        first += 1

        def step(carry, i):
            h_prev, cache = carry
            fed = fam.final_norm(cfg, params, h_prev).astype(x.dtype)
            h, cache = run(fed[:, None], first, cache, i=i)
            return (h[:, 0], cache), fed

        (h_last, cache), fed = jax.lax.scan(step, (h[:, 0], cache), jnp.arange(n_lat))
        latents = jnp.swapaxes(fed, 0, 1)  # (B, L, D)
        first += n_lat
        inputs = jnp.concatenate(
            [
                jnp.broadcast_to(fam.embed_tokens(cfg, params, end), (b, 1, x.shape[-1])),
                fam.embed_tokens(cfg, params, batch.tail[:, :-1]),
            ],
            axis=1,
        )  # the end marker, then the tail but its last token
        h, _ = run(inputs.astype(x.dtype), first, cache)
        preds = h  # (B, K, D): the end marker's state predicts the tail's first token
        del h_last
    else:
        if k > 1:
            h, _ = run(fam.embed_tokens(cfg, params, batch.tail[:, :-1]).astype(x.dtype), first, cache)
            preds = jnp.concatenate([last[:, None], h], axis=1)
        else:
            preds = last[:, None]
    head = lambda s: fam.output_head(cfg, params, fam.final_norm(cfg, params, s)).astype(jnp.float32)  # noqa: E731
    opening = head(last[:, None])[:, 0] if n_lat else None
    logits = head(preds)
    return Forward(latents, logits, per_row, logits[:, 0] if opening is None else opening)


def groups(x, n: int):
    """Means over ``n`` contiguous groups of the P positions of ``x`` (B, P, D) -> (B, n, D); group i spans
    positions round(P i / n) .. round(P (i + 1) / n) (at least one)."""
    p = x.shape[1]
    edges = [round(p * i / n) for i in range(n + 1)]
    return jnp.stack([x[:, a : max(b, a + 1)].mean(1) for a, b in zip(edges[:-1], edges[1:])], 1)


def cosine(a, b):
    """Cosine similarity over the last axis (an epsilon of 1e-8 under each squared norm)."""
    a = a / jnp.sqrt(jnp.sum(a * a, -1, keepdims=True) + 1e-8)
    b = b / jnp.sqrt(jnp.sum(b * b, -1, keepdims=True) + 1e-8)
    return jnp.sum(a * b, -1)


def _main(features):
    """The main visual features (B, F, D) of a family's per-row image features (the first leaf)."""
    return jax.tree_util.tree_leaves(features)[0]


def check_alignment(kind):
    """``kind`` if it names one of :data:`ALIGNMENTS` or is a callable ``(lay, params, batch, out) -> scalar``
    (one's own alignment); a ValueError/TypeError naming the argument otherwise."""
    if callable(kind) or kind in ALIGNMENTS:
        return kind
    if isinstance(kind, str):
        raise ValueError(f"align must be one of {list(ALIGNMENTS)} or a callable, got {kind!r}")
    raise TypeError(f"align must be one of {list(ALIGNMENTS)} or a callable, got {type(kind).__name__}")


def alignment(lay: Layout, params, batch: Batch, out: Forward, kind):
    """The alignment of ``out.latents`` (B, L, D) to each row's helper image: ``kind`` one of
    :data:`ALIGNMENTS`, whose targets carry no gradient, or a callable ``kind(lay, params, batch, out)``
    giving a scalar (one's own alignment; it stops the gradients it means to stop). Traced."""
    if callable(kind):
        return kind(lay, params, batch, out)
    sg = jax.lax.stop_gradient
    fam, cfg = lay.fam.model, lay.cfg
    plan = lay.plan
    helper = sg(_main(jax.vmap(lambda px: fam.image_features(cfg, params, px, plan))(batch.helper)))
    lat = out.latents.astype(jnp.float32)
    n = lat.shape[1]
    if kind == "mirage":
        return jnp.mean(1.0 - cosine(lat.mean(1), helper.mean(1).astype(jnp.float32)))
    if kind == "lvr":
        return jnp.mean((lat - groups(helper.astype(jnp.float32), n)) ** 2)
    if kind == "monet":
        b, f, d = helper.shape
        cache = fam.new_cache(cfg, b, f, fam.param_dtype(params))
        pos = jnp.broadcast_to(jnp.arange(f)[None, None], (3, b, f))
        keys = jnp.ones((b, f), bool)
        query = jnp.broadcast_to(jnp.arange(f), (b, f))
        h, _ = fam.decode_cached(
            cfg, params, helper.astype(lat.dtype), pos, attention.causal_mask(query, jnp.arange(f), keys), cache, 0
        )
        teacher = sg(fam.final_norm(cfg, params, h)).astype(jnp.float32)
        return jnp.mean(1.0 - cosine(lat, groups(teacher, n)))
    raise ValueError(f"alignment must be one of {list(ALIGNMENTS)}, got {kind!r}")


def losses(lay: Layout, params, batch: Batch, *, align=None, align_weight=1.0, caption_weight=1.0, start_weight=1.0):
    """The total loss and its parts on one batch: the answer tokens' mean cross-entropy and their accuracy (every
    answer token the most likely), plus ``start_weight`` times the start marker's cross-entropy after the prompt
    where the layout feeds latents back (``start_ce``: the model learns to open its block, as latent-mode
    generation lets it; None: not trained), plus ``caption_weight`` times the caption tokens' mean cross-entropy
    where the tail holds a caption, plus ``align_weight`` times the ``align`` loss (:func:`alignment`: one of
    :data:`ALIGNMENTS` or a callable, static) where one is given. Traced; returns ``(total, parts)``."""
    out = forward(lay, params, batch)
    ce = optax.softmax_cross_entropy_with_integer_labels(out.logits, batch.tail)  # (B, K)
    w = batch.tail_weight.astype(jnp.float32)
    ans = w * batch.is_answer
    cap = w * ~batch.is_answer
    answer_ce = jnp.sum(ce * ans) / jnp.maximum(ans.sum(), 1.0)
    right = (jnp.argmax(out.logits, -1) == batch.tail) | (ans == 0)
    parts = {"answer_ce": answer_ce, "answer_acc": jnp.mean(jnp.all(right, axis=-1).astype(jnp.float32))}
    total = answer_ce
    if lay.n_latents and lay.feed == "norm" and start_weight is not None:
        start_ce = jnp.mean(
            optax.softmax_cross_entropy_with_integer_labels(
                out.opening, jnp.broadcast_to(batch.markers[0], out.opening.shape[:1])
            )
        )
        parts["start_ce"] = start_ce
        total = total + start_weight * start_ce
    if lay.tail and caption_weight is not None:
        caption_ce = jnp.sum(ce * cap) / jnp.maximum(cap.sum(), 1.0)
        parts["caption_ce"] = caption_ce
        total = total + caption_weight * caption_ce
    if align is not None:
        al = alignment(lay, params, batch, out, align)
        parts["align"] = al
        total = total + align_weight * al
    parts["loss"] = total
    return total, parts


__all__ = [
    "ALIGNMENTS",
    "Batch",
    "FEEDS",
    "Forward",
    "Layout",
    "alignment",
    "check_alignment",
    "cosine",
    "forward",
    "groups",
    "losses",
    "visual",
]
