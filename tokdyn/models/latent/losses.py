"""Losses of the latent reasoner (pure; batch means).

- :func:`answer_ce`: cross-entropy of the answer token read at ``<answer>``, and its accuracy.
- :func:`caption_ce`: teacher-forced cross-entropy of the caption tokens a stage still trains.
- :func:`alignment_loss`: the alignment of the latents to the helper image, three ways:
  ``mirage`` (1 - cos between the mean latent and the mean helper patch embedding),
  ``monet`` (mean over latents of 1 - cos between latent i and the self-teacher's hidden states
  over the i-th group of helper patches) and ``lvr`` (MSE between the fed-back latent embeddings
  and the mean patch embedding of the i-th group).
- :func:`objective`: the total a variant minimises and its parts.

Alignment targets are computed from the model's own patch embeddings (or hidden states) with the
gradient stopped, so the alignment loss moves the latents, never the targets. The helper patches
(G*G, row-major) are split into L contiguous groups, one per latent (:func:`groups`).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

from tokdyn.models.latent import model as latent_model

ALIGNMENTS = ("mirage", "monet", "lvr")


def groups(x, n: int):
    """Means over ``n`` contiguous groups of the P positions of ``x`` (B, P, D) -> (B, n, D); group
    i spans positions round(P i / n) .. round(P (i + 1) / n) (at least one)."""
    p = x.shape[1]
    edges = [round(p * i / n) for i in range(n + 1)]
    return jnp.stack([x[:, a : max(b, a + 1)].mean(1) for a, b in zip(edges[:-1], edges[1:])], 1)


def cosine(a, b):
    """Cosine similarity over the last axis (an epsilon of 1e-8 under each squared norm)."""
    a = a / jnp.sqrt(jnp.sum(a * a, -1, keepdims=True) + 1e-8)
    b = b / jnp.sqrt(jnp.sum(b * b, -1, keepdims=True) + 1e-8)
    return jnp.sum(a * b, -1)


def alignment_loss(model: latent_model.Model, params, batch, out: latent_model.Outputs, kind: str):
    """The alignment term (a loss to minimise) of the latent states ``out`` to the helper image; its
    targets carry no gradient.

    Args:
      model: the :class:`~tokdyn.models.latent.model.Model`.
      params: its weights.
      batch: B instances with a ``helper`` image (B, G, G).
      out: the model's :class:`~tokdyn.models.protocol.Outputs` on ``batch``.
      kind: "mirage", "monet" or "lvr" (:data:`ALIGNMENTS`; see the module docstring).

    Returns:
      A scalar loss.
    """
    net, lay = model.net, model.layout
    helper = jnp.asarray(batch.helper, jnp.int32)
    sg = jax.lax.stop_gradient
    target = sg(net.apply(params, helper, method=latent_model.Network.embed_patches))  # (B, P, D)
    n = out.latents.shape[1]
    if kind == "mirage":
        return jnp.mean(1.0 - cosine(out.latents.mean(1), target.mean(1)))
    if kind == "monet":
        teacher = sg(net.apply(params, target, method=latent_model.Network.backbone)[0])  # (B, P, D), causal prefix
        return jnp.mean(1.0 - cosine(out.latents, groups(teacher, n)))
    if kind == "lvr":
        fed = out.hidden[:, 0, lay.latents]  # (B, L, D) the embeddings actually fed back
        return jnp.mean((fed - groups(target, n)) ** 2)  # mean over elements, as torch's MSELoss
    raise ValueError(f"alignment must be one of {list(ALIGNMENTS)}, got {kind!r}")


def answer_ce(model: latent_model.Model, batch, out: latent_model.Outputs):
    """(mean answer cross-entropy, answer accuracy) of the logits at ``<answer>``."""
    logits = out.logits[:, model.layout.answer]  # (B, V)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.answer).mean()
    return ce, (logits.argmax(-1) == batch.answer).mean()


def caption_ce(model: latent_model.Model, batch, out: latent_model.Outputs, mask):
    """Teacher-forced caption cross-entropy: each caption position is predicted by the position before it.

    Args:
      model: the :class:`~tokdyn.models.latent.model.Model`.
      batch: B instances with a ``caption`` (B, K).
      out: the model's :class:`~tokdyn.models.protocol.Outputs` on ``batch``.
      mask: (K,) 1 on the caption tokens trained, 0 elsewhere (may be traced).

    Returns:
      The mean cross-entropy over the trained tokens of the B captions, a scalar.
    """
    k = model.layout.caption
    pred = out.logits[:, k.start - 1 : k.stop - 1]  # (B, K, V)
    ce = optax.softmax_cross_entropy_with_integer_labels(pred, batch.caption)  # (B, K)
    return jnp.sum(ce * mask) / jnp.maximum(mask.sum() * ce.shape[0], 1.0)


def objective(
    model: latent_model.Model, params, batch, *, align: Optional[str], caption_mask, align_weight, caption_weight
):
    """The total loss a variant minimises on one batch, and its parts: the answer's cross-entropy, plus
    ``caption_weight`` times the caption's when the model has a caption, plus ``align_weight`` times
    the ``align`` loss when one is named.

    Args:
      model: the :class:`~tokdyn.models.latent.model.Model`.
      params: its weights.
      batch: B instances.
      align: "mirage", "monet", "lvr" or None (static).
      caption_mask: (K,) the caption tokens trained (see :func:`caption_ce`).
      align_weight: the alignment's weight (may be traced).
      caption_weight: the caption's weight (may be traced).

    Returns:
      ``(total, parts)``: ``parts`` holds ``answer_ce``, ``answer_acc``, ``caption_ce`` and ``align``
      where present, and ``loss`` (the total).
    """
    out = model.apply(params, batch)
    ce, acc = answer_ce(model, batch, out)
    parts = {"answer_ce": ce, "answer_acc": acc}
    total = ce
    if model.cfg.caption_len:
        cap = caption_ce(model, batch, out, caption_mask)
        parts["caption_ce"] = cap
        total = total + caption_weight * cap
    if align is not None:
        al = alignment_loss(model, params, batch, out, align)
        parts["align"] = al
        total = total + align_weight * al
    parts["loss"] = total
    return total, parts
