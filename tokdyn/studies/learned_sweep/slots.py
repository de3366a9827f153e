"""Sweeps of Slot Attention autoencoders (:mod:`tokdyn.models.slots`) on sprite scenes over their
traced knob (the learning rate) x seeds, each model scored on held-out scenes
(:func:`~tokdyn.studies.learned_sweep.catalogue.slots_evaluate`: FG-ARI, matched IoU,
reconstruction error).

    tokdyn sweep slots --learning-rate 1e-4,4e-4,1e-3 --seeds 256 --out DIR

The model's own ``seeds`` and ``root_seed`` are not options: the sweep's seeds and root seed key
its models. Here: its :data:`Config` (:func:`~tokdyn.studies.learned_sweep.config.make_config` of
:data:`~tokdyn.studies.learned_sweep.catalogue.SLOTS`), :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

from tokdyn.experiment import runner
from tokdyn.studies.learned_sweep.catalogue import SLOTS
from tokdyn.studies.learned_sweep.config import make_config
from tokdyn.studies.learned_sweep.running import make_spec

Config = make_config(SLOTS, __name__)
SPEC = make_spec(SLOTS, Config)
main = runner.entry(
    SPEC,
    __name__,
    returns="``{'baseline': row, 'tests': [...]}``: the baseline condition's row of conditions.csv and "
    "the paired tests of paired.csv.",
)
