"""Every model's configuration holds its training as one nested ``train: tokdyn.train.optim.Config``:
it is validated there (errors name ``train.<field>``), it is what the model's trainer trains with,
and its default is the schedule each model had before the field was nested, checked against the
closed form of a linear warm-up then a cosine decay (or a constant rate) in float64."""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import train
from tokdyn.models import iodine, savi, sequence, slots, vtae
from tokdyn.models.organism import training as organism
from tokdyn.train import optim

# the schedules before nesting: (steps, steps_per_call, warm-up the schedule used, decay, final fraction, clipping)
BEFORE = {
    "slots": (slots.Config, slots.trainer, (4000, 100, 200, "cosine", 0.05, 1.0)),
    "iodine": (iodine.Config, iodine.trainer, (4000, 100, 200, "cosine", 0.05, 1.0)),
    "savi": (savi.Config, savi.trainer, (4000, 100, 200, "cosine", 0.05, 1.0)),
    "sequence": (sequence.Config, sequence.trainer, (2000, 100, 100, "cosine", 0.1, 1.0)),
    "vtae": (vtae.Config, vtae.trainer, (500, 50, 0, "constant", 0.05, 0.0)),
}

# every model configuration with a nested ``train``: the organisms' was born nested (no schedule before), and its
# trainer draws the training pool first (seconds), so it joins the tests that read the configuration alone
NESTED = {**{name: entry[0] for name, entry in BEFORE.items()}, "organism": organism.Config}


def closed_form(t, peak, steps, warm, decay, final):
    """The learning rate at step ``t`` (float64): ``peak * t / warm`` during the warm-up, then
    ``peak * (final + (1 - final) * (1 + cos(pi * u)) / 2)`` with ``u`` the share of the decay
    done (at most 1), or ``peak`` for a constant rate."""
    if t < warm:
        return peak * t / warm
    if decay == "constant":
        return peak
    u = min(t - warm, steps - warm) / (steps - warm)
    return peak * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * u)))


@pytest.mark.parametrize("name", list(BEFORE))
def test_the_default_schedule_is_the_one_before(name):
    make, trainer_of, (steps, per_call, warm, decay, final, clip) = BEFORE[name]
    cfg = make().validate()
    assert cfg.train == optim.Config(
        steps=steps, steps_per_call=per_call, warmup=warm, decay=decay, final_fraction=final, clip_norm=clip
    )
    assert trainer_of(cfg).config == cfg.train  # the trainer trains with it
    peak = 3e-3
    sched = train.schedule(cfg.train, jnp.float32(peak))
    for t in sorted(
        {0, 1, warm // 2, max(warm - 1, 0), warm, warm + 1, (warm + steps) // 2, steps - 1, steps, steps + 10}
    ):
        np.testing.assert_allclose(
            float(sched(t)),
            closed_form(t, peak, steps, warm, decay, final),
            rtol=1e-5,
            atol=1e-12,
            err_msg=f"{name} step {t}",
        )


@pytest.mark.parametrize("name", list(NESTED))
def test_the_nested_training_is_validated_naming_the_field(name):
    make = NESTED[name]
    with pytest.raises(ValueError, match=r"train\.steps must be a multiple of steps_per_call=100, got 150"):
        make(train=optim.Config(steps=150, steps_per_call=100)).validate()
    with pytest.raises(ValueError, match=r"train\.warmup must be an int >= 0, got -1"):
        make(train=optim.Config(warmup=-1)).validate()
    with pytest.raises(ValueError, match=r"train\.decay must be one of"):
        make(train=optim.Config(decay="linear")).validate()
    with pytest.raises(ValueError, match=r"train\.clip_norm must be in"):
        make(train=optim.Config(clip_norm=-1.0)).validate()
    with pytest.raises(TypeError, match=r"train must be a tokdyn\.train\.optim\.Config"):
        make(train={"steps": 100}).validate()
    cfg = make()
    assert (
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=8000)).validate().train.warmup
        == cfg.train.warmup
    )  # one field of the schedule changed, the rest kept


@pytest.mark.parametrize("name", ["slots", "organism", "sequence"])
def test_warmup_zero_is_no_warmup(name):
    """``warmup=0`` has the optimiser's one meaning for every model: the first step runs at the
    peak (the image and latent models used to force a warm-up of one step)."""
    cfg = NESTED[name]()
    sched = train.schedule(dataclasses.replace(cfg.train, warmup=0), 2e-3)
    steps, final = cfg.train.steps, cfg.train.final_fraction
    for t in (0, 1, steps // 2, steps):
        np.testing.assert_allclose(float(sched(t)), closed_form(t, 2e-3, steps, 0, "cosine", final), rtol=1e-5)


def test_a_warmup_past_the_budget_is_capped_below_it():
    """As before: a warm-up of ``steps`` or more ends one step before the budget."""
    cfg = slots.Config(train=optim.Config(steps=10, steps_per_call=5, warmup=50)).validate()
    assert cfg.train.warmup_steps == 9
    sched = train.schedule(cfg.train, 1.0)
    np.testing.assert_allclose([float(sched(t)) for t in (0, 4, 9, 10)], [0.0, 4 / 9, 1.0, 0.05], rtol=1e-5, atol=1e-12)
