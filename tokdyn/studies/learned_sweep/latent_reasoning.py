"""Sweeps of the latent reasoner (:mod:`tokdyn.models.latent`) of one training variant (``--variant``,
default ``latent``; its :class:`tokdyn.train.Curriculum` for ``coconut``) over its traced knobs
(learning rate, weight decay, the alignment and caption losses' weights) x seeds, each model scored
on the test set as the latent-reasoning study scores it
(:func:`~tokdyn.studies.learned_sweep.catalogue.reasoner_evaluate`: accuracy over all families and
per family).

    tokdyn sweep latent-reasoning --variant latent --learning-rate 3e-4,1e-3,3e-3 --seeds 256 --out DIR

The model's own ``seeds`` and ``root_seed`` are not options: the sweep's seeds and root seed key
its models. Here: its :data:`Config` (:func:`~tokdyn.studies.learned_sweep.config.make_config` of
:data:`~tokdyn.studies.learned_sweep.catalogue.LATENT_REASONING`), :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

from tokdyn.experiment import runner
from tokdyn.studies.learned_sweep.catalogue import LATENT_REASONING
from tokdyn.studies.learned_sweep.config import make_config
from tokdyn.studies.learned_sweep.running import make_spec

Config = make_config(LATENT_REASONING, __name__)
SPEC = make_spec(LATENT_REASONING, Config)
main = runner.entry(
    SPEC,
    __name__,
    returns="``{'baseline': row, 'tests': [...]}``: the baseline condition's row of conditions.csv and "
    "the paired tests of paired.csv.",
)
