"""A condition out of its range reaches a sweep through the public API only to be refused before
anything is traced, with the check ``tokdyn sweep`` and ``Hparams.validate`` make: never NaN rows."""

import jax
import numpy as np
import pytest

from conftest import jax_compilations
from tokdyn import dynamics
from tokdyn.engine import sweep
from tokdyn.engine.runs import ClusterRun, CollapseRun, TrackRun

SMALL = dict(n_tokens=2, dim=2, points_per_cluster=10, max_clusters=2, n_clusters=2)
TRACK = dict(n_frames=2, n_clusters=2, points_per_cluster=5, n_tokens=2)


def _own_rule():
    from typing import NamedTuple

    class Step(NamedTuple):
        step_size: float = 1.0

    def check(hp, key):
        if not 0 < hp.step_size <= 1:
            raise ValueError(f"step_size must be in (0, 1], got {hp.step_size}")

    return dynamics.Rule(
        lambda points, tokens, hp: tokens, lambda t, points, hp, s, key: t, hparams=Step(), name="own", check=check
    )


CASES = {
    "repulsion": (ClusterRun(**SMALL), dict(repulsion=[-1.0, 0.1])),
    "temperature": (ClusterRun(**SMALL), dict(temperature=[0.0, 1.0])),
    "momentum": (ClusterRun(**SMALL), dict(momentum=[0.5, 1.0])),
    "noise": (ClusterRun(**SMALL), dict(noise=[-1.0])),
    "n_clusters": (ClusterRun(**SMALL), dict(n_clusters=[1, 3])),
    "method": (ClusterRun(**SMALL, methods=((1.0,),)), dict(method=[0, 2])),
    "step_size": (ClusterRun(**SMALL, rule=_own_rule()), dict(step_size=[0.5, 2.0])),
    "decay": (TrackRun(**TRACK), dict(decay=[-1.0])),
    "speed": (TrackRun(**TRACK), dict(speed=[-1.0])),
    "ratio": (CollapseRun(n_points=20), dict(ratio=[0.0, 1.0])),
    "repulsion_rel": (CollapseRun(n_points=20), dict(ratio=[1.0], repulsion_rel=[-1.0])),
}


@pytest.mark.parametrize("case", CASES)
def test_out_of_range_condition_is_refused_before_tracing(case):
    fn, axes = CASES[case]
    key = jax.random.key(0)
    with jax_compilations() as compiled, pytest.raises(ValueError, match=f"axis '{case}'"):
        sweep.run(fn, sweep.Grid(seeds=1, **axes), key=key, progress=False)
    assert not compiled


def test_the_same_check_as_hparams_validate():
    """The sweep's refusal is Hparams.validate's own message, for each knob of the built-in rule."""
    for name, bad in (("repulsion", -1.0), ("damping", 0.0), ("slot_norm", 2.0), ("anneal_ratio", 0.5)):
        with pytest.raises(ValueError) as direct:
            dynamics.Hparams(**{name: bad}).validate()
        with pytest.raises(ValueError) as swept:
            ClusterRun(**SMALL).check_conditions({name: np.array([bad])})
        assert str(direct.value) in str(swept.value)
