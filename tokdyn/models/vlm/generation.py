"""The one generation loop of every checkpoint family: decoding with a key/value cache, in text mode or
latent mode, one compiled program per shape bucket, written over the functions a family provides
(:data:`tokdyn.models.vlm.family.LOOP`).

The prompts are left-padded to a length bucket (a multiple of ``bucket``), the image features padded to one,
and the cache preallocated once, sized to one too. :func:`run`, the traced kernel, prefills the prompts in
chunks of ``prefill_chunk`` tokens, then scans ``new_tokens`` cached steps, each choosing a token and running
the next input (a step reads the cache once and writes one slot of it in place; the last step's run is not
used). Its carry holds, per row, the mode (text, latent step j, end due), the blocks opened, the next input
*embedding* and the tokens seen; a step's input is ``where(in_latent, fed_back, embed[token])``, so rows enter
and leave latent mode at different steps without a recompile. The decoding settings
(:mod:`~tokdyn.models.vlm.decoding`), the latent tokens, what is fed back, the step at which a row's block is
forced (the block mode: a block after the prompt is generation that enters latent mode at step 0) and the
interventions (:mod:`~tokdyn.models.vlm.interventions`) are traced arguments: one program serves every prompt
and option whose padded length, number of image tokens, batch and ``max_new_tokens`` fall in the same bucket
(the vision tower compiles once per image grid), with an intervention's source of up to one block of latents
or none (its blocks padded to a power of two).

Each row's positions continue from its own prompt (after its images, by the family's rule), one per step on
all three rows, latent steps included. A row that has emitted a stop token emits the checkpoint's pad token
from then on. Random draws come from each row's own key (``fold_in(key, row)`` for one key, or the keys given,
one per row: give each instance's own, :func:`tokdyn.models.vlm.interventions.instance_keys`, so that a result
never depends on the batch it is in). Over parameters replicated on several devices
(:func:`tokdyn.models.vlm.devices.replicate`) the rows are split over them in one program (:func:`split_run`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from tokdyn.models.blocks import attention
from tokdyn.models.vlm import decoding
from tokdyn.models.vlm import devices as devices_lib
from tokdyn.models.vlm import interventions as iv_lib
from tokdyn.models.vlm import latent as latent_lib
from tokdyn.models.vlm.decoding import choose

DEFAULT_NEW_TOKENS = 32
"""``max_new_tokens`` when neither the call nor the checkpoint's ``generation_config.json`` gives it."""


def round_up(n: int, bucket: int) -> int:
    """``n`` rounded up to a multiple of ``bucket``."""
    return -(-n // bucket) * bucket


@dataclasses.dataclass(frozen=True)
class Static:
    """The static structure of one generation program (what changes shapes).

    Attributes:
      fam: the model's family package (its ``model`` module provides :data:`tokdyn.models.vlm.family.LOOP`).
      cfg: the model's configuration.
      cache_len: slots of the key/value cache.
      new_tokens: tokens generated per row.
      size: latents per block (0: text mode only).
      chunk: prompt tokens per prefill step (divides the padded prompt length).
      sample: sample the tokens (True) or take the most likely (False): the sampling code is compiled only
        where it runs.
    """

    fam: ModuleType
    cfg: object
    cache_len: int
    new_tokens: int
    size: int = 0
    chunk: int = 64
    sample: bool = False


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Prompt:
    """A batch of left-padded prompts, ready for :func:`run` (every field traced).

    Attributes:
      ids: (B, T) token ids, each prompt's last token in the last column.
      mask: (B, T) True at real tokens.
      positions: (3, B, T) M-RoPE positions.
      next_pos: (B,) each row's first generated position.
      visual: the images' features in order (the family's ``encode_images``, image tokens on axis -2, padded
        rows at the end), or None.
    """

    ids: jax.Array
    mask: jax.Array
    positions: jax.Array
    next_pos: jax.Array
    visual: object


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Options:
    """The traced options of :func:`run`.

    Attributes:
      keys: (B,) each row's key (its sampling and noise streams are ``fold_in(key, 0)`` and ``fold_in(key, 1)``,
        then the step).
      knob: the decoding knobs (:func:`tokdyn.models.vlm.decoding.knobs`).
      stop: (S,) the stop tokens (S may be 0).
      pad: () the token a stopped row is filled with.
      latent_ids: (3,) the latent start, end and pad tokens (unused without latent mode).
      feed: () what a latent step feeds back, an index into :data:`tokdyn.models.vlm.latent.FEEDS`.
      block_at: (B,) the step at which each row's start token is forced (the block mode), -1 where the model
        opens its blocks itself.
      intervention: what is done to each row's latents (:class:`tokdyn.models.vlm.interventions.Intervention`).
      score_ids: (C,) the tokens whose log-probabilities are returned at every step (C may be 0).
    """

    keys: jax.Array
    knob: dict
    stop: jax.Array
    pad: jax.Array
    latent_ids: jax.Array
    feed: jax.Array
    block_at: jax.Array
    intervention: iv_lib.Intervention
    score_ids: jax.Array


def kernel(static: Static, params: dict, prompt: Prompt, opt: Options) -> dict:
    """Generate ``static.new_tokens`` tokens after each prompt: the traced kernel of :func:`generate`
    (:func:`run` is it jitted).

    Returns ``{"tokens": (B, N) int32, "states": (B, N, hidden) the latent computed for each latent step (zeros
    at the other steps; only with latent mode), "scores": (B, N, C) float32 log-probabilities of
    ``opt.score_ids``}``. Pure and traceable (``jit`` with ``static`` static; ``vmap`` is not needed, the batch
    is the leading axis); the token choices are not differentiable.
    """
    fam, cfg, size = static.fam.model, static.cfg, static.size
    b, t = prompt.ids.shape
    rows = jnp.arange(b)
    slots = jnp.arange(static.cache_len)
    cache = fam.new_cache(cfg, b, static.cache_len, fam.param_dtype(params))
    valid = jnp.zeros((b, static.cache_len), bool).at[:, :t].set(prompt.mask)
    x_prompt, extra = fam.embed_prompt(cfg, params, prompt.ids, prompt.mask, prompt.visual)  # (B, T, hidden)
    vocab = cfg.text.vocab_size

    def prefill(cache, c):
        start = c * static.chunk
        xc = jax.lax.dynamic_slice_in_dim(x_prompt, start, static.chunk, axis=1)
        pc = jax.lax.dynamic_slice_in_dim(prompt.positions, start, static.chunk, axis=2)
        ec = None if extra is None else jax.lax.dynamic_slice_in_dim(extra, start, static.chunk, axis=2)
        query = jnp.broadcast_to(start + jnp.arange(static.chunk), (b, static.chunk))
        h, cache = fam.decode_cached(cfg, params, xc, pc, attention.causal_mask(query, slots, valid), cache, start, ec)
        return cache, h[:, -1]

    cache, lasts = jax.lax.scan(prefill, cache, jnp.arange(t // static.chunk))
    seen = (
        jnp.zeros((b, vocab), bool).at[rows[:, None], jnp.where(prompt.mask, prompt.ids, vocab)].set(True, mode="drop")
    )
    iv = opt.intervention
    sample_keys = jax.vmap(jax.random.fold_in, (0, None))(opt.keys, 0)
    noise_keys = jax.vmap(jax.random.fold_in, (0, None))(opt.keys, 1)
    start_id, end_id, lat_pad = opt.latent_ids[0], opt.latent_ids[1], opt.latent_ids[2]
    drop_slots, drop_markers = iv_lib.dropped(iv.kind)  # (B,) each
    fill = fam.embed_tokens(cfg, params, jnp.maximum(lat_pad, 0))  # (hidden,) the "fill" kind's value

    def emit(i, h_pre, carry):
        """Choose step ``i``'s token and next input from the state ``h_pre`` (B, hidden) of the step before."""
        phase, n_blocks, block_step, done, seen, valid = carry
        normed = fam.final_norm(cfg, params, h_pre)
        logits = fam.output_head(cfg, params, normed).astype(jnp.float32)  # (B, V)
        step_keys = jax.vmap(jax.random.fold_in, (0, None))(sample_keys, i)
        chosen = choose(logits, step_keys, opt.knob, seen, static.sample)
        if opt.score_ids.shape[0]:
            out = {"scores": jax.nn.log_softmax(logits, axis=-1)[:, opt.score_ids]}
        else:  # nothing scored: no softmax over the vocabulary
            out = {"scores": jnp.zeros((b, 0), jnp.float32)}
        if size:
            in_latent = (phase >= 1) & (phase <= size)
            ending = phase == size + 1
            forced = (phase == 0) & (opt.block_at == i) & ~done
            chosen = jnp.where(forced, start_id, chosen)
            token = jnp.where(in_latent, lat_pad, jnp.where(ending, end_id, chosen))
            greedy = fam.embed_tokens(cfg, params, jnp.argmax(logits, axis=-1))
            state = jnp.where(opt.feed == 1, h_pre, normed)
            state = jnp.where(opt.feed == 2, greedy.astype(state.dtype), state)
            step = jnp.clip(phase - 1, 0, size - 1)
            keys = jax.vmap(jax.random.fold_in, (0, None))(noise_keys, i)
            fed = iv_lib.intervene(iv, state, n_blocks - 1, step, keys, fill)
            out["states"] = jnp.where(in_latent[:, None], state, 0).astype(state.dtype)
            # the drop kinds: an ended block's slots, or its start marker, leave the attention of what follows
            start_slot = (t + block_step)[:, None]  # (B, 1) the start marker's slot
            in_slots = (slots[None] > start_slot) & (slots[None] <= start_slot + size)  # (B, cache_len)
            gone = (drop_slots[:, None] & in_slots) | (drop_markers[:, None] & (slots[None] == start_slot))
            valid = valid & ~(ending[:, None] & gone)
            opens = (phase == 0) & (chosen == start_id) & ~done
            phase = jnp.where(opens, 1, jnp.where(in_latent, phase + 1, jnp.where(ending, 0, phase)))
            n_blocks = n_blocks + opens
            block_step = jnp.where(opens, i, block_step)
            hide_end = ending & drop_markers  # the end marker, after its own step
        else:
            token, in_latent, fed, hide_end = chosen, jnp.zeros((b,), bool), None, jnp.zeros((b,), bool)
        token = jnp.where(done, opt.pad, token).astype(jnp.int32)
        x_next = fam.embed_tokens(cfg, params, token)
        if size:
            x_next = jnp.where((in_latent & ~done)[:, None], fed.astype(x_next.dtype), x_next)
        done = done | jnp.isin(token, opt.stop)
        seen = seen.at[rows, token].set(True)
        out["tokens"] = token
        return (phase, n_blocks, block_step, done, seen, valid), x_next, hide_end, out

    zeros = jnp.zeros((b,), jnp.int32)

    def step(state, i):
        """Emit step ``i``'s token from the state ``h`` of the input before, then run its input ``x_i`` (at slot
        ``t + i``; the last step's run is not used)."""
        carry, h, cache = state
        carry, x, hide_end, out = emit(i, h, carry)
        phase, n_blocks, block_step, done, seen, valid = carry
        slot = t + i
        valid = valid.at[:, slot].set(True)
        pos = jnp.broadcast_to((prompt.next_pos + i)[None, :, None], (3, b, 1))
        mask = attention.causal_mask(jnp.full((b, 1), slot), slots, valid)
        h, cache = fam.decode_cached(cfg, params, x[:, None], pos, mask, cache, slot)
        valid = valid & ~(hide_end[:, None] & (slots == slot)[None])  # a dropped block's end marker, after its step
        return ((phase, n_blocks, block_step, done, seen, valid), h[:, 0], cache), out

    carry = (zeros, zeros, zeros, jnp.zeros((b,), bool), seen, valid)
    _, outs = jax.lax.scan(step, (carry, lasts[-1], cache), jnp.arange(static.new_tokens))
    return {k: jnp.swapaxes(v, 0, 1) for k, v in outs.items()}


run = jax.jit(kernel, static_argnums=0)
""":func:`kernel`, compiled once per :class:`Static` and argument shapes."""


def padded_visual(visual, bucket: int):
    """The images' features (the family's ``encode_images``' tree, image tokens on axis -2) with rows of zeros after
    them up to a multiple of ``bucket``, so that prompts of other image sizes share the program."""
    n_feat = jax.tree_util.tree_leaves(visual)[0].shape[-2]
    rows = round_up(n_feat, bucket)
    pad = lambda a: jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, rows - n_feat), (0, 0)])  # noqa: E731
    return jax.tree_util.tree_map(pad, visual)


def split_shardings(devices: tuple, prompt: Prompt, images: bool, opt: Options, *, sharding: bool = False):
    """Where the arguments of :func:`split_run`'s program go: ``(prompt, pixels, options)`` as a tree of
    ``PartitionSpec`` (``sharding``: of ``NamedSharding`` on ``devices``' mesh), every row axis split over the
    devices (the prompt's positions on their axis 1), the rest whole on each device."""
    rows, whole, cols = PartitionSpec(devices_lib.AXIS), PartitionSpec(), PartitionSpec(None, devices_lib.AXIS)
    specs = (
        Prompt(rows, rows, cols, rows, None),
        rows if images else None,
        Options(
            rows,
            jax.tree_util.tree_map(lambda _: whole, opt.knob),
            whole,
            whole,
            whole,
            whole,
            rows,
            jax.tree_util.tree_map(lambda _: rows, opt.intervention),
            whole,
        ),
    )
    if not sharding:
        return specs
    mesh = devices_lib.mesh_of(tuple(devices))
    return jax.tree_util.tree_map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


@functools.lru_cache(maxsize=32)
def split_run(static: Static, devices: tuple, image, bucket: int):
    """:func:`run` with the rows split over ``devices`` (a one-axis mesh, :mod:`~tokdyn.models.vlm.devices`),
    compiled: ``fn(params, prompt, pixels, options)``, the parameters whole on each device, the prompt (its
    ``visual`` None), ``pixels`` (B, patches, patch_dim: one image a row of the grid ``image``, ``(t, h, w)``;
    None for prompts without images) and the options' row arrays in equal shares
    (:func:`split_shardings`): each device encodes its rows' images (padded to ``bucket`` rows, as
    :func:`generate` pads them) and runs :func:`kernel` on its rows. Cached per static structure, devices, grid
    and bucket."""
    fam, cfg = static.fam.model, static.cfg

    def per_device(params, prompt, pixels, opt):
        visual = None
        if image is not None:
            n = pixels.shape[0]
            grid = np.repeat(np.asarray([image], np.int64), n, axis=0)
            flat = pixels.reshape(-1, pixels.shape[-1])
            visual = padded_visual(fam.encode_images(cfg, params, flat, grid), bucket)
        return kernel(static, params, dataclasses.replace(prompt, visual=visual), opt)

    def call(params, prompt, pixels, opt):
        sharded = jax.shard_map(
            per_device,
            mesh=devices_lib.mesh_of(tuple(devices)),
            in_specs=(PartitionSpec(), *split_shardings(devices, prompt, pixels is not None, opt)),
            out_specs=PartitionSpec(devices_lib.AXIS),
            check_vma=False,
        )
        return sharded(params, prompt, pixels, opt)

    return jax.jit(call)


def pack(fam: ModuleType, cfg, ids: np.ndarray, mask: np.ndarray, grid, bucket: int):
    """The prompts ``ids`` (B, T) under ``mask`` left-padded to a multiple of ``bucket``: ``(ids, mask,
    positions (3, B, W), next_pos (B,))`` as NumPy arrays (the positions by the family ``fam``'s rule)."""
    b, t = ids.shape
    width = round_up(t, bucket)
    packed_ids = np.zeros((b, width), np.int64)
    packed_mask = np.zeros((b, width), bool)
    for row in range(b):  # left-pad: each prompt's last token in the last slot
        real = ids[row, mask[row]]
        packed_ids[row, width - len(real) :] = real
        packed_mask[row, width - len(real) :] = True
    pos, next_pos = fam.model.rope_index(cfg, packed_ids, grid, packed_mask)
    return packed_ids, packed_mask, pos, next_pos


def prefill_chunk_for(width: int, bucket: int, limit: int) -> int:
    """The prefill chunk: the largest multiple of ``bucket`` that divides ``width`` and is at most ``limit``
    (at least ``bucket``)."""
    n = width // bucket
    best = 1
    for d in range(1, n + 1):
        if n % d == 0 and d * bucket <= limit:
            best = d
    return best * bucket


def static_for(
    fam: ModuleType, cfg, width: int, new_tokens: int, size: int, sample: bool, bucket: int, prefill_chunk: int
) -> Static:
    """The :class:`Static` of prompts padded to ``width`` (a multiple of ``bucket``) generating ``new_tokens``
    with latent blocks of ``size`` (0: none): the cache sized to a bucket, the prefill chunk dividing ``width``
    (:func:`generate` and :func:`programs` both build it here)."""
    chunk = prefill_chunk_for(width, bucket, max(prefill_chunk, bucket))
    return Static(fam, cfg, round_up(width + new_tokens, bucket), int(new_tokens), size, chunk, bool(sample))


def row_keys(key, batch: int):
    """(B,) keys: ``fold_in(key, row)`` for one key, or the ``batch`` keys given (typed or raw uint32)."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
            raise ValueError(f"key must be a jax.random.key (one, or one per row), got {key.dtype} {key.shape}")
        key = jax.random.wrap_key_data(key)
    if key.shape == ():
        return jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(batch))
    if key.shape != (batch,):
        raise ValueError(f"key must be one key or {batch} keys (one per row), got shape {key.shape}")
    return key


def _tokenizer_ids(source: str | Path | None, mode: latent_lib.LatentMode) -> latent_lib.LatentMode:
    if mode.resolved:
        return mode
    if source is None or not (Path(source) / "tokenizer.json").is_file():
        raise ValueError(
            f"{mode} names tokens by string and the model has no tokenizer.json beside it: resolve them with "
            "LatentMode.resolve(chat) (a tokdyn.models.vlm.Chat of the checkpoint)"
        )
    from tokdyn.models.vlm.chat import read_tokenizer

    return mode.resolve(read_tokenizer(Path(source) / "tokenizer.json"))


def _host(value, dtype) -> jax.Array:
    """``value`` (host data) as a JAX array of ``dtype`` on the default device, converted in NumPy and copied
    over: no program is compiled for it (``jnp.asarray`` compiles one per shape and dtype)."""
    return jax.device_put(np.asarray(value, dtype))


def _source_depth(blocks: int) -> int:
    """The blocks a source of ``blocks`` blocks is padded to: the next power of two, one for none."""
    return 1 << max(blocks - 1, 0).bit_length()


def _bucketed_source(iv: iv_lib.Intervention, span: int) -> iv_lib.Intervention:
    """``iv`` with its source's blocks padded with zeros to a power of two (1, 2, 4, ...; never read: a row
    reads only its first ``source_blocks``), and a source of no block made one block of ``span`` steps, so
    that a run without a source (the clean run) and one with a block of latents (DMLR's swapped in) are one
    program, and sources of 3 or 4 blocks another."""
    k, s = iv.source.shape[1], iv.source.shape[2]
    depth = _source_depth(k)
    if k == 0:
        s = span
    if (depth, s) == (k, iv.source.shape[2]):
        return iv
    b, hidden = iv.source.shape[0], iv.source.shape[3]
    source = np.zeros((b, depth, s, hidden), np.float32)
    if k:
        source[:, :k] = np.asarray(iv.source, np.float32)
    return dataclasses.replace(iv, source=_host(source, np.float32))


def block_steps_of(block_at, batch: int) -> np.ndarray:
    """(B,) the step at which each row's start token is forced, from ``block_at``: None (the model opens its
    blocks itself: -1 everywhere), one step for every row, or one per row (-1: none for that row)."""
    if block_at is None:
        return np.full(batch, -1, np.int64)
    arr = np.asarray(block_at)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer) or arr.ndim > 1:
        raise ValueError(f"block_at must be a step (int >= 0), one per row, or None; got {block_at!r}")
    arr = np.broadcast_to(arr, (batch,)) if arr.ndim == 0 else arr
    if arr.shape != (batch,) or (arr < -1).any():
        raise ValueError(f"block_at must be one step or {batch} steps (>= 0, or -1 for none), got {block_at!r}")
    return arr.astype(np.int64)


def generate(
    model,
    input_ids,
    pixel_values=None,
    image_grid_thw=None,
    attention_mask=None,
    *,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    do_sample: bool | None = None,
    repetition_penalty: float | None = None,
    key=None,
    eos_token_id=None,
    pad_token_id: int | None = None,
    generation_config: decoding.GenerationConfig | None = None,
    latent: latent_lib.LatentMode | None = None,
    intervention: iv_lib.Intervention | None = None,
    block_at=None,
    score_ids=None,
    return_generation: bool | None = None,
    bucket: int = 64,
    prefill_chunk: int = 256,
    devices=None,
):
    """``max_new_tokens`` new tokens after each prompt of ``input_ids`` (B, T), by ``model`` (a family's
    ``Model``: ``config``, ``params``, ``generation_config``, ``source``).

    Decoding follows the checkpoint's ``generation_config.json`` (``model.generation_config``, or
    ``generation_config``), each option given here replacing its field (:func:`decoding.resolve`):
    ``repetition_penalty``, and greedy or sampled (``do_sample``; ``temperature``, ``top_k``, ``top_p``,
    ``min_p``) as ``transformers`` applies them. ``temperature=0`` is greedy; sampling needs a ``key`` (one
    key, folded with each row's index, or one per row: give each instance's own key so that its result does
    not depend on its row). A row stops at any of ``eos_token_id`` (default: the checkpoint's; ``()`` never
    stops) and is filled with ``pad_token_id`` (default: the checkpoint's) after it. Prompts may be padded
    anywhere under ``attention_mask``; they are packed to the left-padded layout. ``pixel_values`` are
    (patches, patch_dim) over all images in order, or (B, patches, patch_dim) with one image per row and
    ``image_grid_thw`` of one grid (a row per image, or one row for all).

    With ``latent`` (:class:`~tokdyn.models.vlm.latent.LatentMode`) rows enter latent mode when they emit its
    start token, or at the step ``block_at`` gives them (one step, or one per row, -1 for none: the start
    token forced there, the block mode: ``block_at=0`` puts a block right after the prompt); ``intervention``
    (:class:`~tokdyn.models.vlm.interventions.Intervention`) acts on the latents (noise kinds need a ``key``);
    ``score_ids`` asks for the log-probabilities of those tokens at every step. With any of these (or
    ``return_generation=True``) the result is a :class:`~tokdyn.models.vlm.latent.Generation`; otherwise the
    (B, max_new_tokens) token array.

    The rows are split over devices (:mod:`~tokdyn.models.vlm.devices`) in one program: over ``devices`` when
    given (the parameters put on each), else over the devices the parameters are replicated on
    (:func:`tokdyn.models.vlm.devices.replicate`); each device encodes its rows' images and generates them
    (``jax.shard_map``), the rows padded to a multiple of the devices by repeating the last (cut from the
    result). A row's result does not depend on the split. Only prompts without images or with one image a row
    (``pixel_values`` (B, patches, patch_dim)) are split; others run whole on every device.
    """
    from tokdyn.models import families
    from tokdyn.models.vlm import family as family_lib

    cfg = model.config
    fam = families.family_of(cfg)
    family_lib.check(fam)
    vocab = cfg.text.vocab_size
    base = generation_config if generation_config is not None else getattr(model, "generation_config", None)
    if base is not None and not isinstance(base, decoding.GenerationConfig):
        raise TypeError(f"generation_config must be a decoding.GenerationConfig, got {type(base).__name__}")
    settings = decoding.resolve(
        base,
        vocab,
        cfg.eos_token_id,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    max_new_tokens = decoding.new_tokens(base, max_new_tokens, int(np.shape(input_ids)[-1]), DEFAULT_NEW_TOKENS)
    for name, value in (("bucket", bucket), ("prefill_chunk", prefill_chunk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if latent is not None:
        if not isinstance(latent, latent_lib.LatentMode):
            raise TypeError(f"latent must be a LatentMode, got {type(latent).__name__}")
        latent = _tokenizer_ids(getattr(model, "source", None), latent)
        latent.check(vocab, settings.eos)
        if settings.pad in (latent.start, latent.end):
            raise ValueError(f"pad_token_id={settings.pad} is a latent marker of {latent}; pass another pad_token_id")
    elif intervention is not None or block_at is not None:
        raise ValueError("intervention and block_at act on latent blocks: they need latent=LatentMode(...)")
    pixels, row_pixels = pixel_values, None
    if pixels is not None and np.ndim(pixels) == 3:  # one image per row, of one grid
        pixels = row_pixels = np.asarray(pixels, np.float32)
        grid = np.asarray(image_grid_thw)
        if grid.ndim == 2 and len(grid) == 1:
            grid = np.repeat(grid, len(pixels), axis=0)
        if grid.ndim != 2 or len(grid) != len(pixels) or (grid != grid[:1]).any():
            raise ValueError(
                f"pixel_values of shape {pixels.shape} (one image per row) need one grid for every row, got "
                f"image_grid_thw={grid.tolist()}"
            )
        image_grid_thw, pixels = grid, pixels.reshape(-1, pixels.shape[-1])
    ids, mask, grid = fam.model.check_inputs(cfg, input_ids, pixels, image_grid_thw, attention_mask)
    if not mask.any(axis=1).all():
        raise ValueError("every prompt needs at least one unmasked token (attention_mask row all zero)")
    b = ids.shape[0]
    scores = () if score_ids is None else tuple(np.atleast_1d(np.asarray(score_ids)).tolist())
    bad = [i for i in scores if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab]
    if bad:
        raise ValueError(f"score_ids must be token ids in [0, {vocab}), got {bad}")
    size = latent.size if latent is not None else 0
    span = max(min(size, int(max_new_tokens)), 1)  # the most latent steps a run can hold (one without latents)
    hidden = cfg.text.hidden_size
    if intervention is None:
        intervention = iv_lib.Intervention.make("none", b, max(size, 1), hidden)
    else:
        iv_lib.check(intervention, b, size, hidden)
    forced = block_steps_of(block_at, b)
    noisy = np.isin(np.asarray(intervention.kind), [iv_lib.KINDS.index(k) for k in iv_lib.NOISY])
    if key is None and (settings.do_sample or noisy.any()):
        why = "sampling (do_sample, a temperature > 0)" if settings.do_sample else "noise interventions"
        raise ValueError(
            f"{why} needs a key: key=jax.random.key(seed)"
            + (
                " (the checkpoint's generation_config.json sets do_sample; do_sample=False decodes greedily)"
                if settings.do_sample and do_sample is None and temperature is None
                else ""
            )
        )
    keys = row_keys(jax.random.key(0) if key is None else key, b)  # unused without sampling or noise
    if intervention.source.shape[2] > span:  # a source longer than any block of this run
        intervention = dataclasses.replace(intervention, source=intervention.source[:, :, :span])
    intervention = _bucketed_source(intervention, span)
    split = devices_lib.row_devices(model.params, devices)
    if len(split) > 1 and grid is not None and row_pixels is None:
        if devices is not None:
            raise ValueError(
                "devices: the rows are split over devices only with one image a row (pixel_values of shape (B, "
                "patches, patch_dim) and one grid) or none; these prompts' images come as one list"
            )
        split = ()  # the parameters' devices each run the whole batch
    params = model.params
    if len(split) > 1:  # the rows padded to a multiple of the devices by repeating the last (cut from the result)
        params = jax.device_put(params, devices_lib.replicated(split))
        rows = devices_lib.padded(b, split)
        ids, mask, keys, forced, intervention = devices_lib.pad_rows((ids, mask, keys, forced, intervention), rows)
        if grid is not None:
            row_pixels = devices_lib.pad_rows(row_pixels, rows)
            grid = np.repeat(grid[:1], rows, axis=0)
    packed_ids, packed_mask, pos, next_pos = pack(fam, cfg, ids, mask, grid, bucket)
    visual = None
    if grid is not None and len(split) < 2:
        visual = padded_visual(fam.model.encode_images(cfg, params, pixels, grid), bucket)
    static = static_for(
        fam, cfg, packed_ids.shape[1], int(max_new_tokens), size, settings.do_sample, bucket, prefill_chunk
    )
    prompt = Prompt(
        _host(packed_ids, np.int32),
        _host(packed_mask, bool),
        _host(pos, np.int32),
        _host(next_pos, np.int32),
        visual,
    )
    lat = (latent.start, latent.end, latent.pad) if latent is not None else (-1, -1, -1)
    feed = latent_lib.FEEDS.index(latent.feed) if latent is not None else 0
    opt = Options(
        keys,
        decoding.knobs(settings),
        _host(np.reshape(settings.eos, -1), np.int32),
        _host(settings.pad, np.int32),
        _host(lat, np.int32),
        _host(feed, np.int32),
        _host(forced, np.int32),
        intervention,
        _host(np.reshape(scores, -1), np.int32),
    )
    if len(split) > 1:
        image = None if grid is None else tuple(int(v) for v in grid[0])
        fn = split_run(static, split, image, bucket)
        placed = jax.device_put(
            (prompt, row_pixels, opt), split_shardings(split, prompt, row_pixels is not None, opt, sharding=True)
        )
        out = jax.device_get(fn(params, *placed))
        out = {k: v[:b] for k, v in out.items()}
    else:
        out = jax.device_get(run(static, params, prompt, opt))
    tokens = np.asarray(out["tokens"])
    if return_generation is None:
        return_generation = latent is not None or bool(scores)
    if not return_generation:
        return tokens
    return collect(tokens, out, settings, latent, scores, hidden)


def collect(tokens, out, settings: decoding.Settings, latent, score_ids, hidden: int) -> latent_lib.Generation:
    """The :class:`~tokdyn.models.vlm.latent.Generation` of :func:`run`'s outputs (host arrays)."""
    b, n = tokens.shape
    stop = np.isin(tokens, settings.eos)
    stop_steps = np.where(stop.any(axis=1), stop.argmax(axis=1), n)
    if latent is None:
        n_blocks = np.zeros((b,), np.int64)
        steps = np.zeros((b, 0), np.int64)
        complete = np.zeros((b, 0), bool)
        lat = np.zeros((b, 0, 0, hidden), np.float32)
    else:
        size = latent.size
        span = min(size, n)
        states = np.asarray(out["states"], np.float32)
        # a block opens where the row wrote its start token as text and then the latent pads (a start token
        # after the stop, in the fill, opens nothing)
        opened = []
        for r in range(b):
            at, s = [], 0
            while s < min(stop_steps[r] + 1, n):
                if tokens[r, s] == latent.start and (s + 1 >= n or tokens[r, s + 1] == latent.pad):
                    at.append(s)
                    s += size + 2
                else:
                    s += 1
            opened.append(at)
        n_blocks = np.asarray([len(o) for o in opened], np.int64)
        k = int(n_blocks.max(initial=0))
        steps = np.full((b, k), -1, np.int64)
        complete = np.zeros((b, k), bool)
        lat = np.zeros((b, k, span, hidden), np.float32)
        for r, o in enumerate(opened):
            steps[r, : len(o)] = o
            for j, s in enumerate(o):
                complete[r, j] = s + size + 1 < n
                got = states[r, s + 1 : s + 1 + span]
                lat[r, j, : len(got)] = got
    scores = np.asarray(out["scores"], np.float32) if score_ids else None
    return latent_lib.Generation(
        tokens, lat, n_blocks, steps, complete, scores, tuple(score_ids), stop_steps, settings.pad, latent
    )


def programs(
    fam: ModuleType,
    cfg,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    *,
    latent_size: int = 8,
    image_tokens: int = 0,
    n_scores: int = 0,
    n_stop: int = 2,
    source_blocks: int = 0,
    sample: bool = False,
    dtype=jnp.bfloat16,
    bucket: int = 64,
    prefill_chunk: int = 256,
):
    """The latent-generation program of family ``fam`` at configuration ``cfg`` and its abstract arguments, for
    lowering without weights or data (e.g. ``fn.trace(*args).lower(lowering_platforms=("cuda",))``).

    Returns ``(fn, args)``: ``fn`` the jitted kernel with its static structure bound (``fn(params, prompt,
    options)``, :func:`run`), ``args`` a tuple of ``jax.ShapeDtypeStruct`` pytrees: parameters in ``dtype``, a
    batch of ``batch`` prompts padded to ``round_up(prompt_len, bucket)`` with ``image_tokens`` image features
    (0: text only), ``n_scores`` scored tokens, ``n_stop`` stop tokens and a swap source of ``source_blocks``
    blocks; ``sample`` compiles the sampling code instead of the argmax."""
    width = round_up(prompt_len, bucket)
    static = static_for(fam, cfg, width, new_tokens, latent_size, sample, bucket, prefill_chunk)
    sds = jax.ShapeDtypeStruct
    abstract = fam.model.abstract_params(cfg, dtype)
    hidden = cfg.text.hidden_size
    visual = fam.model.abstract_visual(cfg, round_up(image_tokens, bucket), dtype) if image_tokens else None
    prompt = Prompt(
        sds((batch, width), jnp.int32),
        sds((batch, width), jnp.bool_),
        sds((3, batch, width), jnp.int32),
        sds((batch,), jnp.int32),
        visual,
    )
    key_type = jax.eval_shape(lambda: jax.random.key(0)).dtype
    knob = jax.tree_util.tree_map(lambda a: sds(a.shape, a.dtype), decoding.knobs(decoding.resolve(None, 2)))
    # the source as generate passes it: its blocks padded to a power of two (none: one block of zeros), each
    # of the run's span
    span = max(min(latent_size, new_tokens), 1)
    iv = iv_lib.Intervention(
        sds((batch,), jnp.int32),
        sds((batch,), jnp.float32),
        sds((batch, _source_depth(source_blocks), span, hidden), jnp.float32),
        sds((batch,), jnp.int32),
    )
    opt = Options(
        sds((batch,), key_type),
        knob,
        sds((n_stop,), jnp.int32),
        sds((), jnp.int32),
        sds((3,), jnp.int32),
        sds((), jnp.int32),
        sds((batch,), jnp.int32),
        iv,
        sds((n_scores,), jnp.int32),
    )
    return jax.jit(functools.partial(kernel, static)), (abstract, prompt, opt)
