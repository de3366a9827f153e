"""Decoding with a key/value cache: greedy or sampled, batched over left-padded prompts.

The prompts are left-padded to a length bucket (a multiple of ``bucket``), the image features padded to
one, and the cache sized to one too, so one compiled program (prefill, then a ``fori_loop`` of decode
steps) serves every prompt whose padded length and number of image tokens fall in the same buckets (the
vision tower itself compiles once per image grid). Each row's positions continue from its
own prompt (after its images, by the M-RoPE rule); a row that has emitted a stop token emits ``pad_token_id``
from then on.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.models.blocks import attention
from tokdyn.models.qwen2_5_vl import inputs as inputs_lib
from tokdyn.models.qwen2_5_vl import positions as positions_lib
from tokdyn.models.qwen2_5_vl import text, vision
from tokdyn.models.qwen2_5_vl.config import Config


def round_up(n: int, bucket: int) -> int:
    """``n`` rounded up to a multiple of ``bucket``."""
    return -(-n // bucket) * bucket


def filter_logits(logits: jax.Array, top_k: int | None, top_p: float | None) -> jax.Array:
    """``logits`` (B, V) with the tokens outside the ``top_k`` largest and outside the smallest set whose
    probability reaches ``top_p`` set to -inf (the most likely token is always kept)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability of the tokens ranked above
        drop_sorted = before >= top_p
        drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
        logits = jnp.where(drop, -jnp.inf, logits)
    return logits


def choose(logits: jax.Array, key, temperature: float, top_k, top_p) -> jax.Array:
    """The next token of each row: the argmax when ``temperature`` is 0, else a sample from the filtered,
    tempered distribution."""
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1)
    return jax.random.categorical(key, filter_logits(logits / temperature, top_k, top_p), axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 8, 9, 10, 11, 12))
def run(
    cfg: Config,
    params: dict,
    input_ids: jax.Array,
    mask: jax.Array,
    positions: jax.Array,
    next_pos: jax.Array,
    features: jax.Array | None,
    key: jax.Array,
    cache_len: int,
    new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    stop: jax.Array | None = None,
    pad_token_id: int = 0,
) -> jax.Array:
    """Prefill ``input_ids`` (B, T, left-padded under ``mask``) at ``positions`` (3, B, T) with image
    ``features``, then decode ``new_tokens`` tokens over a cache of ``cache_len`` slots: (B, new_tokens)."""
    tc, p = cfg.text, params["text"]
    b, t = input_ids.shape
    dtype = p["embed"].dtype
    shape = (tc.num_hidden_layers, b, cache_len, tc.num_key_value_heads, tc.head_dim)
    cache = (jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
    valid = jnp.zeros((b, cache_len), bool).at[:, :t].set(mask)
    slots = jnp.arange(cache_len)
    x = text.embed(p, input_ids, features, cfg.image_token_id, mask)
    attend_mask = attention.causal_mask(jnp.broadcast_to(jnp.arange(t), (b, t)), slots, valid)
    x, cache = text.decode(tc, p, x, positions, attend_mask, cache, 0)
    logits = text.head(tc, p, x[:, -1])
    keys = jax.random.split(key, new_tokens)
    token = choose(logits, keys[0], temperature, top_k, top_p)
    done = jnp.zeros((b,), bool)
    out = jnp.zeros((b, new_tokens), jnp.int32)

    def emit(out, token, done, i):
        token = jnp.where(done, pad_token_id, token).astype(jnp.int32)
        out = out.at[:, i].set(token)
        if stop is not None:
            done = done | jnp.isin(token, stop)
        return out, token, done

    out, token, done = emit(out, token, done, 0)

    def step(i, carry):
        out, token, done, cache, valid = carry
        slot = t + i - 1
        valid = valid.at[:, slot].set(True)
        pos = jnp.broadcast_to((next_pos + i - 1)[None, :, None], (3, b, 1))
        x = p["embed"][token][:, None]
        m = attention.causal_mask(jnp.full((b, 1), slot), slots, valid)
        x, cache = text.decode(tc, p, x, pos, m, cache, slot)
        logits = text.head(tc, p, x[:, -1])
        token = choose(logits, keys[i], temperature, top_k, top_p)
        out, token, done = emit(out, token, done, i)
        return out, token, done, cache, valid

    out, *_ = jax.lax.fori_loop(1, new_tokens, step, (out, token, done, cache, valid))
    return out


def generate(
    model,
    input_ids,
    pixel_values=None,
    image_grid_thw=None,
    attention_mask=None,
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    key=None,
    eos_token_id=None,
    pad_token_id: int = 0,
    bucket: int = 64,
) -> np.ndarray:
    """``max_new_tokens`` new tokens after each prompt of ``input_ids`` (B, T), as a (B, max_new_tokens) array.

    ``temperature=0`` decodes greedily (no key needed); otherwise a ``key`` is required and tokens are sampled
    at that temperature, from the ``top_k`` most likely and/or the ``top_p`` nucleus. A row stops at any of
    ``eos_token_id`` (default: the configuration's; ``()`` never stops) and emits ``pad_token_id`` after it.
    Prompts may be padded anywhere under ``attention_mask``; they are packed to the left-padded layout.
    """
    cfg = model.config
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if temperature > 0 and key is None:
        raise ValueError("sampling (temperature > 0) needs a key: key=jax.random.key(seed)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
    if not isinstance(bucket, int) or bucket < 1:
        raise ValueError(f"bucket must be a positive integer, got {bucket!r}")
    ids, mask, grid = inputs_lib.check_inputs(cfg, input_ids, pixel_values, image_grid_thw, attention_mask)
    if not mask.any(axis=1).all():
        raise ValueError("every prompt needs at least one unmasked token (attention_mask row all zero)")
    b, t = ids.shape
    width = round_up(t, bucket)
    packed_ids = np.zeros((b, width), np.int64)
    packed_mask = np.zeros((b, width), bool)
    for row in range(b):  # left-pad: each prompt's last token in the last slot
        real = ids[row, mask[row]]
        packed_ids[row, width - len(real) :] = real
        packed_mask[row, width - len(real) :] = True
    pos, next_pos = positions_lib.rope_index(cfg, packed_ids, grid, packed_mask)
    features = None
    if grid is not None:
        plan = vision.plan(cfg.vision, grid)
        features = inputs_lib.image_features_jit(cfg, model.params, jnp.asarray(pixel_values, jnp.float32), plan)
        rows = round_up(features.shape[0], bucket)  # padded, so prompts of other image sizes share the program
        features = jnp.pad(features, ((0, rows - features.shape[0]), (0, 0)))
    stops = cfg.eos_token_id if eos_token_id is None else eos_token_id
    stops = (stops,) if isinstance(stops, int) else tuple(stops)
    stop = jnp.asarray(stops, jnp.int32) if stops else None
    key = jax.random.key(0) if key is None else key
    return np.asarray(
        run(
            cfg,
            model.params,
            jnp.asarray(packed_ids, jnp.int32),
            jnp.asarray(packed_mask),
            jnp.asarray(pos, jnp.int32),
            jnp.asarray(next_pos, jnp.int32),
            features,
            key,
            round_up(width + max_new_tokens, bucket),
            max_new_tokens,
            float(temperature),
            top_k,
            None if top_p is None else float(top_p),
            stop,
            int(pad_token_id),
        )
    )
