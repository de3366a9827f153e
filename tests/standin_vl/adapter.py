"""The stand-in under the diagnostics' ``apply`` protocol (:mod:`tokdyn.models.protocol`): one image per
row, optionally a latent block between two markers; ``apply(params, batch, *, latents=None, intervene=None,
drop=None, inject=None, select=None)``."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from standin_vl import decoder, vision
from standin_vl import model as model_lib
from tokdyn.models.blocks import attention
from tokdyn.models.protocol import Outputs


@dataclasses.dataclass(frozen=True)
class Layout:
    """The positions of a batch of prompts (every row the same). The fields are in an order of the
    stand-in's own: code that builds a layout must name them.

    Attributes:
      length: T.
      answer: the position whose logits predict the answer.
      image: the image tokens' positions.
      markers: the block's two markers (``()`` without a block).
      latents: the latent slots (``()`` without a block).
    """

    length: int
    answer: int
    image: tuple
    markers: tuple = ()
    latents: tuple = ()


def prompt(before, after, n_latents: int, start_id: int, end_id: int, fill_id: int) -> np.ndarray:
    """``before + [start] + [fill] * n_latents + [end] + after`` (no block for 0 latents)."""
    before, after = list(np.ravel(before)), list(np.ravel(after))
    block = [start_id, *([fill_id] * n_latents), end_id] if n_latents else []
    return np.asarray(before + block + after, np.int64)


def layout(cfg, input_ids, start_id=None, end_id=None) -> Layout:
    """The :class:`Layout` of ``input_ids`` (B, T), every row alike."""
    ids = np.asarray(input_ids)
    same = lambda tok: bool(((ids == tok) == (ids[0] == tok)).all())  # noqa: E731
    if ids.ndim != 2 or not same(cfg.image_token_id):
        raise ValueError("input_ids must be (B, T) with the image tokens at the same positions in every row")
    image = tuple(int(i) for i in np.flatnonzero(ids[0] == cfg.image_token_id))
    t = ids.shape[1]
    if start_id is None and end_id is None:
        return Layout(t, t - 1, image)
    s, e = np.flatnonzero(ids[0] == start_id), np.flatnonzero(ids[0] == end_id)
    if not (same(start_id) and same(end_id)) or len(s) != 1 or len(e) != 1 or e[0] <= s[0]:
        raise ValueError("input_ids must hold one start marker before one end marker, in every row alike")
    return Layout(t, t - 1, image, (int(s[0]), int(e[0])), tuple(range(int(s[0]) + 1, int(e[0]))))


def make_batch(cfg, input_ids, pixel_values, image_grid_thw, attention_mask=None) -> dict:
    """``{"input_ids", "attention_mask", "positions" (B, 3, T), "pixel_values" (B, patches, patch_dim)}``."""
    ids = np.asarray(input_ids)
    b = ids.shape[0]
    grid = vision.check_grid(image_grid_thw, cfg.vision.merge)
    grid = np.repeat(grid, b, axis=0) if len(grid) == 1 else grid
    pixels = np.asarray(pixel_values, np.float32).reshape(b, -1, cfg.vision.patch_dim)
    ids, mask, grid = model_lib.check_inputs(cfg, ids, pixels.reshape(-1, cfg.vision.patch_dim), grid, attention_mask)
    pos, _ = model_lib.rope_index(cfg, ids, grid, mask)
    return {
        "input_ids": jnp.asarray(ids, jnp.int32),
        "attention_mask": jnp.asarray(mask),
        "positions": jnp.asarray(np.swapaxes(pos, 0, 1), jnp.int32),
        "pixel_values": jnp.asarray(pixels),
    }


def _plan(cfg, image_grid_thw):
    return vision.plan(cfg.vision, vision.check_grid(image_grid_thw, cfg.vision.merge)[:1])


def image_features(cfg, params, batch: dict, image_grid_thw) -> dict:
    """``batch`` with ``"image_features"`` (B, image tokens, D) of its pixel rows. Traceable."""
    plan = _plan(cfg, image_grid_thw)
    feats = jax.vmap(lambda px: vision.encode(cfg.vision, params, px, plan))(batch["pixel_values"])
    return {**batch, "image_features": feats}


def make_apply(cfg, image_grid_thw, lay: Layout):
    """The protocol's ``apply`` for prompts of layout ``lay`` and images of grid ``image_grid_thw``:
    ``latents`` written at the slots (else the batch's own, else the fill embeddings), ``intervene`` on the
    input embeddings, ``drop`` (B, T) positions hidden from the others, ``inject`` (B, P) copies of the image
    tokens before the block (their attention folded back onto the image tokens), ``select`` the hidden
    entries and attention rows computed."""
    plan = _plan(cfg, image_grid_thw)
    dec, n_layers = cfg.text, cfg.text.depth
    slots, image = np.asarray(lay.latents, np.int32), np.asarray(lay.image, np.int32)
    n_image = len(lay.image)
    at = lay.markers[0] if lay.markers else lay.answer

    def apply(params, batch, *, latents=None, intervene=None, drop=None, inject=None, select=None):
        ids, valid = batch["input_ids"], batch["attention_mask"].astype(bool)
        b, t = ids.shape
        if latents is None:
            latents = batch.get("latents")
        if latents is not None and jnp.shape(latents) != (b, len(slots), dec.width):
            raise ValueError(f"latents must be (B, L, D) = ({b}, {len(slots)}, {dec.width}), got {jnp.shape(latents)}")
        feats = batch.get("image_features")
        if feats is None:
            feats = jax.vmap(lambda px: vision.encode(cfg.vision, params, px, plan))(batch["pixel_values"])
        x = jax.vmap(lambda i, m, f: model_lib.embed_prompt(cfg, params, i[None], m[None], f)[0][0])(ids, valid, feats)
        if latents is not None:
            x = x.at[:, slots].set(jnp.asarray(latents, x.dtype))
        lat_out = x[:, slots]
        if intervene is not None:
            x = intervene(x)
        keys = valid if drop is None else valid & ~jnp.asarray(drop, bool)
        pos = jnp.swapaxes(batch["positions"], 0, 1)
        grown = inject is not None
        if grown:
            x = jnp.concatenate([x[:, :at], x[:, image], x[:, at:]], 1)
            pos = jnp.concatenate([pos[..., :at], pos[..., image], pos[..., at:]], -1)
            keys = jnp.concatenate([keys[:, :at], jnp.asarray(inject, bool), keys[:, at:]], 1)
        n = x.shape[1]
        order = jnp.arange(n)
        mask = attention.causal_mask(jnp.broadcast_to(order, (b, n)), order, keys)
        if drop is not None or grown:
            mask = mask | jnp.eye(n, dtype=bool)[None]
        want_h = list(range(n_layers + 1)) if select is None else [h % (n_layers + 1) for h in select.hidden]
        want_a = list(range(n_layers)) if select is None else [a % n_layers for a in select.attention]
        rows = np.arange(t) if select is None else np.asarray(select.rows, np.int64)
        q_rows = np.where(rows >= at, rows + n_image, rows) if grown else rows
        cos, sin = decoder.rope(dec, pos)
        hidden, att, done = {0: x}, {}, 0
        for i in sorted(set(want_a) | {j - 1 for j in want_h if j}):
            x = decoder.run(dec, params["lm"], x, pos, mask, done, i)
            if i in want_a:
                att[i] = decoder.weights_at(dec, decoder.layer(params["lm"], i), x, cos, sin, mask, q_rows)
            x = decoder.run(dec, params["lm"], x, pos, mask, i, i + 1)
            done = i + 1
            hidden[i + 1] = x
        x = decoder.run(dec, params["lm"], x, pos, mask, done)
        logits = model_lib.output_head(cfg, params, model_lib.final_norm(cfg, params, x))
        if grown:
            keep = np.concatenate([np.arange(at), np.arange(at + n_image, n)])
            logits = logits[:, keep]
            hidden = {j: h[:, keep] for j, h in hidden.items()}
            att = {j: w.at[..., image].add(w[..., at : at + n_image])[..., keep] for j, w in att.items()}
        hs = jnp.stack([hidden[j] for j in want_h], 1) if want_h else jnp.zeros((b, 0, t, dec.width), x.dtype)
        ws = (
            jnp.stack([att[j] for j in want_a], 1)
            if want_a
            else jnp.zeros((b, 0, dec.heads, len(rows), t), jnp.float32)
        )
        return Outputs(logits=logits, hidden=hs, attention=ws, latents=lat_out)

    return apply


NOISES = ("gaussian", "blank")
"""The image perturbations of :func:`noised_pixels`."""


def noised_pixels(key, pixel_values, processor, kind: str = "gaussian", level: float = 0.5):
    """Pixel rows (..., patch_dim) of perturbed images: un-normalised by ``processor``'s mean and standard
    deviation, plus ``level`` times a standard normal draw (``"gaussian"``) or black (``"blank"``), clipped to
    [0, 1] and normalised again. Traceable."""
    if kind not in NOISES:
        raise ValueError(f"kind must be one of {NOISES}, got {kind!r}")
    c = len(processor.image_mean)
    px = jnp.asarray(pixel_values, jnp.float32)
    shape = px.shape[:-1] + (c, px.shape[-1] // c)
    mean = jnp.asarray(processor.image_mean, jnp.float32)[:, None]
    std = jnp.asarray(processor.image_std, jnp.float32)[:, None]
    x = px.reshape(shape) * std + mean
    y = jnp.zeros_like(x) if kind == "blank" else jnp.clip(x + level * jax.random.normal(key, x.shape), 0.0, 1.0)
    return ((y - mean) / std).reshape(px.shape)
