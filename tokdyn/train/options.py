"""The option values of :func:`tokdyn.train.train_many`: what it keeps, what it evaluates, how it
runs.

- :class:`Checkpointing` ``(path, stamp="", format="npz")``: the file (or, in orbax's format, the
  directory) that holds the finished work after every call, and the stamp that a resumed run must
  match;
- :class:`Evaluation` ``(fn=None, every=1, keep_best=None, best_mode="max", stop=None)``: the
  scores recorded beside the training logs, the best state kept per model, the stop rule that
  reads the recorded curves;
- :class:`Execution` ``(strategy="scan", devices=None, batch_size="auto", vectorised_init=True,
  memory_limit=None)``: how the models are laid on the devices, and how many of them a device
  vmaps at once (the numbers they reach do not depend on it beyond the last bits).

Each is a frozen dataclass (static: never traced), built once and handed to ``train_many``::

    train.train_many(trainer, data, keys, hp,
                     checkpointing=train.Checkpointing("run.npz", stamp="v1"),
                     evaluation=train.Evaluation(evaluate, every=5, keep_best="val_all", stop=rule),
                     execution=train.Execution(strategy="loop", vectorised_init=False))

``validate()`` checks every field and raises ``ValueError``/``TypeError`` naming it; ``train_many``
calls it before any compile (its errors name the field as ``evaluation.every``).
"""

from __future__ import annotations

import dataclasses
import os
from numbers import Integral
from typing import Callable, Optional, Sequence, Union

from tokdyn import _checks
from tokdyn._deprecations import notice

STRATEGIES = ("scan", "step", "loop")
CHECKPOINT_FORMATS = ("npz", "orbax")
BEST_MODES = ("max", "min")


@dataclasses.dataclass(frozen=True)
class Checkpointing:
    """Where :func:`~tokdyn.train.train_many` keeps its finished work.

    Attributes:
      path: the checkpoint file (``.npz``) or directory (``format="orbax"``): after every call the
        state, the curves, the kept best state and the stop decision, written atomically; an
        existing one is resumed from.
      stamp: what the file was made for (e.g. a digest of the configuration): a checkpoint of
        another stamp is refused with a ValueError, never resumed.
      format: ``"npz"`` (one verified ``.npz`` file) or ``"orbax"`` (a directory in orbax's
        format with a checked record of its files; needs the extra ``orbax``). Both are verified
        on resume, and resume the same training.
    """

    path: str
    stamp: str = ""
    format: str = "npz"

    def __post_init__(self):
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))

    def validate(self) -> "Checkpointing":
        """Check every field; raise ``ValueError``/``TypeError`` naming it. Returns ``self``."""
        if not isinstance(self.path, str):
            raise TypeError(
                f"path must be the checkpoint file, a str or os.PathLike, got {self.path!r} of type "
                f"{type(self.path).__name__}"
            )
        if not self.path:
            raise ValueError("path must name the checkpoint file, got ''")
        if not isinstance(self.stamp, str):
            raise TypeError(f"stamp must be a str, got {self.stamp!r} of type {type(self.stamp).__name__}")
        if not isinstance(self.format, str):
            raise TypeError(f"format must be a str, one of {list(CHECKPOINT_FORMATS)}, got {self.format!r}")
        _checks.choice("format", self.format, CHECKPOINT_FORMATS)
        if self.format == "orbax":
            from tokdyn.io.orbax_trees import require_orbax

            require_orbax()  # the extra installed, or an ImportError naming it, before any work
        return self


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What :func:`~tokdyn.train.train_many` records beside the training logs, and what it does
    with the curves.

    Attributes:
      fn: ``fn(step, state) -> {name: (M,) array}`` on the stacked state, run after the first
        call, every ``every``-th and the last; each name becomes a curve column (NaN where it did
        not run). None: only the training logs are recorded.
      every: evaluate after every ``every``-th call.
      keep_best: a curve column (e.g. ``"val_all"``, or a training log such as ``"loss"``): each
        model keeps its state at its best finite recorded value (``Result.best_state``). None: no
        best state is kept.
      best_mode: ``"max"`` (larger is better) or ``"min"``.
      stop: ``stop(step, state, curves) -> bool`` after every call, ``curves`` the read-only dict
        name -> (M, calls) recorded so far; True ends training (e.g.
        :meth:`tokdyn.train.Patience.stopper`). None: the whole budget.
    """

    fn: Optional[Callable] = None
    every: int = 1
    keep_best: Optional[str] = None
    best_mode: str = "max"
    stop: Optional[Callable] = None

    def validate(self) -> "Evaluation":
        """Check every field; raise ``ValueError``/``TypeError`` naming it. Returns ``self``."""
        if self.fn is not None and not callable(self.fn):
            raise TypeError(f"fn must be a callable fn(step, state) -> {{name: (M,) array}} or None, got {self.fn!r}")
        _checks.positive_int("every", self.every)
        if self.keep_best is not None and not isinstance(self.keep_best, str):
            raise TypeError(
                f"keep_best must be the name of a curve column (a str, e.g. 'val_all') or None, got {self.keep_best!r}"
            )
        if not isinstance(self.best_mode, str):
            raise TypeError(f"best_mode must be a str, one of {list(BEST_MODES)}, got {self.best_mode!r}")
        _checks.choice("best_mode", self.best_mode, BEST_MODES)
        if self.stop is not None and not callable(self.stop):
            raise TypeError(f"stop must be a callable stop(step, state, curves) -> bool or None, got {self.stop!r}")
        return self


@dataclasses.dataclass(frozen=True)
class Execution:
    """How :func:`~tokdyn.train.train_many` lays its M models on the devices.

    Attributes:
      strategy: ``"scan"`` (one compiled call per chunk of steps, models vmapped and sharded),
        ``"step"`` (the same, one call per step) or ``"loop"`` (one call per model and step,
        model i on ``devices[i % len(devices)]``).
      devices: the devices to use (at most M of them); None: the local devices.
      batch_size: the models vmapped at once per device (``"scan"``, ``"step"``; the groups run
        one after another inside the call): ``"auto"`` sizes the groups from the device's memory
        (:mod:`tokdyn.train.sizing`: XLA's memory analysis of the program against all but 10% of
        ``memory_limit`` or of the device's memory not held by other arrays; groups of one size; every model at once
        where the device reports no limit, as on the CPU); an int fixes it; None vmaps all of a
        device's models at once.
      vectorised_init: initialise the models in one vmapped call (False: one call per model, as
        ``"loop"`` always does; the same numbers where a model's init is not vectorisable alike).
      memory_limit: bytes of memory per device that ``batch_size="auto"`` sizes by (given with
        another ``batch_size``: a ValueError); None: the device's own limit
        (``memory_stats()["bytes_limit"]``) less what other arrays hold there. Set it to leave room for other work on the device,
        or to size the groups on the CPU.
    """

    strategy: str = "scan"
    devices: Optional[Sequence] = None
    batch_size: Union[int, str, None] = "auto"
    vectorised_init: bool = True
    memory_limit: Optional[int] = None

    def __post_init__(self):
        if self.devices is not None and not isinstance(self.devices, tuple):  # hashable, never aliased
            try:
                object.__setattr__(self, "devices", tuple(self.devices))
            except TypeError:
                pass  # validate() names it

    def validate(self) -> "Execution":
        """Check every field; raise ``ValueError``/``TypeError`` naming it. Returns ``self``."""
        if not isinstance(self.strategy, str):
            raise TypeError(f"strategy must be a str, one of {list(STRATEGIES)}, got {self.strategy!r}")
        _checks.choice("strategy", self.strategy, STRATEGIES)
        if self.devices is not None:
            if not isinstance(self.devices, tuple):
                raise TypeError(f"devices must be a sequence of devices or None, got {self.devices!r}")
            if not self.devices:
                raise ValueError("devices must name at least one device, got an empty sequence")
        b = self.batch_size
        if not (
            b is None
            or (isinstance(b, str) and b == "auto")
            or (isinstance(b, Integral) and not isinstance(b, bool) and b >= 1)
        ):
            error = ValueError if isinstance(b, (str, Integral)) and not isinstance(b, bool) else TypeError
            raise error(
                f"batch_size must be 'auto' (sized from the device's memory), an int >= 1 or None (all "
                f"models at once), got {b!r}" + ("" if error is ValueError else f" of type {type(b).__name__}")
            )
        if not isinstance(self.vectorised_init, bool):
            raise TypeError(f"vectorised_init must be a bool, got {self.vectorised_init!r}")
        if self.memory_limit is not None:
            _checks.positive_int("memory_limit", self.memory_limit)
            if not (isinstance(b, str) and b == "auto"):
                raise ValueError(
                    f"memory_limit sizes the groups of batch_size='auto' only, got memory_limit="
                    f"{self.memory_limit!r} with batch_size={b!r}: drop one of them"
                )
        return self


def check(name: str, value, cls):
    """``value`` checked as ``train_many``'s option ``name``: None gives ``cls()`` (where every
    field has a default; None otherwise), another type a ``TypeError``, and invalid fields the
    error of ``validate()`` naming the field as ``name.field``. Returns the value."""
    if value is None:
        return None if cls is Checkpointing else cls()
    if not isinstance(value, cls):
        raise TypeError(
            f"{name} must be a tokdyn.train.{cls.__name__} or None, got {value!r} of type {type(value).__name__}"
        )
    try:
        return value.validate()
    except (TypeError, ValueError) as e:  # every message of validate() starts with the field's name
        raise type(e)(f"{name}.{e}") from None


# The flat keywords train_many took before these values: keyword -> (option, its field).
LEGACY = {
    "checkpoint": ("checkpointing", "path"),
    "stamp": ("checkpointing", "stamp"),
    "evaluate": ("evaluation", "fn"),
    "evaluate_every": ("evaluation", "every"),
    "keep_best": ("evaluation", "keep_best"),
    "best_mode": ("evaluation", "best_mode"),
    "stop": ("evaluation", "stop"),
    "strategy": ("execution", "strategy"),
    "devices": ("execution", "devices"),
    "batch_size": ("execution", "batch_size"),
    "vectorised_init": ("execution", "vectorised_init"),
}
_CLASSES = {"checkpointing": Checkpointing, "evaluation": Evaluation, "execution": Execution}


def from_legacy(given: dict, options: dict, caller: str = "train_many") -> tuple[dict, list]:
    """Map the deprecated flat keywords ``given`` of ``caller`` onto the option values.

    ``options``: the option values passed (name -> value or None). Returns ``(options, messages)``:
    ``options`` with each option that old keywords stand for built from them, and one deprecation
    message per such option naming its new spelling. ``TypeError`` for an unknown keyword, and for
    old keywords given beside the option value that replaces them."""
    unknown = sorted(set(given) - set(LEGACY))
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    options, messages = dict(options), []
    for option, cls in _CLASSES.items():
        fields = {LEGACY[k][1]: v for k, v in given.items() if LEGACY[k][0] == option}
        if not fields:
            continue
        words = [k for k in LEGACY if k in given and LEGACY[k][0] == option]
        if options.get(option) is not None:
            raise TypeError(
                f"{caller}() got {', '.join(words)} and {option}: pass only "
                f"{option}=train.{cls.__name__}(...), which replaces them"
            )
        old = ", ".join(f"{k}=..." for k in words)
        new = ", ".join(f"{LEGACY[k][1]}=..." for k in words)
        messages.append(
            f"{caller}({old}) is deprecated: pass {option}=train.{cls.__name__}({new})"
            + notice("train_many flat keywords")
        )
        if cls is Checkpointing and fields.get("path") is None:
            continue  # a stamp without a checkpoint never did anything
        options[option] = cls(**fields)
    return options, messages
