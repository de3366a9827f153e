"""Deprecated: the built-in rule's Pallas kernel is now :mod:`tokdyn.dynamics.pallas`, a backend of
the rule (``dynamics.BUILTIN.backend("pallas")``). This module is kept so that code written for it
runs unchanged: :func:`run`, :func:`preferred`, :data:`MAX_TOKEN_COORDS` and :data:`MAX_POINTS` are
those of :mod:`tokdyn.dynamics.pallas`. New code imports that module."""

from __future__ import annotations

from tokdyn.dynamics.pallas import MAX_POINTS, MAX_TOKEN_COORDS, preferred, run

__all__ = ["run", "preferred", "MAX_TOKEN_COORDS", "MAX_POINTS"]
