"""The loop that runs any update rule: :func:`run` (to convergence; its ``adjoint=`` chooses how it
is differentiated, :mod:`~tokdyn.dynamics.adjoint`: the early-exit ``while_loop``, a bounded
checkpointed ``scan`` for reverse mode, or implicit differentiation at the fixed point),
:func:`run_fixed` (an alias: the bounded ``scan``), :func:`trajectory` (every step recorded), their
outcomes :class:`Result` and :class:`Trajectory`, the checks they make (:func:`check_run`) and
:func:`varying` (a loop's carry under ``shard_map``). A rule's steps inside the loop are
:mod:`tokdyn.dynamics.stepping`'s, the implicit derivative :mod:`tokdyn.dynamics.implicit`'s. How a
run stops and what each adjoint differentiates is on the concepts page, :ref:`dynamics-loop`."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.dynamics import adjoint as adjoints
from tokdyn.dynamics._common import as_float, callable_name, check_points, check_run_memory, check_some_valid, labels_t
from tokdyn.dynamics.adjoint import EARLY_EXIT, Adjoint, CheckpointAdjoint, ImplicitAdjoint
from tokdyn.dynamics.builtin import BUILTIN, BUILTIN_ORIGIN
from tokdyn.dynamics.implicit import run_implicit
from tokdyn.dynamics.rule import Rule
from tokdyn.dynamics.stepping import Result, State, early_exit, result_of, rule_frame, scan_steps, tokens_of, varying

__all__ = ["Result", "State", "Trajectory", "check_run", "run", "run_fixed", "trajectory", "varying"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Trajectory:
    """Outcome of :func:`trajectory`: ``tokens`` (n_steps + 1, T, D), the initial tokens first and
    the final tokens repeated after convergence; ``delta`` (n_steps,) per-step change (0 after
    convergence); ``steps``, ``converged`` and ``labels`` as in :class:`Result`; ``temperature``
    (n_steps,) the temperature of each step (``temperature[s]`` produced ``tokens[s + 1]``)."""

    tokens: jax.Array
    delta: jax.Array
    steps: jax.Array
    converged: jax.Array
    labels: jax.Array
    temperature: jax.Array


def _check_rule(rule, hparams, key) -> dict:
    """Check ``rule=`` and ``hparams`` (resolving ``None`` to the rule's defaults) before anything is
    traced: the rule's type, the structure and dtypes of its hparams, the key, then the rule's own
    ``check``. Returns ``{"hparams": ...}`` when the default was taken."""
    if not isinstance(rule, Rule):
        hint = (
            " wrap your functions as rule=dynamics.Rule(init=..., step=...)"
            if callable(rule)
            else " (dynamics.BUILTIN is the package's own rule)"
        )
        raise TypeError(f"rule must be a tokdyn.dynamics.Rule, got {rule!r} of type {type(rule).__name__}:{hint}")
    if isinstance(hparams, Rule):
        raise TypeError(
            f"hparams is a Rule ({hparams!r}): pass an update rule as rule=..., and its knobs "
            "(if not its defaults, Rule.hparams) as hparams"
        )
    if callable(hparams):
        raise TypeError(
            f"hparams must be the rule's knobs (for the built-in rule a tokdyn.dynamics.Hparams), got "
            f"{callable_name(hparams)} of type {type(hparams).__name__}: an update rule of your own is "
            f"a dynamics.Rule(init=..., step=...), passed as rule="
        )
    changed = {}
    if hparams is None:
        hparams = changed["hparams"] = rule.hparams
    want = jax.tree_util.tree_structure(rule.hparams)
    if jax.tree_util.tree_structure(hparams) != want:
        kind = type(rule.hparams)
        what = (
            f"of the structure of rule.hparams ({want})"
            if kind in (tuple, list, dict)
            else f"a {kind.__module__}.{kind.__qualname__}"
        )
        raise TypeError(
            f"hparams must be {what} (the knobs of rule {rule.name or callable_name(rule.step)!r}), "
            f"got {type(hparams).__name__}: {hparams!r}"
        )
    if rule is not BUILTIN:  # the built-in rule's check (Hparams.validate) names the field
        for path, leaf in jax.tree_util.tree_flatten_with_path(hparams)[0]:
            if _checks.dtype_of(leaf).kind not in "biuf":
                raise TypeError(
                    f"hparams{jax.tree_util.keystr(path)} must be real numbers, got dtype {_checks.dtype_of(leaf)}"
                )
    if key is not None:
        _checks.prng_key("key", key)
    if rule.check is not None:
        rule.check(hparams, key)
    return changed


def _check_run(
    x, tokens, hparams, rule, mask, n_steps, tol, key, static_steps=False, adjoint=EARLY_EXIT, implicit=False
):
    changed = adjoints.check(adjoint, implicit, n_steps)
    changed.update(_check_rule(rule, hparams, key))
    arrays = check_points(x, tokens, mask)
    check_some_valid(x, arrays.get("mask", mask), "a run")
    check_run_memory(x, tokens, "the run", pairwise=rule is BUILTIN)
    if static_steps or isinstance(n_steps, (int, float)):
        _checks.positive_int("n_steps", n_steps)
    _checks.real("n_steps", n_steps, low=1)
    _checks.real("tol", tol, low=0.0)
    return {**arrays, **changed}


def check_run(x, tokens, hparams=None, *, rule: "Rule" = None, mask=None, n_steps=30, tol=1e-3, key=None) -> dict:
    """The checks :func:`run` makes before anything is traced, for other forms of the same run
    (:func:`tokdyn.dynamics.pallas.run`). A host function: call it outside ``jit``.

    Args:
      x: (N, D) points.
      tokens: (T, D) initial tokens, of the points' dimension D, T >= 1.
      hparams: the rule's knobs, or ``None`` for the rule's defaults (``rule.hparams``).
      rule: a :class:`Rule`; ``None`` is :data:`~tokdyn.dynamics.BUILTIN`.
      mask: optional (N,) bool.
      n_steps: a positive Python int (checked as a static count).
      tol: a real number >= 0.
      key: optional PRNG key.

    Returns:
      A dict of the arguments it normalised: host lists as arrays (``x``, ``tokens``, ``mask``) and,
      when ``hparams`` was ``None``, ``hparams`` as the rule's defaults.

    Raises:
      TypeError: a wrong type (rule, hparams' structure or dtypes, key; bool points or tokens:
        floating point is required), naming the argument.
      ValueError: a wrong shape or value, naming the argument; no point to run on (no row, or a
        host mask all False; a traced all-False mask is not inspected: the tokens stay put and
        every label is -1); intermediates of one run ((T, N) scores, the built-in rule's (T, T, D)
        token differences) past one array's 2**31 - 1 elements or the memory available (the
        device's; on the CPU backend the host's), naming T, N, the bytes and the limit; and
        whatever ``rule.check`` raises.
    """
    return _check_run(x, tokens, hparams, BUILTIN if rule is None else rule, mask, n_steps, tol, key, static_steps=True)


def _check_trajectory(x, tokens, hparams, rule, mask, n_steps, tol, key):
    return _check_run(x, tokens, hparams, rule, mask, n_steps, tol, key, static_steps=True)


def _trim_labels(result, n: int):
    """``result`` (a :class:`Result` or :class:`Trajectory`) with its labels cut back to the ``n``
    points of the call (on the host and back by ``device_put``: an eager slice, or ``jnp.asarray``,
    would compile one small program a length)."""
    return dataclasses.replace(result, labels=jax.device_put(np.asarray(result.labels)[:n]))


# Eager calls of the package's built-in rules on host points are padded to a few lengths (masked
# out): one program a bucket. Other rules are called as they are (a rule of one's own may not
# leave masked points out of everything it computes).
_BUCKETS = _checks.Buckets(
    points=("x",), mask="mask", when=lambda a: a["rule"] is BUILTIN or a["rule"] is BUILTIN_ORIGIN, trim=_trim_labels
)


@_checks.checked_jit(_check_run, static_argnames=("rule", "adjoint", "implicit"), buckets=_BUCKETS)
def run(
    x,
    tokens,
    hparams=None,
    *,
    rule: Rule = BUILTIN,
    mask=None,
    n_steps=30,
    tol=1e-3,
    key=None,
    adjoint: Adjoint = EARLY_EXIT,
    implicit: bool = False,
) -> Result:
    """Run an update rule from ``tokens`` until convergence or ``n_steps`` steps.

    Args:
      x: (N, D) points (NumPy or JAX).
      tokens: (T, D) initial tokens.
      hparams: the rule's knobs (traced: sweeping them does not recompile); for the built-in rule
        an :class:`~tokdyn.dynamics.Hparams`. Default: the rule's defaults (``rule.hparams``).
      rule: a :class:`Rule` (static; :ref:`dynamics-protocol`). Default:
        :data:`~tokdyn.dynamics.BUILTIN`, the package's rule.
      mask: optional (N,) bool; False rows are ignored.
      n_steps: the most steps to take (traced; a Python int with ``CheckpointAdjoint()`` without
        ``max_steps``, the scan's length).
      tol: convergence threshold on the largest coordinate movement of a step (traced).
      key: PRNG key handed to the rule's steps (the built-in rule's Langevin noise: step ``s``
        uses ``fold_in(key, s)``); required when ``hparams.langevin > 0``. Without a key the
        Langevin term is absent (also for a traced ``langevin``, which cannot be checked).
      adjoint: how the run is differentiated (static; :mod:`~tokdyn.dynamics.adjoint`,
        :ref:`dynamics-adjoints`): :class:`~tokdyn.dynamics.EarlyExit` (default: a ``while_loop``
        that stops at convergence, forward mode only),
        :class:`~tokdyn.dynamics.CheckpointAdjoint` (a ``scan`` of a static bound, the steps after
        the stop masked: reverse mode through the steps, each rematerialised) or
        :class:`~tokdyn.dynamics.ImplicitAdjoint` (implicit derivatives at the fixed point,
        ``jax.lax.custom_root``: exact when the run converged, see :ref:`dynamics-gradients`; the
        initial tokens get zero). The same run, the same :class:`Result` (up to float rounding
        between programs).
      implicit: static bool, the former spelling of ``adjoint=ImplicitAdjoint()`` (True), kept as
        an alias.

    Returns:
      :class:`Result`. Jitted, vmappable, callable inside a user's transformations. With the
      default adjoint, differentiable in forward mode (``jax.jvp``/``jacfwd``); reverse mode
      (``jax.grad``) raises a ``ValueError`` naming the adjoints that allow it, while the
      derivative is traced. :func:`run_fixed` is ``run`` with ``CheckpointAdjoint(remat=False)``.

    Host calls: with the built-in rules (:data:`~tokdyn.dynamics.BUILTIN`, ``BUILTIN_ORIGIN``),
    NumPy points are padded to a power of two (from 32) with the mask, and the labels cut back, so
    point sets of many sizes compile one program a bucket (results as unpadded, up to float
    rounding); :func:`run_fixed` and :func:`trajectory` alike. Other rules, JAX arrays and traced
    calls keep their shapes. Many point sets run fastest in one call: padded to one size with a
    mask, under ``jax.vmap`` (:ref:`metrics-host-calls`).

    Examples:
      >>> import jax, numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float32)
      >>> r = dynamics.run(x, x[[0, 3]])   # two tokens started on two points
      >>> print(np.asarray(r.tokens).round(3))   # the two clusters' means
      [[ 0.333  0.333]
       [10.333 10.333]]
      >>> r.labels.tolist(), int(r.steps), bool(r.converged)
      ([0, 0, 0, 1, 1, 1], 2, True)
      >>> t0 = x[[0, 3]]   # reverse mode: each point moves its cluster's mean by 1/3
      >>> loss = lambda x: dynamics.run(x, t0, n_steps=5, adjoint=dynamics.CheckpointAdjoint()).tokens.sum()
      >>> print(np.asarray(jax.grad(loss)(x))[:2].round(3))
      [[0.333 0.333]
       [0.333 0.333]]
    """
    x = as_float(x)
    points, tokens = rule_frame(rule, x, mask, tokens.astype(x.dtype))  # loop invariants
    if implicit:  # (the check resolves it; ``run.jitted`` has no check)
        adjoint = ImplicitAdjoint()
    if isinstance(adjoint, ImplicitAdjoint):
        return run_implicit(rule, points, tokens, hparams, mask, n_steps, tol, key, adjoint.rtol)
    if isinstance(adjoint, CheckpointAdjoint):
        _, s, _ = scan_steps(
            rule, points, tokens, hparams, adjoint.max_steps, tol, key, record=False, limit=n_steps, remat=adjoint.remat
        )
        return result_of(rule, points, s, mask)
    s = adjoints.forward_only(functools.partial(early_exit, rule))(points, tokens, hparams, n_steps, tol, key)
    return result_of(rule, points, s, mask)


def run_fixed(
    x, tokens, hparams=None, *, rule: Rule = BUILTIN, mask=None, n_steps: int = 30, tol=1e-3, key=None
) -> Result:
    """:func:`run` as a fixed-length ``lax.scan``, reverse-mode differentiable: an alias of
    ``run(x, tokens, hparams, ..., n_steps=n_steps, adjoint=CheckpointAdjoint(remat=False))``.

    It always evaluates ``n_steps`` steps, every step after convergence leaving the state unchanged,
    so its :class:`Result` is :func:`run`'s (up to float32 rounding: the two are different programs).
    Derivatives (``jax.grad``, ``jax.vjp``, ``jax.jacfwd``), for any rule whose ``step`` is
    differentiable, in the knobs, the points and the initial tokens, are those of the unrolled
    steps with the stopping step held fixed (:ref:`dynamics-gradients`). Costs ``n_steps`` steps
    whatever the step of convergence, and reverse mode keeps every step's intermediates
    (``CheckpointAdjoint()``, rematerialising them, trades memory for one more forward step a step);
    use :func:`run` when no reverse-mode derivative is needed.

    Host calls: padded to a bucket of point counts with the built-in rules, as :func:`run`.

    Args:
      x: (N, D) points.
      tokens: (T, D) initial tokens.
      hparams: the rule's knobs (traced); default the rule's defaults (``rule.hparams``).
      rule: a :class:`Rule` (static); default :data:`~tokdyn.dynamics.BUILTIN`.
      mask: optional (N,) bool; False rows are ignored.
      n_steps: the number of steps evaluated, a Python int >= 1 (static).
      tol: convergence threshold on the largest coordinate movement of a step (traced).
      key: optional PRNG key handed to the rule's steps, as in :func:`run`.

    Returns:
      :class:`Result`.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float32)
      >>> r = dynamics.run_fixed(x, x[[0, 3]], n_steps=5)   # 5 steps evaluated, 2 taken (as run's)
      >>> print(np.asarray(r.tokens).round(3))
      [[ 0.333  0.333]
       [10.333 10.333]]
      >>> int(r.steps)
      2
    """
    return run(x, tokens, hparams, rule=rule, mask=mask, n_steps=n_steps, tol=tol, key=key, adjoint=_FIXED)


_FIXED = CheckpointAdjoint(remat=False)  # run_fixed's adjoint (its max_steps is n_steps)


def _run_fixed_jitted(
    x, tokens, hparams=None, *, rule: Rule = BUILTIN, mask=None, n_steps: int = 30, tol=1e-3, key=None
):
    """``run_fixed`` without the host checks and the padding (as ``run.jitted``)."""
    adjoint = CheckpointAdjoint(max_steps=n_steps, remat=False)  # the bound given: n_steps may then be traced
    return run.jitted(x, tokens, hparams, rule=rule, mask=mask, n_steps=n_steps, tol=tol, key=key, adjoint=adjoint)


run_fixed.jitted = _run_fixed_jitted  # as the checked functions have it: the jitted kernel alone


@_checks.checked_jit(_check_trajectory, static_argnames=("n_steps", "rule"), buckets=_BUCKETS)
def trajectory(
    x, tokens, hparams=None, *, rule: Rule = BUILTIN, mask=None, n_steps: int = 30, tol=1e-3, key=None
) -> Trajectory:
    """Like :func:`run`, but record the tokens after every step, for plots and analysis.

    Its final tokens and steps equal :func:`run`'s (with the same ``key``). Reverse-mode
    differentiable, like :func:`run_fixed` (the same steps).

    Host calls: padded to a bucket of point counts with the built-in rules, as :func:`run`.

    Args:
      x: (N, D) points.
      tokens: (T, D) initial tokens.
      hparams: the rule's knobs (traced); default the rule's defaults (``rule.hparams``).
      rule: a :class:`Rule` (static); default :data:`~tokdyn.dynamics.BUILTIN`.
      mask: optional (N,) bool; False rows are ignored.
      n_steps: the number of steps recorded, a Python int >= 1 (static).
      tol: convergence threshold on the largest coordinate movement of a step (traced).
      key: optional PRNG key handed to the rule's steps, as in :func:`run`.

    Returns:
      :class:`Trajectory`: ``tokens`` (n_steps + 1, T, D), ``delta`` and ``temperature``
      (n_steps,) (the rule's ``temperature`` hook at each step; NaN for a rule without one),
      ``labels`` (N,) at the final tokens.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float32)
      >>> hp = dynamics.Hparams(temperature=1.0, anneal_ratio=100.0, anneal_steps=4.0)
      >>> t = dynamics.trajectory(x, x[[0, 3]], hp, n_steps=8)
      >>> t.tokens.shape, int(t.steps)   # the initial tokens, then one row a step
      ((9, 2, 2), 5)
      >>> print(np.asarray(t.temperature).round(1))
      [100.   31.6  10.    3.2   1.    1.    1.    1. ]
    """
    x = as_float(x)
    points, tokens = rule_frame(rule, x, mask, tokens.astype(x.dtype))
    s0, final, (toks, deltas) = scan_steps(rule, points, tokens, hparams, n_steps, tol, key, record=True)
    taken = jnp.arange(1, n_steps + 1) <= final.step  # deltas of steps not taken (after convergence) are zero
    steps = jnp.arange(n_steps, dtype=jnp.int32)
    if rule.temperature is None:
        temperature = jnp.full((n_steps,), jnp.nan, x.dtype)
    else:
        temperature = jax.vmap(lambda i: rule.temperature(hparams, i))(steps)
    back = points.origin if rule.centred else 0.0  # the recorded tokens in the user's coordinates
    return Trajectory(
        tokens=jnp.concatenate([tokens_of(s0.rule_state)[None], toks], axis=0) - back,
        delta=jnp.where(taken, deltas, 0.0),
        steps=final.step,
        converged=final.converged,
        labels=labels_t(points.x_t, tokens_of(final.rule_state), mask),
        temperature=temperature,
    )
