"""Sweeps of IODINE (:mod:`tokdyn.models.iodine`) on the sprite scenes of the Slot Attention sweep
over its traced knob (the learning rate) x seeds, each model scored on held-out scenes
(:func:`~tokdyn.studies.learned_sweep.catalogue.iodine_evaluate`: FG-ARI, matched IoU,
reconstruction error, as Slot Attention is scored).

    tokdyn sweep iodine --learning-rate 1e-4,3e-4,1e-3 --seeds 256 --out DIR

The model's own ``seeds`` and ``root_seed`` are not options: the sweep's seeds and root seed key
its models. Here: its :data:`Config` (:func:`~tokdyn.studies.learned_sweep.config.make_config` of
:data:`~tokdyn.studies.learned_sweep.catalogue.IODINE`), :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

from tokdyn.experiment import runner
from tokdyn.studies.learned_sweep.catalogue import IODINE
from tokdyn.studies.learned_sweep.config import make_config
from tokdyn.studies.learned_sweep.running import make_spec

Config = make_config(IODINE, __name__)
SPEC = make_spec(IODINE, Config)
main = runner.entry(
    SPEC,
    __name__,
    returns="``{'baseline': row, 'tests': [...]}``: the baseline condition's row of conditions.csv and "
    "the paired tests of paired.csv.",
)
