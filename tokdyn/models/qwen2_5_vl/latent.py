"""Latent mode: the values that describe it to :func:`tokdyn.models.qwen2_5_vl.generation.generate` and what
it hands back.

- :class:`LatentMode`: the checkpoint's latent start, end and pad tokens (ids, or strings resolved through its
  tokenizer), the latent size and what is fed back (the final-norm state, or the last layer's output before
  the norm).
- :class:`Intervention`: what is done to the latents as they are generated, one kind per row (a traced
  index into :data:`KINDS`), so that a batch of instances x interventions is one call of one program.
- :func:`intervene`: the traced rule that turns a computed latent into the one fed back.
- :class:`Generation`: the tokens, the latents written and where each block sits, the scores.

The semantics: once a row emits the start token it is fed as a token; each of the next ``size`` inputs is
the hidden state the step before computed (the latent); then the end token is fed as a token (forced, and
written in ``tokens``) and text generation goes on. ``tokens`` holds the pad token at each latent step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

FEEDS = ("norm", "prenorm")
"""What a latent step feeds back: the final-norm hidden state (``"norm"``, as Hugging Face returns the last of
``hidden_states``) or the last layer's output before the final norm (``"prenorm"``)."""

KINDS = ("none", "zeros", "noise", "add_noise", "swap", "mean", "drop_slots", "drop_block", "drop_markers")
"""The interventions on generated latents, by index (:class:`Intervention`'s ``kind``):

- ``none``: the latents as computed;
- ``zeros``: each fed-back latent replaced by zeros;
- ``noise``: replaced by Gaussian noise at the latent's scale: ``scale`` x the latent's RMS x N(0, I), drawn
  from the row's key;
- ``add_noise``: that noise added to the latent;
- ``swap``: replaced by the source's latent at the same block and step (``source``, e.g. another instance's
  latents from a clean run, rows permuted by the caller);
- ``mean``: replaced by the mean over the source's rows of its latent at the same block and step;
- ``drop_slots``: fed as computed, then the block's latent slots removed from the attention of everything
  after the block (the end marker included), the markers kept;
- ``drop_block``: as ``drop_slots``, and the two markers removed too (the end marker after its own step);
- ``drop_markers``: fed as computed, then the block's two markers removed from the attention of everything
  after the block (the start marker from the end marker's step on, the end marker after its own step), the
  latent slots kept: ``drop_block`` is ``drop_slots`` and ``drop_markers`` together.

The drop kinds change no latent of the block itself (its slots read its start marker as they are computed):
only what follows the block loses the parts dropped (:func:`dropped`).

Where the source has no latent at a block (``swap``: the row's ``source_blocks``; ``mean``: no row), the latent
is fed as computed."""


def _token(value, name: str):
    if isinstance(value, str):
        if not value:
            raise ValueError(f"LatentMode {name} must be a token id or a non-empty token string, got ''")
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"LatentMode {name} must be a token id (int >= 0) or a token string, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class LatentMode:
    """The latent mode of a checkpoint trained to write its own latents.

    Attributes:
      start: the token that opens a latent block (id, or its string in the tokenizer).
      end: the token fed after ``size`` latents, closing the block.
      pad: the token written in ``tokens`` at each latent step.
      size: latents per block (>= 1; the published methods use 4, 8 or 10).
      feed: ``"norm"`` (the final-norm hidden state) or ``"prenorm"`` (the last layer's output before it).
    """

    start: int | str
    end: int | str
    pad: int | str
    size: int
    feed: str = "norm"

    def __post_init__(self):
        for name in ("start", "end", "pad"):
            object.__setattr__(self, name, _token(getattr(self, name), name))
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise ValueError(f"LatentMode size must be a positive integer, got {self.size!r}")
        object.__setattr__(self, "size", int(self.size))
        if self.feed not in FEEDS:
            raise ValueError(f"LatentMode feed must be one of {FEEDS}, got {self.feed!r}")
        ids = [t for t in (self.start, self.end, self.pad) if isinstance(t, int)]
        if len(set(ids)) != len(ids):
            raise ValueError(f"LatentMode start, end and pad must be three different tokens, got {self}")

    @property
    def resolved(self) -> bool:
        """Whether the three tokens are ids (no string left to look up)."""
        return all(isinstance(t, int) for t in (self.start, self.end, self.pad))

    def resolve(self, tokenizer) -> LatentMode:
        """The same mode with each token string replaced by its id in ``tokenizer`` (a
        :class:`~tokdyn.models.qwen2_5_vl.chat.Chat`, a ``tokenizers.Tokenizer`` or anything with
        ``token_to_id``); ValueError naming a string the tokenizer does not hold, and the added tokens it does."""
        tok = getattr(tokenizer, "tokenizer", tokenizer)
        if not hasattr(tok, "token_to_id"):
            raise TypeError(f"resolve needs a Chat or a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        out = {}
        for name in ("start", "end", "pad"):
            value = getattr(self, name)
            if isinstance(value, str):
                found = tok.token_to_id(value)
                if found is None:
                    added = sorted(getattr(tok, "get_added_tokens_decoder", dict)().values(), key=str)
                    names = [getattr(a, "content", str(a)) for a in added]
                    raise ValueError(
                        f"LatentMode {name}={value!r} is not a token of this tokenizer; its added tokens are "
                        f"{names[:20]}{' ...' if len(names) > 20 else ''}"
                    )
                value = int(found)
            out[name] = value
        return dataclasses.replace(self, **out)

    @classmethod
    def from_tokenizer(cls, tokenizer, start: str, end: str, pad: str, size: int, feed: str = "norm") -> LatentMode:
        """A resolved :class:`LatentMode` from token strings looked up in ``tokenizer`` (see :meth:`resolve`)."""
        return cls(start, end, pad, size, feed).resolve(tokenizer)

    def check(self, vocab: int, eos: tuple[int, ...] = ()) -> None:
        """ValueError unless the tokens are ids in ``[0, vocab)`` and none is a stop token."""
        if not self.resolved:
            raise ValueError(
                f"{self} names tokens by string: resolve them first with latent.resolve(chat) (or "
                "LatentMode.from_tokenizer)"
            )
        for name in ("start", "end", "pad"):
            value = getattr(self, name)
            if value >= vocab:
                raise ValueError(f"LatentMode {name}={value} is not a token id of this model (vocabulary {vocab})")
            if value in eos:
                raise ValueError(
                    f"LatentMode {name}={value} is a stop token ({list(eos)}); it cannot open or close a block"
                )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Intervention:
    """What is done to each row's latents while they are generated; every field is traced.

    Attributes:
      kind: (B,) int index into :data:`KINDS`.
      scale: (B,) float, the noise's scale for ``noise`` and ``add_noise`` (ignored by the other kinds).
      source: (B, K, size, hidden) latents for ``swap`` and ``mean`` (e.g. a clean run's
        :class:`Generation`'s ``latents``), or shape (B, 0, size, hidden) when unused.
      source_blocks: (B,) int, how many blocks of each row of ``source`` hold latents.
    """

    kind: jax.Array
    scale: jax.Array
    source: jax.Array
    source_blocks: jax.Array

    @classmethod
    def make(cls, kinds, batch: int, size: int, hidden: int, scale=1.0, source=None, source_blocks=None):
        """An :class:`Intervention` for a batch of ``batch`` rows from host values: ``kinds`` one name of
        :data:`KINDS` (or index) for every row, or one per row; ``scale`` a number or one per row; ``source``
        (B, K, size, hidden) and ``source_blocks`` (B,) (default: K each) for ``swap``/``mean``. Checked:
        ValueError naming the argument."""
        names = [kinds] if isinstance(kinds, (str, int, np.integer)) else list(kinds)
        idx = []
        for k in names:
            if isinstance(k, str):
                if k not in KINDS:
                    raise ValueError(f"intervention kind {k!r} is not one of {KINDS}")
                idx.append(KINDS.index(k))
            elif isinstance(k, (int, np.integer)) and 0 <= k < len(KINDS):
                idx.append(int(k))
            else:
                raise ValueError(f"intervention kind {k!r} is not one of {KINDS} or an index into them")
        if len(idx) == 1:
            idx = idx * batch
        if len(idx) != batch:
            raise ValueError(f"intervention kinds: {len(idx)} given for a batch of {batch} rows")
        scale = np.broadcast_to(np.asarray(scale, np.float32), (batch,)) if np.ndim(scale) == 0 else scale
        scale = np.asarray(scale, np.float32)
        if scale.shape != (batch,) or not np.isfinite(scale).all() or (scale < 0).any():
            raise ValueError(f"intervention scale must be one finite number >= 0 or {batch} of them, got {scale}")
        needs_source = any(KINDS[i] in ("swap", "mean") for i in idx)
        if source is None:
            if needs_source:
                raise ValueError("interventions 'swap' and 'mean' need source=(B, K, size, hidden) latents")
            source = np.zeros((batch, 0, size, hidden), np.float32)
        shape = tuple(np.shape(source))
        if len(shape) != 4 or shape[0] != batch or shape[2:] != (size, hidden):
            raise ValueError(f"intervention source must be ({batch}, K, {size}, {hidden}), got shape {shape}")
        if source_blocks is None:
            source_blocks = np.full((batch,), shape[1], np.int32)
        source_blocks = np.asarray(source_blocks)
        if source_blocks.shape != (batch,) or (source_blocks < 0).any() or (source_blocks > shape[1]).any():
            raise ValueError(f"source_blocks must be {batch} counts in [0, {shape[1]}], got {source_blocks}")
        return cls(
            jnp.asarray(idx, jnp.int32),
            jnp.asarray(scale),
            jnp.asarray(source, jnp.float32),
            jnp.asarray(source_blocks, jnp.int32),
        )


DROPS = {"drop_slots": (True, False), "drop_markers": (False, True), "drop_block": (True, True)}
"""The drop kinds of :data:`KINDS` and what each removes from the attention of what follows a block: (its
latent slots, its two markers)."""


def dropped(kind: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Whether each row's intervention ``kind`` (B,) (indices into :data:`KINDS`) removes its blocks' latent
    slots, and their markers, from the attention of what follows them (:data:`DROPS`): two (B,) bools."""
    table = np.asarray([DROPS.get(k, (False, False)) for k in KINDS], bool)  # (kinds, 2)
    parts = jnp.asarray(table)[kind]
    return parts[..., 0], parts[..., 1]


def rms(x: jax.Array) -> jax.Array:
    """The root mean square of ``x`` (..., hidden) over its last axis, in float32: (..., 1)."""
    return jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))


def source_mean(iv: Intervention) -> tuple[jax.Array, jax.Array]:
    """The mean over the source's rows of its latents at each block and step, (K, size, hidden), over the rows
    that hold that block, and how many rows do (K,)."""
    n_src = iv.source.shape[1]
    weight = (jnp.arange(n_src)[None, :] < iv.source_blocks[:, None]).astype(jnp.float32)  # (B, K)
    count = weight.sum(0)
    total = jnp.einsum("bk,bksd->ksd", weight, iv.source.astype(jnp.float32))
    return total / jnp.maximum(count, 1.0)[:, None, None], count


def intervene(
    iv: Intervention, mean: tuple[jax.Array, jax.Array], latent: jax.Array, block: jax.Array, step: jax.Array, keys
) -> jax.Array:
    """The latent fed back in place of ``latent`` (B, hidden), the one computed at step ``step`` (B,) of block
    ``block`` (B,) of each row, under each row's intervention; ``mean`` is :func:`source_mean`'s, ``keys`` (B,)
    the rows' noise keys for this step. Rows of kinds ``none``, ``drop_slots``, ``drop_block`` and
    ``drop_markers`` get ``latent`` unchanged."""
    b, d = latent.shape
    x = latent.astype(jnp.float32)
    noise = jax.vmap(lambda k: jax.random.normal(k, (d,), jnp.float32))(keys) * rms(x) * iv.scale[:, None]
    n_src = iv.source.shape[1]
    swapped, mean_x = x, x
    if n_src:
        kb = jnp.clip(block, 0, n_src - 1)
        got = iv.source[jnp.arange(b), kb, step].astype(jnp.float32)  # (B, hidden)
        swapped = jnp.where((block < iv.source_blocks)[:, None], got, x)
        per_step, count = mean
        mean_x = jnp.where((count[kb] > 0)[:, None], per_step[kb, step], x)
    options = jnp.stack([x, jnp.zeros_like(x), noise, x + noise, swapped, mean_x, x, x, x])  # (kinds, B, hidden)
    return options[iv.kind, jnp.arange(b)].astype(latent.dtype)


@dataclasses.dataclass(frozen=True)
class Generation:
    """What latent-mode generation hands back (host arrays).

    Attributes:
      tokens: (B, N) the ids generated: the latent pad at each latent step, the end token after each block,
        the checkpoint's pad id after a row stops.
      latents: (B, K, size, hidden) float32: the latents each row computed, block by block (K: the most
        blocks of any row; zeros past a row's ``n_blocks`` or past the last step). Under an intervention these
        are the computed states, before the intervention replaced them.
      n_blocks: (B,) the blocks each row opened (a block cut by ``max_new_tokens`` counts).
      block_steps: (B, K) the step of each block's start token (-1 past ``n_blocks``).
      scores: (B, N, C) the model's log-probabilities of ``score_ids`` at every step (before the repetition
        penalty and the sampling filters), or None.
      score_ids: the C token ids of ``scores``.
      stop_steps: (B,) the step of each row's stop token (N for a row that did not stop).
      pad_token_id: the id a stopped row is filled with.
      latent: the :class:`LatentMode`, or None.
    """

    tokens: np.ndarray
    latents: np.ndarray
    n_blocks: np.ndarray
    block_steps: np.ndarray
    scores: np.ndarray | None
    score_ids: tuple[int, ...]
    stop_steps: np.ndarray
    pad_token_id: int
    latent: LatentMode | None

    @property
    def stopped(self) -> np.ndarray:
        """(B,) whether each row emitted a stop token."""
        return self.stop_steps < self.tokens.shape[1]

    def answer_ids(self, row: int, after_latents: bool = False) -> np.ndarray:
        """Row ``row``'s tokens without the fill after its stop token, the latent pads and (with
        ``after_latents``) everything up to its last block's end token."""
        ids = self.tokens[row]
        keep = np.arange(len(ids)) <= self.stop_steps[row]
        if self.latent is not None:
            size = self.latent.size
            for s in self.block_steps[row, : self.n_blocks[row]]:
                keep[s + 1 : s + 1 + size] = False
                if after_latents:
                    keep[: s + size + 2] = False
        return ids[keep]

    def text(self, chat, after_latents: bool = False, skip_special_tokens: bool = True) -> list[str]:
        """Each row's text through ``chat`` (a :class:`~tokdyn.models.qwen2_5_vl.chat.Chat`), without the fill
        after the stop token and the latent pads (:meth:`answer_ids`); with ``after_latents``, only what follows
        the last block."""
        return [
            chat.decode(self.answer_ids(r, after_latents), skip_special_tokens=skip_special_tokens)
            for r in range(len(self.tokens))
        ]
