"""Sweeps of the grid-diffusion study's models (:mod:`tokdyn.models.sequence`: D3PM and DDPM over
sequences of visual-token grids, and the token-level baselines) over their traced knobs (the
learning rate, the D3PM hybrid loss's weight ``lam``) x seeds, each model scored as the study
scores it (:func:`~tokdyn.studies.learned_sweep.catalogue.grid_diffusion_evaluate`: the share of
grammatical sentences and bigrams of its samples, of valid grids, its held-out likelihood).

    tokdyn sweep grid-diffusion --learning-rate 1e-3,2e-3,4e-3 --lam 0.01,0.1 --seeds 256 --out DIR

The model's ``vocab_size`` is not an option: it is the grammar's. Here: its :data:`Config`
(:func:`~tokdyn.studies.learned_sweep.config.make_config` of
:data:`~tokdyn.studies.learned_sweep.catalogue.GRID_DIFFUSION`), :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

from tokdyn.experiment import runner
from tokdyn.studies.learned_sweep.catalogue import GRID_DIFFUSION
from tokdyn.studies.learned_sweep.config import make_config
from tokdyn.studies.learned_sweep.running import make_spec

Config = make_config(GRID_DIFFUSION, __name__)
SPEC = make_spec(GRID_DIFFUSION, Config)
main = runner.entry(
    SPEC,
    __name__,
    returns="``{'baseline': row, 'tests': [...]}``: the baseline condition's row of conditions.csv and "
    "the paired tests of paired.csv.",
)
