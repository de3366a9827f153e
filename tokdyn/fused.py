"""Deprecated: the built-in rule's Pallas kernel is now :mod:`tokdyn.dynamics.pallas`, a backend of
the rule (``dynamics.BUILTIN.backend("pallas")``). This module is kept so that code written for it
runs unchanged: :func:`run`, :func:`preferred`, :data:`MAX_TOKEN_COORDS` and :data:`MAX_POINTS` are
those of :mod:`tokdyn.dynamics.pallas` (the same objects). Importing it warns
(``DeprecationWarning``); new code imports :mod:`tokdyn.dynamics.pallas`."""

from __future__ import annotations

import warnings

from tokdyn._deprecations import notice
from tokdyn.dynamics.pallas import MAX_POINTS, MAX_TOKEN_COORDS, preferred, run

__all__ = ["run", "preferred", "MAX_TOKEN_COORDS", "MAX_POINTS"]

warnings.warn(
    "tokdyn.fused is deprecated: the kernel is tokdyn.dynamics.pallas (the built-in rule's 'pallas' backend)"
    + notice("tokdyn.fused"),
    DeprecationWarning,
    stacklevel=2,
)
