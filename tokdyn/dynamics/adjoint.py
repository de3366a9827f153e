"""How :func:`~tokdyn.dynamics.run` is differentiated: its ``adjoint=``, a static choice of the loop
that runs the rule (as the ``adjoint=`` of diffrax's ``diffeqsolve``). Each is a small frozen
dataclass, hashable static configuration:

- :class:`EarlyExit` (the default): a ``while_loop`` that stops at convergence, the fastest;
  forward-mode derivatives only (``jax.jvp``, ``jax.jacfwd``). Reverse mode raises a ``ValueError``
  naming the two adjoints below, while the derivative is traced.
- :class:`CheckpointAdjoint`: a ``scan`` of a static bound ``max_steps`` whose steps after the stop
  leave the state unchanged; reverse mode through the unrolled steps, each step rematerialised in
  the backward pass (``jax.checkpoint``), so that its memory is the carried state per step, not
  every intermediate. :func:`~tokdyn.dynamics.run_fixed` is this form without rematerialisation.
- :class:`ImplicitAdjoint`: the early-exit run, then the implicit function theorem at its final
  state (``jax.lax.custom_root``): both modes, memory of one step, exact at a converged fixed point;
  NaN for a run that did not converge or whose fixed point is ill-conditioned.

:data:`ADJOINTS` names them. The concepts page (:ref:`dynamics-adjoints`) has the table of what
each allows and costs.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Adjoint:
    """The base of :func:`~tokdyn.dynamics.run`'s adjoints (static configuration, hashable)."""


@dataclasses.dataclass(frozen=True)
class EarlyExit(Adjoint):
    """The default: the rule runs in a ``lax.while_loop`` until it converges or has taken
    ``n_steps`` steps (``n_steps`` traced, each run its own exit). Forward mode (``jax.jvp``,
    ``jax.jacfwd``, under ``vmap`` too) gives the derivative of the steps taken, the stopping step
    held fixed; reverse mode (``jax.grad``, ``jax.vjp``, ``jax.jacrev``, ``jax.linearize``) raises
    a ``ValueError`` naming :class:`CheckpointAdjoint` and :class:`ImplicitAdjoint`."""


@dataclasses.dataclass(frozen=True)
class CheckpointAdjoint(Adjoint):
    """Reverse mode through the unrolled steps: a ``lax.scan`` of ``max_steps`` steps, each step
    after the run has stopped (converged, or ``n_steps`` taken) leaving the state unchanged, so the
    result is the early-exit run's (up to float rounding: another program).

    Attributes:
      max_steps: the scan's length, a Python int >= 1 (static: each value compiles its own
        program), or ``None`` (default): ``n_steps``, which must then be a Python int. With a bound
        given, ``n_steps`` may be traced (a host value must not exceed it; a traced one larger acts
        as ``max_steps``).
      remat: rematerialise each step in the backward pass (``jax.checkpoint`` on the scan's body,
        default True): reverse mode stores the carried state of every step and recomputes one
        step's intermediates at a time (about one more forward step per step). False stores every
        step's intermediates (for the built-in rule (T, N) arrays a step, Sinkhorn's rounds
        included), with no recomputation: :func:`~tokdyn.dynamics.run_fixed`'s program.
    """

    max_steps: int | None = None
    remat: bool = True

    def __post_init__(self):
        if self.max_steps is not None and (
            isinstance(self.max_steps, bool) or not isinstance(self.max_steps, Integral) or self.max_steps < 1
        ):
            raise TypeError(
                f"CheckpointAdjoint(max_steps=...) must be a Python int >= 1 (the scan's static length) or "
                f"None (n_steps), got {self.max_steps!r} of type {type(self.max_steps).__name__}"
            )
        if not isinstance(self.remat, bool):
            raise TypeError(f"CheckpointAdjoint(remat=...) must be a bool, got {self.remat!r}")


@dataclasses.dataclass(frozen=True)
class ImplicitAdjoint(Adjoint):
    """Implicit differentiation at the fixed point: the early-exit run on values without derivatives,
    then ``jax.lax.custom_root`` at its final state for the rule's one-step map at the last step
    taken (both modes; the linear system solved densely over the flattened state,
    :mod:`tokdyn.dynamics.implicit`). Exact when the run converged to a fixed point of a
    deterministic map; the initial tokens get zero derivative. ``run(..., implicit=True)`` is this
    adjoint.

    The derivative of a run is NaN (every entry a loss of it gives, in every mode) where it is not
    the derivative of the fixed point: a run that did not converge (``Result.converged`` False), or
    one whose linear system is ill-conditioned there: the estimated relative error of the solve
    (:func:`tokdyn.dynamics.implicit.error_estimate`: how much the system changes between the final
    state and the fixed point one Newton step on, plus rounding, over its smallest singular value)
    above ``rtol``, as at a singular system (a bifurcation, where the derivative does not exist).

    Attributes:
      rtol: the largest estimated relative error of a derivative that is returned, a Python float
        > 0 (static; default 1e-2); ``math.inf`` keeps only the test of convergence.
    """

    rtol: float = 1e-2

    def __post_init__(self):
        if isinstance(self.rtol, bool) or not isinstance(self.rtol, (int, float)) or not self.rtol > 0:
            raise TypeError(
                f"ImplicitAdjoint(rtol=...) must be a Python float > 0 (static: the largest estimated relative "
                f"error of a derivative returned), got {self.rtol!r} of type {type(self.rtol).__name__}"
            )


ADJOINTS = {"early_exit": EarlyExit, "checkpoint": CheckpointAdjoint, "implicit": ImplicitAdjoint}
"""The adjoints of :func:`~tokdyn.dynamics.run` by name: ``run(..., adjoint=ADJOINTS[name]())``."""

EARLY_EXIT = EarlyExit()
"""The default adjoint's value."""


def check(adjoint, implicit, n_steps) -> dict:
    """Check ``adjoint=`` and the old ``implicit=`` spelling of :func:`~tokdyn.dynamics.run` before
    anything is traced, resolving them to one adjoint: ``implicit=True`` is
    :class:`ImplicitAdjoint`; a :class:`CheckpointAdjoint` without ``max_steps`` takes ``n_steps``
    (a Python int). Returns the arguments to replace (``adjoint``, and ``implicit`` as False)."""
    if not isinstance(implicit, bool):
        raise TypeError(f"implicit must be a bool (static), got {implicit!r} of type {type(implicit).__name__}")
    if isinstance(adjoint, type) and issubclass(adjoint, Adjoint):
        raise TypeError(f"adjoint must be an instance: adjoint=dynamics.{adjoint.__name__}(), got the class")
    if not isinstance(adjoint, Adjoint) or type(adjoint) is Adjoint:
        raise TypeError(
            f"adjoint must be one of dynamics.EarlyExit() (the default), dynamics.CheckpointAdjoint() or "
            f"dynamics.ImplicitAdjoint(), got {adjoint!r} of type {type(adjoint).__name__}"
        )
    changed = {}
    if implicit:
        if not isinstance(adjoint, (EarlyExit, ImplicitAdjoint)):
            raise ValueError(
                f"implicit=True is adjoint=dynamics.ImplicitAdjoint(); it cannot be combined with adjoint={adjoint!r}"
            )
        adjoint = changed["adjoint"] = ImplicitAdjoint()
        changed["implicit"] = False
    if isinstance(adjoint, CheckpointAdjoint):
        if adjoint.max_steps is None:
            if isinstance(n_steps, bool) or not isinstance(n_steps, Integral):
                raise TypeError(
                    f"n_steps must be an int >= 1 with adjoint=CheckpointAdjoint() (the scan's static length), "
                    f"got {n_steps!r} of type {type(n_steps).__name__}; a traced n_steps needs a static bound: "
                    f"adjoint=CheckpointAdjoint(max_steps=...)"
                )
            if n_steps < 1:
                raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
            changed["adjoint"] = dataclasses.replace(adjoint, max_steps=int(n_steps))
        elif isinstance(n_steps, Integral) and n_steps > adjoint.max_steps:
            raise ValueError(
                f"n_steps={n_steps} exceeds the scan's bound CheckpointAdjoint(max_steps={adjoint.max_steps}): "
                f"raise max_steps, or leave it None to take n_steps"
            )
    return changed


NO_REVERSE = (
    "dynamics.run with adjoint=EarlyExit() (the default) has no reverse-mode derivative (jax.grad, "
    "jax.vjp, jax.jacrev, jax.linearize): it stops early by a lax.while_loop (Reverse-mode differentiation "
    "does not work for lax.while_loop or lax.fori_loop with dynamic start/stop values). Choose an adjoint: "
    "dynamics.run(..., adjoint=dynamics.CheckpointAdjoint()) (reverse mode through the unrolled steps, a "
    "checkpointed scan of n_steps; dynamics.run_fixed(x, tokens, hparams, n_steps=...) is this form) or "
    "dynamics.run(..., adjoint=dynamics.ImplicitAdjoint()) (the implicit derivative at the fixed point; "
    "formerly implicit=True). Forward mode (jax.jvp, jax.jacfwd) works with the default."
)
"""The ``ValueError`` message of a reverse-mode derivative through the default adjoint."""


def _refuse_reverse(*_, **__):
    """A ``jax.checkpoint`` policy that JAX consults only when it splits a checkpointed function for
    a backward pass (reverse mode), never to evaluate it, to vectorise it or to push tangents
    forward: it raises :data:`NO_REVERSE`."""
    raise ValueError(NO_REVERSE)


def forward_only(fn):
    """``fn`` unchanged in value, forward mode and ``vmap`` (it compiles to ``fn`` itself), whose
    reverse-mode derivative raises ``ValueError`` with :data:`NO_REVERSE` while it is traced, before
    JAX meets the ``while_loop`` inside. Public JAX only: a ``jax.checkpoint`` whose saving policy
    (asked by JAX's partial evaluation for a backward pass, and only then) refuses."""

    def marked(*args):
        # an operation of no input: JAX asks the policy about every operation whose inputs are all
        # known (no tangent), so this one makes sure it is asked, whatever ``fn`` computes (unused:
        # it compiles to nothing)
        jax.lax.iota(jnp.int32, 1)
        return fn(*args)

    return jax.checkpoint(marked, prevent_cse=False, policy=_refuse_reverse)
