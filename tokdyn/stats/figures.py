"""Figures (PNG), drawn with matplotlib's object API: no pyplot, no global state, thread-safe.

matplotlib is imported only when a figure is drawn, so runs that skip plots do not pay for it.
Every figure is written through :func:`tokdyn.io.atomic_write` (:func:`save`). Writing tables and
metadata is :mod:`tokdyn.io`'s job.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def figure(figsize):
    """A new matplotlib ``Figure`` with an Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


MARK = b"tEXtSoftware\x00tokdyn"  # in every PNG :func:`save` writes: how a study's clear knows its figures


def save(fig, path: str, dpi: int = 100) -> str:
    """Save a figure as PNG at ``path``, atomically (:func:`tokdyn.io.atomic_write`: a symbolic
    link at ``path`` is replaced, never followed), creating the directory. The PNG carries
    ``Software: tokdyn`` (:data:`MARK`), so that a ``--fresh`` rerun removes only figures tokdyn
    drew."""
    from tokdyn import io

    with io.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, metadata={"Software": "tokdyn"})
    return path


def drawn_by_tokdyn(path: str) -> bool:
    """Whether ``path`` is a PNG that :func:`save` drew (it carries :data:`MARK`); a study removes
    no other figure."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and MARK in head


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # line_plot's series, in order
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def series_style(i: int, n: int) -> dict:
    """How :func:`line_plot` draws its ``i``-th of ``n`` series, so that series that coincide stay
    distinguishable: a colour, a marker and a line style of its own (cycling through
    :data:`MARKERS` and :data:`LINESTYLES`), markers a little smaller for each later series (a later
    one, drawn on top, leaves the earlier one's outline visible), and ``dodge``: a small horizontal
    offset in points, centred on zero, by which the series is shifted (as a dodged bar chart)."""
    return dict(
        color=f"C{i % 10}",
        marker=MARKERS[i % len(MARKERS)],
        linestyle=LINESTYLES[i % len(LINESTYLES)],
        ms=max(7.0 - 1.0 * i, 3.0),
        dodge=(i - (n - 1) / 2) * min(3.0, 12.0 / max(n - 1, 1)),
        zorder=2 + 0.01 * i,
    )


def line_plot(
    path: str,
    x,
    series: Mapping[str, Sequence],
    *,
    panels: Mapping[str, Mapping[str, Sequence]] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    errors: Mapping | None = None,
    intervals: Mapping | None = None,
    sharey: bool = True,
    xscale: str = "linear",
    columns: int | None = None,
) -> str:
    """One PNG of lines, or of side-by-side panels of lines sharing the y axis. Series that coincide stay
    visible (:func:`series_style`): each has its own colour, marker and line style, and is shifted
    sideways on the page by a few points (at most 6 either side), which never changes the data.

    Args:
        path: the PNG to write.
        x: the x values, shared by every series.
        series: name -> y values over ``x`` (ignored when ``panels`` is given).
        panels: optional panel title -> series, one subplot each.
        xlabel: the x axis' label.
        ylabel: the y axis' label.
        title: the figure's title (a suptitle above panels).
        errors: optional half-widths drawn as vertical bars, in the structure of what is drawn: name ->
            half-widths, or panel -> name -> half-widths.
        intervals: optional intervals drawn as vertical bars from their low to their high end (an
            interval need not be symmetric), in the structure of what is drawn: name -> ``(low,
            high)``, or panel -> name -> ``(low, high)``; NaN ends draw no bar.
        sharey: the panels share the y axis (False: each its own, for quantities of other scales).
        xscale: the x axis' scale, ``"linear"`` or ``"log"`` (matplotlib's names; on a log scale the
            ticks are the x values).
        columns: panels per row (default: every panel in one row).

    Returns:
        ``path``.
    """
    from matplotlib.transforms import offset_copy

    multi = panels is not None  # panel titles shown, figure title as a suptitle
    panels = panels if multi else {title: series}
    ncols = min(columns or len(panels), len(panels))
    nrows = -(-len(panels) // ncols)
    fig = figure((3.4 * ncols + 1.0, 3.3 * nrows))
    grid = np.atleast_1d(fig.subplots(nrows, ncols, sharey=sharey, squeeze=False)).ravel()
    for ax in grid[len(panels) :]:
        ax.set_visible(False)
    axes = grid[: len(panels)]
    for ax, (ptitle, ser) in zip(axes, panels.items()):
        for i, (name, y) in enumerate(ser.items()):
            style = series_style(i, len(ser))
            shift = offset_copy(ax.transData, fig=fig, x=style.pop("dodge"), y=0.0, units="points")
            # drawn in data coordinates (so that they set the axes' limits), then shifted
            (line,) = ax.plot(x, y, lw=1.4, mew=0.8, mec=style["color"], label=name, **style)
            line.set_transform(shift)
            err = None if errors is None else (errors.get(ptitle, {}).get(name) if multi else errors.get(name))
            if err is not None:
                y, err = np.asarray(y, float), np.asarray(err, float)
                bars = ax.vlines(x, y - err, y + err, color=style["color"], lw=1, alpha=0.7, zorder=style["zorder"])
                bars.set_transform(shift)
            band = (
                None if intervals is None else (intervals.get(ptitle, {}).get(name) if multi else intervals.get(name))
            )
            if band is not None:
                low, high = (np.asarray(v, float) for v in band)
                ok = np.isfinite(low) & np.isfinite(high)
                bars = ax.vlines(
                    np.asarray(x)[ok], low[ok], high[ok], color=style["color"], lw=1, alpha=0.7, zorder=style["zorder"]
                )
                bars.set_transform(shift)
        ax.set_title(ptitle, fontsize=10)
        ax.set_xscale(xscale)
        if xscale == "log":
            ax.set_xticks(np.asarray(x, float), [f"{v:g}" for v in np.asarray(x, float)])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax in axes[::ncols]:
        ax.set_ylabel(ylabel)
    if not sharey:
        for ax in axes[1:]:
            ax.tick_params(labelleft=True)
    axes[-1].legend(fontsize=8, frameon=False, handlelength=3.0)
    if multi and title:
        fig.suptitle(title, fontsize=11)
    if nrows == 1:
        fig.subplots_adjust(
            left=0.08, right=0.99, bottom=0.15, top=0.82 if multi and title else 0.9, wspace=0.08 if sharey else 0.3
        )
    else:
        fig.subplots_adjust(left=0.08, right=0.99, bottom=0.08, top=0.9, wspace=0.08 if sharey else 0.3, hspace=0.45)
    return save(fig, path)


def segmentation_grid(path: str, columns: Mapping[str, np.ndarray], *, title: str = "") -> str:
    """One PNG of scenes (rows) by panels (columns). ``columns``: name -> (n, H, W, 3) images in
    [0, 1] or (n, H, W) integer segment ids (drawn in a qualitative colour map, 0 darkest)."""
    from matplotlib import colormaps

    names = list(columns)
    n = min(len(np.asarray(v)) for v in columns.values())
    fig = figure((1.3 * len(names) + 0.4, 1.3 * n + 0.6))
    axes = np.asarray(fig.subplots(n, len(names), squeeze=False))
    cmap = colormaps["tab10"]
    for j, name in enumerate(names):
        panel = np.asarray(columns[name])
        for i in range(n):
            ax = axes[i, j]
            if panel.ndim == 4:
                ax.imshow(np.clip(panel[i], 0.0, 1.0), interpolation="nearest")
            else:
                ax.imshow(panel[i] % 10, cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9 if title else 0.95, wspace=0.05, hspace=0.05)
    return save(fig, path)


def heatmap(
    path: str, x, y, z, *, xlabel: str = "", ylabel: str = "", title: str = "", cbar: str = "", fmt: str = "{:.3g}"
) -> str:
    """One PNG of a table as coloured cells, one cell per axis value (so linearly and logarithmically
    spaced axes both read naturally); NaN cells are left blank.

    Args:
        path: the PNG to write.
        x: the column axis' values (len(x) columns).
        y: the row axis' values (len(y) rows).
        z: (len(y), len(x)) the table.
        xlabel: the x axis' label.
        ylabel: the y axis' label.
        title: the figure's title.
        cbar: the colour bar's label.
        fmt: the format of the tick labels, the axis values (thinned to at most 12 per axis).

    Returns:
        ``path``.
    """
    z = np.asarray(z, float)
    fig = figure((6.4, 4.8))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(z), origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
    for setter, values in ((ax.set_xticks, x), (ax.set_yticks, y)):
        every = max(1, int(np.ceil(len(values) / 12)))
        ticks = np.arange(0, len(values), every)
        setter(ticks, [fmt.format(values[i]) for i in ticks])
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=cbar)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.2, top=0.9)
    return save(fig, path)


def front_plot(
    path: str, cost, benefit, front, *, low=None, high=None, xlabel: str = "", ylabel: str = "", title: str = ""
) -> str:
    """One PNG: every point (``cost``, ``benefit``) in grey, the Pareto front highlighted and joined as a
    staircase.

    Args:
        path: the PNG to write.
        cost: (n,) each point's cost (x).
        benefit: (n,) each point's benefit (y).
        front: (n,) bool, the points on the front (e.g. :func:`tokdyn.stats.summary.pareto_front`).
        low: optional (n,) lower bounds of the benefit's confidence interval, drawn on the front points.
        high: optional (n,) upper bounds, with ``low``.
        xlabel: the x axis' label.
        ylabel: the y axis' label.
        title: the figure's title.

    Returns:
        ``path``.
    """
    cost, benefit, front = np.asarray(cost, float), np.asarray(benefit, float), np.asarray(front, bool)
    fig = figure((6.0, 4.5))
    ax = fig.subplots()
    ax.scatter(cost[~front], benefit[~front], s=8, color="0.6", alpha=0.6, label="settings")
    order = np.flatnonzero(front)[np.argsort(cost[front], kind="stable")]
    ax.step(cost[order], benefit[order], where="post", color="C3", lw=1.2)
    ax.scatter(cost[order], benefit[order], s=22, color="C3", zorder=3, label="Pareto front")
    if low is not None and high is not None:
        ax.vlines(
            cost[order], np.asarray(low, float)[order], np.asarray(high, float)[order], color="C3", lw=1, alpha=0.7
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.9)
    return save(fig, path)


PLOTS = {"line": line_plot, "heatmap": heatmap, "front": front_plot}


def draw(job: dict) -> str:
    """Draw one figure from a job dict: ``kind`` (a key of :data:`PLOTS`, default ``"line"``) plus
    that function's keyword arguments."""
    job = dict(job)
    return PLOTS[job.pop("kind", "line")](**job)
