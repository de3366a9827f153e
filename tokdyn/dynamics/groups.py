"""Merged tokens: :func:`token_groups` (tokens closer than a tolerance, single linkage) and
:func:`split_temperatures` (the temperatures at which annealed tokens split, from a
:func:`~tokdyn.dynamics.loop.trajectory`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.dynamics._common import as_float, real_array
from tokdyn.dynamics.loop import Trajectory


DEFAULT_MERGE_TOL = 1e-2


def _check_groups(tokens, merge_tol):
    real_array("tokens", tokens)
    if np.ndim(tokens) < 2:
        raise ValueError(f"tokens must have shape (..., T, D), got {np.shape(tokens)}")
    _checks.real("merge_tol", merge_tol, low=0.0, low_open=True)


@_checks.checked_jit(_check_groups)
def token_groups(tokens, merge_tol=DEFAULT_MERGE_TOL):
    """Group tokens that sit closer than ``merge_tol`` to each other (Euclidean distance, single
    linkage: chains of close tokens form one group). Returns ``(group, n_groups)``: (T,) int32 the
    smallest token index of each token's group, and the number of groups (int32). Leading axes of
    ``tokens`` (..., T, D) are batch axes (e.g. the steps of a trajectory).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> tokens = np.array([[0, 0], [0.005, 0], [0.01, 0], [1, 0]], np.float32)   # a chain of three
      >>> group, n = dynamics.token_groups(tokens)
      >>> group.tolist(), int(n)
      ([0, 0, 0, 3], 2)
    """
    tokens = as_float(tokens)
    if tokens.ndim > 2:
        return jax.vmap(lambda t: token_groups(t, merge_tol))(tokens)
    n = tokens.shape[0]
    d2 = jnp.sum((tokens[:, None, :] - tokens[None, :, :]) ** 2, axis=-1)  # (T, T)
    adj = (d2 < jnp.asarray(merge_tol, tokens.dtype) ** 2).astype(jnp.float32)  # diagonal 1
    for _ in range(max(int(np.ceil(np.log2(max(n, 2)))), 1)):  # transitive closure by squaring
        adj = (adj @ adj > 0).astype(jnp.float32)
    group = jnp.argmax(adj > 0, axis=1).astype(jnp.int32)  # first member of the component
    return group, jnp.sum(group == jnp.arange(n)).astype(jnp.int32)


def _check_split(traj, merge_tol):
    if not isinstance(traj, Trajectory):
        raise TypeError(f"traj must be a tokdyn.dynamics.Trajectory, got {type(traj).__name__}")
    _checks.real("merge_tol", merge_tol, low=0.0, low_open=True)


@_checks.checked_jit(_check_split)
def split_temperatures(traj: Trajectory, merge_tol=DEFAULT_MERGE_TOL):
    r"""The temperatures at which annealed tokens split, from a :func:`~tokdyn.dynamics.trajectory`.

    Args:
      traj: a :class:`~tokdyn.dynamics.Trajectory` (tokens (S + 1, T, D), temperature (S,)).
      merge_tol: tokens closer than this (data units; default ``DEFAULT_MERGE_TOL`` = 1e-2) form
        one group (:func:`token_groups`).

    Returns:
      (T - 1,) in the trajectory's dtype: entry ``k - 2`` (k = 2 .. T) is the temperature of the last
      step after which the number of groups rose to at least ``k`` from fewer (the split that
      stayed); NaN if it never happens. A split is recorded at or a little below the critical
      temperature (:ref:`dynamics-splits`).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[-1], [-0.9], [0.9], [1]], np.float32)   # variance 0.905: tau_c = 1.81
      >>> hp = dynamics.Hparams(temperature=0.1, anneal_ratio=100.0, anneal_steps=30.0)
      >>> t = dynamics.trajectory(x, np.array([[-0.5], [0.6]], np.float32), hp, n_steps=40)
      >>> print(np.asarray(dynamics.split_temperatures(t)).round(2))   # merged at 10, apart below tau_c
      [0.46]

    References:
      Rose, K., Gurewitz, E. and Fox, G. C. (1990). Statistical mechanics and phase transitions in
      clustering. *Physical Review Letters* 65(8), 945-948 (the critical temperature
      :math:`2 \lambda_{\max}` of the data's covariance).
    """
    _, count = token_groups(traj.tokens, merge_tol)  # (S + 1,)
    n = traj.tokens.shape[-2]
    levels = jnp.arange(2, n + 1)[:, None]  # (T - 1, 1)
    event = (count[None, 1:] >= levels) & (count[None, :-1] < levels)  # (T - 1, S) upward crossings
    last = event.shape[1] - 1 - jnp.argmax(event[:, ::-1], axis=1)
    return jnp.where(jnp.any(event, axis=1), traj.temperature[last], jnp.nan).astype(traj.tokens.dtype)
