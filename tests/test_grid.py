import itertools
import json

import numpy as np
import pytest

from tokdyn.engine.sweep import Grid, parse_axis


def test_order_matches_itertools_product():
    axes = dict(temperature=[0.1, 1.0, 10.0], momentum=[0.0, 0.5], noise=[0.3])
    g = Grid(seeds=4, **axes)
    assert len(g) == 3 * 2 * 1 * 4 and g.shape == (3, 2, 1, 4)
    expected = list(itertools.product(*axes.values(), range(4)))
    rows = g.rows()
    got = list(zip(rows["temperature"], rows["momentum"], rows["noise"], rows["seed"]))
    assert got == expected
    np.testing.assert_array_equal(rows["index"], np.arange(len(g)))
    assert g[5] == dict(temperature=0.1, momentum=0.5, noise=0.3, seed=1, index=5)
    assert g[-1]["index"] == len(g) - 1


@pytest.mark.parametrize("size", [1, 7, 1024])
def test_chunks_cover_every_run_once(size):
    g = Grid(seeds=5, a=np.arange(7), b=[1.5, 2.5, 3.5])
    parts = list(g.chunks(size))
    assert parts[0][0] == 0 and parts[-1][1] == len(g)
    assert all(p[1] == q[0] for p, q in zip(parts, parts[1:]))
    joined = {k: np.concatenate([p[2][k] for p in parts]) for k in parts[0][2]}
    for k, v in g.rows().items():
        np.testing.assert_array_equal(joined[k], v)
    sl = g[10:20]
    np.testing.assert_array_equal(sl["index"], np.arange(10, 20))


def test_huge_grid_is_not_materialised():
    g = Grid(seeds=1000, x=np.linspace(0, 1, 100), y=np.linspace(0, 1, 1000))  # 10^8 runs
    assert len(g) == 10**8
    row = g[len(g) - 1]
    assert row["x"] == 1.0 and row["y"] == 1.0 and row["seed"] == 999
    part = g.rows(54_321_000, 54_321_010)
    assert part["index"][0] == 54_321_000 and part["x"][0] == g.axes["x"][54] and part["seed"][0] == 0


def test_roundtrip_and_equality():
    g = Grid(seeds=3, t=[0.5, 2.0], r=np.linspace(0, 0.2, 3))
    h = Grid.from_dict(json.loads(json.dumps(g.to_dict())))
    assert h == g and h != Grid(seeds=4, t=[0.5, 2.0], r=np.linspace(0, 0.2, 3))
    assert "seeds=3" in repr(g)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(seeds=0, a=[1]), "seeds"),
        (dict(seeds=2, a=[]), "axis 'a' has no values"),
        (dict(seeds=2, seed=[1, 2]), "reserved"),
        (dict(seeds=2, a=[[1, 2]]), "1-D"),
    ],
)
def test_bad_grids(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Grid(**kwargs)
    with pytest.raises(TypeError, match="numbers"):
        Grid(seeds=1, a=["x", "y"])


def test_parse_axis():
    np.testing.assert_allclose(parse_axis("t", "0.3, 0.6,0.9"), [0.3, 0.6, 0.9])
    np.testing.assert_allclose(parse_axis("r", "linspace:0:0.2:11"), np.linspace(0, 0.2, 11))
    v = parse_axis("t", "logspace:0.05:20:25")
    assert v.size == 25 and np.isclose(v[0], 0.05) and np.isclose(v[-1], 20)
    np.testing.assert_allclose(np.diff(np.log(v)), np.log(400) / 24)
    for text, match in [
        ("", "no values"),
        ("linspace:0:1", "exactly a:b:n"),
        ("linspace:0:1:x", "integer n"),
        ("logspace:0:1:5", "> 0"),
        ("linspace:0:1:0", "n >= 1"),
        ("0.1,abc", "comma list"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_axis("temperature", text)


def test_seed_major_order_matches_itertools_product():
    axes = dict(temperature=[0.1, 1.0, 10.0], momentum=[0.0, 0.5])
    g = Grid(seeds=4, seed_major=True, **axes)
    assert g.shape == (3, 2, 4) and g.n_conditions == 6 and "seed_major=True" in repr(g)
    rows = g.rows()
    got = list(zip(rows["seed"], rows["temperature"], rows["momentum"]))
    assert got == list(itertools.product(range(4), *axes.values()))
    for name, stride, size in zip(g.names, g.strides, g.shape):  # strides and shape describe the order
        np.testing.assert_array_equal(rows[name], g.axes[name][(rows["index"] // stride) % size])
    fastest = Grid(seeds=4, **axes)
    np.testing.assert_array_equal(g.condition(rows["index"]), np.tile(np.arange(6), 4))
    np.testing.assert_array_equal(fastest.condition(np.arange(24)), np.repeat(np.arange(6), 4))
    parts = list(g.chunks(5))
    np.testing.assert_array_equal(np.concatenate([p[2]["seed"] for p in parts]), rows["seed"])


def test_seed_major_roundtrip():
    g = Grid(seeds=3, seed_major=True, t=[0.5, 2.0])
    d = json.loads(json.dumps(g.to_dict()))
    assert Grid.from_dict(d) == g and g != Grid(seeds=3, t=[0.5, 2.0])
    assert "seed_major" not in Grid(seeds=3, t=[0.5, 2.0]).to_dict()  # manifests written before the option
    with pytest.raises(TypeError, match="seed_major"):
        Grid(seeds=3, seed_major="yes", t=[1.0])
