"""The named noise schedules (:data:`SCHEDULES`, :func:`betas`)."""

from __future__ import annotations

import math

import numpy as np

from tokdyn import _checks

SCHEDULES = ("linear", "cosine", "cosine_d3pm", "absorbing")


def betas(schedule: str, T: int) -> np.ndarray:
    """(T,) float64 beta_1..beta_T of a named schedule (see the module docstring).

    ``linear``: ``linspace(1e-4 * 1000/T, min(0.02 * 1000/T, 0.999), T)`` (the cap binds for
    T <= 20); ``cosine``: Nichol & Dhariwal's cos²; ``cosine_d3pm``: D3PM's cos; ``absorbing``:
    ``1 / (T - t + 1)``. Cosine betas are capped at 0.999.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import diffusion
      >>> b = diffusion.betas("linear", 1000)
      >>> print(b.shape, f"{b[0]:.4f} {b[-1]:.4f}")
      (1000,) 0.0001 0.0200
      >>> print(f"{np.prod(1 - diffusion.betas('cosine', 1000)):.1e}")   # alpha_bar_T: almost pure noise
      2.4e-09

    References:
      Ho, J., Jain, A. and Abbeel, P. (2020). Denoising diffusion probabilistic models. *NeurIPS*
      (the linear schedule). Nichol, A. and Dhariwal, P. (2021). Improved denoising diffusion
      probabilistic models. *ICML* (the cosine schedule). Austin, J., Johnson, D. D., Ho, J.,
      Tarlow, D. and van den Berg, R. (2021). Structured denoising diffusion models in discrete
      state-spaces. *NeurIPS* (``cosine_d3pm``, ``absorbing``).
    """
    _checks.choice("schedule", schedule, SCHEDULES)
    T = _checks.positive_int("T", T)
    if schedule == "linear":
        scale = 1000.0 / T
        return np.linspace(scale * 1e-4, min(scale * 0.02, 0.999), T)
    if schedule == "cosine":
        s = 0.008
        f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        return np.minimum(1.0 - abar[1:] / np.maximum(abar[:-1], 1e-300), 0.999)
    if schedule == "cosine_d3pm":
        f = np.cos((np.arange(T + 1, dtype=np.float64) / T + 0.008) / 1.008 * np.pi / 2)
        return np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    return 1.0 / (T - np.arange(1, T + 1) + 1.0)
