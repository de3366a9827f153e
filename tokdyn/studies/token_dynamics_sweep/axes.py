"""The sweep's axes: one per knob of the built-in rule, derived from :class:`tokdyn.dynamics.Hparams`
(its fields, defaults and docstring: :func:`axis_names`, :func:`axis_help`, :func:`axis_fields`),
besides the data axes (``noise``, ``n_clusters``) and ``method``."""

from __future__ import annotations

import dataclasses
import re
import sys

from tokdyn import dynamics
from tokdyn.experiment import attributes

KNOB_AXES = dynamics.FIELDS  # the built-in rule's knobs (the fields of dynamics.Hparams): an axis and an option each
RULE_AXES = KNOB_AXES + ("method",)
DATA_AXES = ("noise", "n_clusters")
FIRST_KNOBS = ("temperature", "repulsion", "momentum")  # the knobs the published sweep varies, first in the grid
DEFAULT_AXES = {
    "temperature": "logspace:0.05:20:25",
    "repulsion": "linspace:0:0.2:11",
    "momentum": "0,0.5",
    "noise": "0.3,0.6,0.9",
    "n_clusters": "3,4,5",
}  # every other axis: "" (not an axis)
_OTHER_AXES = {  # the help text of the axes that are not knobs (a knob's comes from dynamics.Hparams)
    "noise": "cluster standard deviation axis.",
    "n_clusters": "cluster count axis.",
    "method": "method names, comma-separated: built-in methods, the package's rules beyond them (refinement: "
    "tokdyn.refinement.REFINEMENT at its default knobs) and rule_module's rules in any mix, run on common "
    "random numbers (the same data and initial tokens per seed) and compared by name (an axis of indices "
    "into them; explicit rule axes override a method's values); empty: not an axis.",
}


def axis_names(knobs: type = dynamics.Hparams) -> tuple:
    """The names of the sweep's axes in grid order (the order of the chunks' runs, and of the
    options) when the built-in rule's knobs are the fields of ``knobs``: :data:`FIRST_KNOBS`,
    the data axes, ``method``, then every other field of ``knobs`` in its order. A knob added to
    :class:`tokdyn.dynamics.Hparams` becomes the last axis (every earlier sweep keeps its layout)."""
    fields = tuple(f.name for f in dataclasses.fields(knobs))
    return FIRST_KNOBS + DATA_AXES + ("method",) + tuple(k for k in fields if k not in FIRST_KNOBS)


def axis_help(knobs: type = dynamics.Hparams) -> dict:
    """``{axis: help text}`` of the sweep's axes (:func:`axis_names`): a knob's is the first
    sentence of its entry in the ``Attributes:`` section of ``knobs``' docstring (its
    cross-references written as the full names they point to, so that the text reads the same in
    ``--help`` and in the documentation), with the default it runs at when it is not an axis; the
    other axes' are their own."""
    own = attributes.documented(knobs)
    defaults = {f.name: f.default for f in dataclasses.fields(knobs)}
    module = _public_module(knobs)
    where = f"{module}.{knobs.__name__}"
    out = {}
    for name in axis_names(knobs):
        if name in _OTHER_AXES:
            out[name] = _OTHER_AXES[name]
            continue
        text = re.split(r"(?<=\.)\s+(?=[A-Z])", own.get(name, "").strip())[0]  # its first sentence
        text = re.sub(r":[\w:]+:`~?([^`]+)`", lambda m: f"``{_qualified(m.group(1), module)}``", text)
        out[name] = (
            f"{name} axis, a knob of the built-in rule ({where}.{name}: {text.rstrip('.')}); empty: not an "
            f"axis (each method's value, else {defaults[name]:g})."
        )
    return out


def _public_module(cls: type) -> str:
    """The shortest module path that exports ``cls`` (``tokdyn.dynamics`` for a class defined in
    ``tokdyn.dynamics.hparams`` and re-exported by its package)."""
    parts = cls.__module__.split(".")
    for n in range(1, len(parts)):
        module = sys.modules.get(".".join(parts[:n]))
        if module is not None and getattr(module, cls.__name__, None) is cls:
            return ".".join(parts[:n])
    return cls.__module__


def _qualified(target: str, module: str) -> str:
    """A docstring's cross-reference target as a full dotted name (``sinkhorn`` in
    ``tokdyn.dynamics``: ``tokdyn.dynamics.sinkhorn``)."""
    return target if target.startswith("tokdyn.") else f"{module}.{target}"


def axis_fields(knobs: type = dynamics.Hparams) -> list:
    """``[(name, str, dataclasses.field), ...]`` of the sweep's axes (:func:`axis_names`), for
    :func:`dataclasses.make_dataclass`: each a ``str`` of values, its default
    :data:`DEFAULT_AXES`' or ``""`` (not an axis)."""
    return [(name, str, dataclasses.field(default=DEFAULT_AXES.get(name, ""))) for name in axis_names(knobs)]


AXES = axis_names()  # grid order
