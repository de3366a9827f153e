"""A checkpoint family's model as a model of the diagnostics' ``apply`` protocol (:mod:`tokdyn.models.protocol`),
written once over the few pieces of its forward pass a family hands over (:class:`Decoder`); each family's
``adapter`` module binds them (:mod:`tokdyn.models.qwen2_5_vl.adapter`, :mod:`tokdyn.models.qwen3_vl.adapter`).

A prompt holds one image per row and, optionally, a block of latent tokens between two boundary markers, as
the latent-reasoning methods place them::

    [... <vision_start> image tokens <vision_end> question ... <start> L latent slots <end> ... answer]

:func:`prompt` builds such ids, :func:`layout` finds the positions (image tokens, latent slots, markers, the
answer position: the last), :func:`make_batch` adds the mask, the multimodal rotary positions and the pixel
rows, and :func:`make_apply` returns ``apply(params, batch, *, latents=None, intervene=None, drop=None,
inject=None, select=None)``: ``latents`` (B, L, D) are written as input embeddings at the latent slots
(without them the slots keep the batch's own ``"latents"`` or their fill token's embedding), ``intervene``
edits the input embeddings, ``drop`` removes positions from attention, ``inject`` inserts copies of chosen
image tokens before the block, and ``select`` (:class:`tokdyn.diagnostics.protocol.Select`) computes only the
hidden entries and attention rows asked for, so that a 7B model at 1,500 tokens never holds (B, layers, heads,
T, T). :func:`noised_pixels` perturbs a family's pixel rows in pixel space. The analyses of
:mod:`tokdyn.diagnostics.vlm` run on it.

A family whose vision tower also feeds the decoder's first layers (Qwen3-VL's deepstack: features added to
layer ``i``'s output at the image tokens) hands :func:`make_apply` those per-layer additions with its
features; they follow the image tokens wherever the adapter moves them (an injected copy gets its image
token's, :func:`make_apply`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.models.blocks import attention
from tokdyn.models.protocol import Outputs


@dataclasses.dataclass(frozen=True)
class Decoder:
    """What :func:`make_batch`, :func:`image_features` and :func:`make_apply` need of a family's forward pass:
    plain functions of its modules (``cfg`` the family's ``Config``, ``tcfg`` its ``TextConfig``).

    Attributes:
      check_grid: ``(grid, merge) -> (images, 3) int64``, a ValueError for a malformed ``image_grid_thw``.
      check_inputs: the loop's ``check_inputs(cfg, ids, pixel_values, grid, mask) -> (ids, mask, grid)``.
      rope_index: the loop's ``rope_index(cfg, ids, grid, mask) -> (positions (3, B, T), next (B,))``.
      plan: ``(vision_cfg, grid) -> plan``, the vision tower's host-side plan of one grid.
      encode: ``(cfg, params, pixel_values (patches, patch_dim), plan) -> (features (N, D), extra)``: one
        image's features and its per-layer additions (n_extra, N, D), or None for a family without them.
      n_extra: ``(cfg) -> int``, the layers whose output gets an addition at the image tokens (0: none).
      embed: ``(cfg, params, ids) -> (..., D)`` input embeddings of token ids (the loop's ``embed_tokens``).
      rope_tables: ``(tcfg, positions (3, B, T)) -> (cos, sin)`` (B, T, head_dim).
      project: ``(tcfg, layer_params, x, cos, sin) -> (q, k, v)``, one decoder layer's rotated queries
        (B, T, heads, head_dim), keys and values (B, T, kv_heads, head_dim).
      decode: ``(tcfg, {"layers": span}, x, positions, mask, extra) -> x``: the decoder's layers of ``span``
        (stacked on a leading axis) over ``x`` (B, T, D), ``extra`` None or the span's additions
        (span layers, B, T, D), ``extra[i]`` added to the span's layer ``i``'s output.
      head: ``(tcfg, text_params, x) -> logits``, the final norm and the output head.
    """

    check_grid: Callable
    check_inputs: Callable
    rope_index: Callable
    plan: Callable
    encode: Callable
    n_extra: Callable
    embed: Callable
    rope_tables: Callable
    project: Callable
    decode: Callable
    head: Callable


ENCODED = ("image_features", "image_extra")
"""The keys :func:`image_features` adds to a batch: the images' features (B, image tokens, D) and, for a family
with per-layer additions, those (B, n_extra, image tokens, D). A batch given other pixel rows drops them."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """The static positions of a batch of prompts (every row the same).

    Attributes:
      image: positions of the image tokens.
      latents: positions of the latent slots (``()`` without a latent block).
      markers: positions of the block's two boundary markers (``()`` without one).
      answer: the position whose logits predict the answer (the last).
      length: T.
    """

    image: tuple[int, ...]
    latents: tuple[int, ...]
    markers: tuple[int, ...]
    answer: int
    length: int


def prompt(before, after, n_latents: int, start_id: int, end_id: int, fill_id: int) -> np.ndarray:
    """The ids ``before + [start_id] + [fill_id] * n_latents + [end_id] + after`` (no block when
    ``n_latents`` is 0: ``before + after``), as an int64 row."""
    before, after = list(np.asarray(before).ravel()), list(np.asarray(after).ravel())
    if n_latents < 0:
        raise ValueError(f"n_latents must be >= 0, got {n_latents}")
    block = [start_id, *([fill_id] * n_latents), end_id] if n_latents else []
    return np.asarray(before + block + after, np.int64)


def layout(cfg, input_ids, start_id: int | None = None, end_id: int | None = None) -> Layout:
    """The :class:`Layout` of ``input_ids`` (B, T) of a model of configuration ``cfg`` (its
    ``image_token_id``): every row must put its image tokens, markers and latent slots at the same positions (a
    ValueError otherwise). Without ``start_id``/``end_id`` there is no block."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {ids.shape}")
    image = np.flatnonzero(ids[0] == cfg.image_token_id)
    if (
        not (ids == cfg.image_token_id).sum(1).tolist() == [len(image)] * len(ids)
        or not ((ids == cfg.image_token_id) == (ids[0] == cfg.image_token_id)).all()
    ):
        raise ValueError("every row of input_ids must hold its image tokens at the same positions")
    latents, markers = (), ()
    if start_id is not None or end_id is not None:
        if start_id is None or end_id is None:
            raise ValueError("start_id and end_id go together: give both or neither")
        if not ((ids == start_id) == (ids[0] == start_id)).all() or not ((ids == end_id) == (ids[0] == end_id)).all():
            raise ValueError("every row of input_ids must hold its markers at the same positions")
        s, e = np.flatnonzero(ids[0] == start_id), np.flatnonzero(ids[0] == end_id)
        if len(s) != 1 or len(e) != 1 or e[0] <= s[0]:
            raise ValueError(
                f"input_ids must hold one start marker (id {start_id}) before one end marker (id {end_id}), "
                f"found them at {s.tolist()} and {e.tolist()}"
            )
        latents = tuple(range(int(s[0]) + 1, int(e[0])))
        markers = (int(s[0]), int(e[0]))
    t = ids.shape[1]
    return Layout(tuple(int(i) for i in image), latents, markers, t - 1, t)


def make_batch(decoder: Decoder, cfg, input_ids, pixel_values, image_grid_thw, attention_mask=None) -> dict:
    """The batch ``apply`` reads: ``input_ids`` (B, T), ``attention_mask`` (B, T), ``positions`` (B, 3, T)
    (the family's ``rope_index``, instance-major so that every leaf has the instances on its leading axis, as
    the protocol's ``lax.map`` and ``vmap`` over instances need) and ``pixel_values`` (B, patches, patch_dim),
    one image per row, all of one grid ``image_grid_thw`` ([[1, h, w]] or one such row per image); every input
    checked by the family's ``check_inputs``."""
    ids = np.asarray(input_ids)
    grid = decoder.check_grid(image_grid_thw, cfg.vision.spatial_merge_size)
    b = ids.shape[0]
    if len(grid) == 1:
        grid = np.repeat(grid, b, axis=0)
    if len(grid) != b or (grid != grid[0]).any():
        raise ValueError(f"image_grid_thw must be one grid for every row, got {grid.tolist()}")
    pixels = np.asarray(pixel_values, np.float32).reshape(b, -1, cfg.vision.patch_dim)
    ids, mask, grid = decoder.check_inputs(cfg, ids, pixels.reshape(-1, cfg.vision.patch_dim), grid, attention_mask)
    pos, _ = decoder.rope_index(cfg, ids, grid, mask)
    return {
        "input_ids": jnp.asarray(ids, jnp.int32),
        "attention_mask": jnp.asarray(mask),
        "positions": jnp.asarray(np.swapaxes(pos, 0, 1), jnp.int32),  # (B, 3, T)
        "pixel_values": jnp.asarray(pixels),
    }


def one_plan(decoder: Decoder, cfg, image_grid_thw):
    """The vision tower's plan of the first grid of ``image_grid_thw`` (every row's, one image each)."""
    return decoder.plan(cfg.vision, decoder.check_grid(image_grid_thw, cfg.vision.spatial_merge_size)[:1])


def encode_rows(decoder: Decoder, cfg, params, pixel_values, plan) -> tuple:
    """Each row's image encoded: ``(features (B, N, D), extra (B, n_extra, N, D) or None)`` of
    ``pixel_values`` (B, patches, patch_dim) under ``plan``. Traceable."""
    return jax.vmap(lambda px: decoder.encode(cfg, params, px, plan))(pixel_values)


def image_features(decoder: Decoder, cfg, params, batch: dict, image_grid_thw) -> dict:
    """``batch`` holding the vision tower's features (B, image tokens, D) of its ``"pixel_values"`` as
    ``"image_features"`` (and a family's per-layer additions (B, n_extra, image tokens, D) as
    ``"image_extra"``: :data:`ENCODED`), so that the calls of an analysis that share an image encode it once.
    Traceable."""
    feats, extra = encode_rows(decoder, cfg, params, batch["pixel_values"], one_plan(decoder, cfg, image_grid_thw))
    out = {k: v for k, v in batch.items() if k not in ENCODED}
    out["image_features"] = feats
    if extra is not None:
        out["image_extra"] = extra
    return out


def attention_rows(decoder: Decoder, tcfg, p: dict, x, cos, sin, mask, rows) -> jax.Array:
    """Attention weights (B, H, R, T) of one decoder layer ``p`` at query ``rows`` (R,), from the layer's input
    ``x`` (B, T, hidden): the family's own queries and keys (``decoder.project``), the same scores, mask and
    float32 softmax as the layer's attention (:func:`tokdyn.models.blocks.attention.attend`)."""
    b, t, _ = x.shape
    hd, heads, kv = tcfg.head_dim, tcfg.num_attention_heads, tcfg.num_key_value_heads
    q, _, _ = decoder.project(tcfg, p, x[:, rows], cos[:, rows], sin[:, rows])  # (B, R, H, hd)
    _, k, _ = decoder.project(tcfg, p, x, cos, sin)  # (B, T, kv, hd); the unused values are never computed
    q = q.reshape(b, len(rows), kv, heads // kv, hd)  # query head h reads key head h // (heads // kv): no copy
    scores = jnp.einsum("bqkgd,btkd->bkgqt", q, k).reshape(b, heads, len(rows), t) * jnp.asarray(hd**-0.5, q.dtype)
    scores = jnp.where(mask[:, None, rows], scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores.astype(jnp.float32), axis=-1)


def injection_point(lay: Layout) -> int:
    """Where ``inject`` inserts its copies of the image tokens: before the latent block's start marker, or
    before the answer position in a prompt without a block."""
    return lay.markers[0] if lay.markers else lay.answer


def scatter_rows(ids, rows, token_id: int):
    """Each row's ``rows`` (B, ..., N, D), in order, at the tokens ``token_id`` of ``ids`` (B, T): (B, ..., T, D)
    with zeros elsewhere (the row's k-th such token takes its k-th row)."""
    is_token = ids == token_id  # (B, T)
    slot = jnp.clip(jnp.cumsum(is_token, axis=1) - 1, 0, rows.shape[-2] - 1)  # (B, T)
    lead = rows.ndim - 3  # axes between the batch and the tokens
    idx = slot.reshape(slot.shape[:1] + (1,) * lead + slot.shape[1:] + (1,))
    taken = jnp.take_along_axis(rows, idx, axis=-2)  # (B, ..., T, D)
    return jnp.where(is_token.reshape(idx.shape), taken, jnp.zeros((), rows.dtype))


def make_apply(decoder: Decoder, cfg, image_grid_thw, lay: Layout):
    """``apply(params, batch, *, latents=None, intervene=None, drop=None, inject=None, select=None) -> Outputs``
    for prompts of layout ``lay`` and images of grid ``image_grid_thw`` ([[1, h, w]]) of the family whose
    forward pass ``decoder`` holds: the protocol of :mod:`tokdyn.diagnostics.protocol`, with ``params`` the
    model's parameter tree and ``batch`` from :func:`make_batch`.

    ``Outputs.latents`` (B, L, D) are the input embeddings at the latent slots (after ``latents``, before
    ``intervene``); ``hidden`` entry 0 the input embeddings after ``intervene``, entry ``i`` layer ``i``'s
    output (before the final norm; with a family's per-layer addition at the image tokens, after it: the next
    layer's input); ``attention`` the softmax weights in float32.

    - ``latents`` (B, L, D) are written at the latent slots. Without them, a batch that holds ``"latents"``
      (B, L, D) (:func:`tokdyn.diagnostics.vlm.with_latents`: each instance's own latents, as a
      latent reasoner produced them) has those written there; else the slots keep their fill token's
      embedding.
    - A batch that holds ``"image_features"`` (B, image tokens, D) (:func:`image_features`; with
      ``"image_extra"`` for a family with per-layer additions) has those at its image tokens; else the vision
      tower encodes ``"pixel_values"`` in every call.
    - ``drop`` (B, T) bool removes the True positions from attention (no other position reads them; each
      still reads itself), as the markers-only and no-block settings of the decomposition need.
    - ``inject`` (B, P) bool over the P image tokens of ``lay.image`` (in that order) inserts a copy of every
      image token, at its own multimodal rotary position, before the latent block's start marker
      (:func:`injection_point`); a later position reads a copy only where ``inject`` is True (DMLR's visual
      injection). A copy is its image token presented again: its input embedding and, for a family with
      per-layer additions (Qwen3-VL's deepstack), the same additions after the first layers. The outputs keep
      the T positions of ``lay``: the copies' rows are cut, and the attention paid to a copy is added to its
      image token's column. With every entry False the outputs are those of the call without ``inject``.

    The layers between those whose input or output is read run as one scan of the family's decoder (a
    narrow ``select`` compiles a few layers, not all). Traceable: ``jit``, ``vmap`` and ``grad`` apply."""
    plan = one_plan(decoder, cfg, image_grid_thw)
    tcfg = cfg.text
    n_layers, n_extra = tcfg.num_hidden_layers, int(decoder.n_extra(cfg))
    # host arrays: make_apply may first run inside a trace, and a closure must hold no tracer
    slots = np.asarray(lay.latents, np.int32)
    n_image, at = len(lay.image), injection_point(lay)
    image = np.asarray(lay.image, np.int32)

    def run_layers(layers, start, stop, x, pos, mask, extra):
        """The decoder's layers ``start`` to ``stop - 1`` over ``x``, one scan, with their additions."""
        if stop <= start:
            return x
        part = jax.tree_util.tree_map(lambda a: a[start:stop], layers)
        more = None if extra is None or start >= n_extra else extra[start:stop]
        return decoder.decode(tcfg, {"layers": part}, x, pos, mask, more)

    def apply(params, batch, *, latents=None, intervene=None, drop=None, inject=None, select=None):
        ids, valid = batch["input_ids"], batch["attention_mask"].astype(bool)
        b, t = ids.shape
        if latents is None and "latents" in batch:
            latents = batch["latents"]
        if latents is not None and jnp.shape(latents) != (b, len(lay.latents), tcfg.hidden_size):
            raise ValueError(
                f"latents must be (B, L, D) = ({b}, {len(lay.latents)}, {tcfg.hidden_size}) for this layout, "
                f"got {jnp.shape(latents)}"
            )
        for name, mask_arg, width in (("drop", drop, t), ("inject", inject, n_image)):
            if mask_arg is not None and jnp.shape(mask_arg) != (b, width):
                raise ValueError(
                    f"{name} must be a (B, {'T' if name == 'drop' else 'P'}) = ({b}, {width}) bool mask "
                    f"({'positions' if name == 'drop' else 'the image tokens of the layout'}), "
                    f"got shape {jnp.shape(mask_arg)}"
                )
        if "image_features" in batch:  # computed once for many calls (image_features)
            if n_extra and "image_extra" not in batch:
                raise ValueError(
                    "batch holds 'image_features' without 'image_extra' (the per-layer additions of this family's "
                    "images): encode the batch with the adapter's image_features, or give only its pixel_values"
                )
            feats, extra_rows = batch["image_features"], batch.get("image_extra") if n_extra else None
        else:
            feats, extra_rows = encode_rows(decoder, cfg, params, batch["pixel_values"], plan)
            extra_rows = extra_rows if n_extra else None
        x = decoder.embed(cfg, params, ids)  # (B, T, D)
        is_image = ids == cfg.image_token_id
        x = jnp.where(is_image[..., None], scatter_rows(ids, feats, cfg.image_token_id).astype(x.dtype), x)
        extra = None  # (n_extra, B, T, D): each layer's addition, zeros off the image tokens
        if extra_rows is not None:
            extra = jnp.swapaxes(scatter_rows(ids, extra_rows, cfg.image_token_id).astype(x.dtype), 0, 1)
        if latents is not None:
            x = x.at[:, slots].set(jnp.asarray(latents).astype(x.dtype))
        out_latents = x[:, slots]
        if intervene is not None:
            x = intervene(x)
        keys = valid if drop is None else valid & ~jnp.asarray(drop, bool)
        pos = jnp.swapaxes(batch["positions"], 0, 1)  # (3, B, T)
        grown = inject is not None
        if grown:  # copies of the image tokens before the block: (B, T + P, ...)
            x = jnp.concatenate([x[:, :at], x[:, image], x[:, at:]], 1)
            pos = jnp.concatenate([pos[..., :at], pos[..., image], pos[..., at:]], -1)
            keys = jnp.concatenate([keys[:, :at], jnp.asarray(inject, bool), keys[:, at:]], 1)
            if extra is not None:  # a copy gets its image token's additions too
                extra = jnp.concatenate([extra[:, :, :at], extra[:, :, image], extra[:, :, at:]], 2)
        n = x.shape[1]
        order = jnp.arange(n)
        mask = attention.causal_mask(jnp.broadcast_to(order, (b, n)), order, keys)
        if drop is not None or grown:  # a masked position still reads itself, so no query is left without a key
            mask = mask | jnp.eye(n, dtype=bool)[None]
        cos, sin = decoder.rope_tables(tcfg, pos)
        keep_h = range(n_layers + 1) if select is None else [h % (n_layers + 1) for h in select.hidden]
        keep_a = range(n_layers) if select is None else [a % n_layers for a in select.attention]
        rows = np.arange(t) if select is None else np.asarray(select.rows, np.int64)
        q_rows = jnp.asarray(np.where(rows >= at, rows + n_image, rows) if grown else rows, jnp.int32)
        layers = params["text"]["layers"]  # stacked along a leading layer axis
        hidden = {0: x} if 0 in keep_h else {}
        weights = {}
        done = 0  # layers applied so far
        for i in sorted(set(keep_a) | {j - 1 for j in keep_h if j}):  # the layers whose input or output is read
            x = run_layers(layers, done, i, x, pos, mask, extra)
            if i in keep_a:
                layer = jax.tree_util.tree_map(lambda a: a[i], layers)
                weights[i] = attention_rows(decoder, tcfg, layer, x, cos, sin, mask, q_rows)
            x = run_layers(layers, i, i + 1, x, pos, mask, extra)
            done = i + 1
            if i + 1 in keep_h:
                hidden[i + 1] = x
        x = run_layers(layers, done, n_layers, x, pos, mask, extra)
        logits = decoder.head(tcfg, params["text"], x)
        d = x.shape[-1]
        if grown:  # back to the layout's T positions; attention to a copy goes to its image token
            cut = lambda z, axis: jnp.concatenate(  # noqa: E731
                [jax.lax.slice_in_dim(z, 0, at, axis=axis), jax.lax.slice_in_dim(z, at + n_image, n, axis=axis)],
                axis,
            )
            logits = cut(logits, 1)
            hidden = {j: cut(h, 1) for j, h in hidden.items()}
            weights = {j: cut(w.at[..., image].add(w[..., at : at + n_image]), 3) for j, w in weights.items()}
        h_stack = jnp.stack([hidden[j] for j in keep_h], 1) if len(keep_h) else jnp.zeros((b, 0, t, d), x.dtype)
        heads = tcfg.num_attention_heads
        a_stack = (
            jnp.stack([weights[j] for j in keep_a], 1)
            if len(keep_a)
            else jnp.zeros((b, 0, heads, len(rows), t), jnp.float32)
        )
        return Outputs(logits=logits, hidden=h_stack, attention=a_stack, latents=out_latents)

    return apply


NOISES = ("gaussian", "blank")
"""The image perturbations of :func:`noised_pixels`."""


def noised_pixels(key, pixel_values, processor, kind: str = "gaussian", level: float = 0.5) -> jax.Array:
    """``pixel_values`` (..., patch_dim) of images perturbed in pixel space, for the grounding score
    :math:`S_t = \\log p(x_t \\mid x_{<t}, I, q) - \\log p(x_t \\mid x_{<t}, \\tilde I, q)`
    (:func:`tokdyn.diagnostics.grounding.scores` with ``apply`` from :func:`make_apply`).

    The rows are un-normalised with ``processor``'s mean and standard deviation to pixels in [0, 1], perturbed,
    clipped to [0, 1] and normalised again. ``kind`` ``"gaussian"``: each pixel plus ``level`` times a standard
    normal draw (one draw per pixel and channel, the same for an image's repeated frames); ``"blank"``: every
    pixel black (``level`` unused). Traceable.

    Args:
      key: PRNG key of the noise.
      pixel_values: (..., patch_dim) rows of a family's ``ImageProcessor``.
      processor: the ``ImageProcessor`` that made them (its ``image_mean``, ``image_std``, ``patch_size``,
        ``temporal_patch_size``).
      kind: one of :data:`NOISES`.
      level: the noise's standard deviation on the [0, 1] pixel scale, >= 0.
    """
    if kind not in NOISES:
        raise ValueError(f"kind must be one of {NOISES}, got {kind!r}")
    if not isinstance(level, jax.Array) and not (float(level) >= 0):
        raise ValueError(f"level must be >= 0, got {level!r}")
    c, tp, p = len(processor.image_mean), processor.temporal_patch_size, processor.patch_size
    px = jnp.asarray(pixel_values, jnp.float32)
    if px.shape[-1] != c * tp * p * p:
        raise ValueError(f"pixel_values rows must have {c * tp * p * p} entries (patch_dim), got {px.shape[-1]}")
    shape = px.shape[:-1] + (c, tp, p, p)
    mean = jnp.asarray(processor.image_mean, jnp.float32)[:, None, None, None]
    std = jnp.asarray(processor.image_std, jnp.float32)[:, None, None, None]
    x = px.reshape(shape) * std + mean  # [0, 1] pixels
    if kind == "blank":
        y = jnp.zeros_like(x)
    else:
        noise = jax.random.normal(key, px.shape[:-1] + (c, 1, p, p), jnp.float32)  # one draw for every frame
        y = jnp.clip(x + level * noise, 0.0, 1.0)
    return ((y - mean) / std).reshape(px.shape)


__all__ = [
    "Decoder",
    "ENCODED",
    "Layout",
    "NOISES",
    "attention_rows",
    "encode_rows",
    "image_features",
    "injection_point",
    "layout",
    "make_apply",
    "make_batch",
    "noised_pixels",
    "one_plan",
    "prompt",
    "scatter_rows",
]
