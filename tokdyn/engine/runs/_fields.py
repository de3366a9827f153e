"""What the runs share: their knobs as a field of host numbers, and the call signature a sweep reads."""

from __future__ import annotations

import dataclasses
import functools
import inspect

import jax
import numpy as np

from tokdyn import _checks, dynamics


def host_hparams(name: str, value, kind: type, where: str, traced: str):
    """``value``, a ``kind`` (a knobs dataclass) of host numbers (NumPy scalars as Python numbers),
    checked by its ``validate()``: a run's field is static (hashed with the run), its traced values
    are conditions. ``TypeError`` / ``ValueError`` naming the field."""
    if not isinstance(value, kind):
        raise TypeError(
            f"{name} must be a {where}.{kind.__name__} (the defaults of the knobs), got {value!r} of type "
            f"{type(value).__name__}"
        )
    leaves = {}
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        if isinstance(v, np.generic) and np.ndim(v) == 0:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(
                f"{name}.{f.name} must be a Python number (a run's fields are static, its defaults), got "
                f"{v!r} of type {type(v).__name__}: pass traced values as conditions, {traced}"
            )
        leaves[f.name] = v
    return kind(**leaves).validate()


def moved_into(field: str, kind: type, where: str):
    """A class decorator for a run that holds the knobs ``kind`` as its field ``field``: building it
    with the knobs as fields of their own (``ClusterRun(temperature=0.5)``), or reading them there
    (``run.temperature``), is a ``TypeError`` / ``AttributeError`` that shows the way."""
    names = tuple(f.name for f in dataclasses.fields(kind))
    example = f"{where}.{kind.__name__}"

    def decorate(cls):
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            moved = [k for k in kwargs if k in names]
            if moved:
                given = ", ".join(f"{k}={kwargs[k]!r}" for k in moved)
                raise TypeError(
                    f"{cls.__name__} has no field {moved[0]!r}: the defaults of the knobs of {example} are "
                    f"its field {field}: write {cls.__name__}({field}={example}({given}))"
                )
            init(self, *args, **kwargs)

        def __getattr__(self, name):
            if name in names:
                raise AttributeError(
                    f"{cls.__name__} has no attribute {name!r}: the default of that knob is run.{field}.{name}"
                )
            raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")

        cls.__init__ = __init__
        cls.__getattr__ = __getattr__
        return cls

    return decorate


class CallSignature:
    """``inspect.signature`` of a :class:`~tokdyn.engine.runs.ClusterRun` (or :class:`~tokdyn.engine.runs.TrackRun`) instance: the key, then
    its conditions (its rule's knobs and the data conditions) and ``draw`` as keyword arguments, so
    that the sweep engine checks a grid's axes against the knobs of the rule it runs (the class
    itself keeps its ordinary signature)."""

    def __get__(self, obj, cls=None):
        if obj is None:
            raise AttributeError("__signature__")
        P = inspect.Parameter
        return inspect.Signature(
            [P("key", P.POSITIONAL_OR_KEYWORD)]
            + [P(n, P.KEYWORD_ONLY, default=None) for n in (*obj.conditions, "draw")]
        )


def check_axes(axes: dict, checks: dict) -> None:
    """Every value of every axis of ``axes`` (``{name: 1-D numbers}``) that ``checks`` names, one by
    one, through ``checks[name](value)`` (a Python number), which raises ``ValueError`` naming the
    condition, the value and what is allowed; the message is prefixed with the axis. The one check
    of a run's conditions before a sweep traces anything (:meth:`~tokdyn.engine.runs.ClusterRun.check_conditions`)."""
    for name, values in axes.items():
        check = checks.get(name)
        if check is None:
            continue
        for v in np.asarray(values).ravel().tolist():
            try:
                check(v)
            except ValueError as e:
                raise ValueError(f"axis {name!r}: {e}") from None


def whole_in(name: str, low: int, high: int, meaning: str):
    """A check for :func:`check_axes`: a whole number in ``[low, high]``."""

    def check(v):
        if not (float(v) == round(float(v)) and low <= v <= high):
            raise ValueError(f"{name} must be a whole number in [{low}, {high}] ({meaning}), got {v!r}")

    return check


def rule_knob_checks(rule, knobs: tuple) -> dict:
    """``{knob: check}`` for :func:`check_axes` of a rule's knobs: the built-in rules' by
    :meth:`tokdyn.dynamics.Hparams.validate` (one knob set, the others at their defaults, as
    ``tokdyn sweep`` checks them), any other rule's a real number, then its own ``check(hparams,
    key)`` (:class:`tokdyn.dynamics.Rule`) with that knob set in its defaults."""
    if rule in (dynamics.BUILTIN, dynamics.BUILTIN_ORIGIN):
        return {name: (lambda v, name=name: dynamics.Hparams(**{name: v}).validate()) for name in knobs}

    def one(name):
        def check(v):
            _checks.real(name, v)
            if rule.check is not None:
                defaults = rule.hparams
                hp = (
                    dataclasses.replace(defaults, **{name: v})
                    if dataclasses.is_dataclass(defaults)
                    else defaults._replace(**{name: v})
                )
                rule.check(hp, jax.random.key(0))

        return check

    return {name: one(name) for name in knobs}
