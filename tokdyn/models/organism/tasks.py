"""The organism's grid tasks as a vision-language model reads them: an RGB image, a question in words with
multiple-choice options, the answer's letter, and the helper image and caption of :mod:`tokdyn.data.grid_tasks`.

Every instance is one of :mod:`tokdyn.data.grid_tasks` (the same grid, question, answer, helper grid and
caption for the same key: :func:`sample` draws it with :func:`tokdyn.data.grid_tasks.sample`), put in the
form Qwen2.5-VL's processor and tokenizer take:

- the image (:func:`render`): each cell a square of ``cell_pixels`` pixels in the colour :data:`PALETTE`
  names (0, empty, is black); with the default 28 pixels a cell is one merged token of Qwen2.5-VL (a 2 x 2
  block of 14-pixel patches) and a G x G grid G^2 image tokens (G = 4: 16; 6: 36; 8: 64). The side is a
  multiple of :data:`FACTOR`, so the processor's ``smart_resize`` keeps the image as drawn (no resampling);
- the question (:data:`QUESTIONS`), rows and columns counted from 1 at the top and at the left;
- ``n_options`` options (:func:`options`): the answer and distractors drawn without replacement from the
  family's answer space (:data:`COLOUR_FAMILIES` answer a colour name, "empty" included;
  :data:`COUNT_FAMILIES` a count "0".."G"), the answer's position uniform over the letters, all drawn from
  ``fold_in(key, OPTIONS_STREAM)`` (the instance's own key);
- the helper image (the transformed grid, rendered as the image; for ``read`` the image itself) and the
  caption (:data:`CAPTIONS`: the words of the latent task's caption tokens), for the ``text``, ``coconut`` and
  latent-alignment recipes.

:func:`sample` and :func:`generate` are JAX (jittable, vmappable: an :class:`Instance` holds the task and
its options as integers); :func:`examples` turns a batch into host :class:`Example` s (NumPy images and
strings) and :func:`write_jsonl` writes them in the form ``tokdyn study vlm-diagnostics --instances FILE``
reads, the images as PNG files in a folder beside the file.
"""

from __future__ import annotations

import dataclasses
import functools
import io as bytes_io
import json
import string
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, io
from tokdyn.data import grid_tasks as latent_tasks

FAMILIES = latent_tasks.FAMILIES
ORDERS = ("shuffled", "fixed")
"""How a question's options are listed (:attr:`Config.order`)."""
PALETTE = (
    ("empty", (0, 0, 0)),
    ("red", (220, 40, 40)),
    ("green", (40, 170, 60)),
    ("blue", (40, 80, 220)),
    ("yellow", (240, 210, 40)),
    ("purple", (140, 60, 180)),
    ("orange", (245, 140, 30)),
    ("cyan", (40, 200, 210)),
    ("pink", (240, 120, 180)),
    ("brown", (130, 80, 40)),
    ("white", (245, 245, 245)),
)
"""The colour of each cell value, by name and RGB: 0 is empty (black), 1..10 the colours a task may use."""
COLOUR_NAMES = tuple(name for name, _ in PALETTE)
COLOURS = np.asarray([rgb for _, rgb in PALETTE], np.uint8)  # (11, 3)
MAX_COLOURS = len(PALETTE) - 1
FACTOR = 28
"""Qwen2.5-VL's patch (14 pixels) times its merge (2): an image whose sides are multiples of it, within the
processor's pixel bounds, is not resized, and each 28 x 28 square is one image token."""
LETTERS = string.ascii_uppercase
"""The options' letters, in order (A is the first option)."""
OPTIONS_STREAM = 1
"""The options of the instance of key ``k`` are drawn from ``fold_in(k, OPTIONS_STREAM)``."""
COLOUR_FAMILIES = ("read", "rotate", "path")
"""The families whose answer is a cell's colour (one of "empty" and the task's colour names)."""
COUNT_FAMILIES = ("gravity", "recolour")
"""The families whose answer is a count of cells in a row (0..G)."""
OPERATIONS = {
    "rot90": "rotated 90 degrees anticlockwise",
    "rot180": "rotated 180 degrees",
    "rot270": "rotated 90 degrees clockwise",
    "flip_lr": "mirrored left to right",
    "flip_ud": "flipped upside down",
}
"""The words of each rotate/flip operation of :data:`tokdyn.data.grid_tasks.OPS` (``numpy.rot90``'s sense:
``rot90`` turns the grid anticlockwise)."""
QUESTIONS = {
    "read": "What colour is the cell in row {r}, column {c}?",
    "rotate": "Imagine the grid {op}. What colour is the cell in row {r}, column {c} then?",
    "gravity": "Imagine every coloured cell falling to the bottom of its column. How many {k} cells are in row "
    "{r} then?",
    "recolour": "Imagine every {a} cell turning {b}. How many {b} cells are in row {r} then?",
    "path": "Start at the {marker} cell and move {n0} {d0} and {n1} {d1}, wrapping around the edges. What colour "
    "is the cell you reach?",
}
"""Each family's question; rows and columns count from 1 (row 1 is the top, column 1 the left)."""
CAPTIONS = {
    "read": "Look at row {r}, column {c}.",
    "rotate": "It is the cell in row {sr}, column {sc} of the grid as shown.",
    "gravity": "Row {r} would read: {row}.",
    "recolour": "Row {r} would read: {row}.",
    "path": "The {marker} cell is in row {sr}, column {sc}; the move ends in row {er}, column {ec}.",
}
"""Each family's caption: the latent task's caption tokens in words (the cell to read, the source cell of a
rotated one, the row after the change, the marker's cell and the move's end)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The tasks and how they are drawn and rendered (static).

    Attributes:
      task: the grid tasks (grid size G, colours C <= 10, density, families).
      cell_pixels: the side of a cell in pixels; G x cell_pixels must be a multiple of 28 (the image is then
        (G x cell_pixels / 28)^2 image tokens and is not resized by the processor).
      n_options: options per question (2..26, at most the smallest answer space of the families drawn:
        C + 1 colours, G + 1 counts).
      order: ``"shuffled"``: the answer and distractors drawn, the answer's letter uniform; ``"fixed"``: the
        whole answer space in its own order (``n_options`` then equals the size of every family's space), so
        an option's letter always names the same value: the question's options carry no information a model
        must match against the image.
    """

    task: latent_tasks.Config = latent_tasks.Config(grid_size=4, n_colours=4)
    cell_pixels: int = 28
    n_options: int = 4
    order: str = "shuffled"

    def validate(self) -> Config:
        """Check every field; a ``ValueError``/``TypeError`` naming the field, its value and what is allowed.
        Returns ``self``."""
        if not isinstance(self.task, latent_tasks.Config):
            raise TypeError(f"task must be a tokdyn.data.grid_tasks.Config, got {type(self.task).__name__}")
        self.task.validate()
        if self.task.n_colours > MAX_COLOURS:
            raise ValueError(
                f"task.n_colours must be at most {MAX_COLOURS} (the named colours of PALETTE), got {self.task.n_colours}"
            )
        p = _checks.positive_int("cell_pixels", self.cell_pixels)
        side = self.task.grid_size * p
        if side % FACTOR:
            raise ValueError(
                f"cell_pixels={p} gives an image of {side} pixels ({self.task.grid_size} cells); the side must be a "
                f"multiple of {FACTOR} (Qwen2.5-VL's patch x merge), e.g. cell_pixels={FACTOR}"
            )
        k = _checks.positive_int("n_options", self.n_options, minimum=2)
        _checks.choice("order", self.order, ORDERS)
        sizes = {len(self.answer_space(f)) for f in self.task.families}
        if self.order == "fixed" and sizes != {k}:
            raise ValueError(
                f"order='fixed' lists the whole answer space: n_options must be the size of every family's space "
                f"({sorted(sizes)} for {list(self.task.families)}), got {k}"
            )
        smallest = min(len(self.answer_space(f)) for f in self.task.families)
        if k > min(smallest, len(LETTERS)):
            raise ValueError(
                f"n_options must be in [2, {min(smallest, len(LETTERS))}] (the smallest answer space of the families "
                f"{list(self.task.families)} has {smallest} values), got {k}"
            )
        return self

    @property
    def image_size(self) -> int:
        """The side of an image in pixels: G x cell_pixels."""
        return self.task.grid_size * self.cell_pixels

    @property
    def image_tokens(self) -> int:
        """The image tokens Qwen2.5-VL gives an image: (side / 28)^2."""
        return (self.image_size // FACTOR) ** 2

    def answer_space(self, family: str) -> tuple[str, ...]:
        """The texts of every answer of ``family``: the colour names (``"empty"`` first) or the counts."""
        _checks.choice("family", family, FAMILIES)
        if family in COUNT_FAMILIES:
            return tuple(str(n) for n in range(self.task.grid_size + 1))
        return COLOUR_NAMES[: self.task.n_colours + 1]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Instance:
    """One instance (a batch when every field has a leading axis).

    Attributes:
      task: the grid task (:class:`tokdyn.data.grid_tasks.Instance`).
      options: (K,) int32 the options' values in the family's answer space (a colour 0..C or a count 0..G;
        :meth:`Config.answer_space` gives their texts), option j has letter ``LETTERS[j]``.
      correct: () int32 the position of the answer among the options.
    """

    task: latent_tasks.Instance
    options: jax.Array
    correct: jax.Array


@dataclasses.dataclass(frozen=True)
class Example:
    """One instance as text and pixels (host values).

    Attributes:
      image: (S, S, 3) uint8 the grid.
      question: the question (without its options).
      options: the options' texts, in letter order.
      answer: the correct option's letter.
      helper: (S, S, 3) uint8 the transformed grid (the helper image).
      caption: the caption of the change.
      family: the family's name.
    """

    image: np.ndarray
    question: str
    options: tuple
    answer: str
    helper: np.ndarray
    caption: str
    family: str


def answer_value(task: latent_tasks.Instance, cfg: Config):
    """The answer of ``task`` (one instance or a batch; may be traced) as a value of its family's answer space:
    the colour (0..C) or the count (0..G)."""
    v = cfg.task.vocab
    counting = (task.family == FAMILIES.index("gravity")) | (task.family == FAMILIES.index("recolour"))
    return jnp.where(counting, task.answer - v.number0, task.answer - v.colour0).astype(jnp.int32)


def options(key, value, family, cfg: Config):
    """``(options, correct)``: ``cfg.n_options`` distinct values of ``family``'s answer space holding ``value``
    once, at the position ``correct`` (uniform over the K letters); the others a uniformly drawn subset of the
    rest of the space in random order. Jittable (``value`` and ``family`` may be traced).

    Args:
      key: PRNG key (an instance's is ``fold_in(its key, OPTIONS_STREAM)``).
      value: the answer's value (:func:`answer_value`).
      family: the family's index into :data:`FAMILIES`.
      cfg: the :class:`Config` (static).

    Returns:
      ``(options (K,) int32, correct () int32)``.
    """
    k = cfg.n_options
    if cfg.order == "fixed":
        return jnp.arange(k, dtype=jnp.int32), jnp.asarray(value, jnp.int32)
    g, c = cfg.task.grid_size, cfg.task.n_colours
    counting = (family == FAMILIES.index("gravity")) | (family == FAMILIES.index("recolour"))
    size = jnp.where(counting, g + 1, c + 1)
    kd, kp = jax.random.split(key)
    values = jnp.arange(max(g, c) + 1)
    scores = jnp.where((values >= size) | (values == value), 2.0, jax.random.uniform(kd, values.shape))
    distractors = jnp.argsort(scores)[: k - 1].astype(jnp.int32)  # (K - 1,) a uniform subset, in random order
    correct = jax.random.randint(kp, (), 0, k, dtype=jnp.int32)
    j = jnp.arange(k)
    before = distractors[jnp.minimum(j, k - 2)]
    after = distractors[jnp.clip(j - 1, 0, k - 2)]
    out = jnp.where(j < correct, before, jnp.where(j == correct, value, after)).astype(jnp.int32)
    return out, correct


def _with_options(key, task: latent_tasks.Instance, cfg: Config) -> Instance:
    opts, correct = options(jax.random.fold_in(key, OPTIONS_STREAM), answer_value(task, cfg), task.family, cfg)
    return Instance(task, opts, correct)


def _check(cfg):
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.organism.tasks.Config, got {type(cfg).__name__}")
    cfg.validate()


def sample(key, family, cfg: Config = Config()) -> Instance:
    """One instance of ``family`` (a name, or an index into :data:`FAMILIES` that may be traced): the task
    :func:`tokdyn.data.grid_tasks.sample` draws from ``key``, and its options from
    ``fold_in(key, OPTIONS_STREAM)``. Jittable, vmappable over keys."""
    _check(cfg)
    task = latent_tasks.sample(key, family, cfg.task)
    return _with_options(key, task, cfg)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _options_of(key, tasks: latent_tasks.Instance, index, cfg: Config) -> Instance:
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
    return jax.vmap(lambda k, t: _with_options(k, t, cfg))(keys, tasks)


def generate(key, n: int, cfg: Config = Config(), *, offset=0) -> Instance:
    """``n`` instances balanced over the families, as :func:`tokdyn.data.grid_tasks.generate` draws their
    tasks: instance i is :func:`sample` of ``fold_in(key, offset + i)`` and family
    ``cfg.task.families[(offset + i) % len(families)]``.

    Args:
      key: PRNG key.
      n: the number of instances (static).
      cfg: the :class:`Config` (static).
      offset: the index of the first instance, >= 0 (may be traced).

    Returns:
      An :class:`Instance` batch with leading axis n.

    Called from Python, the instances are drawn in blocks (:data:`tokdyn.data.grid_tasks.BLOCK`) by one
    compiled program per configuration, whatever ``n`` and ``offset``, as the tasks are; inside a
    transformation, by one vmapped computation of ``n`` instances. Both give the same instances.
    """
    _check(cfg)
    if isinstance(key, jax.core.Tracer) or isinstance(offset, jax.core.Tracer):
        tasks = latent_tasks.generate(key, n, cfg.task, offset=offset)
        return _options_of(key, tasks, offset + jnp.arange(n), cfg)
    size = latent_tasks.BLOCK
    blocks = []
    for start in range(0, n, size):
        first = offset + start
        tasks = latent_tasks.generate(key, size, cfg.task, offset=first)
        blocks.append(_options_of(key, tasks, first + jnp.arange(size), cfg))
    return jax.tree.map(lambda *a: jnp.asarray(np.concatenate([np.asarray(x) for x in a])[:n]), *blocks)


def render(grid, cfg: Config = Config()):
    """The RGB image of ``grid`` (..., G, G) cell values: (..., S, S, 3) uint8, each cell a square of
    ``cfg.cell_pixels`` pixels in its :data:`PALETTE` colour. Jittable."""
    p = cfg.cell_pixels
    image = jnp.asarray(COLOURS)[jnp.asarray(grid)]
    return jnp.repeat(jnp.repeat(image, p, axis=-3), p, axis=-2)


def _cell(r, c) -> dict:
    return {"r": int(r) + 1, "c": int(c) + 1}


def texts(task: latent_tasks.Instance, cfg: Config) -> tuple[str, str]:
    """``(question, caption)`` of one task (host arrays), in words (:data:`QUESTIONS`, :data:`CAPTIONS`)."""
    v = cfg.task.vocab
    q = [int(t) for t in np.asarray(task.question)]
    cap = [int(t) for t in np.asarray(task.caption)]
    family = FAMILIES[int(task.family)]
    num = lambda t: t - v.number0  # noqa: E731
    colour = lambda t: COLOUR_NAMES[t - v.colour0]  # noqa: E731
    marker = COLOUR_NAMES[1]
    if family == "read":
        fields = _cell(num(q[1]), num(q[2]))
        caption = CAPTIONS[family].format(**fields)
    elif family == "rotate":
        fields = {"op": OPERATIONS[latent_tasks.OPS[q[1] - v.op0]], **_cell(num(q[2]), num(q[3]))}
        caption = CAPTIONS[family].format(sr=num(cap[0]) + 1, sc=num(cap[1]) + 1)
    elif family == "gravity":
        fields = {"k": colour(q[1]), "r": num(q[2]) + 1}
        row = ", ".join(colour(t) for t in cap[: cfg.task.grid_size])
        caption = CAPTIONS[family].format(r=fields["r"], row=row)
    elif family == "recolour":
        fields = {"a": colour(q[1]), "b": colour(q[2]), "r": num(q[3]) + 1}
        row = ", ".join(colour(t) for t in cap[: cfg.task.grid_size])
        caption = CAPTIONS[family].format(r=fields["r"], row=row)
    else:  # path
        fields = {
            "marker": marker,
            "d0": latent_tasks.DIRECTIONS[q[1] - v.direction0],
            "n0": num(q[2]),
            "d1": latent_tasks.DIRECTIONS[q[3] - v.direction0],
            "n1": num(q[4]),
        }
        sr, sc, er, ec = (num(t) + 1 for t in cap[:4])
        caption = CAPTIONS[family].format(marker=marker, sr=sr, sc=sc, er=er, ec=ec)
    return QUESTIONS[family].format(**fields), caption


def examples(batch: Instance, cfg: Config = Config()) -> list[Example]:
    """The instances of ``batch`` (leading axis n) as :class:`Example` s (host NumPy images and strings)."""
    _check(cfg)
    batch = jax.tree.map(np.asarray, batch)
    images = np.asarray(render(batch.task.image, cfg))
    helpers = np.asarray(render(batch.task.helper, cfg))
    out = []
    for i in range(len(batch.correct)):
        task = jax.tree.map(lambda a: a[i], batch.task)
        family = FAMILIES[int(task.family)]
        question, caption = texts(task, cfg)
        space = cfg.answer_space(family)
        opts = tuple(space[int(o)] for o in batch.options[i])
        out.append(Example(images[i], question, opts, LETTERS[int(batch.correct[i])], helpers[i], caption, family))
    return out


def write_png(path, image: np.ndarray) -> Path:
    """Write the (H, W, 3) uint8 ``image`` as a PNG file at ``path``, atomically (:func:`tokdyn.io.atomic_write`)."""
    from PIL import Image

    buffer = bytes_io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    with io.atomic_write(str(path), "wb") as f:
        f.write(buffer.getvalue())
    return Path(path)


def write_jsonl(path, items: list[Example]) -> Path:
    """Write ``items`` as a JSONL file of multiple-choice instances that ``tokdyn study vlm-diagnostics
    --instances FILE`` reads, the images beside it.

    Line i is ``{"image": "<stem>/<i>.png", "question": ..., "options": [...], "answer": "B", "family": ...,
    "caption": ..., "helper": "<stem>/<i>-helper.png"}`` (the study reads the first four keys; paths relative to
    the file's folder, ``<stem>`` the file's name without ``.jsonl``). The PNG files are written first, the
    JSONL last, each atomically, so a JSONL file never names an image not written.

    Args:
      path: the file to write, ending in ``.jsonl``.
      items: the :class:`Example` s (at least one).

    Returns:
      The path written.
    """
    path = Path(path)
    if path.suffix != ".jsonl":
        raise ValueError(
            f"path must end in .jsonl (its images go in a folder of its stem beside it), got {str(path)!r}"
        )
    if not items:
        raise ValueError("items is empty: a JSONL file of instances holds at least one")
    folder = path.with_suffix("")
    lines = []
    for i, ex in enumerate(items):
        image, helper = f"{folder.name}/{i:06d}.png", f"{folder.name}/{i:06d}-helper.png"
        write_png(path.parent / image, ex.image)
        write_png(path.parent / helper, ex.helper)
        row = {"image": image, "question": ex.question, "options": list(ex.options), "answer": ex.answer}
        row.update(family=ex.family, caption=ex.caption, helper=helper)
        lines.append(json.dumps(row))
    with io.atomic_write(str(path)) as f:
        f.write("\n".join(lines) + "\n")
    return path


__all__ = [
    "CAPTIONS",
    "COLOURS",
    "COLOUR_FAMILIES",
    "COLOUR_NAMES",
    "COUNT_FAMILIES",
    "Config",
    "Example",
    "FACTOR",
    "FAMILIES",
    "Instance",
    "LETTERS",
    "MAX_COLOURS",
    "OPERATIONS",
    "OPTIONS_STREAM",
    "PALETTE",
    "QUESTIONS",
    "answer_value",
    "examples",
    "generate",
    "options",
    "render",
    "sample",
    "texts",
    "write_jsonl",
    "write_png",
]
