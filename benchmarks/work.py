"""The work of the token-dynamics workload, counted once, and the bound it puts on a rate.

Used by ``suite.py`` (its rows) and ``recount.py``: one count, one bound.

The count is of the built-in rule as the Pallas kernel (``tokdyn.dynamics.pallas``, formerly ``tokdyn.fused``) writes it, for the
study's methods (the softmax assignment; no Sinkhorn rounds, no Langevin noise). Per run-step and
per point, with T tokens and D dimensions (a fused multiply-add counts 2 flops, a max, add, mul or
divide 1):

  scores   ``-|t_j|^2`` broadcast, then D multiply-adds ``(2 t_jd) x_d``   T (2 D + 1)
  top      the max over the T scores                                        T - 1
  logits   ``(s_j - top) / tau``                                            2 T
  softmax  T exponentials; their sum; ``w / sum``; T products              2 T flops + T exp
  mass     ``sum_i a_ji``                                                   T
  means    ``sum_i a_ji x_di`` as D multiply-adds per token                2 T D
           ----------------------------------------------------------------------------
           (4 D + 7) T - 1 flops and T exponentials per point per step: 91 flops and 4 exp at
           T = D = 4.

Per run-step, once per run (not per point): the repulsion between the T (T - 1) ordered pairs of
tokens (5 D + 3 each), the weighted means' divisions, the force, momentum and stopping test
(15 T D), the annealed temperature (10 flops, one exp, one log): 526 flops at T = D = 4.

Per run besides its steps: the final labels (``hard_labels``: the scores once more and an argmax
over T: (2 D + 2) T - 1 flops per point); with ``metrics``: SSE and the contingency tables of
ARI/NMI ((3 D + 1) flops per point, an estimate: segment sums and a few per-cell terms); with
``data`` (the study path): the points ``x = c + noise z`` drawn on the device (3 D flops per
point; the threefry bits and inverse-erf normals, one draw per seed shared by its 36 runs, are
about 70 numbers per run and left out).

Points: "useful" work counts the valid points of a run (K x 100, K in {3, 4, 5}: 400 on average);
"padded" work counts the points the program computes on (the fused kernel pads 500 to 512, a power
of two; ``dynamics.run`` computes on the 500 of the padded cluster layout, masked).

Bytes: the fewest a run must move through device memory: its inputs read once and its outputs
written once (given data: the points, mask, true labels and initial tokens; the study path draws
its data on the device and reads nothing), 28 bytes of results per run (ARI, NMI, SSE, steps,
converged, collapsed, the cluster count).

The bound: the three times ``flops / FFMA rate``, ``exp / exp rate`` and ``bytes / bandwidth``
are spent on different units that work at once, so a run takes at least the *largest* of them
(never their sum); that ceiling is the *binding* one and each row names it. The FFMA rate is the
fastest the float32 multiply-add units were measured to run: the larger of the suite's
elementwise multiply-add pass (``fma_flops``) and its float32 GEMM at precision "highest"
(``gemm_highest``). Both run on the same FFMA units; the GEMM shows what they reach (on an H200
nearly twice the elementwise pass's rate), and a ceiling the chip beats is not a ceiling: the
elementwise pass is a lower measurement of the same pipe, limited by how that one program feeds
it. ``gemm`` (the GEMM at the precision of the model's matmuls) bounds the learned
models' training steps, whose flops come from XLA's own cost analysis.
"""

from __future__ import annotations

import dataclasses

T_TOKENS, DIM, POINTS_PADDED, POINTS_FUSED = 4, 4, 500, 512
VALID_MEAN = 400.0  # K in {3, 4, 5} clusters of 100 points, in equal shares
RESULT_BYTES = 28  # per run: ARI, NMI, SSE, steps, converged, collapsed, the cluster count


@dataclasses.dataclass(frozen=True)
class Work:
    """Work of one unit (a run-step, a run): float32 flops, exponentials, device-memory bytes."""

    flops: float
    exps: float
    bytes: float = 0.0

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.exps + other.exps, self.bytes + other.bytes)

    def __mul__(self, k: float) -> "Work":
        return Work(self.flops * k, self.exps * k, self.bytes * k)

    __rmul__ = __mul__


def per_point_step(T: int = T_TOKENS, D: int = DIM) -> Work:
    """Flops and exponentials per point per run-step (module docstring)."""
    return Work(flops=(4 * D + 7) * T - 1, exps=T)


def per_run_step(n: float, T: int = T_TOKENS, D: int = DIM) -> Work:
    """One run-step on ``n`` points: the per-point work times ``n`` plus the per-run scalars."""
    scalars = T * (T - 1) * (5 * D + 3) + 15 * T * D + 10
    return per_point_step(T, D) * n + Work(flops=scalars, exps=1)


def per_run(
    steps: float,
    n: float,
    *,
    T: int = T_TOKENS,
    D: int = DIM,
    metrics: bool = True,
    data: bool = False,
    input_points: float = 0.0,
) -> Work:
    """One run of ``steps`` steps on ``n`` points: the steps, the final labels, the metrics (when
    ``metrics``) and the device-drawn data (when ``data``); ``input_points``: the points read from
    device memory (0 on the study path, where the data are drawn on the device)."""
    w = per_run_step(n, T, D) * steps
    w = w + Work(flops=((2 * D + 2) * T - 1) * n, exps=0)
    if metrics:
        w = w + Work(flops=(3 * D + 1) * n, exps=0)
    if data:
        w = w + Work(flops=3 * D * n, exps=0)
    # x (D floats), the mask (1 byte) and the true label (4 bytes) per point, the initial tokens
    read = input_points * (4 * D + 5) + (4 * T * D if input_points else 0)
    return w + Work(flops=0, exps=0, bytes=read + RESULT_BYTES)


CEILINGS = {
    "ffma": (("fma_flops", "gemm_highest"), "flops"),
    "exp": (("exp",), "exps"),
    "hbm": (("copy_bytes",), "bytes"),
}
"""Ceiling name -> (the suite's measured rate keys, the fastest of which is the ceiling's rate;
the Work field it divides)."""


def rate(name: str, ceilings: dict) -> float:
    """The rate of ceiling ``name`` (a key of ``CEILINGS``) under the measured ``ceilings``: the
    largest of its measured keys (FFMA: the elementwise multiply-add pass or the GEMM at
    precision "highest", whichever ran faster), 0.0 when none was measured."""
    keys, _ = CEILINGS[name]
    return max((float(ceilings[k]) for k in keys if ceilings.get(k) and ceilings[k] > 0), default=0.0)


def bound(work: Work, ceilings: dict) -> dict:
    """The least time ``work`` can take under the measured ``ceilings`` (the suite's
    ``fma_flops``, ``gemm_highest``, ``exp``, ``copy_bytes`` in per-second units): each ceiling's
    time, the largest (the bound, seconds) and its name (the binding ceiling). The FFMA rate is
    the larger of ``fma_flops`` and ``gemm_highest`` (module docstring). A ceiling not measured
    is left out."""
    times = {}
    for name, (_, field) in CEILINGS.items():
        r = rate(name, ceilings)
        if r > 0:
            times[name] = getattr(work, field) / r
    if not times:
        return dict(seconds=float("nan"), binding="none", times={})
    binding = max(times, key=times.get)
    return dict(seconds=times[binding], binding=binding, times=times)


def against(runs_per_s: float, work: Work, ceilings: dict) -> dict:
    """A measured rate placed against the binding bound of ``work`` per run: the share of the
    bound reached (rate x bound seconds), the bound in runs/s and the binding ceiling's name."""
    b = bound(work, ceilings)
    return dict(
        of_bound=runs_per_s * b["seconds"],
        bound_runs_per_s=1.0 / b["seconds"] if b["seconds"] > 0 else float("nan"),
        binding=b["binding"],
        flops_per_run=work.flops,
        exps_per_run=work.exps,
        bytes_per_run=work.bytes,
    )


def model_bound(flops: float, bytes_: float, ceilings: dict, precision: str = "highest") -> dict:
    """The bound of a learned model's step from XLA's cost analysis (``flops``, ``bytes``): the
    larger of flops over the GEMM rate at that matmul precision and bytes over the bandwidth."""
    gemm = ceilings.get("gemm_default" if precision == "default" else "gemm_highest")
    times = {}
    if gemm:
        times["gemm"] = flops / gemm
    if ceilings.get("copy_bytes"):
        times["hbm"] = bytes_ / ceilings["copy_bytes"]
    if not times:
        return dict(seconds=float("nan"), binding="none", times={})
    binding = max(times, key=times.get)
    return dict(seconds=times[binding], binding=binding, times=times)
