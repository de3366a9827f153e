"""The task generators against plain NumPy/Python implementations of each transformation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import binom

from tokdyn.data import grid_tasks as tasks

CFG = tasks.Config(grid_size=5, n_colours=4, density=0.6)
V = CFG.vocab
N = 400


@pytest.fixture(scope="module")
def batch():
    return jax.tree.map(np.asarray, tasks.generate(jax.random.key(7), N, CFG))


def _np_gravity(img):
    out = np.zeros_like(img)
    for c in range(img.shape[1]):
        col = [x for x in img[:, c] if x != 0]
        for k, x in enumerate(reversed(col)):
            out[img.shape[0] - 1 - k, c] = x
    return out


def _reference(image, question):
    """Answer, helper and caption from the question tokens, in plain NumPy/Python."""
    g = image.shape[0]
    fam = tasks.FAMILIES[question[0] - V.family0]
    num = lambda t: int(t) - V.number0  # noqa: E731
    col = lambda t: int(t) - V.colour0  # noqa: E731
    if fam == "read":
        r, c = num(question[1]), num(question[2])
        return V.colour0 + image[r, c], image, [V.number0 + r, V.number0 + c]
    if fam == "rotate":
        op = tasks.OPS[question[1] - V.op0]
        r, c = num(question[2]), num(question[3])
        helper = {
            "rot90": np.rot90(image, 1),
            "rot180": np.rot90(image, 2),
            "rot270": np.rot90(image, 3),
            "flip_lr": np.fliplr(image),
            "flip_ud": np.flipud(image),
        }[op]
        src = [(i, j) for i in range(g) for j in range(g) if _lands(image, i, j, op, r, c)]
        sr, sc = src[0]
        return V.colour0 + helper[r, c], helper, [V.number0 + sr, V.number0 + sc]
    if fam == "gravity":
        k, r = col(question[1]), num(question[2])
        helper = _np_gravity(image)
        return V.number0 + int((helper[r] == k).sum()), helper, list(V.colour0 + helper[r])
    if fam == "recolour":
        a, b, r = col(question[1]), col(question[2]), num(question[3])
        helper = image.copy()
        helper[image == a] = b
        return V.number0 + int((helper[r] == b).sum()), helper, list(V.colour0 + helper[r])
    # path: walk step by step on the torus
    (sr,), (sc,) = np.nonzero(image == 1)
    sr, sc = int(sr), int(sc)
    r, c = sr, sc
    for d, n in ((question[1], question[2]), (question[3], question[4])):
        step = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}[tasks.DIRECTIONS[d - V.direction0]]
        for _ in range(num(n)):
            r, c = (r + step[0]) % g, (c + step[1]) % g
    helper = np.empty_like(image)
    for i in range(g):
        for j in range(g):  # the destination sits under the marker
            helper[(i + sr - r) % g, (j + sc - c) % g] = image[i, j]
    return V.colour0 + image[r, c], helper, [V.number0 + sr, V.number0 + sc, V.number0 + r, V.number0 + c]


def _lands(image, i, j, op, r, c):
    """Does cell (i, j) land on (r, c) under op? (a one-hot probe through NumPy's own rot/flip)"""
    probe = np.zeros_like(image)
    probe[i, j] = 1
    moved = {
        "rot90": np.rot90(probe, 1),
        "rot180": np.rot90(probe, 2),
        "rot270": np.rot90(probe, 3),
        "flip_lr": np.fliplr(probe),
        "flip_ud": np.flipud(probe),
    }[op]
    return moved[r, c] == 1


def test_every_family_matches_the_numpy_reference(batch):
    assert sorted(set(batch.family.tolist())) == list(range(len(tasks.FAMILIES)))
    for i in range(N):
        answer, helper, caption = _reference(batch.image[i], batch.question[i])
        assert batch.answer[i] == answer, (i, tasks.FAMILIES[batch.family[i]])
        np.testing.assert_array_equal(batch.helper[i], helper)
        cap = np.asarray(caption + [V.pad] * (CFG.caption_len - len(caption)))
        np.testing.assert_array_equal(batch.caption[i], cap)
        assert batch.question[i][0] == V.family0 + batch.family[i]


def test_marker_unique_and_value_ranges(batch):
    path = batch.family == tasks.FAMILIES.index("path")
    assert np.all((batch.image[path] == 1).sum((1, 2)) == 1)
    assert batch.image.min() >= 0 and batch.image.max() <= CFG.n_colours
    assert np.all((batch.answer >= 0) & (batch.answer < V.size))
    assert len(V.names()) == V.size
    # every operation, direction and several row indices occur
    rot = batch.question[batch.family == tasks.FAMILIES.index("rotate")]
    assert set(rot[:, 1] - V.op0) == set(range(len(tasks.OPS)))


def test_density_and_seeding(batch):
    # the fixture's instances (one compiled generator): every family but path (whose marker fills a
    # cell) fills each cell with probability density
    image = batch.image[batch.family != tasks.FAMILIES.index("path")]
    frac = float((image > 0).mean())
    assert abs(frac - CFG.density) < 0.03  # 8000 cells
    # the kernel inside a user's jit, with a traced offset
    again = jax.jit(lambda k, o: tasks.generate(k, 50, CFG, offset=o))(jax.random.key(7), 150)
    np.testing.assert_array_equal(batch.image[150:200], np.asarray(again.image))
    other = tasks.generate(jax.random.key(1), 200, CFG)  # the configuration drawn above: no other compilation
    assert not np.array_equal(batch.image[:50], np.asarray(other.image)[:50])


def test_sample_is_vmappable_over_traced_families(batch):
    # generate is sample vmapped over keys fold_in(key, i) and traced family indices i % 5: the
    # fixture's instances (its compiled program); instance 7 is a gravity task
    np.testing.assert_array_equal(batch.family[:8], np.arange(8) % len(tasks.FAMILIES))
    one = jax.jit(lambda k: tasks.sample(k, "gravity", CFG))(jax.random.fold_in(jax.random.key(7), 7))
    for f in dataclasses.fields(tasks.Instance):  # a concrete family: the same instance
        np.testing.assert_array_equal(getattr(batch, f.name)[7], np.asarray(getattr(one, f.name)), err_msg=f.name)
    # a configuration of some families compiles only theirs (slot i % 2 of ("path", "gravity")): the same
    # instances as sample draws of each family, in one program
    two = dataclasses.replace(CFG, families=("path", "gravity"))
    key = jax.random.key(3)
    got, p, g = jax.jit(
        lambda k: (
            tasks.generate(k, 2, two),
            tasks.sample(jax.random.fold_in(k, 0), "path", two),
            tasks.sample(jax.random.fold_in(k, 1), "gravity", two),
        )
    )(key)
    for f in dataclasses.fields(tasks.Instance):
        for i, want in enumerate((p, g)):
            np.testing.assert_array_equal(getattr(got, f.name)[i], getattr(want, f.name), err_msg=f.name)
    # Instance: a frozen dataclass pytree (fields in declaration order)
    assert [f.name for f in dataclasses.fields(tasks.Instance)] == [
        "image",
        "question",
        "answer",
        "helper",
        "caption",
        "family",
    ]
    assert jax.tree.leaves(one)[2] is one.answer
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.answer = 0
    assert dataclasses.replace(one, answer=jnp.int32(7)).answer == 7


@pytest.mark.full
def test_the_same_instances_with_x64_enabled(batch):
    # every draw is an int32 (or a float32 uniform against the density): jax_enable_x64 changes nothing
    with jax.enable_x64(True):
        x64 = jax.tree.map(np.asarray, tasks.generate(jax.random.key(7), 40, CFG))
    for f in dataclasses.fields(tasks.Instance):
        assert getattr(x64, f.name).dtype == np.int32, f.name
        np.testing.assert_array_equal(getattr(x64, f.name), getattr(batch, f.name)[:40], err_msg=f.name)


@pytest.mark.full
def test_splits_never_share_instances():
    # a tiny space (2x2 grid, 2 colours) forces collisions, which must be removed
    cfg = tasks.Config(grid_size=2, n_colours=2, density=0.5)
    # (validation and test sets of one size: their chunks of the held-out stream are one compilation)
    train, val, test = tasks.splits(jax.random.key(0), 400, 40, cfg, n_val=40)
    tr, va, te = set(tasks.fingerprints(train)), tasks.fingerprints(val), tasks.fingerprints(test)
    assert len(te) == 40 and len(set(te)) == 40 and not (tr & set(te))
    assert len(va) == 40 and len(set(va)) == 40 and not (tr & set(va)) and not (set(va) & set(te))
    assert np.bincount(test.family, minlength=5).tolist() == [8, 8, 8, 8, 8]
    assert np.bincount(val.family, minlength=5).tolist() == [8, 8, 8, 8, 8]
    # the test set does not depend on whether a validation set is drawn
    np.testing.assert_array_equal(tasks.splits(jax.random.key(0), 400, 40, cfg).test.image, test.image)
    # a training pool of 4000 leaves fewer than the 80 distinct gravity tasks per family that 400 need
    with pytest.raises(ValueError, match="n_test or n_val"):
        tasks.splits(jax.random.key(0), 4000, 400, cfg)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grid_size=1), "grid_size"),
        (dict(grid_size=2.5), "grid_size"),
        (dict(grid_size=33), "grid_size"),
        (dict(n_colours=1), "n_colours"),
        (dict(n_colours=101), "n_colours"),
        (dict(density=1.5), "density"),
        (dict(families=("rotate", "zoom")), "family must be one of"),
        (dict(families=()), "families"),
        (dict(families=("read", "read")), "repeat"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tasks.generate(jax.random.key(0), 4, tasks.Config(**kwargs))


def test_bad_family_and_sizes():
    with pytest.raises(ValueError, match="family"):
        tasks.sample(jax.random.key(0), 7, CFG)
    with pytest.raises(ValueError, match="n must be"):
        tasks.generate(jax.random.key(0), 0, CFG)
    with pytest.raises(ValueError, match="offset"):
        tasks.generate(jax.random.key(0), 4, CFG, offset=-1)
    with pytest.raises(TypeError, match="key"):
        tasks.generate(7, 4, CFG)
    with pytest.raises(TypeError, match="cfg"):
        tasks.generate(jax.random.key(0), 4, {"grid_size": 3})


@pytest.mark.parametrize(
    "cfg",
    [
        # one compilation of the generator per configuration: the default run samples the fixture's
        # (whose generator is compiled already), the others are slow (among them the one whose
        # read/rotate/path optimum is a coloured cell, d / C); every configuration's closed forms are
        # checked in the default run by test_question_only_closed_forms (the fixture's configuration
        # here with the full executions)
        pytest.param(CFG, marks=pytest.mark.full),
        pytest.param(tasks.Config(grid_size=4, n_colours=4, density=0.75), marks=pytest.mark.slow),
        pytest.param(tasks.Config(grid_size=5, n_colours=3, density=0.9), marks=pytest.mark.slow),
        pytest.param(tasks.Config(grid_size=3, n_colours=6, density=0.3), marks=pytest.mark.slow),
    ],
    ids=str,
)
def test_question_only_optimum_is_exact(cfg):
    """The exact optimum against 60,000 sampled instances: the rule reaches it (within 4 standard
    errors), and no rule does better: per question, the most frequent answer in one half of the
    sample, scored on the other half, stays below it (within 4 standard errors)."""
    n = 60_000
    b = jax.tree.map(np.asarray, tasks.generate(jax.random.key(11), n, cfg))
    opt = tasks.question_only_optimum(cfg)
    rule = tasks.question_only_answers(cfg, b) == b.answer
    half = n // 2
    for i, fam in enumerate(tasks.FAMILIES):
        sel = b.family == i
        se = np.sqrt(opt[fam] * (1 - opt[fam]) / sel.sum())
        assert abs(rule[sel].mean() - opt[fam]) < 4 * se, (fam, rule[sel].mean(), opt[fam])
        # question ids shared by both halves, answers counted per (question, answer) pair at once
        qs, qid = np.unique(b.question[sel], axis=0, return_inverse=True)
        qid, ans, first_half = qid.reshape(-1), b.answer[sel], np.arange(n)[sel] < half
        counts = np.zeros((len(qs), V.size), int)
        np.add.at(counts, (qid[first_half], ans[first_half]), 1)
        best = np.where(counts.any(1), counts.argmax(1), -1)  # the first most frequent answer; -1: unseen
        held = best[qid[~first_half]] == ans[~first_half]
        assert np.mean(held) < opt[fam] + 4 * np.sqrt(opt[fam] * (1 - opt[fam]) / len(held)), fam
    # the closed forms at a glance: read = max(1 - d, d / C); path adds the zero moves
    d, c, g = cfg.density, cfg.n_colours, cfg.grid_size
    assert opt["read"] == pytest.approx(max(1 - d, d / c))
    assert opt["path"] == pytest.approx(1 / g**2 + (1 - 1 / g**2) * max(1 - d, d / (c - 1)))


@pytest.mark.parametrize(
    "cfg",
    [
        CFG,
        tasks.Config(grid_size=4, n_colours=4, density=0.75),
        tasks.Config(grid_size=5, n_colours=3, density=0.9),
        tasks.Config(grid_size=3, n_colours=6, density=0.3),
    ],
    ids=str,
)
def test_question_only_closed_forms(cfg):
    """The optimum's closed forms for every configuration (host arithmetic; the optimum against
    sampled instances: test_question_only_optimum_is_exact)."""
    opt = tasks.question_only_optimum(cfg)
    d, c, g = cfg.density, cfg.n_colours, cfg.grid_size
    assert opt["read"] == pytest.approx(max(1 - d, d / c)) and opt["rotate"] == opt["read"]
    assert opt["path"] == pytest.approx(1 / g**2 + (1 - 1 / g**2) * max(1 - d, d / (c - 1)))
    assert opt["recolour"] == pytest.approx(max(binom.pmf(np.arange(g + 1), g, 2 * d / c)))
    assert all(0 < p <= 1 for p in opt.values())


def test_the_old_module_name_is_this_module_with_a_dated_warning(monkeypatch):
    """``from tokdyn.models.latent import tasks`` (the module's name before it moved to tokdyn.data) still gives
    the module, warning with its removal version on its first use in the process."""
    import importlib
    import warnings

    import tokdyn.models.latent

    monkeypatch.delitem(vars(tokdyn.models.latent), "tasks", raising=False)  # as if not used yet
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from tokdyn.models.latent import tasks as old
    assert old is importlib.import_module("tokdyn.data.grid_tasks")
    (w,) = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert "tokdyn.models.latent.tasks is deprecated: use tokdyn.data.grid_tasks" in str(w.message)
    assert "removed in 0.2.0" in str(w.message)
