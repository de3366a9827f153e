"""tokdyn.probes: the linear probe against scikit-learn's LogisticRegression on a planted linear
feature, chance level on an independent target, masks, vmap over targets and seeds, and argument
errors."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from conftest import jax_compilations
from tokdyn import probes

N, D, C, N_TRAIN = 300, 8, 3, 200
CFG = probes.Config(n_classes=C, steps=300)
HP = probes.Hparams()
TRAIN = np.arange(N) < N_TRAIN


def planted(seed=0, separation=3.0):
    """Labels in [0, C) and features whose first C columns shift by ``separation`` along the
    label's axis (the rest noise), on different scales and offsets per feature."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    x = rng.normal(size=(N, D))
    x[:, :C] += separation * np.eye(C)[y]
    return (x * rng.uniform(0.5, 3.0, D) + rng.normal(size=D) * 5).astype(np.float32), y


def sklearn_probe(x, y, weight_decay):
    """sklearn on the train-standardised features, with the same objective (C = 1 / (wd n_train))."""
    mu, sd = x[TRAIN].mean(0), x[TRAIN].std(0)
    model = LogisticRegression(C=1.0 / (weight_decay * N_TRAIN), max_iter=5000, tol=1e-10)
    return model.fit((x[TRAIN] - mu) / sd, y[TRAIN]), (lambda v: (v - mu) / sd)


def objective(w, b, z, y, weight_decay):
    logits = z @ w + b
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean() + 0.5 * weight_decay * np.sum(w**2)


def test_planted_feature_agrees_with_sklearn():
    x, y = planted()
    scores = probes.evaluate(jax.random.key(0), x, y, TRAIN, CFG, HP)
    assert float(scores.held_out) >= 0.95 and float(scores.train) >= 0.95
    probe = probes.fit(jax.random.key(0), x, y, CFG, HP, TRAIN)
    # fitted alone or inside evaluate: two programs; a held-out row on a last-bit decision tie may
    # flip: one row of the 100 at most
    np.testing.assert_allclose(
        probes.accuracy(probe, x, y, ~TRAIN), scores.held_out, rtol=0, atol=1 / (N - N_TRAIN) + 1e-6
    )
    sk, standardise = sklearn_probe(x, y, HP.weight_decay)
    ours = np.asarray(probes.predict(probe, x[~TRAIN]))
    theirs = sk.predict(standardise(x[~TRAIN]))
    assert np.mean(ours == theirs) >= 0.95
    assert abs(np.mean(ours == y[~TRAIN]) - np.mean(theirs == y[~TRAIN])) <= 0.02
    np.testing.assert_allclose(probe.mean, x[TRAIN].mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probe.scale, x[TRAIN].std(0), rtol=1e-5)


def test_same_optimum_as_sklearn():
    """With a stronger penalty Adam converges in 300 steps: the objective and the weights match
    sklearn's (lbfgs) optimum."""
    x, y = planted(1, separation=2.0)
    wd = 1e-2
    probe = probes.fit(jax.random.key(1), x, y, CFG, probes.Hparams(weight_decay=wd), TRAIN)
    sk, standardise = sklearn_probe(x, y, wd)
    z = standardise(x[TRAIN]).astype(np.float64)
    ours = objective(np.asarray(probe.weights, np.float64), np.asarray(probe.bias, np.float64), z, y[TRAIN], wd)
    theirs = objective(sk.coef_.T, sk.intercept_, z, y[TRAIN], wd)
    assert ours == pytest.approx(theirs, rel=1e-4)
    np.testing.assert_allclose(probe.weights, sk.coef_.T, atol=0.03)


def test_independent_target_stays_at_chance():
    x, _ = planted(2)
    y = np.random.default_rng(3).integers(0, C, N)  # independent of x
    scores = probes.evaluate(jax.random.key(2), x, y, TRAIN, CFG, HP)
    p = float(probes.chance(y, ~TRAIN, n_classes=C))
    sigma = np.sqrt(p * (1 - p) / (N - N_TRAIN))
    assert abs(float(scores.held_out) - p) <= 4 * sigma


def test_chance():
    y = np.array([0, 0, 1, 2, 2, 2, 1, 1])
    assert float(probes.chance(y, n_classes=3)) == pytest.approx(3 / 8)
    scored = np.array([False] * 4 + [True] * 4)  # labels 2, 2, 1, 1
    assert float(probes.chance(y, scored, n_classes=3)) == pytest.approx(0.5)
    # the training majority (label 0 on the first four rows) never occurs among the scored rows
    assert float(probes.chance(y, scored, n_classes=3, train_mask=~scored)) == 0.0


def test_mask_ignores_excluded_rows():
    """Fitting on the rows of a mask equals fitting on those rows alone, whatever the other rows
    hold (NaN features, out-of-range labels); a constant feature gives no NaN."""
    x, y = planted(4)
    x[:, -1] = 2.5
    xp, yp = x.copy(), y.copy()
    xp[~TRAIN] = np.nan
    yp[~TRAIN] = -1
    masked = probes.fit(jax.random.key(5), xp, yp, CFG, HP, TRAIN)
    alone = probes.fit(jax.random.key(5), x[TRAIN], y[TRAIN], CFG, HP)
    for a, b in zip(jax.tree_util.tree_leaves(masked), jax.tree_util.tree_leaves(alone)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(masked.scale[-1]) == 1.0 and np.all(np.isfinite(masked.weights))


def test_vmap_over_targets_and_seeds_equals_a_loop():
    x, y = planted(6)
    rng = np.random.default_rng(7)
    ys = np.stack([y, rng.permutation(y), (y + 1) % C])
    keys = jax.random.split(jax.random.key(8), 2)
    run = lambda k, t: probes.evaluate(k, x, t, TRAIN, CFG, HP)
    batched = jax.vmap(jax.vmap(run, (0, None)), (None, 0))(keys, ys)
    assert batched.held_out.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            one = run(keys[j], ys[i])
            # vmapped and single fits are two programs: one row on a last-bit decision tie may flip
            np.testing.assert_allclose(batched.train[i, j], one.train, rtol=0, atol=1 / N_TRAIN + 1e-6)
            np.testing.assert_allclose(batched.held_out[i, j], one.held_out, rtol=0, atol=1 / (N - N_TRAIN) + 1e-6)


def test_bad_input_is_refused_before_compiling():
    x, y = planted()
    key = jax.random.key(0)
    cases = [
        (lambda: probes.fit(key, x, y, probes.Config(n_classes=1), HP), r"n_classes must be an int >= 2, got 1"),
        (lambda: probes.fit(key, x, y, probes.Config(n_classes=C, steps=0), HP), r"steps must be an int >= 1, got 0"),
        (lambda: probes.fit(key, x, y, CFG, probes.Hparams(learning_rate=0.0)), r"learning_rate must be in \(0, inf"),
        (lambda: probes.fit(key, x, y, CFG, probes.Hparams(weight_decay=-1.0)), r"weight_decay must be in \[0, inf"),
        (lambda: probes.fit(key, x, y[:-1], CFG, HP), r"y must have shape \(300,\) \(one label per row of x\)"),
        (lambda: probes.fit(key, x, y + 1, CFG, HP), r"y must hold labels in \[0, n_classes\) = \[0, 3\), got 3"),
        (lambda: probes.fit(key, x, y.astype(float), CFG, HP), r"y must hold integer labels"),
        (lambda: probes.fit(key, x[:, 0], y, CFG, HP), r"x must be a 2-D array \(N, D\), got shape \(300,\)"),
        (lambda: probes.fit(0, x, y, CFG, HP), r"key must be a PRNG key"),
        (lambda: probes.fit(key, x, y, CFG, HP, np.zeros(N, bool)), r"mask must select at least one training row"),
        (lambda: probes.evaluate(key, x, y, np.ones(N, bool), CFG, HP), r"train_mask must leave at least one row"),
        (lambda: probes.evaluate(key, x, y, TRAIN[:-1], CFG, HP), r"train_mask must have shape \(300,\)"),
        (lambda: probes.chance(y, n_classes=2), r"y must hold labels in \[0, n_classes\) = \[0, 2\)"),
        (lambda: probes.predict(object(), x), r"probe must be a tokdyn.probes.Probe"),
    ]
    with jax_compilations() as compiled:
        for call, match in cases:
            with pytest.raises((ValueError, TypeError), match=match):
                call()
    assert compiled == []
