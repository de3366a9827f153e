"""The Ctrl-C handler of the ``tokdyn`` command (:func:`on_interrupt`), which a library cannot lose:
:func:`interrupted`, :func:`check_interrupt`, :func:`reset_interrupt`, and :func:`unraisable_hook`,
which keeps a Ctrl-C that Python could not raise from printing a traceback."""

from __future__ import annotations

import sys

_interrupted = [False]  # a Ctrl-C was seen (by :func:`on_interrupt`) in this process


def on_interrupt(signum=None, frame=None) -> None:
    """The ``tokdyn`` command's SIGINT handler: remembers the Ctrl-C, then raises
    ``KeyboardInterrupt`` as Python's own handler does. Remembered, it cannot be lost where a
    library catches the exception on its way (code run by JAX's compiler): :func:`check_interrupt`
    raises it again at the next unit of work (:func:`~tokdyn.io.kept`, :func:`~tokdyn.io.kept_rows`,
    :meth:`tokdyn.io.Progress.update`), and :func:`interrupted` tells the command it must not exit 0."""
    _interrupted[0] = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether :func:`on_interrupt` has seen a Ctrl-C in this process (since :func:`reset_interrupt`)."""
    return _interrupted[0]


def reset_interrupt() -> None:
    """Forget a Ctrl-C seen before (a new command in the same process)."""
    _interrupted[0] = False


def check_interrupt() -> None:
    """``KeyboardInterrupt`` when a Ctrl-C was seen: the work stops at a unit's boundary, its
    finished units on disk."""
    if _interrupted[0]:
        raise KeyboardInterrupt


def unraisable_hook(previous=None):
    """A ``sys.unraisablehook`` for the ``tokdyn`` command: the ``KeyboardInterrupt`` that
    :func:`on_interrupt` raises where Python cannot propagate an exception (a garbage-collector
    callback, such as JAX's, or a finaliser, running when the Ctrl-C lands) is not printed as
    "Exception ignored ... Traceback": it is remembered (:func:`interrupted`) and raised again at the
    next unit of work (:func:`check_interrupt`), so the command still ends with its one line. Every
    other unraisable exception goes to ``previous`` (default: Python's own hook)."""
    previous = previous or sys.__unraisablehook__

    def hook(unraisable):
        if _interrupted[0] and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        previous(unraisable)

    return hook
