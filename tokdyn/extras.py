"""The optional extras of tokdyn (``pip install -e ".[models]"``): which packages each installs
(:data:`EXTRAS`, the same lists as ``pyproject.toml``'s ``[project.optional-dependencies]``, which a
test compares), and one error for a package an extra would have installed (:class:`MissingExtra`,
raised by :func:`require` and :func:`load`), naming the package, the extra and the command that
installs it, before any work. The command line exits 2 on it, in one line.

Imports nothing of tokdyn's, nor any optional package (a package is looked up, not imported, by
:func:`missing`)."""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType
from typing import Sequence

EXTRAS = {
    "data": ("google-crc32c", "protobuf", "pillow"),
    "video": ("av",),
    "parquet": ("pyarrow",),
    "models": ("safetensors", "tokenizers", "jinja2"),
    "orbax": ("orbax-checkpoint",),
    "tensorboard": ("tensorboardX",),
    "wandb": ("wandb",),
}
"""extra -> the distributions it installs, of the extras that a feature of tokdyn needs at run time
(the ``test``, ``test-full``, ``docs`` and ``bench`` extras serve the repository's tests, docs and
benchmarks)."""

MODULES = {
    "google-crc32c": "google_crc32c",
    "protobuf": "google.protobuf",
    "pillow": "PIL",
    "orbax-checkpoint": "orbax.checkpoint",
}
"""distribution -> the module it is imported as, where the two names differ."""

_CLONE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # a clone's root holds pyproject.toml


class MissingExtra(ImportError):
    """A package of one of tokdyn's extras is not installed (a usage error: the command exits 2).
    The message names the package, the extra and the command that installs it."""


def extra_of(package: str) -> str:
    """The extra of :data:`EXTRAS` that installs the distribution (or module) ``package``;
    ``ValueError`` naming it when none does."""
    for extra, packages in EXTRAS.items():
        if package in packages or package in (MODULES.get(p, p) for p in packages):
            return extra
    raise ValueError(f"package={package!r} is installed by none of tokdyn's extras ({', '.join(EXTRAS)})")


def install_command(extra: str) -> str:
    """The command that installs ``extra``: ``pip install -e ".[extra]"`` in a clone of the
    repository (the README's install), else ``pip install 'tokdyn[extra]'``."""
    if os.path.isfile(os.path.join(_CLONE, "pyproject.toml")):
        return f'pip install -e ".[{extra}]" (in {_CLONE})'
    return f"pip install 'tokdyn[{extra}]'"


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` that cannot be imported here (looked up by
    ``importlib.util.find_spec``, nothing imported); ``ValueError`` naming an unknown extra."""
    if extra not in EXTRAS:
        raise ValueError(f"extra={extra!r} is not one of tokdyn's extras: {', '.join(EXTRAS)}")
    gone = []
    for package in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(MODULES.get(package, package))
        except (ImportError, ValueError):  # a parent package missing, or a module set to None
            found = None
        if found is None:
            gone.append(package)
    return gone


def message(extra: str, packages: Sequence[str], what: str) -> str:
    """The one line of :class:`MissingExtra`: ``what`` needs ``packages`` of ``extra`` and how to
    install them."""
    names = ", ".join(repr(p) for p in packages)
    plural = "s" if len(packages) > 1 else ""
    return (
        f"{what} needs the package{plural} {names} of the '{extra}' extra, not installed here: {install_command(extra)}"
    )


def require(extra: str, what: str) -> None:
    """:class:`MissingExtra` when a package of ``extra`` is missing (:func:`missing`), naming them
    and ``what`` needs them (``"--model"``); call it before any work that will need them."""
    gone = missing(extra)
    if gone:
        raise MissingExtra(message(extra, gone, what))


def load(module: str, what: str) -> ModuleType:
    """``import module`` (a module of an extra's package: ``"tensorboardX"``,
    ``"orbax.checkpoint"``), or :class:`MissingExtra` naming it, its extra and ``what`` needs it.

    Args:
      module: the module to import.
      what: who needs it, for the message (``"TensorBoardLogger"``).

    Returns:
      The module.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.partition(".")[0]
        package = next(
            (p for ps in EXTRAS.values() for p in ps if MODULES.get(p, p) in (module, top)),
            top,
        )
        raise MissingExtra(message(extra_of(package), [package], what)) from None
