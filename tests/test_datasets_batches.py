"""Fixed-shape batches (tokdyn.datasets.batches): deterministic by seed, disjoint shards that cover
every example, a padded last batch, errors through the prefetching thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tokdyn.datasets import batches as b


def source(n=23):
    return lambda: ({"x": np.full((2, 3), i, np.float32), "i": i} for i in range(n))


def ids(stream):
    return [list(batch["i"][batch["valid"]]) for batch in stream]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_same_seed_gives_the_same_batches_and_another_seed_others(prefetch):
    one = ids(b.batches(source(), 4, seed=3, shuffle_buffer=8, prefetch=prefetch))
    assert one == ids(b.batches(source(), 4, seed=3, shuffle_buffer=8, prefetch=2 - prefetch))
    assert one != ids(b.batches(source(), 4, seed=4, shuffle_buffer=8))
    assert len(one) == 5 and sorted(sum(one, [])) != list(range(20))  # shuffled, remainder dropped
    assert ids(b.batches(source(), 4, seed=3)) == [list(range(k, k + 4)) for k in range(0, 20, 4)]  # no buffer


def test_shards_are_disjoint_and_cover_every_example_each_epoch():
    seen = []
    for p in range(3):
        got = ids(b.batches(source(), 5, seed=0, shuffle_buffer=4, process_index=p, process_count=3,
                            epochs=2, drop_remainder=False))  # fmt: skip
        flat = sum(got, [])
        assert all(i % 3 == p for i in flat)
        seen.append(flat)
    every = sorted(sum(seen, []))
    assert every == sorted(list(range(23)) * 2)


def test_a_short_last_batch_is_padded_and_masked():
    out = list(b.batches(source(6), 4, seed=0, drop_remainder=False))
    assert [x["x"].shape for x in out] == [(4, 2, 3), (4, 2, 3)]
    np.testing.assert_array_equal(out[1]["valid"], [True, True, False, False])
    np.testing.assert_array_equal(out[1]["x"][2:], 0)


def test_errors_are_named_and_raised_in_the_callers_thread():
    def broken():
        yield {"x": np.zeros(2)}
        raise ValueError("bad CRC in FILE: record 1")

    with pytest.raises(ValueError, match="record 1"):
        list(b.batches(broken, 1, seed=0))
    ragged = lambda: iter([{"x": np.zeros(2)}, {"x": np.zeros(3)}])
    with pytest.raises(ValueError, match=r"example 1 of a batch has 'x' of shape \(3,\), the first \(2,\)"):
        list(b.batches(ragged, 2, seed=0))
    with pytest.raises(ValueError, match="process_index must be below process_count=2, got 2"):
        b.batches(source(), 2, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        b.batches(source(), 0, seed=0)


def test_closing_early_stops_the_prefetching_thread():
    before = threading.active_count()
    stream = b.batches(source(1000), 1, seed=0, prefetch=2)
    next(stream)
    stream.close()
    assert threading.active_count() == before
