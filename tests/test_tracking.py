"""Token dynamics through time (tokdyn.tracking): every predictor against a float64 NumPy frame loop
of the built-in rule written here, and against dynamics.run called frame by frame from Python;
identities of carried tokens against re-initialised ones (with and without matching, the matching
against SciPy's Hungarian algorithm); constant velocity against the closed-form lag of carrying;
one compilation for every predictor; the edge cases (one frame, zero velocity, empty frames, a
single token); the moving-clusters generator and the sweepable TrackRun."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from conftest import assert_same_floats, f32_atol, jax_compilations
from tokdyn import data, dynamics, metrics, tracking
from tokdyn.engine import sweep
from tokdyn.engine.runs import TrackRun

P = tracking.PREDICTORS
EPS = 1e-8  # dynamics.EPS_MASS, written out: the reference is independent of the package


# ---------------------------------------------------------------------------------------------- NumPy reference


def ref_push(tokens, r):
    """One Jacobi pass of the minimum-separation push, pair by pair."""
    t = np.asarray(tokens, np.float64)
    out = t.copy()
    n, d = t.shape
    for j in range(n):
        for k in range(n):
            if j == k:
                continue
            diff = t[j] - t[k]
            dist = np.sqrt(diff @ diff)
            if dist >= r:
                continue
            unit = diff / dist if dist > 0 else (1.0 if j > k else -1.0) * np.eye(d)[0]
            out[j] += 0.5 * (r - dist) * unit
    return out


def ref_run(x, valid, tokens, velocity, hp, n_steps, tol):
    """The built-in rule (softmax, token-anchored means, Coulomb repulsion, momentum, damping) in
    float64, from the given tokens and velocity; returns (tokens, velocity, steps)."""
    x, t, v = (np.asarray(a, np.float64) for a in (x, tokens, velocity))
    x = x[valid]
    for s in range(n_steps):
        d2 = ((x[:, None, :] - t[None, :, :]) ** 2).sum(-1)  # (N, T)
        logits = -d2 / hp.temperature
        a = np.exp(logits - logits.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        means = (a.T @ x + EPS * t) / (a.sum(0)[:, None] + EPS)
        rep = np.zeros_like(t)
        for j in range(len(t)):
            for k in range(len(t)):
                if j != k:
                    diff = t[j] - t[k]
                    rep[j] += diff / max(np.sqrt(diff @ diff), 1e-3) ** 3
        v = hp.momentum * v + hp.damping * (means - t + hp.repulsion * rep)
        t = t + v
        if np.abs(v).max() < tol:
            return t, v, s + 1
    return t, v, n_steps


def ref_track(frames, mask, fresh, thp, hp, n_steps, tol):
    """The frame loop: ``fresh[f]`` are frame f's drawn tokens (the randomness is the package's;
    the logic is this loop's). Returns per-frame tokens and steps."""
    last = before = vel = None
    tokens, steps = [], []
    for f in range(len(frames)):
        if not mask[f].any():  # skipped: the carry stays
            tokens.append(np.full_like(fresh[f], np.nan) if last is None else last)
            steps.append(0)
            continue
        v0 = np.zeros_like(fresh[f], dtype=np.float64)
        if last is None or thp.predictor == P["reinit"]:
            start = fresh[f]
        else:
            start = last + (last - before) if thp.predictor == P["velocity"] else last
            if thp.separation > 0:
                start = ref_push(start, thp.separation)
            if thp.predictor == P["inertia"]:
                v0 = thp.decay * vel
        t, vel, s = ref_run(frames[f], mask[f], start, v0, hp, n_steps, tol)
        before = t if last is None else last
        last = t
        tokens.append(t)
        steps.append(s)
    return np.stack(tokens), np.array(steps)


def _host(tree):
    """A result's arrays as NumPy arrays: the tests index and compare them on the host (indexing a
    JAX array compiles a small program per index)."""
    return jax.tree_util.tree_map(np.asarray, tree)


def fresh_tokens(key, frames, mask, n_tokens, init="kmeans++"):
    """Each frame's drawn tokens (NaN for a frame without points, which draws none)."""
    return np.stack(
        [
            np.asarray(
                dynamics.init_tokens(
                    tracking.frame_keys(key, f)[0], n_tokens, frames.shape[-1], method=init, x=frames[f], mask=mask[f]
                )
            )
            if mask[f].any()
            else np.full((n_tokens, frames.shape[-1]), np.nan, np.float32)
            for f in range(len(frames))
        ]
    )


def blobs(n_frames, centres, velocity, per=30, spread=0.4, seed=0):
    """(F, K * per, 2) frames of blobs translating at constant velocity (new noise per frame)."""
    rng = np.random.default_rng(seed)
    c, v = np.asarray(centres, float), np.asarray(velocity, float)
    return np.stack(
        [
            np.concatenate([c[k] + f * v[k] + spread * rng.standard_normal((per, 2)) for k in range(len(c))])
            for f in range(n_frames)
        ]
    ).astype(np.float32)


CENTRES = [[-6.0, 0.0], [6.0, 0.0], [0.0, 6.0]]
VELOCITY = [[0.6, 0.3], [-0.4, 0.5], [0.5, -0.6]]
KEY = jax.random.key(7)


# ---------------------------------------------------------------------------------------------- against references


@pytest.mark.parametrize("name", list(P))
def test_each_predictor_equals_the_numpy_frame_loop(name):
    """Fixed steps (tol 0: every frame takes exactly n_steps), momentum, repulsion and a separation
    push: the scan equals the float64 loop for every predictor, an empty frame included."""
    frames = blobs(5, CENTRES, VELOCITY)
    mask = np.ones(frames.shape[:2], bool)
    mask[3] = False  # an empty frame
    mask[1, :10] = False
    hp = dynamics.Hparams(temperature=1.0, momentum=0.5, repulsion=0.01, damping=0.8)
    thp = tracking.Hparams(predictor=P[name], decay=0.7, separation=4.0)
    kw = dict(n_tokens=4, mask=mask, init="kmeans++", n_steps=4, tol=0.0, fixed=True)  # 4 tokens, 3 blobs
    r = tracking.track(KEY, frames, thp, hp, **kw)
    want, steps = ref_track(frames, mask, fresh_tokens(KEY, frames, mask, 4), thp, hp, 4, 0.0)
    np.testing.assert_allclose(np.asarray(r.tokens), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(r.steps), steps)
    assert np.asarray(r.converged)[3] and not np.asarray(r.converged)[[0, 1, 2, 4]].any()
    if name != "reinit":  # the two tokens that share a blob come closer than 4: the push acts
        unpushed = tracking.track(KEY, frames, dataclasses.replace(thp, separation=0.0), hp, **kw)
        assert float(np.abs(np.asarray(unpushed.tokens) - np.asarray(r.tokens)).max()) > 0.05


def test_early_stop_equals_the_numpy_frame_loop():
    """The same with the early stop of dynamics.run (tol 1e-3): steps per frame and tokens."""
    frames = blobs(5, CENTRES, VELOCITY, seed=1)
    mask = np.ones(frames.shape[:2], bool)
    hp = dynamics.Hparams(temperature=1.0, momentum=0.3)
    for name in ("velocity", "inertia"):
        thp = tracking.Hparams(predictor=P[name], decay=0.5)
        r = tracking.track(KEY, frames, thp, hp, n_tokens=3, mask=mask, n_steps=40, tol=1e-3, init="kmeans++")
        want, steps = ref_track(frames, mask, fresh_tokens(KEY, frames, mask, 3), thp, hp, 40, 1e-3)
        np.testing.assert_array_equal(np.asarray(r.steps), steps)
        np.testing.assert_allclose(np.asarray(r.tokens), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["reinit", "carry", "velocity"])
def test_scan_equals_dynamics_run_frame_by_frame(name):
    """The carry semantics against dynamics.run called from a Python loop over frames (the same
    float32 rule), with the rule's Langevin noise keyed per frame."""
    frames = blobs(4, CENTRES, VELOCITY, seed=2)
    hp = dynamics.Hparams(temperature=1.0, repulsion=0.02, langevin=1e-4)
    thp = tracking.Hparams(predictor=P[name], separation=1.0)
    r = _host(tracking.track(KEY, frames, thp, hp, n_tokens=4, n_steps=30, tol=1e-3, init="data"))
    last = before = None
    for f in range(4):
        init_key, rule_key = tracking.frame_keys(KEY, f)
        if last is None or name == "reinit":
            start = dynamics.init_tokens(init_key, 4, 2, method="data", x=frames[f])
        else:
            start = ref_push(last + (last - before) if name == "velocity" else last, 1.0).astype(np.float32)
        one = dynamics.run(frames[f], start, hp, n_steps=30, tol=1e-3, key=rule_key)
        # two programs (the scan, a loop of runs): each of the up to 30 steps of this frame and of the
        # frames carried into it rounds anew (8.4 units at the tokens' magnitude per step, accumulated
        # as a random walk); a wrong predictor or key moves tokens by the velocity or the noise, >1e-2
        ulps = 8.4 * np.sqrt(30 * (f + 1))
        assert_same_floats(r.tokens[f], one.tokens, ulps=ulps)
        assert_same_floats(r.start[f], start, ulps=ulps)
        np.testing.assert_array_equal(r.labels[f], one.labels)
        assert int(r.steps[f]) == int(one.steps)
        before = np.asarray(one.tokens) if last is None else last
        last = np.asarray(one.tokens)
        # a difference of two float32 token positions: its rounding is theirs (scale: |last|, |before|)
        assert_same_floats(
            r.displacement[f], 0.0 * last if f == 0 else last - before, operands=(last, before), ulps=ulps
        )


@pytest.mark.full
def test_one_frame_is_one_run():
    frames = blobs(1, CENTRES, VELOCITY, seed=3)
    for name in P:
        r = _host(tracking.track(KEY, frames, tracking.Hparams(predictor=P[name]), n_tokens=3))
        init_key, rule_key = tracking.frame_keys(KEY, 0)
        one = dynamics.run(frames[0], dynamics.init_tokens(init_key, 3, 2, x=frames[0]), key=rule_key)
        assert_same_floats(r.tokens[0], one.tokens)
        np.testing.assert_array_equal(r.labels[0], one.labels)
        assert int(r.steps[0]) == int(one.steps) and bool(r.converged[0]) == bool(one.converged)
        assert float(np.abs(r.displacement).max()) == 0.0


def test_inertia_carries_the_velocity_and_is_carry_without_momentum():
    """Inertia with decay 0, or at momentum 0, is carry; with momentum and a budget of steps too
    small to converge it differs (the carried velocity acts)."""
    frames = blobs(6, CENTRES, VELOCITY, seed=4)
    run = lambda pred, hp, decay=1.0: _host(  # noqa: E731
        tracking.track(
            KEY,
            frames,
            tracking.Hparams(predictor=P[pred], decay=decay),
            hp,
            n_tokens=3,
            n_steps=2,
            tol=0.0,
            fixed=True,
        )
    )
    still = dynamics.Hparams(momentum=0.0, damping=0.5)
    assert_same_floats(run("inertia", still).tokens, run("carry", still).tokens)
    moving = dynamics.Hparams(momentum=0.6, damping=0.5)
    assert_same_floats(run("inertia", moving, decay=0.0).tokens, run("carry", moving).tokens)
    gap = float(np.abs(run("inertia", moving).tokens - run("carry", moving).tokens).max())
    assert gap > 0.05


# ---------------------------------------------------------------------------------------------- what the predictors do


def identity_score(labels_true, ids, mask):
    return float(metrics.ari(np.where(mask, labels_true, 0).ravel(), np.where(mask, ids, 0).ravel(), mask.ravel()))


def test_carried_tokens_keep_identity_where_reinit_without_matching_does_not():
    """Three well-separated blobs moving slowly: carried tokens are the tracks as they are; the
    re-initialised baseline's token indices are arbitrary per frame unless matched."""
    frames = blobs(8, [[-8.0, -4.0], [8.0, -4.0], [0.0, 8.0]], [[0.3, 0.2], [-0.2, 0.3], [0.2, -0.3]], seed=5)
    truth = np.repeat(np.arange(3), 30)[None].repeat(8, 0)
    mask = np.ones(truth.shape, bool)
    for seed in range(3):
        key = jax.random.key(seed)
        scores = {}
        for name in ("reinit", "carry", "velocity"):
            r = tracking.track(key, frames, tracking.Hparams(predictor=P[name]), n_tokens=3, init="kmeans++")
            assert np.all(np.asarray(r.converged))
            raw, _ = tracking.track_labels(r.tokens, r.labels, False)
            matched, _ = tracking.track_labels(r.tokens, r.labels, True)
            scores[name] = (
                identity_score(truth, np.asarray(raw), mask),
                identity_score(truth, np.asarray(matched), mask),
            )
        assert scores["carry"][0] > 0.99 and scores["velocity"][0] > 0.99, scores
        assert scores["reinit"][1] > 0.99, scores  # matching recovers the tracks
        assert scores["reinit"][0] < 0.8, scores  # without it the indices are shuffled draws


def test_constant_velocity_tracks_with_near_zero_lag():
    """One token on one blob translating exactly by v per frame, one damped step per frame (alpha):
    carrying lags by the closed form v (1 - alpha) / alpha; constant velocity's lag decays to 0."""
    rng = np.random.default_rng(6)
    offsets = 0.3 * rng.standard_normal((40, 2))
    v = np.array([0.5, -0.25])
    frames = np.stack([offsets + f * v for f in range(30)]).astype(np.float32)
    centre = offsets.mean(0) + np.arange(30)[:, None] * v  # (F, 2)
    alpha = 0.5
    hp = dynamics.Hparams(damping=alpha)
    lag = {}
    for name in ("carry", "velocity"):
        r = tracking.track(
            KEY, frames, tracking.Hparams(predictor=P[name]), hp, n_tokens=1, n_steps=1, tol=0.0, fixed=True
        )
        lag[name] = centre - np.asarray(r.tokens)[:, 0]
    np.testing.assert_allclose(lag["carry"][-5:], np.broadcast_to(v * (1 - alpha) / alpha, (5, 2)), atol=1e-4)
    assert np.abs(lag["velocity"][-5:]).max() < 1e-3 * np.linalg.norm(v)


@pytest.mark.full
def test_zero_velocity():
    """Frames that do not move: every carried predictor equals carry (the displacement of converged
    tokens is below tol) and the displacement is about 0."""
    frames = np.repeat(blobs(1, CENTRES, VELOCITY, seed=8), 5, axis=0)
    carry = _host(tracking.track(KEY, frames, tracking.Hparams(predictor=P["carry"]), n_tokens=3, init="kmeans++"))
    for name in ("velocity", "inertia"):
        r = tracking.track(KEY, frames, tracking.Hparams(predictor=P[name]), n_tokens=3, init="kmeans++")
        np.testing.assert_allclose(np.asarray(r.tokens), np.asarray(carry.tokens), atol=1e-3)
    assert float(np.abs(carry.displacement).max()) < 1e-3
    assert np.all(np.asarray(carry.steps)[1:] == 1)  # already at the fixed point


def test_separation_keeps_merged_tokens_apart():
    """Two tokens started on top of each other stay merged when carried (the rule is symmetric); the
    separation push splits them onto the two blobs of the next frames."""
    frames = blobs(4, [[-1.5, 0.0], [1.5, 0.0]], [[0.0, 0.0], [0.0, 0.0]], per=40, spread=0.2, seed=9)
    frames[0] = 0.0  # frame 0: one point: both tokens start and stay there
    mask = np.ones(frames.shape[:2], bool)
    mask[0, 1:] = False
    kw = dict(n_tokens=2, mask=mask, init="data")
    merged = tracking.track(KEY, frames, tracking.Hparams(predictor=P["carry"]), **kw)
    pushed = tracking.track(KEY, frames, tracking.Hparams(predictor=P["carry"], separation=0.5), **kw)
    gap = lambda r: np.linalg.norm(np.asarray(r.tokens[-1, 0] - r.tokens[-1, 1]))  # noqa: E731
    assert gap(merged) < 1e-3
    assert abs(gap(pushed) - 3.0) < 0.3


# ---------------------------------------------------------------------------------------------- compilation


def test_switching_the_predictor_does_not_recompile():
    frames = blobs(3, CENTRES, VELOCITY, seed=10)
    tracking.track(KEY, frames, tracking.Hparams(predictor=0), n_tokens=3)
    before = tracking.track.jitted._cache_size()
    with jax_compilations() as compiled:
        for p in (1, 2, 3, 2.0):
            tracking.track(KEY, frames, tracking.Hparams(predictor=p, decay=0.5, separation=1), n_tokens=3)
    assert compiled == [] and tracking.track.jitted._cache_size() == before
    # and a vmap over every predictor is one program too
    hps = jax.tree_util.tree_map(
        jnp.asarray,
        tracking.Hparams(
            predictor=np.arange(4, dtype=np.int32), decay=np.ones(4, np.float32), separation=np.zeros(4, np.float32)
        ),
    )
    many = jax.jit(jax.vmap(lambda h: tracking.track(KEY, frames, h, n_tokens=3).tokens))(hps)
    for p in range(4):
        assert_same_floats(many[p], tracking.track(KEY, frames, tracking.Hparams(predictor=p), n_tokens=3).tokens)


@pytest.mark.full  # the default run: the transformation table's tracking.track(fixed=True) vmap and shard_map cells
def test_vmap_and_shard_map_equal_one_by_one():
    """A batch of sequences under vmap, and under shard_map (JAX's default check_vma=True, the key
    shared), equals the sequences one by one; track_labels under shard_map with check_vma=False."""
    from jax.sharding import PartitionSpec as Spec

    frames = np.stack([blobs(3, CENTRES, VELOCITY, seed=s) for s in range(2)])  # (2, F, N, 2)
    thp = tracking.Hparams(predictor=jnp.int32(2), separation=jnp.float32(1.0))
    f = lambda x: tracking.track(KEY, x, thp, n_tokens=3, n_steps=8, fixed=True)  # noqa: E731
    mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()[:1]), ("runs",))
    sharded = jax.jit(jax.shard_map(jax.vmap(f), mesh=mesh, in_specs=Spec("runs"), out_specs=Spec("runs")))(frames)
    ids = jax.jit(
        jax.shard_map(
            jax.vmap(lambda t, lab: tracking.track_labels(t, lab, True)[0]),
            mesh=mesh,
            in_specs=Spec("runs"),
            out_specs=Spec("runs"),
            check_vma=False,
        )
    )(sharded.tokens, sharded.labels)
    for i in range(2):
        one = f(frames[i])
        assert_same_floats(sharded.tokens[i], one.tokens)
        np.testing.assert_array_equal(sharded.labels[i], one.labels)
        np.testing.assert_array_equal(ids[i], tracking.track_labels(one.tokens, one.labels, True)[0])


# ---------------------------------------------------------------------------------------------- edge cases


def test_empty_frames_leave_the_tokens_where_they_are():
    frames = blobs(5, CENTRES, VELOCITY, seed=11)
    mask = np.ones(frames.shape[:2], bool)
    mask[2] = False
    for name in ("carry", "velocity", "inertia", "reinit"):
        thp = tracking.Hparams(predictor=P[name])
        r = _host(
            tracking.track(KEY, frames, thp, dynamics.Hparams(momentum=0.4), n_tokens=3, mask=mask, init="kmeans++")
        )
        np.testing.assert_array_equal(np.asarray(r.tokens[2]), np.asarray(r.tokens[1]))
        assert int(r.steps[2]) == 0 and bool(r.converged[2]) and np.all(np.asarray(r.labels[2]) == -1)
        assert float(np.abs(r.displacement[2]).max()) == 0.0
        if name != "reinit":  # the skipped frame is as if absent (keys only matter for draws)
            gone = tracking.track(
                KEY,
                np.delete(frames, 2, 0),
                thp,
                dynamics.Hparams(momentum=0.4),
                n_tokens=3,
                mask=np.delete(mask, 2, 0),
                init="kmeans++",
            )
            assert_same_floats(r.tokens[3:], gone.tokens[2:])
    # a leading empty frame: no tokens yet (NaN, labels -1); the next frame starts as frame 0 would
    lead = mask.copy()
    lead[0] = False
    r = _host(tracking.track(KEY, frames, tracking.Hparams(predictor=P["velocity"]), n_tokens=3, mask=lead))
    assert np.all(np.isnan(np.asarray(r.tokens[0]))) and np.all(np.asarray(r.labels[0]) == -1)
    init_key, rule_key = tracking.frame_keys(KEY, 1)
    one = dynamics.run(frames[1], dynamics.init_tokens(init_key, 3, 2, x=frames[1]), key=rule_key)
    assert_same_floats(r.tokens[1], one.tokens)
    assert np.all(np.isfinite(np.asarray(r.tokens[1:])))
    assert float(np.abs(r.displacement[1]).max()) == 0.0


def test_single_token():
    frames = blobs(4, [[0.0, 0.0]], [[0.5, 0.5]], seed=12)
    for name in P:
        r = _host(tracking.track(KEY, frames, tracking.Hparams(predictor=P[name], separation=1.0), n_tokens=1))
        centre = frames.mean(axis=1)
        np.testing.assert_allclose(np.asarray(r.tokens[:, 0]), centre, atol=2e-3)
        ids, token_ids = tracking.track_labels(r.tokens, r.labels, True)
        assert np.all(np.asarray(ids) == 0) and np.all(np.asarray(token_ids) == 0)


def test_knobs_out_of_range():
    frames = blobs(2, CENTRES, VELOCITY)
    with jax_compilations() as compiled:
        for bad, match in (
            (dict(predictor=4), "predictor"),
            (dict(predictor=1.5), "predictor"),
            (dict(decay=1.5), "decay"),
            (dict(separation=-1.0), "separation"),
        ):
            with pytest.raises(ValueError, match=match):
                tracking.track(KEY, frames, tracking.Hparams(**bad), n_tokens=3)
        with pytest.raises(ValueError, match="mask"):
            tracking.track(KEY, frames, n_tokens=3, mask=np.ones((2, 5), bool))
        with pytest.raises(TypeError, match="hparams"):
            tracking.track(KEY, frames, dynamics.Hparams(), n_tokens=3)
        with pytest.raises(ValueError, match="temperature"):
            tracking.track(KEY, frames, None, dynamics.Hparams(temperature=-1.0), n_tokens=3)
    assert compiled == []
    # traced values out of range: NaN tokens, never a plausible result
    out = jax.jit(lambda p: tracking.track(KEY, frames, tracking.Hparams(predictor=p), n_tokens=3).tokens)(jnp.int32(7))
    assert np.all(np.isnan(np.asarray(out)))


# ---------------------------------------------------------------------------------------------- identities, separation


def test_track_labels_against_scipy():
    rng = np.random.default_rng(13)
    tokens = rng.standard_normal((6, 5, 3)).astype(np.float32)
    labels = rng.integers(-1, 5, size=(6, 40)).astype(np.int32)
    ids, token_ids = tracking.track_labels(tokens, labels, True)
    want = [np.arange(5)]
    for f in range(1, 6):
        d2 = ((tokens[f][:, None].astype(np.float64) - tokens[f - 1][None]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(d2)
        want.append(want[-1][cols[np.argsort(rows)]])
    want = np.stack(want)
    np.testing.assert_array_equal(np.asarray(token_ids), want)
    np.testing.assert_array_equal(
        np.asarray(ids), np.where(labels >= 0, np.take_along_axis(want, np.maximum(labels, 0), 1), -1)
    )
    raw, first = tracking.track_labels(tokens, labels, False)
    np.testing.assert_array_equal(np.asarray(raw), labels)
    assert np.all(np.asarray(first) == np.arange(5))


def test_separate_against_numpy():
    rng = np.random.default_rng(14)
    tokens = rng.standard_normal((6, 3)).astype(np.float32)
    tokens[4] = tokens[1]  # coincident
    for r in (0.0, 0.5, 2.0):
        np.testing.assert_allclose(np.asarray(tracking.separate(tokens, r)), ref_push(tokens, r), rtol=1e-5, atol=1e-5)
    pair = np.array([[0.0, 0.0], [0.3, 0.4]], np.float32)
    out = np.asarray(tracking.separate(pair, 1.0))
    assert abs(np.linalg.norm(out[0] - out[1]) - 1.0) < 1e-6


@pytest.mark.full  # float64; the default run: the transformation table's tracking.track(fixed=True) grad cell
def test_gradient_through_fixed_tracking():
    """fixed=True is reverse-mode differentiable in the frames and the float knobs: against a
    central difference in float64."""
    with jax.enable_x64(True):
        frames = blobs(2, CENTRES, VELOCITY, seed=15).astype(np.float64)

        def loss(decay, sep, temperature):
            r = tracking.track(
                KEY,
                frames,
                tracking.Hparams(predictor=jnp.int32(3), decay=decay, separation=sep),
                dynamics.Hparams(temperature=temperature, momentum=jnp.float64(0.5)),
                n_tokens=3,
                n_steps=2,
                tol=0.0,
                fixed=True,
            )
            return jnp.sum(r.tokens[-1] ** 2)

        args = (jnp.float64(0.6), jnp.float64(4.0), jnp.float64(1.2))
        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))  # one program
        loss = lambda *a: value_and_grad(*a)[0]  # noqa: E731 (the finite-difference points)
        grads = value_and_grad(*args)[1]
        for i, g in enumerate(grads):
            h = 1e-6
            up = list(args)
            dn = list(args)
            up[i] = up[i] + h
            dn[i] = dn[i] - h
            fd = (loss(*up) - loss(*dn)) / (2 * h)
            np.testing.assert_allclose(float(g), float(fd), rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------------------------- data and the run


def test_moving_clusters():
    key = jax.random.key(16)
    s = data.moving_clusters(key, 9, 4, points_per_cluster=20, speed=0.8, spread=0.3, view=10.0)
    c, v = np.asarray(s.centers), np.asarray(s.velocity)
    np.testing.assert_allclose(np.diff(c, axis=0), np.broadcast_to(v, (8, 4, 2)), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 0.8, rtol=1e-5)
    # the crossing, at the middle frame: two positions each computed from its start and velocity
    np.testing.assert_allclose(c[4, 0], c[4, 1], atol=f32_atol(c[0], v * 4))
    cos = v[0] @ v[1] / 0.64
    assert -0.5 - 1e-5 <= cos <= 0.5 + 1e-5  # 60 to 120 degrees apart
    assert np.abs(c[4, 3]).max() == pytest.approx(10.0, abs=1e-4)  # the leaver on an edge at the middle frame
    assert np.abs(c[0, 3]).max() < 10.0 and np.abs(c[-1, 3]).max() > 10.0
    x, mask = np.asarray(s.x), np.asarray(s.mask)
    np.testing.assert_array_equal(mask, np.all(np.abs(x) <= 10.0, axis=-1))
    np.testing.assert_array_equal(np.asarray(s.labels), np.where(mask, np.repeat(np.arange(4), 20)[None], -1))
    again = data.moving_from_draw(
        data.moving_draw(key, n_frames=9, n_clusters=4, points_per_cluster=20), speed=0.8, spread=0.3, view=10.0
    )
    assert_same_floats(again.x, s.x)
    with pytest.raises(ValueError, match="speed"):
        data.moving_clusters(key, 9, 4, speed=-1.0)


@pytest.mark.full
def test_track_run_sweeps_every_predictor_in_one_compilation(tmp_path):
    fn = TrackRun(n_frames=6, n_clusters=3, points_per_cluster=20, n_tokens=3)
    grid = sweep.Grid(predictor=[0, 1, 2, 3], separation=[0.0, 1.0], seeds=2)
    res = sweep.run(fn, grid, key=jax.random.key(17), progress=False, common_random_numbers=True)
    c = res.columns
    assert c["ari"].shape == (16, 6) and c["steps"].shape == (16, 6)
    for k in ("mean_ari", "identity", "identity_matched", "converged"):
        assert np.all(np.isfinite(c[k])), k
    np.testing.assert_array_equal(c["total_steps"], c["steps"].sum(1))
    # one run of the sweep is the function called by itself (up to rounding: two programs)
    i = 5
    one = jax.jit(lambda k: fn(k, predictor=c["predictor"][i], separation=c["separation"][i]))(
        jax.random.fold_in(jax.random.key(17), c["seed"][i])
    )
    np.testing.assert_allclose(one["identity"], c["identity"][i], atol=1e-5)
    # with one token per cluster on a carried track, the raw identity is the identity score
    assert TrackRun().conditions[:5] == ("predictor", "decay", "separation", "speed", "spread")
    with pytest.raises(ValueError, match="predictor"):
        TrackRun(hparams=tracking.Hparams(predictor=9))
    with pytest.raises(TypeError, match=r"write TrackRun\(hparams=tracking.Hparams\(predictor=9\)\)"):
        TrackRun(predictor=9)  # the knobs' defaults are one field, hparams
    with pytest.raises(TypeError, match="unknown conditions"):
        fn(jax.random.key(0), speedy=1.0)
    assert dataclasses.replace(fn, n_frames=3).n_frames == 3
