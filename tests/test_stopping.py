"""The stop rule ``train.Patience`` on synthetic learning curves: plateaus (shorter than the patience,
or ending before the minimum budget), noisy flat curves, slow rises, overfitting, NaN scores,
several models at once, and a reproduction of the reported failure of the window rule (a transient
plateau stopped at step 1,400 of 5,000)."""

import warnings

import numpy as np
import pytest

from tokdyn import train

BUDGET, PER = 5000, 50
STEPS = np.arange(1, BUDGET // PER + 1) * PER  # (100,) the steps of the calls
S = STEPS.astype(float)


def ramp(a, b, start, end):
    """0 before ``start``, 1 after ``end``, a cosine in between (a smooth rise)."""
    r = np.clip((S - start) / (end - start), 0.0, 1.0)
    return a + (b - a) * (0.5 - 0.5 * np.cos(np.pi * r))


def plateau_then_rise(plateau_end, rise_end=None, level=0.5, top=0.9, plateau_start=300, wobble=0.003):
    """A rise to ``level`` by ``plateau_start``, flat (a small deterministic wobble) until ``plateau_end``,
    then a rise to ``top`` by ``rise_end``."""
    rise_end = rise_end or plateau_end + 1600
    v = np.where(S <= plateau_start, 0.2 + (level - 0.2) * S / plateau_start, level)
    v = v + wobble * np.sin(S / 70.0) * (S > plateau_start)
    return np.where(S > plateau_end, ramp(level, top, plateau_end, rise_end), v)


def falling_loss(rate=1 / 2000):
    """A training loss that keeps falling: by ~15% every 300 steps."""
    return 2.0 * np.exp(-S * rate * 1.1)


def plateau_change(steps, values, window=0.2):
    """The former rule's measure (the latent-reasoning study's): how much ``values`` still move over the last
    ``window`` of the steps, the least-squares slope over the points with step >= (1 - window) * last step
    times the window's length; NaN with fewer than 3 points in the window."""
    steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    if steps.size == 0:
        return float("nan")
    start = (1.0 - window) * steps[-1]
    sel = steps >= start
    if sel.sum() < 3:
        return float("nan")
    slope = np.polyfit(steps[sel], values[sel], 1)[0]
    return float(slope * (steps[-1] - start))


def old_window_rule(scores, tolerance=0.01, window=0.2):
    """The first step at which the study's former rule stopped (every seed's held-out accuracy moved by
    less than ``tolerance`` over the last ``window`` of the steps; -1: never)."""
    scores = np.atleast_2d(scores)
    for i in range(1, len(STEPS) + 1):
        changes = [plateau_change(STEPS[:i], v[:i], window) for v in scores]
        if all(np.isfinite(c) and abs(c) < tolerance for c in changes):
            return int(STEPS[i - 1])
    return -1


def test_a_plateau_shorter_than_the_patience_never_stops_a_run():
    rule = train.Patience(patience=0.25, min_fraction=0.0, min_delta=0.01, loss_delta=None)  # 1,250 steps
    short = plateau_then_rise(plateau_end=1100)  # flat from 300 to 1,100, visibly rising from ~1,300
    stop = rule.first_stop(STEPS, short, BUDGET)
    assert stop == -1 or stop > 2700, stop  # not in the plateau; at most once the rise has ended
    for n in range(1, 29):  # the decision at every step of the plateau, from the history up to it
        assert not rule.decide(STEPS[:n], short[:n], BUDGET).stop
    # the same plateau, longer than the patience, is stopped inside it: what protects is the patience
    long = plateau_then_rise(plateau_end=2200)
    assert 300 + 1250 <= rule.first_stop(STEPS, long, BUDGET) <= 2200


def test_no_stop_before_the_minimum_budget():
    """A plateau longer than the patience that ends before ``min_fraction`` of the budget: no stop in it."""
    rule = train.Patience(patience=0.1, min_fraction=0.5, min_delta=0.01, loss_delta=None)  # 500 steps; 2,500
    curve = plateau_then_rise(plateau_end=2200, rise_end=3500)
    stop = rule.first_stop(STEPS, curve, BUDGET)
    assert stop == -1 or stop >= 3500, stop
    d = rule.decide(STEPS[:44], curve[:44], BUDGET)  # step 2,200: patience long spent, budget not
    assert not d.stop and 2200 - int(d.improved_step) >= 500
    flat = np.full(100, 0.5)
    assert rule.first_stop(STEPS, flat, BUDGET) == 2500  # a flat run stops at the minimum budget exactly


def test_a_noisy_flat_curve_stops_and_not_before_the_minimum_budget():
    rule = train.Patience()  # patience 0.25, min_fraction 0.5, min_delta 0.01
    rng = np.random.default_rng(0)
    flat = 0.6 + 0.01 * rng.standard_normal((40, 100))  # 40 noisy flat curves, noise = min_delta
    stops = rule.first_stop(STEPS, flat, BUDGET)
    assert np.all(stops >= 2500) and np.all(stops <= BUDGET), stops
    best = rule.decide(STEPS, flat, BUDGET)
    np.testing.assert_array_equal(best.best_step, STEPS[np.argmax(flat, axis=1)])
    np.testing.assert_allclose(best.best, flat.max(axis=1))


def test_a_slow_steady_rise_never_stops():
    """A rise of 0.05 over the whole budget (0.0125 per patience, just above min_delta), noise-free, and a
    faster noisy one: never stopped (the old window rule stops the slow one)."""
    rule = train.Patience(patience=0.25, min_fraction=0.2, min_delta=0.01)
    slow = 0.6 + 0.05 * S / BUDGET
    assert rule.first_stop(STEPS, slow, BUDGET, loss=np.full(100, 0.3)) == -1
    noisy = 0.3 + 0.4 * S / BUDGET + 0.005 * np.random.default_rng(1).standard_normal(100)
    assert rule.first_stop(STEPS, noisy, BUDGET) == -1
    assert old_window_rule(slow) > 0


def test_a_rise_then_a_clear_decline_stops_with_the_peak_as_best():
    """Overfitting: the score peaks at 1,500 and falls while the training loss keeps falling; the rule
    stops (the loss does not hold it back: the score has left its best) and names the peak."""
    rule = train.Patience()
    curve = np.where(S <= 1500, ramp(0.3, 0.9, 0, 1500), 0.9 - 0.2 * (S - 1500) / 3500)
    loss = falling_loss()
    stop = int(rule.first_stop(STEPS, curve, BUDGET, loss=loss))
    assert 2500 <= stop <= 1500 + 1250 + PER, stop
    n = stop // PER
    d = rule.decide(STEPS[:n], curve[:n], BUDGET, loss=loss[:n])
    assert d.stop and d.best_step == 1500 and d.best == pytest.approx(0.9)
    assert d.loss_falling and not d.holding


def test_a_falling_training_loss_holds_a_plateau_back():
    """A plateau past the patience and the minimum budget (a model still learning, e.g. before it
    generalises): while the training loss falls markedly and the score holds its level, no stop; with
    a flat training loss, or without the loss test, it stops in the plateau."""
    rule = train.Patience()
    curve = plateau_then_rise(plateau_end=3500, rise_end=4800, plateau_start=200)
    assert rule.first_stop(STEPS, curve, BUDGET, loss=falling_loss()) == -1
    assert rule.first_stop(STEPS, curve, BUDGET, loss=np.full(100, 0.7)) == 2500
    assert rule.first_stop(STEPS, curve, BUDGET) == 2500
    assert train.Patience(loss_delta=None).first_stop(STEPS, curve, BUDGET, loss=falling_loss()) == 2500
    # a loss falling by less than loss_delta does not hold it back
    gentle = 2.0 * np.exp(-S / 50000)  # ~1% per 625 steps
    assert rule.first_stop(STEPS, curve, BUDGET, loss=gentle) == 2500


def test_the_loss_test_tells_a_noisy_plateau_from_a_noisy_decline():
    """With evaluation noise three times min_delta (250 validation examples), a plateau with a falling
    training loss is held back in nearly every draw, and an overfitting decline is stopped in every draw:
    a decline must exceed three standard errors of the halves' means as well as min_delta."""
    rule, rng = train.Patience(), np.random.default_rng(4)
    p = np.where(S > 3200, ramp(0.5, 1.0, 3200, 4800), np.where(S <= 200, 0.25 + 0.25 * S / 200, 0.5))
    plateaus = rng.binomial(250, p, size=(50, 100)) / 250
    loss = np.broadcast_to(falling_loss(), (50, 100))
    held = rule.first_stop(STEPS, plateaus, BUDGET, loss=loss)
    assert np.mean((held == -1) | (held > 3200)) >= 0.9, held
    assert np.mean((rule.first_stop(STEPS, plateaus, BUDGET) == -1)) < 0.5  # without the loss: mostly stopped
    overfit = np.where(S <= 1500, ramp(0.3, 0.9, 0, 1500), 0.9 - 0.2 * (S - 1500) / 3500)
    stops = rule.first_stop(STEPS, overfit + 0.03 * rng.standard_normal((50, 100)), BUDGET, loss=loss)
    assert np.all(stops >= 2500) and np.median(stops) <= 3500, stops  # every draw stopped, most early


def test_nan_scores_do_not_improve_and_do_not_crash():
    rule = train.Patience()
    curve = np.where(S <= 1500, ramp(0.3, 0.9, 0, 1500), 0.9 - 0.2 * (S - 1500) / 3500)
    holes = curve.copy()
    holes[1::2] = np.nan  # evaluated every other call
    holes[[10, 30, 31]] = np.nan  # failed evaluations
    kept = np.isfinite(holes)
    loss = falling_loss()
    loss_holes = loss.copy()
    loss_holes[[5, 6, 7]] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning of NaN means either
        for n in np.flatnonzero(kept) + 1:  # at an evaluated step: the same as the history without the NaNs
            a = rule.decide(STEPS[:n], holes[:n], BUDGET)
            b = rule.decide(STEPS[:n][kept[:n]], curve[:n][kept[:n]], BUDGET)
            for f in ("stop", "best_step", "best", "improved_step", "holding"):
                np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert rule.first_stop(STEPS, holes, BUDGET, loss=loss_holes) > 0
        # a model that never had a finite score: no best, stops once min_fraction and patience are spent
        d = rule.decide(STEPS, np.full(100, np.nan), BUDGET, loss=np.full(100, np.nan))
        assert d.stop and d.best_step == -1 and np.isnan(d.best) and d.improved_step == 0
        assert rule.first_stop(STEPS, np.full(100, np.nan), BUDGET) == 2500
        assert not rule.decide(STEPS[:0], np.zeros(0), BUDGET).stop  # no history yet
    # a peak that is the best of the NaN-holed curve
    assert rule.decide(STEPS, holes, BUDGET).best_step == STEPS[np.nanargmax(holes)]


def test_several_models_are_decided_each_on_its_own():
    rule = train.Patience()
    rng = np.random.default_rng(2)
    curves = np.stack(
        [
            np.where(S <= 1500, ramp(0.3, 0.9, 0, 1500), 0.9 - 0.2 * (S - 1500) / 3500),  # overfits: stops
            0.3 + 0.4 * S / BUDGET,  # rises: never stops
            0.6 + 0.01 * rng.standard_normal(100),  # noisy flat: stops
            plateau_then_rise(plateau_end=1400, rise_end=4300, top=1.0),  # plateau, then learns: never stops
        ]
    )
    loss = np.stack([falling_loss(), falling_loss(), np.full(100, 0.5), np.full(100, 0.5)])
    together = rule.first_stop(STEPS, curves, BUDGET, loss=loss)
    alone = [int(rule.first_stop(STEPS, c, BUDGET, loss=lo)) for c, lo in zip(curves, loss)]
    np.testing.assert_array_equal(together, alone)
    assert together[0] > 0 and together[1] == -1 and together[2] >= 2500 and together[3] == -1
    d = rule.decide(STEPS[:60], curves[:, :60], BUDGET, loss=loss[:, :60])
    assert d.stop.shape == (4,) and list(d.stop) == [True, False, True, False]
    # the stop callback of train_many stops when every model has stopped
    stop = rule.stopper(train.Config(steps=BUDGET, steps_per_call=PER), "val", loss="loss")
    recorded = {"val": np.where(STEPS <= 3000, curves, np.nan), "loss": loss}
    assert not stop(3000, None, recorded)
    assert stop(3000, None, {"val": recorded["val"][[0, 2]], "loss": loss[[0, 2]]})
    with pytest.raises(ValueError, match="score 'val_all' is not a recorded curve"):
        rule.stopper(train.Config(steps=BUDGET, steps_per_call=PER), "val_all")(3000, None, recorded)


def test_min_mode_mirrors_max_mode():
    curve = np.where(S <= 1500, ramp(0.3, 0.9, 0, 1500), 0.9 - 0.2 * (S - 1500) / 3500)
    up, down = train.Patience(), train.Patience(mode="min")
    a, b = up.decide(STEPS[:60], curve[:60], BUDGET), down.decide(STEPS[:60], -curve[:60], BUDGET)
    assert a.stop == b.stop and a.best_step == b.best_step == 1500 and b.best == -a.best
    assert up.first_stop(STEPS, curve, BUDGET) == down.first_stop(STEPS, 2.0 - curve, BUDGET)


def test_decisions_do_not_hang_on_the_last_bits():
    """Changes below min_delta are not improvements however many there are; a float32 record of a curve
    decides as its float64 original; the rule is a function of the recorded values only."""
    rule = train.Patience()
    creeping = 0.5 + 1e-6 * np.arange(100)  # rises forever by less than any threshold
    assert rule.first_stop(STEPS, creeping, BUDGET) == 2500
    rng = np.random.default_rng(3)
    curves = np.stack([plateau_then_rise(1400, 4300, top=1.0) + 0.02 * rng.standard_normal(100) for _ in range(8)])
    loss = np.stack([falling_loss() * (1 + 0.01 * rng.standard_normal(100)) for _ in range(8)])
    np.testing.assert_array_equal(
        rule.first_stop(STEPS, curves, BUDGET, loss=loss),
        rule.first_stop(STEPS, curves.astype(np.float32), BUDGET, loss=loss.astype(np.float32)),
    )
    again = rule.first_stop(STEPS, curves.copy(), BUDGET, loss=loss.copy())
    np.testing.assert_array_equal(again, rule.first_stop(STEPS, curves, BUDGET, loss=loss))


def test_the_reported_failure_is_reproduced_and_fixed():
    """The latent-reasoning study's ``direct`` variant: held-out accuracy (250 validation examples, 2
    seeds) flat at ~0.5 from step 200 to 1,400, then rising to 1.0 by 4,300, evaluated every 50 steps
    of a 5,000-step budget. The window rule (change over the last 20% of the steps below 0.01) stopped
    it at 1,400; the patience rule does not stop it before it has learned."""
    p = np.where(S <= 200, 0.25 + 0.25 * S / 200, 0.5)
    p = np.where(S > 1400, ramp(0.5, 1.0, 1400, 4300), p)
    acc = np.random.default_rng(22).binomial(250, p, size=(2, 100)) / 250  # (seeds, calls) sampled accuracies
    old = old_window_rule(acc)
    assert 1250 <= old <= 1400, old  # in the plateau, before the model learned (1,400 for this draw)
    new = train.Patience().first_stop(STEPS, acc, BUDGET)
    assert np.all((new == -1) | (new >= 4300)), new
    assert np.all(new == -1)  # with the default rule: trained to the end of the budget
    for n in range(1, 87):  # at no step up to 4,300 does it stop a model
        assert not train.Patience().decide(STEPS[:n], acc[:, :n], BUDGET).stop.any()
    # not a lucky draw: over 100 draws of the same curves, the window rule stops inside the plateau in
    # about 4 in 10 (median 1,275 over the draws), the patience rule never before 4,300
    # (the patience rule decides each model on its own: the 100 draws' 200 curves are replayed at once)
    draws = [np.random.default_rng(seed).binomial(250, p, size=(2, 100)) / 250 for seed in range(100)]
    olds = np.array([old_window_rule(a) for a in draws])
    news = train.Patience().first_stop(STEPS, np.concatenate(draws), BUDGET)
    assert news.shape == (200,)
    assert np.mean((olds > 0) & (olds <= 1400)) >= 0.3
    assert np.all((news == -1) | (news >= 4300))


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(patience=0.0), r"patience must be in \(0, 1\], got 0.0"),
        (dict(patience=1.5), r"patience must be in \(0, 1\], got 1.5"),
        (dict(min_fraction=-0.1), r"min_fraction must be in \[0, 1\], got -0.1"),
        (dict(min_delta=-1.0), r"min_delta must be in \[0, inf\], got -1.0"),
        (dict(min_delta=float("nan")), r"min_delta must be finite"),
        (dict(mode="avg"), r"mode must be one of \['max', 'min'\], got 'avg'"),
        (dict(loss_delta=0.0), r"loss_delta must be in \(0, inf\], got 0.0"),
        (dict(patience=np.array([0.1, 0.2])), r"patience must be a scalar"),
    ],
)
def test_bad_rules_are_refused_naming_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        train.Patience(**kw)


def test_bad_histories_are_refused_naming_the_argument():
    rule = train.Patience()
    with pytest.raises(ValueError, match="steps must be strictly increasing"):
        rule.decide([50, 50, 100], np.zeros(3), BUDGET)
    with pytest.raises(ValueError, match=r"scores must have shape \(3,\) or \(M, 3\)"):
        rule.decide([50, 100, 150], np.zeros(4), BUDGET)
    with pytest.raises(ValueError, match=r"loss must have the shape of scores \(2, 3\)"):
        rule.decide([50, 100, 150], np.zeros((2, 3)), BUDGET, loss=np.zeros(3))
    with pytest.raises(ValueError, match="budget must be an int >= 1, got 0"):
        rule.decide([50], np.zeros(1), 0)
    with pytest.raises(TypeError, match="budget must be an int"):
        rule.decide([50], np.zeros(1), 5000.0)
    with pytest.raises(TypeError, match="scores must be real"):
        rule.decide([50], np.array(["a"]), BUDGET)
    with pytest.raises(TypeError, match="mode must be a str"):
        train.Patience(mode=1)
