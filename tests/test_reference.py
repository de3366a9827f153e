"""Sanity checks of the float64 reference (tests/reference.py) against closed-form facts.

If these pass, the reference can be trusted as the oracle that the fast implementations and the
benchmark peers are compared with.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

try:  # tests/ on sys.path (pytest's default "prepend" import mode)
    from reference import (
        MIN_DISTANCE,
        reference_assignments,
        reference_collapsed,
        reference_force,
        reference_labels,
        reference_repulsion,
        reference_run,
        reference_sse,
    )
except ImportError:  # tests/ imported as a package
    from tests.reference import (
        MIN_DISTANCE,
        reference_assignments,
        reference_collapsed,
        reference_force,
        reference_labels,
        reference_repulsion,
        reference_run,
        reference_sse,
    )

METHODS = {
    "baseline": dict(momentum=0.0, repulsion=0.0),
    "inertia": dict(momentum=0.5, repulsion=0.0),
    "repulsion": dict(momentum=0.0, repulsion=0.05),
    "inertia+repulsion": dict(momentum=0.5, repulsion=0.05),
}


def blobs(rng, centres, n_per_cluster, noise):
    """Gaussian clusters around ``centres`` (K, D); returns points (K * n, D) and true labels."""
    centres = np.asarray(centres, dtype=np.float64)
    labels = np.repeat(np.arange(len(centres)), n_per_cluster)
    x = centres[labels] + noise * rng.normal(size=(len(labels), centres.shape[1]))
    return x, labels


# --------------------------------------------------------------------------- baseline


def test_baseline_reaches_cluster_means_when_clusters_are_well_separated():
    rng = np.random.default_rng(0)
    centres = [[-20.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 20.0, 5.0]]
    x, true = blobs(rng, centres, 40, noise=0.5)
    tokens0 = x[[3, 45, 100]]  # one point of each cluster
    out = reference_run(x, tokens0, temperature=0.1, momentum=0.0, repulsion=0.0)

    # Step 1 assigns every point to its own cluster's token, so the tokens land on the cluster
    # means; step 2 does not move them, and the run converges there.
    means = np.stack([x[true == k].mean(axis=0) for k in range(3)])
    np.testing.assert_allclose(out["trajectory"][1], means, atol=1e-6)
    assert out["converged"] and out["steps"] == 2
    np.testing.assert_allclose(out["tokens"], means, atol=1e-6)
    np.testing.assert_array_equal(out["labels"], true)


@pytest.mark.parametrize("use_mask", [False, True])
def test_one_token_jumps_to_the_data_mean_and_converges_at_step_two(use_mask):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 4)) * 3.0 + 2.0
    mask = rng.random(30) < 0.6 if use_mask else np.ones(30, bool)
    tokens0 = np.full((1, 4), 50.0)
    out = reference_run(x, tokens0, 1.0, 0.0, 0.0, mask=mask if use_mask else None)

    mean = x[mask].mean(axis=0)
    np.testing.assert_allclose(out["trajectory"][1, 0], mean, rtol=1e-7)
    assert out["converged"] and out["steps"] == 2
    np.testing.assert_allclose(out["tokens"][0], mean, rtol=1e-7)
    if use_mask:  # the unmasked mean is elsewhere
        assert np.abs(out["tokens"][0] - x.mean(axis=0)).max() > 1e-2


def test_soft_assignments_are_a_softmax_of_negative_squared_distances():
    rng = np.random.default_rng(2)
    x, tokens = rng.normal(size=(7, 3)), rng.normal(size=(4, 3))
    tau = 0.7
    a = reference_assignments(x, tokens, tau)
    d2 = ((x[:, None, :] - tokens[None, :, :]) ** 2).sum(-1)
    expected = np.exp(-d2 / tau) / np.exp(-d2 / tau).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(a, expected, rtol=1e-12)
    # Max-subtraction keeps far-away points finite (exp(-1e6) underflows without it).
    far = reference_assignments(x + 1e3, tokens, 1e-3)
    assert np.all(np.isfinite(far)) and np.allclose(far.sum(axis=1), 1.0)


# --------------------------------------------------------------------------- momentum


@pytest.mark.parametrize("beta", [0.3, 0.5, 0.8])
def test_momentum_with_a_fixed_target_follows_the_heavy_ball_recurrence(beta):
    # With one token every valid point is fully assigned to it, so its target
    # m = sum x / (n + 1e-8) does not depend on where the token is. The error e = t - m then obeys
    # v_{n+1} = beta v_n - e_n, e_{n+1} = e_n + v_{n+1}, i.e. e_{n+1} = beta (e_n - e_{n-1}):
    # the roots z of z^2 - beta z + beta have modulus sqrt(beta), so the error spirals in.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(25, 3))
    tokens0 = np.array([[4.0, -3.0, 2.0]])
    target = x.sum(axis=0) / (len(x) + 1e-8)
    out = reference_run(x, tokens0, 1.0, beta, 0.0, n_steps=200)

    errors, velocities = [tokens0[0] - target], [np.zeros(3)]
    while len(errors) <= 200:
        velocities.append(beta * velocities[-1] - errors[-1])
        errors.append(errors[-1] + velocities[-1])
    expected_steps = next(n for n in range(1, 201) if np.abs(velocities[n]).max() < 1e-3)

    assert out["converged"] and out["steps"] == expected_steps
    for n in range(expected_steps + 1):
        np.testing.assert_allclose(out["trajectory"][n, 0] - target, errors[n], atol=1e-10)

    # Closed form of the recurrence: e_n = e_0 (z2 z1^n - z1 z2^n) / (z2 - z1).
    z1, z2 = np.roots([1.0, -beta, beta]).astype(complex)
    n = np.arange(expected_steps + 1)
    closed = ((z2 * z1**n - z1 * z2**n) / (z2 - z1)).real[:, None] * errors[0]
    np.testing.assert_allclose(np.array(errors[: expected_steps + 1]), closed, atol=1e-10)
    assert np.allclose(abs(z1), np.sqrt(beta)) and np.allclose(abs(z2), np.sqrt(beta))


# --------------------------------------------------------------------------- repulsion


def test_repulsion_between_two_tokens_is_an_inverse_square_law():
    gamma = 0.05
    tokens = np.array([[0.0, 0.0], [3.0, 4.0]])  # distance 5
    force = reference_repulsion(tokens, gamma)
    np.testing.assert_allclose(force[0], -gamma * np.array([3.0, 4.0]) / 125.0)
    np.testing.assert_allclose(force[1], -force[0])
    np.testing.assert_allclose(np.linalg.norm(force[0]), gamma / 25.0)


def test_coincident_tokens_exert_zero_force_and_close_ones_use_the_distance_floor():
    gamma = 0.05
    coincident = np.array([[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_array_equal(reference_repulsion(coincident, gamma), 0.0)

    # A coincident pair plus a third token: only the third one pushes.
    three = np.array([[0.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    force = reference_repulsion(three, gamma)
    np.testing.assert_allclose(force[0], [-gamma / 4.0, 0.0])
    np.testing.assert_allclose(force[1], [-gamma / 4.0, 0.0])
    np.testing.assert_allclose(force[2], [2 * gamma / 4.0, 0.0])

    close = np.array([[0.0, 0.0], [1e-4, 0.0]])  # closer than the floor
    np.testing.assert_allclose(reference_repulsion(close, gamma)[0], [-gamma * 1e-4 / MIN_DISTANCE**3, 0.0])


def test_coincident_tokens_stay_together_without_nan_under_repulsion():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 3))
    tokens0 = np.repeat(x[:1], 2, axis=0)
    out = reference_run(x, tokens0, 1.0, 0.5, 0.05)
    assert np.all(np.isfinite(out["trajectory"]))
    np.testing.assert_array_equal(out["trajectory"][:, 0], out["trajectory"][:, 1])
    assert out["converged"]


def test_force_is_pull_to_soft_mean_plus_repulsion():
    rng = np.random.default_rng(5)
    x, tokens = rng.normal(size=(12, 2)), rng.normal(size=(3, 2))
    a = reference_assignments(x, tokens, 1.0)
    soft_means = (a.T @ x) / (a.sum(axis=0)[:, None] + 1e-8)
    expected = soft_means - tokens + reference_repulsion(tokens, 0.05)
    np.testing.assert_allclose(reference_force(x, tokens, 1.0, 0.05), expected, rtol=1e-12)


# --------------------------------------------------------------------------- masking


@pytest.mark.parametrize("method", list(METHODS))
def test_masked_points_do_not_affect_the_result(method):
    rng = np.random.default_rng(6)
    x, _ = blobs(rng, rng.uniform(-5, 5, size=(3, 4)), 15, noise=0.8)
    tokens0 = x[[0, 16, 31, 40]]
    garbage = rng.normal(size=(20, 4)) * 1e3  # padding that would dominate if it leaked in
    padded = np.concatenate([x[:20], garbage, x[20:]])
    mask = np.concatenate([np.ones(20, bool), np.zeros(20, bool), np.ones(len(x) - 20, bool)])

    plain = reference_run(x, tokens0, 1.0, **METHODS[method])
    masked = reference_run(padded, tokens0, 1.0, mask=mask, **METHODS[method])
    np.testing.assert_allclose(masked["trajectory"], plain["trajectory"], rtol=1e-12, atol=1e-12)
    # padded and unpadded arrays sum in another order (two programs, equal up to float64 rounding):
    # the stopping step may move by one, a label may differ only on a point within rounding of a tie
    assert abs(masked["steps"] - plain["steps"]) <= 1
    assert masked["converged"] == plain["converged"] or masked["steps"] != plain["steps"]
    d = np.sort(((x[:, None] - plain["tokens"][None]) ** 2).sum(-1), axis=1)
    differ = masked["labels"][mask] != plain["labels"]
    assert np.all(d[differ, 1] - d[differ, 0] < 1e-9)
    np.testing.assert_array_equal(masked["labels"][~mask], -1)


# --------------------------------------------------------------------------- bookkeeping


def test_trajectory_repeats_the_final_tokens_after_convergence():
    rng = np.random.default_rng(7)
    x, _ = blobs(rng, [[-6.0, 0.0], [6.0, 0.0]], 20, noise=0.5)
    out = reference_run(x, x[[0, 25]], 1.0, 0.0, 0.0, n_steps=30)
    assert out["trajectory"].shape == (31, 2, 2)
    np.testing.assert_array_equal(out["trajectory"][0], x[[0, 25]])
    assert out["converged"] and out["steps"] < 30
    for later in out["trajectory"][out["steps"] :]:
        np.testing.assert_array_equal(later, out["tokens"])


def test_a_run_that_does_not_converge_reports_n_steps():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(20, 2))
    out = reference_run(x, np.array([[30.0, 30.0]]), 1.0, 0.9, 0.0, n_steps=5)
    assert not out["converged"] and out["steps"] == 5
    assert np.abs(out["velocity"]).max() >= 1e-3


def test_labels_take_the_first_nearest_token_on_ties():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0]])
    tokens = np.array([[1.0, 1.0], [1.0, -1.0], [5.0, 5.0]])
    mask = np.array([True, True, False])
    np.testing.assert_array_equal(reference_labels(x, tokens, mask), [0, 0, -1])


def test_collapse_counts_tokens_that_own_a_valid_point():
    labels = np.array([0, 0, 1, 1, 2, -1])
    mask = np.array([True, True, True, True, False, False])  # token 2 owns only a masked point
    assert reference_collapsed(labels, n_tokens=4, n_true=3, mask=mask)
    assert not reference_collapsed(labels, n_tokens=4, n_true=2, mask=mask)
    assert not reference_collapsed(labels, n_tokens=2, n_true=5, mask=mask)  # min(K, T) = 2
    assert not reference_collapsed(labels, n_tokens=4, n_true=3, mask=np.ones(6, bool))


def test_sse_sums_squared_distances_of_valid_points_only():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]])
    tokens = np.array([[0.0, 1.0], [2.0, 2.0]])
    labels = np.array([0, 1, -1])
    assert reference_sse(x, labels, tokens, np.array([True, True, False])) == pytest.approx(1.0 + 2.0)


# --------------------------------------------------------------------------- benchmark peers


def _load_peers():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
    if not path.exists():
        pytest.skip("benchmarks/peers.py not present")
    spec = importlib.util.spec_from_file_location("tokdyn_benchmark_peers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "peer",
    [
        "numpy_per_run",
        "numpy_batched",
        pytest.param("torch_batched", marks=pytest.mark.slow),
        pytest.param("numba_parallel", marks=pytest.mark.slow),
    ],
)
def test_benchmark_peers_agree_with_the_reference(peer):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    peers = _load_peers()
    if peer not in peers.available_peers():
        pytest.skip(f"{peer} needs a package that is not installed")
    problem = peers.make_problem(n_runs=6, seed=11, points_per_cluster=10, n_padded=60, dim=3, n_tokens=4)
    params = dict(temperature=1.0, momentum=0.5, repulsion=0.05, n_steps=30, tol=1e-3)
    got = peers.PEERS[peer](**problem, **params)

    agree = 0
    for r in range(6):
        mask = problem["mask"][r]
        ref = reference_run(problem["x"][r], problem["tokens0"][r], mask=mask, **params)
        true = problem["labels_true"][r][mask]
        ari = sklearn_metrics.adjusted_rand_score(true, ref["labels"][mask])
        nmi = sklearn_metrics.normalized_mutual_info_score(true, ref["labels"][mask])
        sse = reference_sse(problem["x"][r], ref["labels"], ref["tokens"], mask)
        collapsed = reference_collapsed(ref["labels"], 4, problem["n_true"][r], mask)
        # a peer is another program than the reference: its stopping step may differ by one when the
        # last change sits within rounding of tol, its labels on a tie; all but one run must agree
        assert abs(got["steps"][r] - ref["steps"]) <= 1
        agree += (
            got["steps"][r] == ref["steps"]
            and got["converged"][r] == ref["converged"]
            and got["collapsed"][r] == collapsed
            and np.allclose([got["ari"][r], got["nmi"][r]], [ari, nmi], rtol=0, atol=1e-6)
            and np.allclose(got["sse"][r], sse, rtol=1e-4, atol=0)
        )
    assert agree >= 5
