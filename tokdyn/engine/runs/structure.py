"""The static structure of a :class:`~tokdyn.engine.runs.ClusterRun` (shapes, initialisation,
stopping rule) and the sizes one run can hold (:data:`MAX_ELEMENTS`, :data:`MAX_RUN_BYTES`)."""

from __future__ import annotations

import dataclasses

from tokdyn import _checks, data, dynamics


@dataclasses.dataclass(frozen=True)
class RunStructure:
    """The static structure of one :class:`~tokdyn.engine.runs.ClusterRun` (shapes, initialisation, stopping rule),
    shared with the study and sweep configurations built on it.

    Attributes:
      n_tokens: tokens T.
      dim: data dimension D.
      points_per_cluster: points per cluster.
      centers: centre layout, uniform | normal.
      center_box: half-width (uniform) or scale (normal) of the centre distribution.
      init: token initialisation, data (Forgy) | normal | data_mean.
      init_scale: scale of the normal and data_mean initialisations.
      n_steps: the most steps a run takes.
      tol: convergence threshold on the largest coordinate change per step.
    """

    n_tokens: int = 4
    dim: int = 4
    points_per_cluster: int = 100
    centers: str = "uniform"
    center_box: float = 10.0
    init: str = "data"
    init_scale: float = 1.0
    n_steps: int = 30
    tol: float = 1e-3

    def validate_structure(self, min_clusters: int, max_clusters: int | None = None) -> None:
        """Check the structure fields; ``min_clusters``: the smallest cluster count it will see,
        ``max_clusters``: the largest (the padded size of the data; default ``min_clusters``).
        Sizes that no run could hold (:meth:`check_size`) are refused here, before any compile."""
        _checks.positive_int("n_tokens", self.n_tokens)
        _checks.positive_int("dim", self.dim)
        _checks.positive_int("points_per_cluster", self.points_per_cluster)
        _checks.positive_int("n_steps", self.n_steps)
        _checks.real("tol", self.tol, low=0.0)
        _checks.real("center_box", self.center_box, low=0.0)
        _checks.real("init_scale", self.init_scale, low=0.0)
        _checks.choice("centers", self.centers, data.CENTER_LAYOUTS)
        _checks.choice("init", self.init, dynamics.INIT_METHODS)
        if self.init == "data" and self.n_tokens > min_clusters * self.points_per_cluster:
            raise ValueError(
                f"n_tokens={self.n_tokens} exceeds the smallest dataset "
                f"({min_clusters} x {self.points_per_cluster} points) for init 'data'"
            )
        self.check_size(max(min_clusters, max_clusters or min_clusters))

    def check_size(self, max_clusters: int) -> None:
        """Refuse sizes that one run cannot hold, with a ``ValueError`` naming the option to reduce
        (``points_per_cluster``, ``dim`` or ``n_tokens``: the one furthest above its default), its
        value and the largest value that fits with the others as given. With ``N = max_clusters *
        points_per_cluster`` points, ``D = dim``, ``T = n_tokens``:

        * every per-run array must fit XLA's 32-bit element indexing: ``N (D + 1)`` (the points
          with their column of ones, and the random bits they come from), ``T N`` (distances and
          assignments), ``T^2 D`` (the pairwise token differences of the repulsion) at most
          ``2**31 - 1`` elements (:data:`MAX_ELEMENTS`);
        * the working set of one run, estimated as ``4 bytes x (6 N (D + 1) + 6 T N + 2 T^2 (D + 1))``,
          at most :data:`MAX_RUN_BYTES` (1 GiB): a sweep holds many runs at once.

        Pure arithmetic on the structure fields: nothing is traced or compiled."""
        sizes = dict(n_tokens=self.n_tokens, dim=self.dim, points_per_cluster=self.points_per_cluster)
        problem = _size_problem(max_clusters, **sizes)
        if problem is None:
            return
        defaults = {f.name: f.default for f in dataclasses.fields(RunStructure) if f.name in sizes}
        name = max(sizes, key=lambda k: sizes[k] / defaults[k])  # the option furthest above its default
        lo, hi = 0, sizes[name]  # the largest value of that option that fits: lo (0 if none does)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _size_problem(max_clusters, **{**sizes, name: mid}) is None:
                lo = mid
            else:
                hi = mid - 1
        fit = (
            f"with the other sizes as given, {name} <= {lo} fits"
            if lo >= 1
            else f"no value of {name} fits with the other sizes as given; reduce them too"
        )
        raise ValueError(
            f"{name}={sizes[name]} is too large: one run of {max_clusters} x {self.points_per_cluster} "
            f"points in dim={self.dim} with n_tokens={self.n_tokens} {problem}; {fit}"
        )

    def structure(self) -> dict:
        """The structure fields, floats as Python floats (a stable repr: the compilation key)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(RunStructure)}
        return {k: float(v) if k in ("center_box", "init_scale", "tol") else v for k, v in out.items()}


MAX_ELEMENTS = 2**31 - 1  # XLA's 32-bit element indexing: the most elements of one array
MAX_RUN_BYTES = 2**30  # the most working memory of one run (RunStructure.check_size)


def _size_problem(max_clusters: int, *, n_tokens: int, dim: int, points_per_cluster: int) -> str | None:
    """What is wrong with one run of these sizes (a phrase for a message), or None when it fits."""
    n, d, t = max_clusters * points_per_cluster, dim, n_tokens
    for what, elements in (
        ("points x (dim + 1)", n * (d + 1)),
        ("n_tokens x points", t * n),
        ("n_tokens^2 x dim (repulsion)", t * t * d),
    ):
        if elements > MAX_ELEMENTS:
            return (
                f"needs an array of {what} = {elements:,} elements, above XLA's 32-bit indexing limit "
                f"of 2**31 - 1 = {MAX_ELEMENTS:,}"
            )
    nbytes = 4 * (6 * n * (d + 1) + 6 * t * n + 2 * t * t * (d + 1))
    if nbytes > MAX_RUN_BYTES:
        return f"needs about {nbytes / 2**30:.3g} GiB of working memory, above the limit of 1 GiB per run"
    return None
