"""Synthetic visual reasoning tasks that need an imagined transformation of the image.

An image is a ``G x G`` grid of cells, each empty (0) or one of ``n_colours`` colours (1..C). Five
families (:data:`FAMILIES`): ``read`` (the control: the colour of a cell), ``rotate``,
``gravity``, ``recolour`` and ``path``, each asking about the image after a transformation the
model has to imagine. Every instance (:class:`Instance`) carries the answer, the *helper image*
(the transformed grid, for latent supervision) and a *caption* of the change (for text-space
imagination).

:func:`sample` draws one instance from a key and a (traceable) family index (jittable,
vmappable); :func:`generate` draws a batch, instance i from ``fold_in(key, i)``; :func:`splits`
draws sets that never share an instance. :func:`question_only_optimum` is the best accuracy a
rule that sees only the question can reach, per family, exactly; :func:`question_only_answers`
is that rule.

Each family, the helper images and captions in detail: :ref:`grid-tasks`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

FAMILIES = ("read", "rotate", "gravity", "recolour", "path")
OPS = ("rot90", "rot180", "rot270", "flip_lr", "flip_ud")
DIRECTIONS = ("up", "down", "left", "right")
SPECIALS = ("<pad>", "<latent_start>", "<latent_end>", "<answer>", "<pause>")
QUESTION_LEN = 5  # the longest question (path: family, dir, n, dir, n)
MAX_GRID = 32  # cells are stored as int8 and coordinates as tokens 0..G: the encoding's bounds
MAX_COLOURS = 100


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of the tasks (it fixes every array shape and the vocabulary).

    Attributes:
      grid_size: G, the image is G x G cells (2..32).
      n_colours: C colours (cell values 1..C; 0 is empty; 2..100).
      density: probability that a cell is non-empty.
      families: the task families drawn, in balanced shares (names from tokdyn.data.grid_tasks.FAMILIES).
    """

    grid_size: int = 6
    n_colours: int = 6
    density: float = 0.75
    families: tuple = FAMILIES

    def validate(self) -> "Config":
        """Check every field; raise ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        g = _checks.positive_int("grid_size", self.grid_size, minimum=2)
        if g > MAX_GRID:
            raise ValueError(f"grid_size must be in [2, {MAX_GRID}] (coordinates are tokens 0..G), got {g}")
        c = _checks.positive_int("n_colours", self.n_colours, minimum=2)
        if c > MAX_COLOURS:
            raise ValueError(f"n_colours must be in [2, {MAX_COLOURS}] (colours are tokens), got {c}")
        _checks.real("density", self.density, low=0.0, high=1.0)
        _families(self.families)
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families must not repeat a name, got {self.families!r}")
        return self

    @property
    def vocab(self) -> "Vocab":
        """The token vocabulary (:class:`Vocab`) of this grid size and colour count."""
        return Vocab(self.grid_size, self.n_colours)

    @property
    def caption_len(self) -> int:
        """K: a row (G tokens) or two cells (4 tokens), whichever is longer."""
        return max(self.grid_size, 4)

    @property
    def n_patches(self) -> int:
        """G * G, the number of cells (image patches) of an image."""
        return self.grid_size * self.grid_size


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Token ids: specials, family names, colours 0..C, numbers 0..G, operations, directions."""

    grid_size: int
    n_colours: int

    pad: int = 0
    latent_start: int = 1
    latent_end: int = 2
    answer: int = 3
    pause: int = 4

    @property
    def family0(self) -> int:
        """The id of the first family token (after the special tokens)."""
        return len(SPECIALS)

    @property
    def colour0(self) -> int:
        """The id of colour 0 (empty); colour k is ``colour0 + k``."""
        return self.family0 + len(FAMILIES)

    @property
    def number0(self) -> int:
        """The id of the number 0; the number n is ``number0 + n``."""
        return self.colour0 + self.n_colours + 1

    @property
    def op0(self) -> int:
        """The id of the first rotate/flip operation token."""
        return self.number0 + self.grid_size + 1

    @property
    def direction0(self) -> int:
        """The id of the first direction token."""
        return self.op0 + len(OPS)

    @property
    def size(self) -> int:
        """V, the number of token ids."""
        return self.direction0 + len(DIRECTIONS)

    def names(self) -> list[str]:
        """The text of every token id (for printing captions and answers)."""
        return (
            list(SPECIALS)
            + list(FAMILIES)
            + [f"colour{k}" for k in range(self.n_colours + 1)]
            + [str(n) for n in range(self.grid_size + 1)]
            + list(OPS)
            + list(DIRECTIONS)
        )

    def decode(self, tokens) -> list[str]:
        """The text of every id in ``tokens`` (any shape, flattened), for printing."""
        names = self.names()
        return [names[int(t)] for t in np.asarray(tokens).ravel()]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Instance:
    """One task instance (a batch when every field has a leading axis)."""

    image: jax.Array  # (G, G) int32 cell colours, 0 = empty
    question: jax.Array  # (QUESTION_LEN,) int32 token ids, <pad>-padded
    answer: jax.Array  # () int32 token id
    helper: jax.Array  # (G, G) int32 the transformed grid
    caption: jax.Array  # (caption_len,) int32 token ids, <pad>-padded
    family: jax.Array  # () int32 index into FAMILIES


# --- transformations (pure, on one (G, G) grid) -------------------------------------------------


def transform(image, op):
    """Rotate/flip ``image`` (G, G) by ``op`` (index into OPS, traceable)."""
    branches = [
        lambda a: jnp.rot90(a, 1),
        lambda a: jnp.rot90(a, 2),
        lambda a: jnp.rot90(a, 3),
        lambda a: a[:, ::-1],
        lambda a: a[::-1, :],
    ]
    return jax.lax.switch(op, branches, image)


def source_cell(op, r, c, g):
    """The cell of the original grid that lands on (r, c) after the transformation ``op``.

    Args:
      op: an index into :data:`OPS` (may be traced).
      r: the row after the transformation.
      c: the column after it.
      g: G, the grid's side.

    Returns:
      ``(sr, sc)``, the source cell's row and column.
    """
    last = g - 1
    rows = jnp.stack([c, last - r, last - c, r, last - r])
    cols = jnp.stack([last - r, last - c, r, last - c, c])
    return rows[op], cols[op]


def gravity(image):
    """Non-empty cells fall to the bottom of their column, keeping their order."""
    order = jnp.argsort(image != 0, axis=0, stable=True)  # empties first, then cells top to bottom
    return jnp.take_along_axis(image, order, axis=0)


def recolour(image, a, b):
    """``image`` with every cell of colour ``a`` changed to colour ``b``."""
    return jnp.where(image == a, b, image)


# --- generators ----------------------------------------------------------------------------------


def _randint(key, shape, low, high):
    """``jax.random.randint`` in int32 whatever ``jax_enable_x64`` says: the same draws, so the same
    instances, with and without it."""
    return jax.random.randint(key, shape, low, high, dtype=jnp.int32)


def _grid(key, cfg: Config):
    kf, kc = jax.random.split(key)
    full = jax.random.bernoulli(kf, jnp.float32(cfg.density), (cfg.grid_size, cfg.grid_size))
    colours = _randint(kc, (cfg.grid_size, cfg.grid_size), 1, cfg.n_colours + 1)
    return jnp.where(full, colours, 0).astype(jnp.int32)


def _pad(tokens, n):
    tokens = jnp.asarray(tokens, jnp.int32)
    return jnp.concatenate([tokens, jnp.zeros((n - tokens.shape[0],), jnp.int32)])


def _read(key, cfg, v):
    g = cfg.grid_size
    k0, k1 = jax.random.split(key)
    image = _grid(k0, cfg)
    r, c = _randint(k1, (2,), 0, g)
    q = jnp.stack([v.family0 + FAMILIES.index("read"), v.number0 + r, v.number0 + c])
    answer = v.colour0 + image[r, c]
    caption = jnp.stack([v.number0 + r, v.number0 + c])
    return image, q, answer, image, caption


def _rotate(key, cfg, v):
    g = cfg.grid_size
    k0, k1, k2 = jax.random.split(key, 3)
    image = _grid(k0, cfg)
    op = _randint(k1, (), 0, len(OPS))
    r, c = _randint(k2, (2,), 0, g)
    helper = transform(image, op)
    sr, sc = source_cell(op, r, c, g)
    q = jnp.stack([v.family0 + FAMILIES.index("rotate"), v.op0 + op, v.number0 + r, v.number0 + c])
    answer = v.colour0 + helper[r, c]
    caption = jnp.stack([v.number0 + sr, v.number0 + sc])
    return image, q, answer, helper, caption


def _gravity(key, cfg, v):
    g = cfg.grid_size
    k0, k1, k2, k3 = jax.random.split(key, 4)
    image = _grid(k0, cfg)
    helper = gravity(image)
    r = _randint(k1, (), 0, g)
    seen = helper[r, _randint(k2, (), 0, g)]  # ask about a colour present in the row when one is hit
    k = jnp.where(seen > 0, seen, _randint(k3, (), 1, cfg.n_colours + 1))
    q = jnp.stack([v.family0 + FAMILIES.index("gravity"), v.colour0 + k, v.number0 + r])
    answer = v.number0 + jnp.sum(helper[r] == k)
    caption = v.colour0 + helper[r]
    return image, q, answer, helper, caption


def _recolour(key, cfg, v):
    g = cfg.grid_size
    k0, k1, k2, k3 = jax.random.split(key, 4)
    image = _grid(k0, cfg)
    a = _randint(k1, (), 1, cfg.n_colours + 1)
    b = 1 + (a - 1 + _randint(k2, (), 1, cfg.n_colours)) % cfg.n_colours  # b != a
    r = _randint(k3, (), 0, g)
    helper = recolour(image, a, b)
    q = jnp.stack([v.family0 + FAMILIES.index("recolour"), v.colour0 + a, v.colour0 + b, v.number0 + r])
    answer = v.number0 + jnp.sum(helper[r] == b)
    caption = v.colour0 + helper[r]
    return image, q, answer, helper, caption


def _path(key, cfg, v):
    g = cfg.grid_size
    k0, k1, k2, k3, k4 = jax.random.split(key, 5)
    image = _grid(k0, cfg)
    if cfg.n_colours >= 2:  # the marker (colour 1) appears exactly once
        other = _randint(k1, image.shape, 2, cfg.n_colours + 1)
        image = jnp.where(image == 1, other, image)
    start = _randint(k2, (2,), 0, g)
    image = image.at[start[0], start[1]].set(1)
    d = _randint(k3, (2,), 0, 2)  # vertical: up/down, horizontal: left/right
    n = _randint(k4, (2,), 0, g)
    dr = jnp.where(d[0] == 0, -n[0], n[0])
    dc = jnp.where(d[1] == 0, -n[1], n[1])
    er, ec = (start[0] + dr) % g, (start[1] + dc) % g
    helper = jnp.roll(image, (start[0] - er, start[1] - ec), axis=(0, 1))  # destination under the marker
    q = jnp.stack(
        [
            v.family0 + FAMILIES.index("path"),
            v.direction0 + d[0],
            v.number0 + n[0],
            v.direction0 + 2 + d[1],
            v.number0 + n[1],
        ]
    )
    answer = v.colour0 + image[er, ec]
    caption = jnp.stack([v.number0 + start[0], v.number0 + start[1], v.number0 + er, v.number0 + ec])
    return image, q, answer, helper, caption


_GENERATORS = (_read, _rotate, _gravity, _recolour, _path)  # in FAMILIES order


def family_index(name: str) -> int:
    """The index of the family ``name`` in :data:`FAMILIES` (``ValueError`` for an unknown name)."""
    _checks.choice("family", name, FAMILIES)
    return FAMILIES.index(name)


def sample(key, family, cfg: Config = Config()) -> Instance:
    """Draw one instance of ``family`` (a name, or an index into FAMILIES that may be traced)."""
    if isinstance(family, str):
        family = family_index(family)
    elif _checks.on_host(family) and np.ndim(family) == 0 and not 0 <= int(family) < len(FAMILIES):
        raise ValueError(
            f"family must be a name in {list(FAMILIES)} or an index 0..{len(FAMILIES) - 1}, got {family!r}"
        )
    return _sample_among(key, family, tuple(range(len(FAMILIES))), cfg)


def _sample_among(key, slot, families: tuple, cfg: Config) -> Instance:
    """One instance of family ``families[slot]`` (``slot`` may be traced): a switch over those families'
    generators only (one branch: none), so a program that draws a few families compiles only theirs."""
    v = cfg.vocab

    def branch(gen):
        def f(k):
            image, q, answer, helper, caption = gen(k, cfg, v)
            out = (image, _pad(q, QUESTION_LEN), answer, helper, _pad(caption, cfg.caption_len))
            return tuple(jnp.asarray(a, jnp.int32) for a in out)  # one dtype in every branch, with x64 too

        return f

    branches = [branch(_GENERATORS[f]) for f in families]
    if len(branches) == 1:
        out = branches[0](key)
    else:
        out = jax.lax.switch(jnp.asarray(slot, jnp.int32), branches, key)
    image, q, answer, helper, caption = out
    family = jnp.asarray(families, jnp.int32)[slot]
    return Instance(image, q, answer, helper, caption, family)


def _families(families) -> tuple[int, ...]:
    if isinstance(families, str):
        families = (families,)
    if len(families) == 0:
        raise ValueError(f"families must name at least one of {list(FAMILIES)}, got an empty list")
    return tuple(family_index(f) for f in families)


def _check_generate(key, n, cfg, offset):
    _checks.prng_key("key", key)
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.data.grid_tasks.Config, got {type(cfg).__name__}")
    cfg.validate()
    _checks.positive_int("n", n)
    if _checks.on_host(offset):
        _checks.positive_int("offset", offset, minimum=0)


BLOCK = 256
"""Instances per compiled call of :func:`generate` outside a transformation."""


@functools.partial(jax.jit, static_argnames=("n", "cfg"))
def _draw(key, n: int, cfg: Config, offset):
    fams = _families(cfg.families)
    idx = offset + jnp.arange(n)
    return jax.vmap(lambda i: _sample_among(jax.random.fold_in(key, i), i % len(fams), fams, cfg))(idx)


def generate(key, n: int, cfg: Config = Config(), *, offset=0) -> Instance:
    """``n`` instances, balanced over the families: instance i has key ``fold_in(key, offset + i)`` and
    family ``cfg.families[(offset + i) % len(cfg.families)]``.

    Called from Python, the instances are drawn in blocks of 256 by one compiled
    program per configuration, whatever ``n`` and ``offset`` (sets of several sizes cost one
    compilation); inside a transformation (``jit``, ``vmap``, ``eval_shape``: a traced ``key`` or
    ``offset``) they are drawn by one vmapped computation of ``n`` instances, part of the caller's
    program. Both give the same instances.

    Args:
      key: PRNG key.
      n: the number of instances (static).
      cfg: the tasks' :class:`Config` (static).
      offset: the index of the first instance, >= 0 (may be traced).

    Returns:
      An :class:`Instance` batch with leading axis n.
    """
    _check_generate(key, n, cfg, offset)
    if isinstance(key, jax.core.Tracer) or isinstance(offset, jax.core.Tracer):
        return _draw(key, n, cfg, offset)
    blocks = [_draw(key, BLOCK, cfg, offset + s) for s in range(0, n, BLOCK)]
    return jax.tree.map(lambda *a: jnp.asarray(np.concatenate([np.asarray(x) for x in a])[:n]), *blocks)


def fingerprints(inst: Instance) -> np.ndarray:
    """One hash per instance of (image, question): equal iff the instances are the same task."""
    img = np.asarray(inst.image, np.int8).reshape(np.shape(inst.image)[0], -1)
    q = np.asarray(inst.question, np.int16)
    return np.array([hashlib.blake2b(a.tobytes() + b.tobytes(), digest_size=12).hexdigest() for a, b in zip(img, q)])


class Splits(NamedTuple):
    """Training pool, validation set and test set (host NumPy :class:`Instance` batches)."""

    train: Instance
    val: Instance
    test: Instance


def splits(key, n_train: int, n_test: int, cfg: Config = Config(), *, n_val: int = 0) -> Splits:
    """Train, validation and test sets that never share an instance (host NumPy batches).

    Args:
      key: PRNG key. Training instances come from ``fold_in(key, 0)`` (:func:`generate`), held-out
        ones from ``fold_in(key, 1)``, dropping every instance whose (image, question) occurs in the
        training set or earlier among the held-out ones: the test set from the start of that stream,
        the validation set from its instance ``50 * n_test`` on.
      n_train: the training pool's size, >= 1.
      n_test: the test set's size, >= 1.
      cfg: the tasks' :class:`Config`; its families are balanced in every set.
      n_val: the validation set's size (0: empty).

    Returns:
      :class:`Splits` ``(train, val, test)``.

    Raises:
      ValueError: fewer distinct held-out instances exist than asked for.
    """
    cfg.validate()
    _checks.positive_int("n_train", n_train)
    _checks.positive_int("n_test", n_test)
    _checks.positive_int("n_val", n_val, minimum=0)
    fams = _families(cfg.families)
    train = jax.tree.map(np.asarray, generate(jax.random.fold_in(key, 0), n_train, cfg))
    seen = set(fingerprints(train).tolist())
    held = [
        _held_out(jax.random.fold_in(key, 1), n, cfg, fams, seen, offset)
        for n, offset in ((n_test, 0), (n_val, 50 * n_test))
    ]
    return Splits(train, held[1], held[0])


def _held_out(key, n: int, cfg: Config, fams, seen: set, offset: int) -> Instance:
    """``n`` instances from ``key``'s stream (starting at ``offset``), balanced over ``fams``,
    none of them in ``seen`` (which they join)."""
    size = max(n, 1)
    kept, fam_count, start = [], np.zeros(len(fams), int), offset
    per_family = -(-n // len(fams))
    while sum(len(k[1]) for k in kept) < n and start < offset + 50 * size:
        chunk = jax.tree.map(np.asarray, generate(key, size, cfg, offset=start))
        take = []
        for i, h in enumerate(fingerprints(chunk)):
            f = fams.index(int(chunk.family[i]))
            if h in seen or fam_count[f] >= per_family:
                continue
            seen.add(h)
            fam_count[f] += 1
            take.append(i)
        kept.append((chunk, np.asarray(take, int)))
        start += size
        if not take:  # a whole chunk of repeats: the space is (nearly) exhausted
            break
    if not kept:
        kept = [(jax.tree.map(np.asarray, generate(key, 1, cfg, offset=start)), np.zeros(0, int))]
    parts = [jax.tree.map(lambda a: a[t], c) for c, t in kept]
    out = jax.tree.map(lambda *a: np.concatenate(a)[:n], *parts)
    if len(out.answer) < n:
        raise ValueError(
            f"only {len(out.answer)} distinct held-out instances exist outside the training set "
            f"for grid_size={cfg.grid_size}, n_colours={cfg.n_colours}; lower n_test or n_val"
        )
    return out


# --- what the question alone gives away -----------------------------------------------------------


def _binomial(n: int, p: float) -> np.ndarray:
    """(n + 1,) Binomial(n, p) probabilities."""
    from scipy.stats import binom

    return binom.pmf(np.arange(n + 1), n, p)


def _gravity_counts(cfg: Config, r: int) -> np.ndarray:
    """(G + 1,) distribution of a gravity answer (the count) given the question's row ``r``. After
    gravity a column's cell in row r is non-empty iff the column holds at least G - r cells
    (probability p, columns independent), with i.i.d. uniform colours; the asked colour k is the
    colour of a random cell of the row when that cell is non-empty (which then counts), else a
    uniform colour, so k itself says nothing more (all colours are alike)."""
    g, c, d = cfg.grid_size, cfg.n_colours, cfg.density
    p = float(_binomial(g, d)[g - r :].sum())
    others = _binomial(g - 1, p / c)  # the other G - 1 cells of the row that match k
    out = np.zeros(g + 1)
    out[1:] += p * others
    out[:-1] += (1 - p) * others
    return out


def _cell_best(cfg: Config, n_choices: int):
    """(best colour index, its probability) of a random cell whose non-empty colours are uniform
    over ``n_choices`` colours: empty (0) if 1 - density >= density / n_choices."""
    d = cfg.density
    return (0, 1.0 - d) if 1.0 - d >= d / n_choices else (1, d / n_choices)


def question_only_optimum(cfg: Config = Config()) -> dict:
    """Per family of ``cfg.families``: the highest accuracy any answer rule that sees the question
    but not the image can reach (E_q max_a P(a | q)), exactly, from the task distribution:

    - ``read``, ``rotate``: the asked cell is a uniformly random cell: max(1 - d, d / C).
    - ``gravity``: the count of the asked colour in row r after gravity depends on r (rows near the
      top are mostly empty); the mean over r of the most likely count (see :func:`question_only_answers`).
    - ``recolour``: count of a or b in a row before recolouring: Binomial(G, 2d / C), its mode.
    - ``path``: a zero move (1/G^2 of the questions) lands on the marker; any other cell is empty
      with probability 1 - d, else one of the C - 1 other colours.
    """
    cfg.validate()
    g, c, d = cfg.grid_size, cfg.n_colours, cfg.density
    out = {}
    for fam in cfg.families:
        if fam in ("read", "rotate"):
            out[fam] = _cell_best(cfg, c)[1]
        elif fam == "gravity":
            out[fam] = float(np.mean([_gravity_counts(cfg, r).max() for r in range(g)]))
        elif fam == "recolour":
            out[fam] = float(_binomial(g, 2 * d / c).max())
        else:  # path
            out[fam] = 1.0 / g**2 + (1.0 - 1.0 / g**2) * _cell_best(cfg, c - 1)[1]
    return out


def question_only_answers(cfg: Config, batch: Instance) -> np.ndarray:
    """(B,) the answer tokens of the optimal question-only rule of :func:`question_only_optimum`
    for a batch of instances (host NumPy); ties go to the smallest token."""
    v = cfg.vocab
    fam = np.asarray(batch.family)
    q = np.asarray(batch.question)
    out = np.zeros(fam.shape, np.int32)
    cell = _cell_best(cfg, cfg.n_colours)[0]
    gravity_best = [int(np.argmax(_gravity_counts(cfg, r))) for r in range(cfg.grid_size)]
    recolour_best = int(np.argmax(_binomial(cfg.grid_size, 2 * cfg.density / cfg.n_colours)))
    path_best = _cell_best(cfg, cfg.n_colours - 1)[0]
    for i, (f, row) in enumerate(zip(fam, q)):
        name = FAMILIES[int(f)]
        if name in ("read", "rotate"):
            out[i] = v.colour0 + cell
        elif name == "gravity":
            out[i] = v.number0 + gravity_best[int(row[2]) - v.number0]
        elif name == "recolour":
            out[i] = v.number0 + recolour_best
        else:  # path: no move lands on the marker (colour 1); else the likeliest other cell (colours 2..C)
            still = int(row[2]) == v.number0 and int(row[4]) == v.number0
            out[i] = v.colour0 + (1 if still else (path_best + 1 if path_best else 0))
    return out
