"""Sweeps of SAVi, Slot Attention for video (:mod:`tokdyn.models.savi`), on sprite videos over its
traced knob (the learning rate) x seeds, each model scored on held-out clips
(:func:`~tokdyn.studies.learned_sweep.catalogue.savi_evaluate`: video FG-ARI, its slots the track
ids; per-frame FG-ARI; reconstruction error).

    tokdyn sweep savi --learning-rate 1e-3,2e-3,4e-3 --seeds 256 --out DIR

The model's own ``seeds`` and ``root_seed`` are not options: the sweep's seeds and root seed key
its models. Here: its :data:`Config` (:func:`~tokdyn.studies.learned_sweep.config.make_config` of
:data:`~tokdyn.studies.learned_sweep.catalogue.SAVI`), :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

from tokdyn.experiment import runner
from tokdyn.studies.learned_sweep.catalogue import SAVI
from tokdyn.studies.learned_sweep.config import make_config
from tokdyn.studies.learned_sweep.running import make_spec

Config = make_config(SAVI, __name__)
SPEC = make_spec(SAVI, Config)
main = runner.entry(
    SPEC,
    __name__,
    returns="``{'baseline': row, 'tests': [...]}``: the baseline condition's row of conditions.csv and "
    "the paired tests of paired.csv.",
)
