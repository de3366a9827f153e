"""Linear assignment (maximum-benefit one-to-one matching) as a pure JAX kernel, and its SciPy reference.

- :func:`linear_assignment` -- Bertsekas' forward auction with epsilon scaling, on an integer grid
  of the benefits: fixed shapes, one ``lax.while_loop``, jittable and vmappable (e.g. one
  matching per scene of a batch).
- :func:`linear_assignment_host` -- the same problem on host data with
  ``scipy.optimize.linear_sum_assignment`` (the Hungarian / LAPJV reference).

The problem: for a benefit matrix ``A`` of shape ``(R, C)`` with ``R <= C``, pick distinct columns
``col[0], ..., col[R-1]`` maximising ``sum_i A[i, col[i]]``. With ``L = levels(C)``
(:func:`levels`, ``2**20`` for ``C <= 63``), the result is an exact optimum for integer benefits
whose range is at most ``L``, and for float benefits the optimal assignment whenever the optimum
is unique by more than ``R (max A - min A) / L``. Ties are broken
by the bidding order, so the columns may differ from SciPy's while the total is the same.

Non-finite benefits: a NaN or infinite benefit has no optimal assignment. Host data (NumPy arrays,
lists) are checked before anything is traced: a ``ValueError`` names ``benefit`` and counts the bad
entries. Values held in JAX arrays (device arrays, or tracers inside a user's ``jit``/``vmap``) are
not copied to the host to be checked; instead :func:`linear_assignment` returns the sentinel **-1
for every row** (never a valid-looking assignment), found from the minimum and maximum that the grid
needs anyway (no extra pass over the matrix). ``-1`` is not a column: index with it only after
checking ``col >= 0`` (``jnp.take_along_axis`` would read the last column).

The algorithm and its optimality bounds: :ref:`assignment-algorithm`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tokdyn import _checks

__all__ = ["linear_assignment", "linear_assignment_host", "levels", "MAX_COLUMNS"]

MAX_COLUMNS = 2**15  # keeps at least 2**11 grid levels and the dense (C, C) bid tables small
_SCALE_BITS = 26  # L (C + 1) <= 2**26: prices stay below ~2**28, far from int32 overflow
_THETA = 8  # epsilon-scaling factor per phase
_NONE = np.iinfo(np.int32).min  # "no bid"


def levels(n_cols: int) -> int:
    """``L``, the number of grid levels of the benefits for a problem with ``n_cols`` columns:
    the largest power of two with ``L (n_cols + 1) <= 2**26`` (a static Python int).

    Examples:
        >>> from tokdyn import assignment
        >>> assignment.levels(3), assignment.levels(100)
        (16777216, 524288)
    """
    return 1 << ((2**_SCALE_BITS // (n_cols + 1)).bit_length() - 1)


# ---------------------------------------------------------------------------------------------
# Validation (plain Python, before tracing; values only when they are host data)
# ---------------------------------------------------------------------------------------------


def _check_benefit(benefit):
    if np.ndim(benefit) != 2:
        raise ValueError(f"benefit must be a 2-D array (R, C) with R <= C, got shape {np.shape(benefit)}")
    dtype = _checks.dtype_of(benefit)
    if dtype.kind not in "iuf":
        raise TypeError(f"benefit must be an integer or float array, got dtype {dtype}")
    n_rows, n_cols = np.shape(benefit)
    if n_rows > n_cols:
        raise ValueError(
            f"benefit must have shape (R, C) with R <= C (each row gets a distinct column), got shape "
            f"{np.shape(benefit)}: pass its transpose to match columns to rows"
        )
    if n_cols > MAX_COLUMNS:
        raise ValueError(f"benefit must have at most {MAX_COLUMNS} columns, got {n_cols}")
    _checks.finite_array("benefit", benefit)
    if dtype.kind in "iu" and _checks.on_host(benefit) and np.size(benefit):
        arr = np.asarray(benefit)
        target = np.iinfo(jax.dtypes.canonicalize_dtype(dtype))
        low, high = arr.min().item(), arr.max().item()
        if low < target.min or high > target.max:
            raise ValueError(
                f"benefit holds {low if low < target.min else high!r}, outside the range of JAX's {target.dtype} "
                f"[{target.min}, {target.max}]; pass it as floats or enable 64-bit mode with jax.enable_x64(True)"
            )
    return _checks.host_arrays(benefit=benefit)


# ---------------------------------------------------------------------------------------------
# The auction
# ---------------------------------------------------------------------------------------------


def _finite(lo, hi):
    """Scalar bool: every benefit is finite, from the matrix's minimum and maximum (a NaN
    propagates through XLA's min and max, an infinity is one of them)."""
    return jnp.isfinite(lo) & jnp.isfinite(hi)


def _grid(benefit, n_levels: int):
    """``(R, C)`` int32 ``q`` in ``[0, n_levels]``: the benefits shifted to 0 and put on the grid,
    and a scalar bool: every benefit is finite (all zeros in ``q`` otherwise)."""
    a = jnp.asarray(benefit)
    fdtype = (
        jnp.result_type(a.dtype, jnp.zeros(()).dtype) if jnp.issubdtype(a.dtype, jnp.floating) else jnp.zeros(()).dtype
    )
    lo, hi = jnp.min(a), jnp.max(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        finite = jnp.ones((), bool)
    else:
        finite = _finite(lo, hi)
    span = hi.astype(fdtype) - lo.astype(fdtype)
    scale = n_levels / jnp.where(span > 0, span, 1.0)
    q = jnp.round((a.astype(fdtype) - lo.astype(fdtype)) * scale)
    q = jnp.clip(jnp.nan_to_num(q), 0, n_levels).astype(jnp.int32)
    if jnp.issubdtype(a.dtype, jnp.integer):  # small integer ranges are used as they are
        shifted = jnp.clip(a - lo, 0, n_levels).astype(jnp.int32)  # only used when span <= n_levels
        q = jnp.where(span <= n_levels, shifted, q)
    # non-finite benefits: a constant problem (every row joins the class: a round or two), discarded
    return jnp.where(finite, q, 0), finite


def _auction(weights):
    """Column of each row of the int32 problem ``weights`` (R, C), 1 <= R <= C, 2 <= C, maximising
    the total. The dummy rows that make it square and the rows of constant benefit bid as one
    class (see the module docstring)."""
    n_rows, n_cols = weights.shape
    rows = jnp.arange(n_rows, dtype=jnp.int32)
    cols = jnp.arange(n_cols, dtype=jnp.int32)
    dummy = n_rows  # owner id of the columns held by the class
    active = jnp.max(weights, axis=1) > jnp.min(weights, axis=1)  # (R,) rows that bid on their own
    n_class = n_cols - jnp.sum(active, dtype=jnp.int32)  # dummies + constant rows

    def not_done(state):
        price, owner, eps = state
        return ~(jnp.all(owner >= 0) & (eps == 1))

    def step(state):
        price, owner, eps = state
        holds = owner[None, :] == rows[:, None]  # (R, C): row i holds column j
        bidding = active & ~holds.any(axis=1)  # (R,)
        phase_over = jnp.all(owner >= 0)  # every active row and every class member holds a column

        # Active rows: every unassigned one bids for its best column.
        value = weights - price[None, :]  # (R, C)
        best = jnp.argmax(value, axis=1).astype(jnp.int32)  # (R,)
        is_best = cols[None, :] == best[:, None]  # (R, C)
        second = jnp.max(jnp.where(is_best, _NONE, value), axis=1)  # (R,)
        bid = jnp.take_along_axis(weights, best[:, None], axis=1)[:, 0] - second + eps  # (R,)
        table = jnp.where(is_best & bidding[:, None], bid[:, None], _NONE)  # (R, C)
        top = jnp.max(table, axis=0)  # (C,) highest bid per column
        winner = jnp.argmax(table, axis=0).astype(jnp.int32)  # lowest row index among the highest

        # The class: its m members without a column bid for the m cheapest columns it does not
        # hold, each at the (m + 1)-th cheapest such price (the m-th if there is none) plus eps.
        free = owner != dummy  # (C,)
        missing = n_class - (n_cols - jnp.sum(free, dtype=jnp.int32))
        # rank[j]: free columns cheaper than j (ties by index), (C, C) comparisons
        cheaper = (price[None, :] < price[:, None]) | (
            (price[None, :] == price[:, None]) & (cols[None, :] < cols[:, None])
        )
        rank = jnp.sum(cheaper & free[None, :], axis=1, dtype=jnp.int32)  # (C,)
        wanted = free & (rank < missing)
        at_pivot = free & (rank == missing)
        pivot = jnp.where(
            jnp.any(at_pivot), jnp.max(jnp.where(at_pivot, price, _NONE)), jnp.max(jnp.where(wanted, price, _NONE))
        )
        class_bid = jnp.where(wanted, pivot + eps, _NONE)  # (C,)
        winner = jnp.where(top >= class_bid, winner, dummy)  # ties to the active row
        top = jnp.maximum(top, class_bid)
        won = top > _NONE
        bid_owner = jnp.where(won, winner, owner)
        bid_price = jnp.where(won, top, price)

        # Everything assigned (and eps > 1): the next phase, with a smaller eps and the same prices.
        owner = jnp.where(phase_over, -1, bid_owner)
        price = jnp.where(phase_over, price - jnp.min(price), bid_price)
        eps = jnp.where(phase_over, jnp.maximum(eps // _THETA, 1), eps)
        return price, owner, eps

    eps0 = jnp.maximum(jnp.max(weights) // _THETA, 1).astype(jnp.int32)
    init = (jnp.zeros(n_cols, jnp.int32), jnp.full(n_cols, -1, jnp.int32), eps0)
    _, owner, _ = lax.while_loop(not_done, step, init)
    own = jnp.argmax(owner[None, :] == rows[:, None], axis=1).astype(jnp.int32)  # (R,) active rows
    # The constant rows take the class's columns in order: the k-th one the k-th such column.
    in_class = owner == dummy  # (C,)
    class_index = jnp.cumsum(in_class) - 1  # (C,)
    row_index = jnp.cumsum(~active) - 1  # (R,)
    given = jnp.argmax(in_class[None, :] & (class_index[None, :] == row_index[:, None]), axis=1)
    return jnp.where(active, own, given.astype(jnp.int32))


@_checks.checked_jit(_check_benefit)
def linear_assignment(benefit):
    """Maximum-benefit assignment of rows to distinct columns, by a forward auction (pure JAX).

    Args:
      benefit: ``(R, C)`` integer or float matrix with ``R <= C`` (``C <= MAX_COLUMNS``); may be traced.

    Returns:
      ``(R,)`` int32 column indices, pairwise distinct, maximising ``sum_i benefit[i, col[i]]``:
      exactly for integer benefits whose range ``max - min`` is at most :func:`levels` ``(C)``;
      otherwise the total is within ``R (max - min) / levels(C)`` of the optimum, and the assignment is
      the optimal one whenever the optimum is unique by more than that. Ties may be broken differently
      from SciPy. ``R == 0`` gives an empty array.

    Raises:
      ValueError: a NaN or infinite benefit in host data. Held in a JAX array, such a benefit makes the
        result -1 in every row instead, a sentinel that is not a column.

    Jittable and vmappable (``(B, R, C)`` matrices); the auction is a ``lax.while_loop``, so under
    ``vmap`` the batch runs until its slowest member is done.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from tokdyn import assignment
        >>> benefit = jnp.array([[4, 1, 3], [2, 0, 5]])
        >>> assignment.linear_assignment(benefit).tolist()   # rows 0, 1 take columns 0, 2: 4 + 5
        [0, 2]
        >>> jax.vmap(assignment.linear_assignment)(jnp.stack([benefit, benefit[::-1]])).tolist()
        [[0, 2], [2, 0]]

    References:
        Bertsekas, D. P. (1988). The auction algorithm: a distributed relaxation method for the
        assignment problem. *Annals of Operations Research* 14, 105-123.
    """
    n_rows, n_cols = jnp.shape(benefit)
    if n_rows == 0:
        return jnp.zeros(0, jnp.int32)
    if n_cols == 1:
        a = jnp.asarray(benefit)
        finite = jnp.isfinite(a[0, 0]) if jnp.issubdtype(a.dtype, jnp.floating) else True
        return jnp.where(finite, jnp.zeros(1, jnp.int32), -1)
    n_levels = levels(n_cols)
    q, finite = _grid(benefit, n_levels)  # (R, C) in [0, L], ()
    return jnp.where(finite, _auction(q * (n_cols + 1)), -1)


def linear_assignment_host(benefit) -> np.ndarray:
    """The reference on host data: ``scipy.optimize.linear_sum_assignment(benefit, maximize=True)``.

    Args:
      benefit: ``(R, C)`` integer or float array (NumPy, nested lists, or a JAX array, which is
        copied to the host) with ``R <= C``.

    Returns:
      ``(R,)`` NumPy int array of column indices, pairwise distinct, maximising the total benefit.

    Examples:
        >>> from tokdyn import assignment
        >>> assignment.linear_assignment_host([[4, 1, 3], [2, 0, 5]]).tolist()
        [0, 2]
    """
    from scipy.optimize import linear_sum_assignment

    benefit = np.asarray(benefit)  # a host function: JAX arrays are copied here
    _check_benefit(benefit)
    rows, cols = linear_sum_assignment(benefit, maximize=True)
    out = np.empty(len(rows), dtype=np.int64)
    out[rows] = cols
    return out
