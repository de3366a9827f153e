"""A tiny decoder-only transformer (Flax linen) with a latent mode, behind one functional protocol.

The sequence (:class:`Layout`) is
``[G*G image patches | Q question tokens | <latent_start> L latents <latent_end> | K caption | <answer>]``,
the latent block present when ``latent_mode != "none"``, the caption when ``caption_len > 0``.
In latent mode ``"feedback"`` latent i's input is ``project`` of the previous position's
last-layer hidden state (run with a key/value cache); in ``"pause"`` the latent positions hold a
learned ``<pause>`` embedding.

:meth:`Model.apply` is the protocol every diagnostic uses (:class:`~tokdyn.models.protocol.ApplyFn`, its
output :class:`~tokdyn.models.protocol.Outputs` with every field's shape, both defined in
:mod:`tokdyn.models.protocol` and re-exported here)::

    apply(params, batch, *, latents=None, intervene=None) -> Outputs(logits, hidden, attention, latents)

with :func:`replace`, :func:`add` and :func:`scale` building interventions, and the optional
``drop`` and ``inject`` keywords. The layout, the feedback and the protocol's keywords in detail:
:ref:`latent-model`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.models.protocol import ApplyFn, Outputs  # noqa: F401 -- re-exported: the protocol's types
from tokdyn.data import grid_tasks as tasks

LATENT_MODES = ("none", "feedback", "pause")
PROJECTIONS = ("none", "layernorm", "linear")


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of the model (shapes and control flow).

    Attributes:
      task: the tasks (grid size, colours: the image and vocabulary shapes).
      width: D, the residual stream width.
      depth: transformer blocks.
      heads: attention heads (dividing width).
      mlp_ratio: hidden width of each block's MLP, in multiples of width.
      latent_mode: "none", "feedback" (latent i reads project(previous final hidden state)) or
        "pause" (latent slots hold the learned <pause> token).
      n_latents: L latent positions (0 with latent_mode="none").
      caption_len: K caption tokens between the latents and <answer> (0: none).
      projection: the feedback projection, "none", "layernorm" or "linear".
      use_image: False replaces every image by the empty grid (the no-image control).
      text_positions: size of the text position table; 0: exactly this layout's text length.
    """

    task: tasks.Config = tasks.Config()
    width: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    latent_mode: str = "none"
    n_latents: int = 0
    caption_len: int = 0
    projection: str = "layernorm"
    use_image: bool = True
    text_positions: int = 0

    def validate(self) -> "Config":
        """Check every field (and the task's); raise ``ValueError``/``TypeError`` naming the field. Returns
        ``self``."""
        self.task.validate()
        _checks.positive_int("width", self.width)
        _checks.positive_int("depth", self.depth)
        _checks.positive_int("heads", self.heads)
        _checks.positive_int("mlp_ratio", self.mlp_ratio)
        if self.width % self.heads:
            raise ValueError(f"width must be a multiple of heads, got width={self.width}, heads={self.heads}")
        _checks.choice("latent_mode", self.latent_mode, LATENT_MODES)
        _checks.choice("projection", self.projection, PROJECTIONS)
        if self.latent_mode == "none":
            _checks.positive_int("n_latents", self.n_latents, minimum=0)
            if self.n_latents:
                raise ValueError(f"n_latents must be 0 when latent_mode='none', got {self.n_latents}")
        else:
            _checks.positive_int("n_latents", self.n_latents)
        _checks.positive_int("caption_len", self.caption_len, minimum=0)
        _checks.positive_int("text_positions", self.text_positions, minimum=0)
        need = self.layout.length - self.task.n_patches
        if self.text_positions and self.text_positions < need:
            raise ValueError(f"text_positions must be 0 or >= the text length {need}, got {self.text_positions}")
        return self

    @property
    def layout(self) -> "Layout":
        """The sequence layout of this configuration (:meth:`Layout.of`)."""
        return Layout.of(self)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Positions of each segment in the sequence (Python ints: static)."""

    patches: slice
    question: slice
    latent_start: Optional[int]
    latents: slice
    latent_end: Optional[int]
    caption: slice
    answer: int
    length: int

    @staticmethod
    def of(cfg: Config) -> "Layout":
        """The positions of every part of the sequence for the configuration ``cfg``."""
        p = cfg.task.n_patches
        q = p + tasks.QUESTION_LEN
        has = cfg.latent_mode != "none"
        ls = q if has else None
        lat = slice(q + 1, q + 1 + cfg.n_latents) if has else slice(q, q)
        le = lat.stop if has else None
        c0 = le + 1 if has else q
        cap = slice(c0, c0 + cfg.caption_len)
        return Layout(slice(0, p), slice(p, q), ls, lat, le, cap, cap.stop, cap.stop + 1)


# --- Flax modules ---------------------------------------------------------------------------------


class Block(nn.Module):
    """One pre-LN transformer block with causal self-attention over a key/value cache (``__call__``
    documents its inputs and outputs)."""

    width: int
    heads: int
    mlp_ratio: int

    @nn.compact
    def __call__(self, x, cache=None, key_mask=None):
        """Pre-LN block over ``x`` (B, t, D), the positions after the ``cache``d ones.

        ``cache`` is ``(k, v)``, each (B, t_past, H, dh), of the earlier positions (None: none).
        Position i of ``x`` attends causally to every cached position and to x[:, :i+1], except
        the keys where ``key_mask`` (B, t_past + t) is False (None: all keys).
        Returns the block output (B, t, D), the attention weights (B, H, t, t_past + t) and the
        keys/values of all t_past + t positions (the next call's cache).
        """
        b, t, d = x.shape
        h, dh = self.heads, self.width // self.heads
        y = nn.LayerNorm(name="ln1")(x)
        qkv = nn.Dense(3 * d, name="qkv")(y).reshape(b, t, 3, h, dh)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, t, H, dh)
        if cache is not None:
            k = jnp.concatenate([cache[0], k], 1)  # (B, t_past + t, H, dh)
            v = jnp.concatenate([cache[1], v], 1)
        past = k.shape[1] - t
        mask = jnp.arange(past + t)[None, :] <= past + jnp.arange(t)[:, None]  # (t, t_past + t)
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dh)
        if key_mask is not None:
            mask = mask[None, None] & key_mask[:, None, None, :]
        s = jnp.where(mask, s, jnp.finfo(s.dtype).min)
        a = jax.nn.softmax(s, axis=-1)  # (B, H, t, t_past + t)
        o = jnp.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, t, d)
        x = x + nn.Dense(d, name="out")(o)
        y = nn.LayerNorm(name="ln2")(x)
        y = nn.Dense(d, name="fc2")(nn.gelu(nn.Dense(self.mlp_ratio * d, name="fc1")(y)))
        return x + y, a, (k, v)


class Network(nn.Module):
    """The Flax network of :class:`Model`: embeddings, ``depth`` blocks, the final LayerNorm, the
    read-out and the latent projection, called through its methods (``Model`` composes them)."""

    cfg: Config

    def setup(self):
        """Create the embeddings, the transformer blocks, the final LayerNorm, the read-out and the latent
        projection (Flax's ``setup``)."""
        c, init = self.cfg, nn.initializers.normal(0.02)
        g, d = c.task.grid_size, c.width
        self.tok = nn.Embed(c.task.vocab.size, d, embedding_init=init)
        self.colour = nn.Embed(c.task.n_colours + 1, d, embedding_init=init)  # one-hot @ W
        self.row = nn.Embed(g, d, embedding_init=init)
        self.col = nn.Embed(g, d, embedding_init=init)
        self.pos = nn.Embed(c.text_positions or c.layout.length - c.task.n_patches, d, embedding_init=init)
        self.blocks = [Block(d, c.heads, c.mlp_ratio, name=f"block{i}") for i in range(c.depth)]
        self.ln_f = nn.LayerNorm()
        self.head = nn.Dense(c.task.vocab.size)
        if c.projection == "layernorm":
            self.proj = nn.LayerNorm()
        elif c.projection == "linear":
            self.proj = nn.Sequential([nn.LayerNorm(), nn.Dense(d)])

    def embed_patches(self, image):  # image (B, G, G) -> (B, G*G, D)
        """Patch embeddings (B, G*G, D) of ``image`` (B, G, G): colour embedding plus row and column
        embeddings."""
        g = self.cfg.task.grid_size
        rows = self.row(jnp.arange(g))[:, None, :]
        cols = self.col(jnp.arange(g))[None, :, :]
        e = self.colour(image) + rows + cols  # (B, G, G, D)
        return e.reshape(image.shape[0], g * g, -1)

    def embed_text(self, tokens):  # tokens (B, T_text) -> (B, T_text, D)
        """Text embeddings (B, T_text, D) of ``tokens`` (B, T_text): token plus learned position embeddings."""
        return self.tok(tokens) + self.pos(jnp.arange(tokens.shape[1]))[None]

    def backbone(self, x, cache=None, key_mask=None):
        """Blocks over x (B, t, D) after the positions held in ``cache`` (one (k, v) per block, or
        None); ``key_mask`` (B, t_past + t) masks keys out (see :class:`Block`). Returns final
        (B, t, D) after the last LayerNorm, hidden (B, depth+1, t, D), attention
        (B, depth, H, t, t_past + t) and the extended cache."""
        hidden, attn, new_cache = [x], [], []
        for i, blk in enumerate(self.blocks):
            x, a, kv = blk(x, None if cache is None else cache[i], key_mask)
            hidden.append(x)
            attn.append(a)
            new_cache.append(kv)
        return self.ln_f(x), jnp.stack(hidden, 1), jnp.stack(attn, 1), tuple(new_cache)

    def project(self, h):
        """The latent projection of hidden states ``h`` (..., D): the identity (``projection='none'``), a
        LayerNorm or LayerNorm then Dense."""
        return h if self.cfg.projection == "none" else self.proj(h)

    def unembed(self, h):
        """Next-token logits (..., V) of hidden states ``h`` (..., D)."""
        return self.head(h)

    def __call__(self, image, tokens):  # used only by init: touches every parameter
        x = jnp.concatenate([self.embed_patches(image), self.embed_text(tokens)], 1)
        out = self.backbone(x)[0]
        return self.unembed(self.project(out))


@functools.partial(jax.jit, static_argnums=0)
def _init(cfg: Config, key):
    g = cfg.task.grid_size
    return Network(cfg).init(
        key, jnp.zeros((1, g, g), jnp.int32), jnp.zeros((1, cfg.layout.length - cfg.task.n_patches), jnp.int32)
    )


# --- interventions ----------------------------------------------------------------------------------


def replace(positions, values) -> Callable:
    """Set the embeddings at ``positions`` (ints) to ``values`` ((len(positions), D) or (B, len, D))."""
    idx = np.asarray(positions, int)
    return lambda x: x.at[:, idx].set(jnp.broadcast_to(values, (x.shape[0], len(idx), x.shape[2])))


def add(positions, delta) -> Callable:
    """Add ``delta`` ((D,), (len, D) or (B, len, D)) to the embeddings at ``positions``."""
    idx = np.asarray(positions, int)
    return lambda x: x.at[:, idx].add(delta)


def scale(positions, factor) -> Callable:
    """Multiply the embeddings at ``positions`` by ``factor`` (traceable)."""
    idx = np.asarray(positions, int)
    return lambda x: x.at[:, idx].multiply(factor)


# --- the functional boundary -----------------------------------------------------------------------


def _shape_error(name, got, want):
    raise ValueError(f"{name} must have shape {want} for this model config, got {tuple(got)}")


def check_batch(cfg: Config, batch, latents=None, inject=None, drop=None) -> int:
    """Check the shapes of a batch and of the protocol's optional arguments against ``cfg``.

    Args:
      cfg: the model's :class:`Config`.
      batch: B instances: ``image`` (B, G, G), ``question`` (B, Q) and, with a caption, ``caption``
        (B, K).
      latents: optional (B, L, D) latents (``latent_mode="feedback"`` only).
      inject: optional (B, P) bool mask over the image patches.
      drop: optional (B, T) bool mask over the positions.

    Returns:
      B, the batch size.

    Raises:
      ValueError, TypeError: naming the argument whose shape or dtype does not fit.
    """
    g = cfg.task.grid_size
    img = jnp.shape(batch.image)
    if len(img) != 3 or img[1:] != (g, g):
        _shape_error("batch.image", img, f"(B, {g}, {g})")
    b = img[0]
    if jnp.shape(batch.question) != (b, tasks.QUESTION_LEN):
        _shape_error("batch.question", jnp.shape(batch.question), f"({b}, {tasks.QUESTION_LEN})")
    if cfg.caption_len and jnp.shape(batch.caption) != (b, cfg.caption_len):
        _shape_error("batch.caption", jnp.shape(batch.caption), f"({b}, {cfg.caption_len})")
    if latents is not None:
        if cfg.latent_mode != "feedback":
            raise ValueError(f"latents can only be given when latent_mode='feedback', got {cfg.latent_mode!r}")
        if jnp.shape(latents) != (b, cfg.n_latents, cfg.width):
            _shape_error("latents", jnp.shape(latents), f"({b}, {cfg.n_latents}, {cfg.width})")
    if inject is not None:
        if jnp.shape(inject) != (b, cfg.task.n_patches):
            _shape_error("inject", jnp.shape(inject), f"({b}, {cfg.task.n_patches})")
        if jnp.result_type(inject) != jnp.bool_:
            raise TypeError(
                f"inject must be a boolean mask over the image patches, got dtype {jnp.result_type(inject)}"
            )
    if drop is not None:
        if jnp.shape(drop) != (b, cfg.layout.length):
            _shape_error("drop", jnp.shape(drop), f"({b}, {cfg.layout.length})")
        if jnp.result_type(drop) != jnp.bool_:
            raise TypeError(f"drop must be a boolean mask over the positions, got dtype {jnp.result_type(drop)}")
    return b


class _Injection(NamedTuple):
    """Copies of the P image patches inserted at position ``at`` (:ref:`latent-model`)."""

    mask: jax.Array  # (B, P) bool: which copies are seen
    at: int
    n: int

    def extend(self, x):  # (B, T, D) -> (B, T + P, D)
        return jnp.concatenate([x[:, : self.at], x[:, : self.n], x[:, self.at :]], 1)

    def key_mask(self, keep):  # (B, T) -> (B, T + P)
        return jnp.concatenate([keep[:, : self.at], self.mask, keep[:, self.at :]], 1)

    def shift(self, i):  # a position of the layout -> its position in the extended sequence
        return i + self.n if i >= self.at else i

    def shrink(self, logits, hidden, attn):
        """Drop the copies' rows; the attention paid to a copy goes to its patch."""
        a, n = self.at, self.n
        cut = lambda z, axis: jnp.concatenate(
            [jax.lax.slice_in_dim(z, 0, a, axis=axis), jax.lax.slice_in_dim(z, a + n, z.shape[axis], axis=axis)], axis
        )
        attn = attn.at[..., :n].add(attn[..., a : a + n])
        return cut(logits, 1), cut(hidden, 2), cut(cut(attn, 3), 4)


@dataclasses.dataclass(frozen=True)
class Model:
    """``init(key) -> params`` and the protocol ``apply(params, batch, *, latents, intervene)``."""

    cfg: Config = Config()

    def __post_init__(self):
        self.cfg.validate()

    @property
    def net(self) -> Network:
        """The Flax network (:class:`Network`) of this configuration."""
        return Network(self.cfg)

    @property
    def layout(self) -> Layout:
        """The sequence layout (:class:`Layout`) of this configuration."""
        return self.cfg.layout

    def init(self, key):
        """Initial parameters (compiled once per config; traceable under vmap/jit)."""
        return _init(self.cfg, key)

    def text_tokens(self, batch):
        """The token ids of the text part (B, T - G*G); latent slots hold <pause> (or <pad>)."""
        c, v, b = self.cfg, self.cfg.task.vocab, batch.question.shape[0]
        parts = [jnp.asarray(batch.question, jnp.int32)]
        if c.latent_mode != "none":
            slot = v.pause if c.latent_mode == "pause" else v.pad
            parts += [
                jnp.full((b, 1), v.latent_start),
                jnp.full((b, c.n_latents), slot),
                jnp.full((b, 1), v.latent_end),
            ]
        if c.caption_len:
            parts.append(jnp.asarray(batch.caption, jnp.int32))
        parts.append(jnp.full((b, 1), v.answer))
        return jnp.concatenate(parts, 1).astype(jnp.int32)

    def embed(self, params, batch):
        """Input embeddings (B, T, D) before latent feedback (latent slots hold <pad>/<pause>)."""
        image = jnp.asarray(batch.image, jnp.int32)
        if not self.cfg.use_image:
            image = jnp.zeros_like(image)
        net = self.net
        patches = net.apply(params, image, method=Network.embed_patches)
        text = net.apply(params, self.text_tokens(batch), method=Network.embed_text)
        x = jnp.concatenate([patches, text], 1)
        if self.cfg.latent_mode == "feedback":
            lat = self.layout.latents
            x = x.at[:, lat].set(0.0)
        return x

    def apply(self, params, batch, *, latents=None, intervene=None, inject=None, drop=None) -> Outputs:
        """The ``apply`` protocol (:class:`ApplyFn`): the :class:`Outputs` of ``params`` on ``batch``.

        Args:
          params: the model's weights (from :meth:`init`).
          batch: B instances: ``image`` (B, G, G) colour indices, ``question`` (B, Q) tokens and,
            when ``caption_len > 0``, ``caption`` (B, K) tokens.
          latents: optional (B, L, D) float, replacing the fed-back latents (one full pass, no
            feedback loop; ``latent_mode="feedback"`` only).
          intervene: optional function ``(B, T, D) -> (B, T, D)`` applied to the input embeddings
            of every pass, after the latent feedback is written.
          inject: optional (B, P) bool over the P = G*G image patches: copies of the selected
            patches are inserted before the latent block (DMLR's visual injection).
          drop: optional (B, T) bool: the True positions are removed from attention.

        Returns:
          :class:`Outputs` in the sequence layout of :class:`Layout` (B, T positions).
        """
        c, lay, net = self.cfg, self.layout, self.net
        b = check_batch(c, batch, latents, inject, drop)
        edit = intervene if intervene is not None else (lambda x: x)
        ins = None if inject is None else _Injection(jnp.asarray(inject), lay.question.stop, c.task.n_patches)
        keep = None if drop is None else ~jnp.asarray(drop)
        if ins is not None:
            keep = ins.key_mask(jnp.ones((b, lay.length), bool) if keep is None else keep)
        x = self.embed(params, batch)
        if c.latent_mode == "feedback" and latents is None:
            return self._feedback(params, x, edit, ins, keep)
        if c.latent_mode == "feedback":
            proj = net.apply(params, jnp.asarray(latents, x.dtype), method=Network.project)
            x = x.at[:, lay.latents].set(proj)
        else:
            latents = jnp.zeros((b, 0, c.width), x.dtype)
        x = edit(x)
        if ins is None:
            out, hidden, attn, _ = net.apply(params, x, None, keep, method=Network.backbone)
            return Outputs(net.apply(params, out, method=Network.unembed), hidden, attn, latents)
        out, hidden, attn, _ = net.apply(params, ins.extend(x), None, keep, method=Network.backbone)
        logits, hidden, attn = ins.shrink(net.apply(params, out, method=Network.unembed), hidden, attn)
        return Outputs(logits, hidden, attn, latents)

    def _feedback(self, params, x, edit, ins: Optional[_Injection] = None, keep=None) -> Outputs:
        """Latent feedback with a key/value cache: one pass over the prefix up to
        ``<latent_start>``, one single-position pass per latent (its input is ``project`` of the
        previous position's final hidden state), one pass over the rest. Equal to L + 1 full causal
        passes (causality: a later position never changes an earlier one) at about the cost of one.
        ``edit`` is applied to the whole (B, T, D) embedding array before each pass and the pass
        reads its own positions, so position-wise edits act exactly as in a full pass. With ``ins``
        the passes run over the extended sequence (the copies join the first pass)."""
        c, lay, net = self.cfg, self.layout, self.net
        s, t = lay.latents.start, lay.length
        segments = [(0, s)] + [(s + i, s + i + 1) for i in range(c.n_latents)] + [(s + c.n_latents, t)]
        grow = (lambda z: z) if ins is None else ins.extend
        at = (lambda i: i) if ins is None else ins.shift
        full = at(t)
        keys = keep  # (B, full) or None
        outs, hiddens, attns, fed, cache = [], [], [], [], None
        for i, (a, e) in enumerate(segments):
            if 0 < i <= c.n_latents:  # latent i-1 gets the previous position's final state
                h = outs[-1][:, -1]  # (B, D)
                fed.append(h)
                x = x.at[:, a].set(net.apply(params, h, method=Network.project))
            a, e = at(a), at(e)
            out, hid, att, cache = net.apply(
                params, grow(edit(x))[:, a:e], cache, None if keys is None else keys[:, :e], method=Network.backbone
            )
            outs.append(out)
            hiddens.append(hid)
            attns.append(jnp.pad(att, [(0, 0)] * 4 + [(0, full - e)]))  # (B, depth, H, e - a, T)
        logits = net.apply(params, jnp.concatenate(outs, 1), method=Network.unembed)
        hidden, attn = jnp.concatenate(hiddens, 2), jnp.concatenate(attns, 3)
        if ins is not None:
            logits, hidden, attn = ins.shrink(logits, hidden, attn)
        return Outputs(logits, hidden, attn, jnp.stack(fed, 1))

    def final_hidden(self, params, x):
        """The last-layer hidden states (after the final LayerNorm) for input embeddings x (B, T, D)."""
        return self.net.apply(params, x, method=Network.backbone)[0]
