"""Synthetic visual reasoning tasks that need an imagined transformation of the image.

An image is a ``G x G`` grid of cells, each empty (0) or one of ``n_colours`` colours (1..C). A
question asks about the image *after* a transformation the model has to imagine. Four families:

``rotate``    rotate (90/180/270, counter-clockwise as :func:`numpy.rot90`) or flip (left-right,
              up-down) the grid, then ask the colour of cell (r, c) of the result.
``gravity``   every non-empty cell falls to the bottom of its column (order kept), then count colour
              k in row r. (Gravity keeps each column's multiset, so a per-column count would not
              need the transformation; a row count does.)
``recolour``  every cell of colour a becomes colour b, then count colour b in row r.
``path``      colour 1 ("the marker") appears exactly once; start there, move vertically n1 cells
              then horizontally n2 cells (wrapping around the edges): which colour is there?

Every instance carries the answer (one token), the *helper image* (the transformed grid, for
latent supervision: for ``path`` the grid rolled so the destination sits under the marker) and a
*caption* of the relevant change (for text-space imagination: the source cell for ``rotate``, the
transformed row for ``gravity``/``recolour``, the destination cell for ``path``), padded to
``caption_len`` with ``<pad>``.

Generators are pure JAX: :func:`sample` draws one instance from a key and a (traceable) family
index, so it is jittable and vmappable; :func:`generate` draws a batch with key ``fold_in(key, i)``
for instance i. :func:`splits` draws train and test sets from disjoint key streams and removes
every test instance whose (image, question) also occurs in the training set, so the splits never
share an instance.
"""

from __future__ import annotations

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

FAMILIES = ("rotate", "gravity", "recolour", "path")
OPS = ("rot90", "rot180", "rot270", "flip_lr", "flip_ud")
DIRECTIONS = ("up", "down", "left", "right")
SPECIALS = ("<pad>", "<latent_start>", "<latent_end>", "<answer>", "<pause>")
QUESTION_LEN = 5  # the longest question (path: family, dir, n, dir, n)


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of the tasks (it fixes every array shape and the vocabulary).

    Attributes:
      grid_size: G, the image is G x G cells.
      n_colours: C colours (cell values 1..C; 0 is empty).
      density: probability that a cell is non-empty.
    """

    grid_size: int = 6
    n_colours: int = 6
    density: float = 0.75

    def validate(self) -> "Config":
        _checks.positive_int("grid_size", self.grid_size)
        _checks.positive_int("n_colours", self.n_colours, minimum=2)
        _checks.real("density", self.density, low=0.0, high=1.0)
        return self

    @property
    def vocab(self) -> "Vocab":
        return Vocab(self.grid_size, self.n_colours)

    @property
    def caption_len(self) -> int:
        return max(self.grid_size, 2)

    @property
    def n_patches(self) -> int:
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
        return len(SPECIALS)

    @property
    def colour0(self) -> int:
        return self.family0 + len(FAMILIES)

    @property
    def number0(self) -> int:
        return self.colour0 + self.n_colours + 1

    @property
    def op0(self) -> int:
        return self.number0 + self.grid_size + 1

    @property
    def direction0(self) -> int:
        return self.op0 + len(OPS)

    @property
    def size(self) -> int:
        return self.direction0 + len(DIRECTIONS)

    def names(self) -> list[str]:
        """The text of every token id (for printing captions and answers)."""
        return (list(SPECIALS) + list(FAMILIES) + [f"colour{k}" for k in range(self.n_colours + 1)]
                + [str(n) for n in range(self.grid_size + 1)] + list(OPS) + list(DIRECTIONS))

    def decode(self, tokens) -> list[str]:
        names = self.names()
        return [names[int(t)] for t in np.asarray(tokens).ravel()]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Instance:
    """One task instance (a batch when every field has a leading axis)."""

    image: jax.Array     # (G, G) int32 cell colours, 0 = empty
    question: jax.Array  # (QUESTION_LEN,) int32 token ids, <pad>-padded
    answer: jax.Array    # () int32 token id
    helper: jax.Array    # (G, G) int32 the transformed grid
    caption: jax.Array   # (caption_len,) int32 token ids, <pad>-padded
    family: jax.Array    # () int32 index into FAMILIES


# --- transformations (pure, on one (G, G) grid) -------------------------------------------------

def transform(image, op):
    """Rotate/flip ``image`` (G, G) by ``op`` (index into OPS, traceable)."""
    branches = [lambda a: jnp.rot90(a, 1), lambda a: jnp.rot90(a, 2), lambda a: jnp.rot90(a, 3),
                lambda a: a[:, ::-1], lambda a: a[::-1, :]]
    return jax.lax.switch(op, branches, image)


def source_cell(op, r, c, g):
    """The cell (sr, sc) of the original grid that lands on (r, c) after ``op``."""
    last = g - 1
    rows = jnp.stack([c, last - r, last - c, r, last - r])
    cols = jnp.stack([last - r, last - c, r, last - c, c])
    return rows[op], cols[op]


def gravity(image):
    """Non-empty cells fall to the bottom of their column, keeping their order."""
    order = jnp.argsort(image != 0, axis=0, stable=True)  # empties first, then cells top to bottom
    return jnp.take_along_axis(image, order, axis=0)


def recolour(image, a, b):
    return jnp.where(image == a, b, image)


# --- generators ----------------------------------------------------------------------------------

def _grid(key, cfg: Config):
    kf, kc = jax.random.split(key)
    full = jax.random.bernoulli(kf, cfg.density, (cfg.grid_size, cfg.grid_size))
    colours = jax.random.randint(kc, (cfg.grid_size, cfg.grid_size), 1, cfg.n_colours + 1)
    return jnp.where(full, colours, 0).astype(jnp.int32)


def _pad(tokens, n):
    tokens = jnp.asarray(tokens, jnp.int32)
    return jnp.concatenate([tokens, jnp.zeros((n - tokens.shape[0],), jnp.int32)])


def _rotate(key, cfg, v):
    g = cfg.grid_size
    k0, k1, k2 = jax.random.split(key, 3)
    image = _grid(k0, cfg)
    op = jax.random.randint(k1, (), 0, len(OPS))
    r, c = jax.random.randint(k2, (2,), 0, g)
    helper = transform(image, op)
    sr, sc = source_cell(op, r, c, g)
    q = jnp.stack([v.family0 + 0, v.op0 + op, v.number0 + r, v.number0 + c])
    answer = v.colour0 + helper[r, c]
    caption = jnp.stack([v.number0 + sr, v.number0 + sc])
    return image, q, answer, helper, caption


def _gravity(key, cfg, v):
    g = cfg.grid_size
    k0, k1, k2, k3 = jax.random.split(key, 4)
    image = _grid(k0, cfg)
    helper = gravity(image)
    r = jax.random.randint(k1, (), 0, g)
    seen = helper[r, jax.random.randint(k2, (), 0, g)]  # ask about a colour present in the row when one is hit
    k = jnp.where(seen > 0, seen, jax.random.randint(k3, (), 1, cfg.n_colours + 1))
    q = jnp.stack([v.family0 + 1, v.colour0 + k, v.number0 + r])
    answer = v.number0 + jnp.sum(helper[r] == k)
    caption = v.colour0 + helper[r]
    return image, q, answer, helper, caption


def _recolour(key, cfg, v):
    g = cfg.grid_size
    k0, k1, k2, k3 = jax.random.split(key, 4)
    image = _grid(k0, cfg)
    a = jax.random.randint(k1, (), 1, cfg.n_colours + 1)
    b = 1 + (a - 1 + jax.random.randint(k2, (), 1, cfg.n_colours)) % cfg.n_colours  # b != a
    r = jax.random.randint(k3, (), 0, g)
    helper = recolour(image, a, b)
    q = jnp.stack([v.family0 + 2, v.colour0 + a, v.colour0 + b, v.number0 + r])
    answer = v.number0 + jnp.sum(helper[r] == b)
    caption = v.colour0 + helper[r]
    return image, q, answer, helper, caption


def _path(key, cfg, v):
    g = cfg.grid_size
    k0, k1, k2, k3, k4 = jax.random.split(key, 5)
    image = _grid(k0, cfg)
    if cfg.n_colours >= 2:  # the marker (colour 1) appears exactly once
        other = jax.random.randint(k1, image.shape, 2, cfg.n_colours + 1)
        image = jnp.where(image == 1, other, image)
    start = jax.random.randint(k2, (2,), 0, g)
    image = image.at[start[0], start[1]].set(1)
    d = jax.random.randint(k3, (2,), 0, 2)  # vertical: up/down, horizontal: left/right
    n = jax.random.randint(k4, (2,), 0, g)
    dr = jnp.where(d[0] == 0, -n[0], n[0])
    dc = jnp.where(d[1] == 0, -n[1], n[1])
    er, ec = (start[0] + dr) % g, (start[1] + dc) % g
    helper = jnp.roll(image, (start[0] - er, start[1] - ec), axis=(0, 1))  # destination under the marker
    q = jnp.stack([v.family0 + 3, v.direction0 + d[0], v.number0 + n[0], v.direction0 + 2 + d[1],
                   v.number0 + n[1]])
    answer = v.colour0 + image[er, ec]
    caption = jnp.stack([v.number0 + er, v.number0 + ec])
    return image, q, answer, helper, caption


_GENERATORS = (_rotate, _gravity, _recolour, _path)


def family_index(name: str) -> int:
    _checks.choice("family", name, FAMILIES)
    return FAMILIES.index(name)


def sample(key, family, cfg: Config = Config()) -> Instance:
    """Draw one instance of ``family`` (a name, or an index into FAMILIES that may be traced)."""
    if isinstance(family, str):
        family = family_index(family)
    elif _checks.on_host(family) and np.ndim(family) == 0 and not 0 <= int(family) < len(FAMILIES):
        raise ValueError(f"family must be a name in {list(FAMILIES)} or an index 0..{len(FAMILIES) - 1}, "
                         f"got {family!r}")
    v = cfg.vocab

    def branch(gen):
        def f(k):
            image, q, answer, helper, caption = gen(k, cfg, v)
            return (image, _pad(q, QUESTION_LEN), jnp.asarray(answer, jnp.int32), helper,
                    _pad(caption, cfg.caption_len))
        return f

    image, q, answer, helper, caption = jax.lax.switch(jnp.asarray(family, jnp.int32),
                                                       [branch(g) for g in _GENERATORS], key)
    return Instance(image, q, answer, helper, caption, jnp.asarray(family, jnp.int32))


def _families(families) -> tuple[int, ...]:
    if isinstance(families, str):
        families = (families,)
    if len(families) == 0:
        raise ValueError(f"families must name at least one of {list(FAMILIES)}, got an empty list")
    return tuple(family_index(f) for f in families)


def _check_generate(key, n, cfg, families, offset):
    _checks.prng_key("key", key)
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.latent.tasks.Config, got {type(cfg).__name__}")
    cfg.validate()
    _checks.positive_int("n", n)
    if _checks.on_host(offset):
        _checks.positive_int("offset", offset, minimum=0)
    return {"families": tuple(FAMILIES[i] for i in _families(families))}


@_checks.checked_jit(_check_generate, static_argnames=("n", "cfg", "families"))
def generate(key, n: int, cfg: Config = Config(), families=FAMILIES, *, offset=0) -> Instance:
    """``n`` instances; instance i has key ``fold_in(key, offset + i)`` and family
    ``families[(offset + i) % len(families)]`` (so the families are balanced). ``offset`` may be
    traced; ``n``, ``cfg`` and ``families`` are static."""
    fam = jnp.asarray([FAMILIES.index(f) for f in families], jnp.int32)
    idx = offset + jnp.arange(n)
    return jax.vmap(lambda i: sample(jax.random.fold_in(key, i), fam[i % fam.shape[0]], cfg))(idx)


def fingerprints(inst: Instance) -> np.ndarray:
    """One hash per instance of (image, question): equal iff the instances are the same task."""
    img = np.asarray(inst.image, np.int8).reshape(np.shape(inst.image)[0], -1)
    q = np.asarray(inst.question, np.int16)
    return np.array([hashlib.blake2b(a.tobytes() + b.tobytes(), digest_size=12).hexdigest()
                     for a, b in zip(img, q)])


def splits(key, n_train: int, n_test: int, cfg: Config = Config(), families=FAMILIES):
    """Train and test sets (host NumPy :class:`Instance` batches) that never share an instance.

    Train instances come from ``fold_in(key, 0)``, test ones from ``fold_in(key, 1)``; test
    instances whose (image, question) occurs in the training set, or earlier in the test set, are
    dropped and replaced by further draws. Families are balanced in both sets.
    """
    cfg.validate()
    _checks.positive_int("n_train", n_train)
    _checks.positive_int("n_test", n_test)
    fams = _families(families)
    train = jax.tree.map(np.asarray, generate(jax.random.fold_in(key, 0), n_train, cfg, families))
    seen = set(fingerprints(train).tolist())
    tkey = jax.random.fold_in(key, 1)
    kept, fam_count, offset = [], np.zeros(len(fams), int), 0
    per_family = -(-n_test // len(fams))
    while sum(len(k[1]) for k in kept) < n_test and offset < 50 * n_test:
        chunk = jax.tree.map(np.asarray, generate(tkey, n_test, cfg, families, offset=offset))
        fp = fingerprints(chunk)
        take = []
        for i, h in enumerate(fp):
            f = fams.index(int(chunk.family[i]))
            if h in seen or fam_count[f] >= per_family:
                continue
            seen.add(h)
            fam_count[f] += 1
            take.append(i)
        kept.append((chunk, np.asarray(take, int)))
        offset += n_test
        if not take:  # a whole chunk of repeats: the space is (nearly) exhausted
            break
    parts = [jax.tree.map(lambda a: a[t], c) for c, t in kept]
    test = jax.tree.map(lambda *a: np.concatenate(a)[:n_test], *parts)
    if len(test.answer) < n_test:
        raise ValueError(f"only {len(test.answer)} distinct test instances exist outside the training set "
                         f"for grid_size={cfg.grid_size}, n_colours={cfg.n_colours}; lower n_test={n_test}")
    return train, test
