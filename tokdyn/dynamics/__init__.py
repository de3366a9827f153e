"""Token update rules and the loop that runs them.

A few tokens ``(T, D)`` organise a set of points ``(N, D)`` by repeated soft-assignment updates.
Everything here is a single run, a jitted kernel to call inside your own ``jit``/``vmap``/``scan``
(or hand to :func:`tokdyn.engine.execute.map_runs`); arguments are checked before anything is traced.

- :mod:`~tokdyn.dynamics.rule`: the protocol, a rule is a value (:class:`Rule`, :class:`Points`).
- :mod:`~tokdyn.dynamics.hparams`: the built-in rule's knobs, :class:`Hparams` (every leaf traced),
  its named settings :data:`METHODS` and :data:`FIELDS`.
- :mod:`~tokdyn.dynamics.builtin`: the built-in rule, :data:`BUILTIN` (softmax or Sinkhorn
  assignment, momentum, repulsion, damping, annealing, Langevin noise) and its step :func:`update`.
- :mod:`~tokdyn.dynamics.equations`: the built-in rule's equations, written once for both of its
  programs (``equations.scores``, ``equations.temperature``, ...).
- :mod:`~tokdyn.dynamics.pallas`: the built-in rule's run as one Pallas kernel per run (its
  ``"pallas"`` backend, :meth:`Rule.backend`; the fast form on GPUs), imported on first use.
- :mod:`~tokdyn.dynamics.loop`: :func:`run` (to convergence; ``adjoint=`` chooses how it is
  differentiated), :func:`run_fixed` (an alias: a fixed-length ``scan``), :func:`trajectory`;
  :class:`Result`, :func:`check_run`, :func:`varying`.
- :mod:`~tokdyn.dynamics.stepping`: a rule's steps inside the loop (:class:`State`, :class:`Result`,
  the ``while_loop`` and the ``scan`` the loop's forms share).
- :mod:`~tokdyn.dynamics.adjoint`: :func:`run`'s adjoints, static choices: :class:`EarlyExit` (the
  default, forward mode only), :class:`CheckpointAdjoint` (reverse mode through a bounded,
  checkpointed ``scan``), :class:`ImplicitAdjoint` (implicit differentiation at the fixed point,
  :mod:`~tokdyn.dynamics.implicit`: NaN where the run did not converge or the fixed point is
  ill-conditioned).
- :mod:`~tokdyn.dynamics.initial`: :func:`init_tokens` (Forgy, normal, data mean, k-means++), :func:`forgy`.
- :mod:`~tokdyn.dynamics.groups`: merged tokens (:func:`token_groups`) and the temperatures at which
  annealed tokens split (:func:`split_temperatures`).
- :mod:`~tokdyn.dynamics.lloyd`: :func:`kmeans`, Lloyd's algorithm, the hard-assignment baseline.

Every name is available here (``dynamics.run``, ``dynamics.Hparams``), and ``dynamics.REFINEMENT``
is the variational-refinement rule of :mod:`tokdyn.refinement`. The equations of the rule, the
protocol with a worked example, how a run stops, what each kernel differentiates and what a knob
out of its range does are on the concepts page, :doc:`/concepts/token-dynamics`; the table of
transformations per kernel is :doc:`/transformations`.
"""

from tokdyn.dynamics import equations
from tokdyn.dynamics.adjoint import ADJOINTS, Adjoint, CheckpointAdjoint, EarlyExit, ImplicitAdjoint
from tokdyn.dynamics.builtin import (
    BUILTIN,
    BUILTIN_ORIGIN,
    MASS_ANCHORS,
    Motion,
    coulomb,
    hard_labels,
    sinkhorn,
    soft_assignment,
    temperature_schedule,
    update,
)
from tokdyn.dynamics.equations import EPS_MASS, MIN_DISTANCE
from tokdyn.dynamics.groups import DEFAULT_MERGE_TOL, split_temperatures, token_groups
from tokdyn.dynamics.hparams import FIELDS, KNOB_EDGE_TOL, MAX_SINKHORN_ITERS, METHODS, Hparams, method
from tokdyn.dynamics.initial import INIT_METHODS, forgy, init_tokens
from tokdyn.dynamics.lloyd import KMeans, kmeans
from tokdyn.dynamics.loop import Result, State, Trajectory, check_run, run, run_fixed, trajectory, varying
from tokdyn.dynamics.rule import Points, Rule

__all__ = [
    # the protocol
    "Rule",
    "Points",
    # the built-in rule: its knobs, its step and kernels, the rule as a value
    "Hparams",
    "METHODS",
    "FIELDS",
    "method",
    "MAX_SINKHORN_ITERS",
    "KNOB_EDGE_TOL",
    "BUILTIN",
    "BUILTIN_ORIGIN",
    "MASS_ANCHORS",
    "Motion",
    "update",
    "soft_assignment",
    "sinkhorn",
    "coulomb",
    "temperature_schedule",
    "hard_labels",
    "EPS_MASS",
    "MIN_DISTANCE",
    # the rule's equations, once for every program
    "equations",
    # the loop
    "run",
    "run_fixed",
    "trajectory",
    "Result",
    "Trajectory",
    "State",
    "check_run",
    "varying",
    # how run is differentiated
    "Adjoint",
    "EarlyExit",
    "CheckpointAdjoint",
    "ImplicitAdjoint",
    "ADJOINTS",
    # initial tokens, merged tokens, the k-means baseline
    "init_tokens",
    "forgy",
    "INIT_METHODS",
    "token_groups",
    "split_temperatures",
    "DEFAULT_MERGE_TOL",
    "kmeans",
    "KMeans",
]

_ELSEWHERE = {"REFINEMENT": "tokdyn.refinement"}  # rules defined in their own modules, found here too


def __getattr__(name):
    """``dynamics.REFINEMENT``: the variational-refinement rule of :mod:`tokdyn.refinement`, found here
    beside the built-in rules (imported on first use: that module builds on this one); and
    ``dynamics.pallas``, the built-in rule's Pallas backend (imported on first use: it loads Pallas)."""
    import importlib

    if name in _ELSEWHERE:
        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    if name == "pallas":
        return importlib.import_module("tokdyn.dynamics.pallas")
    raise AttributeError(f"module 'tokdyn.dynamics' has no attribute {name!r}")
