"""Deprecated: the store of trained latent reasoners moved to where each part belongs, and this
module is kept so that code written for it runs unchanged (every name it had is the same object
as in its new home, resolved on first use; each use warns once, ``DeprecationWarning``):

- the latent-reasoning study's configuration (:class:`Config`, :data:`REFERENCES`,
  :data:`FAMILIES`, :func:`training`, ...) and how its variants are trained, tested and read back
  are in its package, :mod:`tokdyn.studies.latent_reasoning` (its parts ``config``, ``trained``
  and ``source``);
- the files of a trained model and their checks (:func:`paths`, :func:`read_result`,
  :func:`answers_digest`, ...) are :mod:`tokdyn.train.store`'s, the general trained-model store;
- what the studies that analyse the trained reasoners share (:class:`Analysis`,
  :func:`source_prepare`, :func:`check_apart`, :data:`SOURCE_SPEC`, ...) is
  :mod:`tokdyn.experiment.analysis`'s.

New code imports those. (This module imports none of them until a name is used: the experiment
layer never imports a study.)
"""

from __future__ import annotations

import importlib
import warnings

from tokdyn._deprecations import notice

_STUDY = "tokdyn.studies.latent_reasoning"
_HOMES = {
    **dict.fromkeys(
        (
            "STUDY",
            "SELECTION",
            "REFERENCES",
            "FAMILIES",
            "MAX_ROOT_SEED",
            "FLOPS",
            "STEP_SECONDS",
            "Config",
            "training",
            "forward_elements",
        ),
        f"{_STUDY}.config",
    ),
    **dict.fromkeys(
        (
            "finished",
            "check_devices",
            "convergence",
            "run_variant",
            "open_study",
            "splits",
            "train_variants",
            "record_fields",
            "record",
        ),
        f"{_STUDY}.trained",
    ),
    **dict.fromkeys(
        ("verify_source", "open_source", "ensure_trained", "load_variant", "midway", "load_midway"),
        f"{_STUDY}.source",
    ),
    **dict.fromkeys(
        ("TESTED", "paths", "read_curve", "answers_digest", "write_result", "read_result", "read_answers"),
        "tokdyn.train.store",
    ),
    **dict.fromkeys(
        ("SOURCE_PRESETS", "SOURCE_SELECTION", "SOURCE_SPEC", "Analysis", "check_apart", "source_prepare"),
        "tokdyn.experiment.analysis",
    ),
}
_WARNED: set = set()


def __getattr__(name):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tokdyn.experiment.reasoners' has no attribute {name!r}")
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(
            f"tokdyn.experiment.reasoners is deprecated: {name} is {home}.{name}"
            + notice("tokdyn.experiment.reasoners"),
            DeprecationWarning,
            stacklevel=2,
        )
    return getattr(importlib.import_module(home), name)


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
