"""Training the organism: a Qwen2.5-VL of any configuration (a tiny one on a CPU; the same code for a 3B on a
GPU) fine-tuned on the organism's tasks (:mod:`tokdyn.models.organism.tasks`: an image, a multiple-choice
question, the option's letter) through the one training loop (:mod:`tokdyn.train`), under the published
recipes (:data:`VARIANTS`), many seeds (and settings) vmapped in one compiled program, each trained model saved
as a Hugging Face checkpoint any tool opens (:func:`save`).

A training sequence is the chat template's user turn (the image and the question with its options), then the
assistant's turn: with a latent block, its start token, ``n_latents`` latents that are the model's own fed-back
final-norm states and its end token, the same rule as latent-mode generation
(:mod:`tokdyn.models.vlm.training`); then the caption where the recipe trains one; then the answer's letter
and ``<|im_end|>``. The recipes (:class:`Variant`):

- ``direct``: the answer alone; ``no_image``: the same with a black image;
- ``text``: the caption, then the answer (a text-space chain of thought);
- ``latent``: a block of fed-back latents, then the answer (answer-only supervision, as the latent-reasoning
  papers' unsupervised arm);
- ``latent_mirage``, ``latent_lvr``, ``latent_monet``: the same with the latents aligned to the helper image's
  visual features (:data:`tokdyn.models.vlm.training.ALIGNMENTS`);
- ``pause``: the block's markers and slots, the slots the pad token's embedding (no latent fed back);
- ``coconut``: a curriculum from the caption to the latents: stage ``i`` of ``curriculum_stages + 1`` replaces
  the caption's first ``round(K i / S)`` tokens by ``round(L i / S)`` latents (the tokens leave the sequence).

Keys: seed ``s`` trains from ``fold_in(fold_in(key(root_seed), 1), s)`` (its initial parameters from
``fold_in(run key, 0)``, step ``t``'s batch from ``fold_in(run key, t)``, drawn with replacement from the
training pool every model shares); the pools from ``fold_in(key(root_seed), 0)``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, train
from tokdyn.models import qwen2_5_vl
from tokdyn.models.organism import checkpoint as checkpoint_lib
from tokdyn.models.organism import tasks as tasks_lib
from tokdyn.models.organism import tokenizer as tokenizer_lib
from tokdyn.models.vlm import chat as chat_lib
from tokdyn.models.vlm import latent as latent_lib
from tokdyn.models.vlm import training as vlm_training
from tokdyn.train import optim


@dataclasses.dataclass(frozen=True)
class Variant:
    """What a recipe trains (static): a value, so a new recipe is a ``Variant`` handed wherever a recipe's name
    is taken (:func:`train_models`, :func:`answer_accuracy`, :func:`save` ...).

    Attributes:
      block: one of :data:`BLOCKS`: ``"none"``, ``"feedback"`` (fed-back latents) or ``"pause"`` (the slots'
        pad embedding).
      caption: whether the caption is part of the sequence (and trained).
      align: the latents' alignment to the helper image (with ``block="feedback"``): None, one of
        :data:`tokdyn.models.vlm.training.ALIGNMENTS`, or a callable ``(layout, params, batch, forward) ->
        scalar`` (:func:`tokdyn.models.vlm.training.alignment`).
      use_image: False gives the model a black image.
      curriculum: whether the caption gives way to latents stage by stage (coconut; with a caption and
        ``block="feedback"``).
    """

    block: str = "none"
    caption: bool = False
    align: Optional[object] = None
    use_image: bool = True
    curriculum: bool = False

    def validate(self) -> "Variant":
        """Check every field and their combination; a ValueError/TypeError naming the field. Returns ``self``."""
        _checks.choice("block", self.block, BLOCKS)
        for f in ("caption", "use_image", "curriculum"):
            if not isinstance(getattr(self, f), bool):
                raise TypeError(f"{f} must be a bool, got {getattr(self, f)!r}")
        if self.align is not None:
            vlm_training.check_alignment(self.align)
            if self.block != "feedback":
                raise ValueError(f"align needs block='feedback' (latents to align), got block={self.block!r}")
        if self.curriculum and not (self.caption and self.block == "feedback"):
            raise ValueError(
                f"curriculum needs caption=True and block='feedback' (a caption that gives way to latents), got "
                f"caption={self.caption!r}, block={self.block!r}"
            )
        return self


BLOCKS = ("none", "feedback", "pause")
"""What a recipe puts between the prompt and the answer (:attr:`Variant.block`)."""


VARIANTS = {
    "direct": Variant(),
    "no_image": Variant(use_image=False),
    "text": Variant(caption=True),
    "latent": Variant(block="feedback"),
    "latent_mirage": Variant(block="feedback", align="mirage"),
    "latent_lvr": Variant(block="feedback", align="lvr"),
    "latent_monet": Variant(block="feedback", align="monet"),
    "pause": Variant(block="pause"),
    "coconut": Variant(block="feedback", caption=True, curriculum=True),
}
"""The recipes, by name (the names the package's earlier Flax organism was trained under)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything static about training the organisms.

    Attributes:
      tasks: the tasks (:class:`tokdyn.models.organism.tasks.Config`: grid, colours, families, options).
      hidden_size: the decoder's width.
      layers: the decoder's layers.
      heads: attention heads (``kv_heads`` key/value heads).
      kv_heads: key/value heads (dividing ``heads``).
      intermediate_size: the decoder MLP's width.
      vision_depth: the vision tower's blocks.
      vision_width: the vision tower's width.
      rope_theta: the base of the decoder's multimodal rotary frequencies. A cell is found by matching the
        question's row and column to the image tokens' rotary positions, which MRoPE gives the last two thirds
        of each head's frequencies: at Qwen2.5-VL's 10,000 (1,000,000 in the published models) and 16-wide
        heads they turn by 0.003-0.1 radian a row or column; at 2 by 0.55-1.
      init_scale: the standard deviation of the initial weights (:func:`tokdyn.models.qwen2_5_vl.params.init`);
        at Qwen2.5-VL's published ``initializer_range`` of 0.02 a 64-wide model's attention stays near uniform
        for hundreds of steps. With both defaults the ``direct`` recipe reads a cell of ``read`` at 0.78 (train)
        after 2,000 steps where 10,000 and 0.02 gave 0.26-0.37 (``benchmarks/runs/cpu-2026-11-28-organism-
        learning-e991e1e/``).
      n_latents: latents a block holds (the last curriculum stage's).
      train: the optimiser's budget and schedule (:class:`tokdyn.train.optim.Config`).
      batch_size: instances a step, drawn with replacement from the pool.
      curriculum_stages: stages after the first (text) stage of the coconut curriculum.
      n_train: instances in the training pool.
      n_test: test instances (drawn from another stream than the pool's).
      n_val: validation instances (:func:`splits`; a third stream), on which a study judges convergence.
      seeds: seeds per setting (0..N-1).
      root_seed: the root PRNG seed of the data and every seed's run.
    """

    tasks: tasks_lib.Config = tasks_lib.Config()
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 96
    vision_depth: int = 2
    vision_width: int = 32
    rope_theta: float = 2.0
    init_scale: float = 0.15
    n_latents: int = 4
    train: optim.Config = optim.Config(steps=600, steps_per_call=100, warmup=50, decay="cosine", clip_norm=1.0)
    batch_size: int = 32
    curriculum_stages: int = 2
    n_train: int = 4096
    n_test: int = 512
    n_val: int = 256
    seeds: int = 2
    root_seed: int = 0

    def validate(self) -> "Config":
        """Check every field; a ValueError/TypeError naming it. Returns ``self``."""
        if not isinstance(self.tasks, tasks_lib.Config):
            raise TypeError(f"tasks must be a tokdyn.models.organism.tasks.Config, got {type(self.tasks).__name__}")
        self.tasks.validate()
        optim.check("train", self.train)
        for name in (
            "hidden_size",
            "layers",
            "heads",
            "kv_heads",
            "intermediate_size",
            "vision_depth",
            "vision_width",
            "n_latents",
            "batch_size",
            "curriculum_stages",
            "n_train",
            "n_test",
            "n_val",
            "seeds",
        ):
            _checks.positive_int(name, getattr(self, name))
        _checks.seed("root_seed", self.root_seed)
        _checks.real("rope_theta", self.rope_theta, low=0.0, low_open=True)
        _checks.real("init_scale", self.init_scale, low=0.0, low_open=True)
        if self.heads % self.kv_heads:
            raise ValueError(f"heads must be a multiple of kv_heads, got heads={self.heads}, kv_heads={self.kv_heads}")
        if self.hidden_size % self.heads or (self.hidden_size // self.heads) % 8:
            raise ValueError(
                f"hidden_size / heads must be a multiple of 8 (the rotary sections), got {self.hidden_size} / {self.heads}"
            )
        if self.n_latents > latent_lib.MAX_SIZE:
            raise ValueError(f"n_latents must be at most {latent_lib.MAX_SIZE}, got {self.n_latents}")
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced, sweepable hyper-parameters (a float each, or one value per setting: :func:`tokdyn.train.grid`).

    Attributes:
      learning_rate: the peak AdamW learning rate.
      weight_decay: AdamW's decoupled weight decay.
      align_weight: the alignment loss's weight (latent_mirage, latent_lvr, latent_monet).
      caption_weight: the caption's cross-entropy weight (text, coconut).
      start_weight: the start marker's cross-entropy weight (the recipes that feed latents back: the model
        learns to open its block after the prompt, so ``--latents generated`` finds one).
    """

    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    align_weight: float = 1.0
    caption_weight: float = 1.0
    start_weight: float = 1.0

    def validate(self) -> "Hparams":
        """Every host value finite and >= 0 (the learning rate > 0); ValueError naming it."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not _checks.is_traced(v):
                arr = np.asarray(v, np.float64)
                if not np.isfinite(arr).all() or (arr < 0).any() or (f.name == "learning_rate" and (arr <= 0).any()):
                    raise ValueError(f"{f.name} must be finite and >= 0 (> 0 for the learning rate), got {v!r}")
        return self


def variant(recipe) -> Variant:
    """The recipe ``recipe``: a name of :data:`VARIANTS` or a :class:`Variant` (checked); a ValueError/TypeError
    naming the argument otherwise."""
    if isinstance(recipe, Variant):
        return recipe.validate()
    if not isinstance(recipe, str):
        raise TypeError(f"recipe must be a name of VARIANTS or a Variant, got {type(recipe).__name__}")
    _checks.choice("recipe", recipe, VARIANTS)
    return VARIANTS[recipe]


def recipe_name(recipe) -> str:
    """What messages and progress call ``recipe``: its name, or ``"custom"`` for a :class:`Variant` that is
    not one of :data:`VARIANTS`."""
    if isinstance(recipe, str):
        return recipe
    return next((k for k, v in VARIANTS.items() if v == recipe), "custom")


@functools.lru_cache(maxsize=1)
def tokenizer():
    """The organism's tokenizer (:func:`tokdyn.models.organism.tokenizer.build`), built once."""
    return tokenizer_lib.build()


def model_config(cfg: Config) -> qwen2_5_vl.Config:
    """The Qwen2.5-VL configuration of ``cfg``'s sizes, with the organism tokenizer's ids."""
    tok = tokenizer()
    base = checkpoint_lib.tiny_config(tok)
    head = cfg.hidden_size // cfg.heads
    sections = (head // 8, 3 * head // 16, 3 * head // 16)
    sections = (head // 2 - sections[1] - sections[2], sections[1], sections[2])
    vision = dataclasses.replace(
        base.vision,
        depth=cfg.vision_depth,
        hidden_size=cfg.vision_width,
        intermediate_size=cfg.vision_width + cfg.vision_width // 4,
        out_hidden_size=cfg.hidden_size,
        fullatt_block_indexes=(cfg.vision_depth - 1,),
    )
    text = dataclasses.replace(
        base.text,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        mrope_section=sections,
        rope_theta=float(cfg.rope_theta),
    )
    return checkpoint_lib.model_config(tok, vision, text)


def pad_id() -> int:
    """The id of ``<|endoftext|>``, the padding of captions and of a stopped generation."""
    return int(tokenizer().token_to_id(tokenizer_lib.PAD_TOKEN))


def latent_mode(cfg: Config) -> latent_lib.LatentMode:
    """The organisms' latent mode: the tokenizer's three latent tokens, ``n_latents`` a block, resolved."""
    return latent_lib.LatentMode(*tokenizer_lib.LATENT_TOKENS, cfg.n_latents).resolve(tokenizer())


def stages(cfg: Config, recipe: str | Variant) -> list[tuple[int, int, int]]:
    """``(n_latents, caption tokens dropped, steps)`` of each stage of ``recipe`` (one stage without a
    curriculum); stage boundaries fall on multiples of ``steps_per_call``."""
    v = variant(recipe)
    if not v.curriculum:
        return [(cfg.n_latents if v.block != "none" else 0, 0, cfg.train.steps)]
    s, k = cfg.curriculum_stages, CAPTION_TOKENS
    per = cfg.train.calls
    cuts = [round(per * i / (s + 1)) * cfg.train.steps_per_call for i in range(s + 2)]
    return [(round(cfg.n_latents * i / s), round(k * i / s), cuts[i + 1] - cuts[i]) for i in range(s + 1)]


CAPTION_TOKENS = 24
"""The caption's tokens in a training sequence (padded; a longer caption is cut, a test holds every task's
caption within it)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Pool:
    """Training (or test) instances as arrays, every field with a leading axis of N instances.

    Attributes:
      ids: (N, T) the prompts' token ids, left-padded (the chat template's user turn and the assistant's start).
      mask: (N, T) True at the prompts' tokens.
      positions: (3, N, T) their positions; next_pos: (N,) each prompt's next.
      grid: (N, G, G) int8 the images' cell values; helper_grid: (N, G, G) the helper images'; blank: (H, W, 3)
        uint8 a black image. A batch's images are drawn from the grids in its program
        (:func:`tokdyn.models.organism.tasks.render`, then :func:`pixel_rows`): a pool holds a byte a cell, not
        the 2,352 bytes of a 28 x 28 cell's pixels (an instance's prompt, its ids, mask and positions, is the
        most of what it holds).
      caption: (N, K) the caption's ids, right-padded with ``<|endoftext|>``; caption_len: (N,).
      answer: (N, 2) the answer's letter and ``<|im_end|>``.
      letter: (N,) the answer's option index; family: (N,) the task family's index.
    """

    ids: jax.Array
    mask: jax.Array
    positions: jax.Array
    next_pos: jax.Array
    grid: jax.Array
    helper_grid: jax.Array
    blank: jax.Array
    caption: jax.Array
    caption_len: jax.Array
    answer: jax.Array
    letter: jax.Array
    family: jax.Array


def chat() -> chat_lib.Chat:
    """The organisms' :class:`tokdyn.models.vlm.Chat`: the tokenizer, Qwen2.5-VL's chat template and image
    processor."""
    tok = tokenizer()
    return chat_lib.Chat(
        tok, tokenizer_lib.CHAT_TEMPLATE, qwen2_5_vl.ImageProcessor(), {"eos_token": tokenizer_lib.EOS_TOKEN}
    )


def conversation(example: tasks_lib.Example) -> list:
    """The user's turn of an instance: its image and its multiple-choice question."""
    text = chat_lib.multiple_choice(example.question, example.options)
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


@functools.lru_cache(maxsize=1)
def _levels() -> np.ndarray:
    """(256, 3) float32: each 8-bit level of each channel as the organisms' image processor makes it (scaled in
    float64 and cast, then normalised in float32): :func:`pixel_rows` looks the numbers up, so they are the
    processor's own."""
    p = qwen2_5_vl.ImageProcessor()
    scaled = (np.arange(256, dtype=np.float64) * p.rescale_factor).astype(np.float32)[:, None]
    return (scaled - np.asarray(p.image_mean, np.float32)) / np.asarray(p.image_std, np.float32)


def pixel_rows(images) -> jax.Array:
    """(..., patches, patch_dim) float32 the ``pixel_values`` rows of uint8 images (..., H, W, 3) whose sides the
    processor keeps (multiples of 28, at least 56): what ``chat().processor`` gives each image, traceable (the
    rows of :func:`tokdyn.models.blocks.images.patchify`, a leading axis at a time)."""
    p = qwen2_5_vl.ImageProcessor()
    patch, merge, frames = p.patch_size, p.merge_size, p.temporal_patch_size
    x = jnp.asarray(_levels())[jnp.asarray(images).astype(jnp.int32), jnp.arange(3)]  # (..., H, W, 3)
    *lead, h, w, c = x.shape
    gh, gw = h // patch, w // patch
    x = x.reshape(*lead, gh // merge, merge, patch, gw // merge, merge, patch, c)
    k = len(lead)
    x = x.transpose(*range(k), k, k + 3, k + 1, k + 4, k + 6, k + 2, k + 5)  # blocks, merge, merge, c, p, p
    x = jnp.broadcast_to(x[..., None, :, :], x.shape[:-2] + (frames, patch, patch))
    return x.reshape(*lead, gh * gw, c * frames * patch * patch)


def images(cfg: Config, pool: Pool, index=None) -> jax.Array:
    """(n, S, S, 3) uint8 the images of ``pool``'s instances ``index`` (every instance when None), drawn from
    their grids as a training batch draws them (:func:`tokdyn.models.organism.tasks.render`; traceable)."""
    return tasks_lib.render(pool.grid if index is None else pool.grid[index], cfg.tasks)


def make_pool(cfg: Config, key, n: int, *, chunk: int = 512) -> Pool:
    """``n`` instances drawn from ``key`` as a :class:`Pool` (host work: the prompts through the chat template and
    the tokenizer, ``chunk`` instances at a time, so that at most ``chunk`` rendered images are held at once; the
    pool keeps the grids, from which its batches are rendered)."""
    _checks.positive_int("chunk", chunk)
    side = cfg.tasks.image_size
    if qwen2_5_vl.ImageProcessor().target_size(side, side) != (side, side):
        raise ValueError(
            f"tasks: images of {side} x {side} pixels would be resized by the processor; the side (grid_size x "
            "cell_pixels) must be a multiple of 28 and at least 56"
        )
    batch = jax.tree.map(np.asarray, tasks_lib.generate(key, n, cfg.tasks))
    ch = chat()
    tok = ch.tokenizer
    eos = tok.token_to_id(tokenizer_lib.EOS_TOKEN)
    ids, masks, letters, grid = [], [], np.zeros(n, np.int64), None
    caption = np.full((n, CAPTION_TOKENS), pad_id(), np.int64)
    lengths = np.zeros(n, np.int64)
    for start in range(0, n, chunk):
        part = tasks_lib.examples(jax.tree.map(lambda a: a[start : start + chunk], batch), cfg.tasks)
        enc = ch.encode_batch(
            [conversation(e) for e in part], [e.image for e in part], padding_side="left", pad_token_id=pad_id()
        )
        ids.append(enc["input_ids"])
        masks.append(enc["attention_mask"])
        grid = enc["image_grid_thw"][:1]
        for i, e in enumerate(part, start):
            cap = tok.encode(e.caption, add_special_tokens=False).ids[:CAPTION_TOKENS]
            caption[i, : len(cap)], lengths[i] = cap, len(cap)
            letters[i] = tok.encode(e.answer, add_special_tokens=False).ids[0]
    width = max(a.shape[1] for a in ids)
    pad = lambda a, value: np.pad(a, ((0, 0), (width - a.shape[1], 0)), constant_values=value)  # noqa: E731
    input_ids = np.concatenate([pad(a, pad_id()) for a in ids])
    attention = np.concatenate([pad(m, 0) for m in masks]).astype(bool)
    pos, nxt = qwen2_5_vl.model.rope_index(model_config(cfg), input_ids, np.repeat(grid, n, 0), attention)
    return Pool(
        jnp.asarray(input_ids, jnp.int32),
        jnp.asarray(attention),
        jnp.asarray(pos, jnp.int32),
        jnp.asarray(nxt, jnp.int32),
        jnp.asarray(batch.task.image, jnp.int8),
        jnp.asarray(batch.task.helper, jnp.int8),
        jnp.zeros((side, side, 3), jnp.uint8),
        jnp.asarray(caption, jnp.int32),
        jnp.asarray(lengths, jnp.int32),
        jnp.asarray(np.stack([letters, np.full(n, eos)], 1), jnp.int32),
        jnp.asarray(batch.correct, jnp.int32),
        jnp.asarray(batch.task.family, jnp.int32),
    )


class Splits(NamedTuple):
    """The training pool, validation and test sets (:func:`splits`)."""

    train: Pool
    val: Pool
    test: Pool


@functools.lru_cache(maxsize=4)
def data(cfg: Config) -> tuple[Pool, Pool]:
    """The training pool and the test set (:func:`make_pool`), drawn from streams 0 and 1 of
    ``fold_in(key(root_seed), 0)``."""
    root = jax.random.fold_in(jax.random.key(cfg.root_seed), 0)
    return make_pool(cfg, jax.random.fold_in(root, 0), cfg.n_train), make_pool(
        cfg, jax.random.fold_in(root, 1), cfg.n_test
    )


@functools.lru_cache(maxsize=4)
def splits(cfg: Config) -> Splits:
    """:func:`data`'s training pool and test set with the validation set between them, drawn from stream 2. The
    streams are independent: an instance is in two sets only where two draws give the same grid and question."""
    train_pool, test = data(cfg)
    val = make_pool(cfg, jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.root_seed), 0), 2), cfg.n_val)
    return Splits(train_pool, val, test)


def layout(cfg: Config, recipe: str | Variant, stage: int, pool: Pool) -> vlm_training.Layout:
    """The training layout of ``recipe`` at ``stage`` for sequences of ``pool``'s prompts."""
    v = variant(recipe)
    n_lat, dropped, _ = stages(cfg, recipe)[stage]
    tail = (CAPTION_TOKENS - dropped if v.caption else 0) + 2
    grid = (1, cfg.tasks.image_size // 14, cfg.tasks.image_size // 14)
    feed = "pause" if v.block == "pause" else "norm"
    return vlm_training.Layout(qwen2_5_vl, model_config(cfg), grid, pool.ids.shape[1], n_lat, tail, feed)


@functools.partial(jax.jit, static_argnames=("cfg", "recipe", "stage"))
def batch_of(cfg: Config, recipe: str | Variant, stage: int, pool: Pool, index) -> vlm_training.Batch:
    """The training sequences of ``pool``'s instances ``index`` (B,) under ``recipe`` at ``stage``
    (jitted: a call from Python is one program per recipe, stage and shapes; traceable)."""
    v = variant(recipe)
    _, dropped, _ = stages(cfg, recipe)[stage]
    take = lambda a: a[index]  # noqa: E731
    b = index.shape[0]
    image = images(cfg, pool, index) if v.use_image else pool.blank
    pixels = pixel_rows(jnp.broadcast_to(image, (b,) + pool.blank.shape))
    answer = take(pool.answer)
    if v.caption:
        cap = take(pool.caption)[:, dropped:]
        length = jnp.maximum(take(pool.caption_len) - dropped, 0)
        keep = jnp.arange(cap.shape[1])[None] < length[:, None]
        # the caption's kept tokens, then the answer right after them (the padding moved to the end)
        width = cap.shape[1] + 2
        slot = jnp.where(keep, jnp.arange(cap.shape[1])[None], width)  # past the end: dropped by the scatter
        tail = jnp.full((b, width), pad_id(), jnp.int32)
        rows = jnp.arange(b)[:, None]
        tail = tail.at[rows, slot].set(cap, mode="drop")
        at = length[:, None] + jnp.arange(2)[None]
        tail = tail.at[rows, at].set(answer)
        weight = (jnp.arange(width)[None] < (length + 2)[:, None]).astype(jnp.float32)
        is_answer = (jnp.arange(width)[None] >= length[:, None]) & (weight > 0)
    else:
        tail, weight, is_answer = answer, jnp.ones(answer.shape, jnp.float32), jnp.ones(answer.shape, bool)
    mode = latent_mode(cfg)
    return vlm_training.Batch(
        take(pool.ids),
        take(pool.mask),
        pool.positions[:, index],
        take(pool.next_pos),
        pixels,
        tail,
        weight,
        is_answer,
        jnp.asarray([mode.start, mode.end, mode.pad], jnp.int32),
        pixel_rows(tasks_lib.render(take(pool.helper_grid), cfg.tasks)),
    )


def draw(key, pool: Pool, batch_size: int):
    """``batch_size`` instance indices drawn uniformly with replacement from ``pool``."""
    return jax.random.randint(key, (batch_size,), 0, pool.ids.shape[0])


def run_keys(key):
    """``(key of the initial parameters, run key)``: ``(fold_in(key, 0), key)``."""
    return jax.random.fold_in(key, 0), key


def _stage_trainer(cfg: Config, recipe: str | Variant, stage: int, pool: Pool) -> train.Trainer:
    v = variant(recipe)
    lay = layout(cfg, recipe, stage, pool)
    mcfg = lay.cfg

    def loss(params, batch, key, hp):
        return vlm_training.losses(
            lay,
            params,
            batch,
            align=v.align,
            align_weight=hp.align_weight,
            caption_weight=hp.caption_weight if v.caption else None,
            start_weight=hp.start_weight,
        )

    return train.Trainer(
        cfg.train,
        init=lambda key, hp: qwen2_5_vl.params.init(key, mcfg, jnp.float32, cfg.init_scale),
        loss=loss,
        batch=lambda key, pool, step: batch_of(cfg, recipe, stage, pool, draw(key, pool, cfg.batch_size)),
        keys=run_keys,
        name=recipe_name(recipe),
    )


def trainer(cfg: Config, recipe: str | Variant) -> train.Curriculum:
    """``recipe``'s training: a :class:`tokdyn.train.Curriculum` of its stages (the same object for the
    same arguments, so its compilations are reused)."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.organism.training.Config, got {type(cfg).__name__}")
    cfg.validate()
    variant(recipe)
    return _curriculum(cfg, recipe)


@functools.lru_cache(maxsize=64)
def _curriculum(cfg: Config, recipe: str | Variant) -> train.Curriculum:
    pool, _ = data(cfg)
    return train.Curriculum(
        tuple((n, _stage_trainer(cfg, recipe, i, pool)) for i, (_, _, n) in enumerate(stages(cfg, recipe)))
    )


def seed_keys(cfg: Config):
    """(seeds,) run keys ``fold_in(fold_in(key(root_seed), 1), seed)``."""
    root = jax.random.key(cfg.root_seed)
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(root, 1), s) for s in range(cfg.seeds)])


def models(cfg: Config, hparams: Hparams | None = None):
    """``(keys, hparams)`` of every seed x setting of ``hparams`` (each field a scalar or an (H,) array):
    M = H x seeds models, model ``h * seeds + s``."""
    hparams = Hparams() if hparams is None else hparams
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.models.organism.training.Hparams, got {type(hparams).__name__}")
    hparams.validate()
    return train.grid(seed_keys(cfg), hparams)


def train_models(cfg: Config, recipe: str | Variant, hparams: Hparams | None = None, **options) -> train.Result:
    """Train every seed x setting of ``recipe`` in one program per stage (:func:`tokdyn.train.train_many`
    on the training pool; ``options`` passed on: ``checkpoint=``, ``execution=``, ``progress=`` ...)."""
    keys, hp = models(cfg, hparams)
    return train.train_many(trainer(cfg, recipe), data(cfg)[0], keys, hp, **options)


def answer_tokens(cfg: Config, recipe: str | Variant, params, pool: Pool, chunk: int = 64) -> np.ndarray:
    """(M, N) int the token each of M models (``params`` stacked on a leading axis) gives the highest probability
    where the answer's letter goes, for each instance of ``pool`` (teacher-forced through the recipe's sequence,
    its block the model's own fed-back latents: the token greedy generation writes after the block); in chunks of
    ``min(chunk, N)`` instances (one program per recipe and pool shape: the last chunk is padded)."""
    _checks.positive_int("chunk", chunk)
    stage = len(stages(cfg, recipe)) - 1
    n = pool.ids.shape[0]
    size = min(chunk, n)
    tokens = []
    for start in range(0, n, size):
        index = jnp.minimum(jnp.arange(start, start + size), n - 1)
        tokens.append(np.asarray(_letter_tokens(cfg, recipe, stage, params, pool, index))[:, : min(size, n - start)])
    return np.concatenate(tokens, axis=1)


@functools.partial(jax.jit, static_argnames=("cfg", "recipe", "stage"))
def _letter_tokens(cfg, recipe, stage, params, pool, index):
    lay = layout(cfg, recipe, stage, pool)
    batch = batch_of(cfg, recipe, stage, pool, index)
    first = jnp.argmax(batch.is_answer, axis=1)  # the letter: the answer's first token

    def one(p):
        out = vlm_training.forward(lay, p, batch)
        return jnp.take_along_axis(jnp.argmax(out.logits, -1), first[:, None], 1)[:, 0]

    return jax.vmap(one)(params)


def option_of(cfg: Config, tokens) -> np.ndarray:
    """The option index each token id of ``tokens`` names: j for the letter of option j (``A`` is 0) among the
    ``n_options`` of ``cfg.tasks``, -1 for any other token."""
    tok = tokenizer()
    letters = np.asarray([tok.token_to_id(c) for c in tasks_lib.LETTERS[: cfg.tasks.n_options]])
    hit = np.asarray(tokens)[..., None] == letters
    return np.where(hit.any(-1), hit.argmax(-1), -1)


def answers(cfg: Config, recipe: str | Variant, params, pool: Pool, chunk: int = 64) -> np.ndarray:
    """(M, N) int the option each of M models answers for each instance of ``pool``: :func:`option_of` its
    :func:`answer_tokens` (-1 where the token is not one of the options' letters)."""
    return option_of(cfg, answer_tokens(cfg, recipe, params, pool, chunk))


def answer_accuracy(cfg: Config, recipe: str | Variant, params, pool: Pool, chunk: int = 64) -> np.ndarray:
    """(M, N) whether each of M models answers each instance of ``pool`` with the right option (:func:`answers`)."""
    return answers(cfg, recipe, params, pool, chunk) == np.asarray(pool.letter)[None]


def save(directory: str | Path, cfg: Config, recipe: str | Variant, params) -> Path:
    """One trained organism (an unstacked parameter tree) as a Hugging Face Qwen2.5-VL checkpoint
    (:func:`tokdyn.models.organism.checkpoint.write`), with ``latent_mode.json`` where its recipe writes a block
    of fed-back latents."""
    mode = None
    if variant(recipe).block == "feedback":
        mode = latent_lib.LatentMode(*tokenizer_lib.LATENT_TOKENS, cfg.n_latents)
    return checkpoint_lib.write(directory, model_config(cfg), params, latent_mode=mode, tokenizer=tokenizer())


__all__ = [
    "BLOCKS",
    "CAPTION_TOKENS",
    "Config",
    "Hparams",
    "Pool",
    "Splits",
    "VARIANTS",
    "Variant",
    "answer_accuracy",
    "answer_tokens",
    "answers",
    "batch_of",
    "chat",
    "conversation",
    "data",
    "layout",
    "latent_mode",
    "make_pool",
    "model_config",
    "option_of",
    "models",
    "pixel_rows",
    "images",
    "recipe_name",
    "save",
    "seed_keys",
    "splits",
    "stages",
    "tokenizer",
    "train_models",
    "trainer",
    "variant",
]
