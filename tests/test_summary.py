import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import stats
from tokdyn.engine import sweep
from tokdyn.stats import summary


def toy(key, a, b):
    u = jax.random.uniform(key)
    return dict(x=a + b * u, y=jnp.where(u < 0.15, jnp.nan, u * a), k=(u * 10).astype(jnp.int32))


GRID = sweep.Grid(a=[1.0, 2.0, 3.0], b=[0.0, 0.5], seeds=9)


@pytest.fixture(scope="module")
def result():
    return sweep.run(toy, GRID, key=jax.random.key(3), chunk_size=7, progress=False)


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory, result):
    out = str(tmp_path_factory.mktemp("sweep"))
    sweep.run(toy, GRID, key=jax.random.key(3), chunk_size=5, out=out, progress=False, collect=False)
    return out


def reference_groups(res, by):
    """Plain NumPy group-by over runs: {key tuple: indices}."""
    keys = list(zip(*(res[b].tolist() for b in by))) if by else [()] * len(res)
    groups = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return groups


def test_condition_stats_match_groupby(result, on_disk):
    for src in (result, on_disk):
        t = summary.condition_stats(src)
        assert len(t["n"]) == 6 and set(t) >= {"a", "b", "x_mean", "x_std", "x_nan", "y_mean", "k_mean"}
        groups = reference_groups(result, ("a", "b"))
        for i, (a, b) in enumerate(itertools.product([1.0, 2.0, 3.0], [0.0, 0.5])):
            assert (t["a"][i], t["b"][i]) == (a, b)
            idx = groups[(a, b)]
            for f in ("x", "y", "k"):
                v = result[f][idx].astype(np.float64)
                ok = ~np.isnan(v)
                np.testing.assert_allclose(t[f + "_mean"][i], v[ok].mean(), rtol=1e-12)
                np.testing.assert_allclose(t[f + "_std"][i], v[ok].std(ddof=1), rtol=1e-9, atol=1e-12)
                assert t[f + "_nan"][i] == (~ok).sum()
    assert summary.condition_stats(result)["y_nan"].sum() == np.isnan(result["y"]).sum() > 0


def test_marginal_pools_exactly(result):
    t = summary.condition_stats(result)
    m = summary.marginal(t, ["a"], ["x", "y"])
    for i, a in enumerate(m["a"]):
        for f in ("x", "y"):
            v = result[f][result["a"] == a].astype(np.float64)
            v = v[~np.isnan(v)]
            np.testing.assert_allclose(m[f + "_mean"][i], v.mean(), rtol=1e-12)
            np.testing.assert_allclose(m[f + "_std"][i], v.std(ddof=1), rtol=1e-9)
            assert m[f + "_n"][i] == v.size
    w = summary.marginal(t, ["a"], ["x"], where={"b": 0.5})
    np.testing.assert_allclose(
        w["x_mean"], [result["x"][(result["a"] == a) & (result["b"] == 0.5)].mean() for a in (1.0, 2.0, 3.0)], rtol=1e-6
    )
    with pytest.raises(ValueError, match="unknown axis 'c'"):
        summary.marginal(t, ["c"], ["x"])
    with pytest.raises(ValueError, match="unknown field 'z'"):
        summary.marginal(t, ["a"], ["z"])
    with pytest.raises(ValueError, match="no condition has b=0.7"):
        summary.marginal(t, ["a"], ["x"], where={"b": 0.7})


def test_per_seed_and_setting_table(result, on_disk):
    settings, values = summary.per_seed(on_disk, ["b"], ["x", "y"])
    np.testing.assert_array_equal(settings["b"], [0.0, 0.5])
    for i, b in enumerate(settings["b"]):
        for s in range(GRID.seeds):
            sel = (result["b"] == b) & (result["seed"] == s)
            for f in ("x", "y"):
                v = result[f][sel].astype(np.float64)
                want = np.nan if np.isnan(v).all() else np.nanmean(v)
                np.testing.assert_allclose(values[f][i, s], want, rtol=1e-12)
    tab = summary.setting_table(result, ["a", "b"], ["x"], n_resamples=500)
    _, v = summary.per_seed(result, ["a", "b"], ["x"])
    lo, hi = stats.bootstrap_ci(v["x"], seed=0, n_resamples=500, axis=1)
    np.testing.assert_allclose(tab["x_low"], lo)
    np.testing.assert_allclose(tab["x_high"], hi)
    assert np.all(tab["x_low"] <= tab["x_mean"]) and np.all(tab["x_mean"] <= tab["x_high"])


def brute_front(cost, benefit):
    n = len(cost)
    out = np.zeros(n, bool)
    for i in range(n):
        if np.isnan(cost[i]) or np.isnan(benefit[i]):
            continue
        out[i] = not any(
            cost[j] <= cost[i] and benefit[j] >= benefit[i] and (cost[j] < cost[i] or benefit[j] > benefit[i])
            for j in range(n)
            if not (np.isnan(cost[j]) or np.isnan(benefit[j]))
        )
    return out


@pytest.mark.parametrize("seed", range(25))
def test_pareto_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    cost = rng.integers(0, 8, n).astype(float)  # many ties
    benefit = rng.integers(0, 8, n).astype(float)
    if seed % 3 == 0:
        cost[rng.integers(0, n)] = np.nan
    np.testing.assert_array_equal(summary.pareto_front(cost, benefit), brute_front(cost, benefit))


def test_pareto_front_edge_cases():
    assert summary.pareto_front([], []).size == 0
    assert summary.pareto_front([np.nan], [1.0]).tolist() == [False]
    assert summary.pareto_front([1.0, 1.0], [2.0, 2.0]).tolist() == [True, True]
    with pytest.raises(ValueError, match="equal length"):
        summary.pareto_front([1.0, 2.0], [1.0])


def test_summary_of_unknown_source():
    with pytest.raises(TypeError, match="SweepResult or a sweep directory"):
        summary.condition_stats(42)
    with pytest.raises(ValueError, match="field 'nope'"):
        summary.condition_stats(
            sweep.run(toy, sweep.Grid(a=[1.0], b=[1.0], seeds=2), key=jax.random.key(0), progress=False),
            fields=["nope"],
        )


def test_seed_major_summaries_equal_the_seed_fastest_ones(result, tmp_path):
    major = sweep.Grid(a=[1.0, 2.0, 3.0], b=[0.0, 0.5], seeds=9, seed_major=True)
    res = sweep.run(toy, major, key=jax.random.key(3), chunk_size=4, common_random_numbers=True, progress=False)
    out = str(tmp_path / "major")
    sweep.run(
        toy,
        major,
        key=jax.random.key(3),
        chunk_size=4,
        common_random_numbers=True,
        out=out,
        progress=False,
        collect=False,
    )
    ref_res = sweep.run(toy, GRID, key=jax.random.key(3), chunk_size=7, common_random_numbers=True, progress=False)
    ref = summary.condition_stats(ref_res)
    for src in (res, out):
        t = summary.condition_stats(src)
        for k, v in ref.items():
            np.testing.assert_allclose(t[k], v, rtol=1e-12, err_msg=k)
        settings, values = summary.per_seed(src, ("a",), ("x",))
        _, ref_values = summary.per_seed(ref_res, ("a",), ("x",))
        np.testing.assert_allclose(values["x"], ref_values["x"], rtol=1e-12)
