"""Sweeps of the visual-token autoencoders (:mod:`tokdyn.models.vtae`) over their traced knobs
(learning rate, Gumbel temperatures, loss weights, VQ knobs) x seeds, each model evaluated on its
whole vocabulary (:func:`tokdyn.models.vtae.diagnostics.evaluate`: accuracy, collapse, ...).

    tokdyn sweep vtae --learning-rate 1e-3,3e-3,1e-2 --tau-end 0.1,0.3 --seeds 1000 --out DIR

Here: its :data:`Config` (:func:`~tokdyn.studies.learned_sweep.config.make_config` of
:data:`~tokdyn.studies.learned_sweep.catalogue.VTAE`), :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

from tokdyn.experiment import runner
from tokdyn.studies.learned_sweep.catalogue import VTAE
from tokdyn.studies.learned_sweep.config import make_config
from tokdyn.studies.learned_sweep.running import make_spec

Config = make_config(VTAE, __name__)
SPEC = make_spec(VTAE, Config)
main = runner.entry(
    SPEC,
    __name__,
    returns="``{'baseline': row, 'tests': [...]}``: the baseline condition's row of conditions.csv and "
    "the paired tests of paired.csv.",
)
