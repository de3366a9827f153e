"""The video study's switch_rate is a rate (switches over the chances to switch, a switch being a
chance taken), so its interval over seeds in ``metrics.csv`` stays inside [0, 1]."""

import numpy as np

from tokdyn import metrics
from tokdyn.studies.video import tables
from tokdyn.studies.video.config import Config


def test_switches_never_exceed_chances():
    rng = np.random.default_rng(0)
    for _ in range(20):
        masks = rng.integers(0, 4, size=(6, 12)).astype(np.int32)  # 6 frames, 3 tracks and background
        pred = rng.integers(0, 3, size=(6, 12)).astype(np.int32)
        c = np.asarray(metrics.track_labels(masks, pred, n_true=4, n_pred=3))
        chances = int(np.sum((c[1:] >= 0) & (c[:-1] >= 0)))
        assert 0 <= int(metrics.track_switches(masks, pred, n_true=4, n_pred=3)) <= chances


def test_switch_rate_interval_stays_in_unit_interval():
    cfg = Config()
    # a skewed rate near 0 over 6 seeds: Student's t on the raw scale would reach below 0
    rates = np.array([0.0, 0.0, 0.0, 0.05, 0.0, 0.9])
    rows = []
    for sc in cfg.scenarios:
        for cond in cfg.all_conditions:
            for seed, r in enumerate(rates):
                rows.append(dict(scenario=sc, condition=cond, seed=seed, switch_rate=r))
    runs = {k: np.asarray([row[k] for row in rows]) for k in rows[0]}
    for name in tables.SCORES:
        runs.setdefault(name, np.full(len(rows), 0.5))
    out = tables.metric_rows(cfg, runs)
    lows = np.array([r["switch_rate_low"] for r in out])
    highs = np.array([r["switch_rate_high"] for r in out])
    assert np.all(np.isfinite(lows)) and np.all(lows >= 0.0) and np.all(highs <= 1.0)
    assert np.all(lows <= rates.mean()) and np.all(highs >= rates.mean())
