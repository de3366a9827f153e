"""Initial tokens: :func:`init_tokens` (Forgy, normal, the data mean plus noise, k-means++) and
:func:`forgy` (Forgy's draw from given noise)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.dynamics._common import as_float, point_weights, real_array, valid_rows
from tokdyn.dynamics.loop import varying


INIT_METHODS = ("data", "normal", "data_mean", "kmeans++")


def _check_init(key, n_tokens, dim, method, x, mask, scale):
    _checks.prng_key("key", key)
    _checks.positive_int("n_tokens", n_tokens)
    _checks.positive_int("dim", dim)
    _checks.elements_fit("the tokens (n_tokens, dim)", dict(n_tokens=n_tokens, dim=dim))
    _checks.choice("method", method, INIT_METHODS)
    _checks.real("scale", scale, low=0.0)
    if method != "normal":
        if x is None:
            raise ValueError(f"init method {method!r} needs the data: pass x=(N, D) points")
        real_array("x", x, ndim=2)
        if np.shape(x)[-1] != dim:
            raise ValueError(f"x must have dimension dim={dim}, got shape {np.shape(x)}")
        _checks.mask_for("mask", mask, np.shape(x)[0])
        if mask is not None and _checks.on_host(mask) and not np.any(mask):
            raise ValueError(
                f"mask must select at least one point for init method {method!r} (which draws tokens "
                f"from the valid points), got an all-False mask of {np.shape(mask)[0]} entries"
            )
        if method == "data" and n_tokens > np.shape(x)[0]:
            raise ValueError(f"n_tokens={n_tokens} exceeds the number of points N={np.shape(x)[0]} for method 'data'")
        if method == "kmeans++":
            n_valid = np.shape(x)[0] if mask is None or not _checks.on_host(mask) else int(np.sum(mask))
            if n_tokens > n_valid:
                raise ValueError(
                    f"n_tokens={n_tokens} exceeds the number of valid points ({n_valid}) for method "
                    "'kmeans++', which draws distinct points"
                )


@_checks.checked_jit(_check_init, static_argnames=("n_tokens", "dim", "method"))
def init_tokens(key, n_tokens: int, dim: int, *, method: str = "data", x=None, mask=None, scale=1.0):
    """Initial tokens, (n_tokens, dim).

    Args:
      key: PRNG key (the draws are float32 whatever the dtype: the same tokens with and without x64).
      n_tokens, dim: the shape (static).
      method: ``"data"`` (Forgy: ``n_tokens`` distinct valid points of ``x`` drawn uniformly),
        ``"normal"`` (``scale * N(0, I)``), ``"data_mean"`` (the valid points' mean plus ``scale *
        N(0, I)``, Slot Attention's shared Gaussian) or ``"kmeans++"`` (k-means++ seeding, token
        ``k`` drawn with ``fold_in(key, k)``; the plain rule, :ref:`dynamics-initial`).
      x: (N, dim) points, needed by every method but ``"normal"``.
      mask: optional (N,) bool; only valid points are drawn.
      scale: the spread of ``"normal"`` and ``"data_mean"``.

    Returns:
      (n_tokens, dim): float32 for ``"normal"``, else in ``x``'s dtype. With fewer valid points than
      tokens (a traced ``mask``; host data raises) the rest are padded rows; a traced mask with no
      valid point gives NaN tokens (a host one is a ``ValueError`` naming ``mask``).

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float32)
      >>> print(np.asarray(dynamics.init_tokens(jax.random.key(0), 2, 2, method="kmeans++", x=x)))
      [[ 0.  0.]
       [10. 10.]]
      >>> dynamics.init_tokens(jax.random.key(0), 3, 2, method="normal").shape
      (3, 2)

    References:
      Forgy, E. W. (1965). Cluster analysis of multivariate data: efficiency versus
      interpretability of classifications. *Biometrics* 21, 768-769 (``"data"``).

      Arthur, D. and Vassilvitskii, S. (2007). k-means++: the advantages of careful seeding.
      *Proceedings of the 18th ACM-SIAM Symposium on Discrete Algorithms (SODA)*, 1027-1035
      (``"kmeans++"``).

      Locatello, F., Weissenborn, D., Unterthiner, T., Mahendran, A., Heigold, G., Uszkoreit, J.,
      Dosovitskiy, A. and Kipf, T. (2020). Object-centric learning with slot attention. *NeurIPS
      2020*. arXiv:2006.15055 (``"data_mean"``).
    """
    if method == "normal":  # drawn in float32 whatever the dtype: the same tokens with and without x64
        return scale * jax.random.normal(key, (n_tokens, dim), jnp.float32)
    x = valid_rows(as_float(x), mask)  # padding never reaches a product (0 * inf is NaN)
    w = point_weights(x, mask)
    if method == "data_mean":
        mean = (w @ x) / jnp.maximum(w.sum(), 1.0)
        tokens = mean + scale * jax.random.normal(key, (n_tokens, dim), jnp.float32).astype(x.dtype)
    elif method == "kmeans++":
        tokens = _kmeans_plus_plus(key, x, w > 0, n_tokens)
    else:
        tokens = forgy(x, jax.random.uniform(key, w.shape, jnp.float32), mask, n_tokens)
    if method == "data":
        return tokens  # forgy: NaN already without a valid point
    return tokens if mask is None else jnp.where(jnp.any(mask), tokens, jnp.nan)  # no valid point: NaN


def _kmeans_plus_plus(key, x, valid, n_tokens: int):
    """(n_tokens, D) k-means++ seeding of (N, D) ``x`` restricted to the (N,) bool ``valid`` rows
    (see :func:`init_tokens`). Distances in the exact form ``|x - t|^2``, so a drawn point (and any
    copy of it) has weight exactly 0 and is never drawn again."""

    def body(k, carry):
        idx, drawn, d2 = carry
        spread = jnp.where(valid, d2, 0.0)  # D^2 weights (1 for every valid point at k = 0)
        fresh = jnp.where(valid & ~drawn, 1.0, 0.0)  # every valid point is a copy of a drawn one
        spare = jnp.where(drawn, 0.0, 1.0)  # fewer valid points than tokens
        p = jnp.where(jnp.sum(spread) > 0, spread, jnp.where(jnp.sum(fresh) > 0, fresh, spare))
        # float32 logits: the same Gumbel draws (and tokens) with and without x64
        i = jax.random.categorical(jax.random.fold_in(key, k), jnp.log(p).astype(jnp.float32)).astype(jnp.int32)
        new = jnp.sum((x - x[i]) ** 2, axis=-1)  # (N,)
        return idx.at[k].set(i), drawn.at[i].set(True), jnp.where(k == 0, new, jnp.minimum(d2, new))

    n = x.shape[0]
    start = varying((jnp.zeros(n_tokens, jnp.int32), jnp.zeros(n, bool), jnp.ones(n, x.dtype)), x, valid, key)
    idx, _, _ = jax.lax.fori_loop(0, n_tokens, body, start)
    return x[idx]


def forgy(x, noise, mask, n_tokens: int):
    """Forgy init from given noise: the valid rows of ``x`` with the largest ``noise`` values.
    With i.i.d. uniform noise this is a uniform sample without replacement. A plain traceable
    function (not jitted, no checks).

    Args:
      x: (N, D) points.
      noise: (N,) scores, one per point (traced).
      mask: (N,) bool or ``None``; False rows score -1 in place of their noise (below any uniform
        noise, so they are drawn only when fewer rows are valid than tokens).
      n_tokens: T, the number of tokens, a Python int <= N (static).

    Returns:
      (T, D) tokens: with fewer valid rows than tokens the rest are padded rows; with no valid row
      at all (an all-False ``mask``) every token is NaN.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.arange(8, dtype=np.float32).reshape(4, 2)
      >>> print(np.asarray(dynamics.forgy(x, np.array([0.1, 0.9, 0.5, 0.7]), None, 2)))   # rows 1, 3
      [[2. 3.]
       [6. 7.]]
    """
    score = noise if mask is None else jnp.where(mask, noise, -1.0)
    _, idx = jax.lax.top_k(score, n_tokens)
    return x[idx] if mask is None else jnp.where(jnp.any(mask), x[idx], jnp.nan)
