"""Deprecated: the package of the Flax latent reasoner, which the Qwen2.5-VL organisms of
:mod:`tokdyn.models.organism` replace. Only the deprecated name ``tokdyn.models.latent.tasks`` is left here
(:mod:`tokdyn.data.grid_tasks`, loaded and warned of on first use) until its removal version
(``tokdyn._deprecations``).
"""

import importlib
import warnings

__all__: list = []


def __getattr__(name):
    if name == "tasks":  # deprecated: the grid tasks' own module, loaded (and warned of) on first use
        from tokdyn._deprecations import notice

        warnings.warn(
            "tokdyn.models.latent.tasks is deprecated: use tokdyn.data.grid_tasks"
            + notice("tokdyn.models.latent.tasks"),
            DeprecationWarning,
            stacklevel=2,
        )
        globals()["tasks"] = importlib.import_module("tokdyn.data.grid_tasks")
        return globals()["tasks"]
    raise AttributeError(f"module 'tokdyn.models.latent' has no attribute {name!r}")
