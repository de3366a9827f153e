"""Progress of a long job (:class:`Progress`): a bar with rate and ETA on a terminal, one line per
update otherwise, nothing when quiet."""

from __future__ import annotations

import sys
import time

from tokdyn.io.interrupt import check_interrupt


class Progress:
    """Progress of ``total`` units of work (runs, steps, models).

    On a terminal: a live bar with the count, the rate and the time left (:mod:`rich`). Otherwise
    (logs, CI, files): one line per :meth:`update` on stderr. With ``quiet``: nothing. ``done``
    counts work finished before this session (a resumed run); the rate counts this session only.
    Use as a context manager, or call :meth:`close`. :meth:`note` prints a message the same way.
    """

    def __init__(
        self, total: int, *, desc: str = "", unit: str = "runs", done: int = 0, quiet: bool = False, stream=None
    ):
        self.total, self.done, self.desc, self.unit, self.quiet = int(total), int(done), desc, unit, quiet
        self.stream = sys.stderr if stream is None else stream
        self._start_done, self._t0 = self.done, time.perf_counter()
        self._bar = None
        if not quiet and self.stream.isatty():
            self._bar = _rich_bar(self.stream, desc, unit, total, done)

    def rate(self) -> float:
        """Units done per second in this session (those done before it not counted); NaN before any
        time has passed."""
        dt = time.perf_counter() - self._t0
        return (self.done - self._start_done) / dt if dt > 0 else float("nan")

    def update(self, n: int = 1, **info) -> None:
        """``n`` more units are done; ``info`` (name -> number) is shown beside the count.
        ``KeyboardInterrupt`` after a Ctrl-C (:func:`check_interrupt`)."""
        self.done += int(n)
        check_interrupt()
        if self.quiet:
            return
        extra = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        if self._bar is not None:
            bar, task = self._bar
            bar.update(task, completed=self.done, info=extra)
            return
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / max(self.total, 1)
        self.stream.write(
            f"{self.desc + ': ' if self.desc else ''}{self.done}/{self.total} {self.unit} ({pct:.1f}%), "
            f"{rate:,.3g} {self.unit}/s, ETA {eta:,.0f} s{'  ' + extra if extra else ''}\n"
        )
        self.stream.flush()

    def note(self, message: str) -> None:
        """Print a line (above the bar on a terminal), unless quiet."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar[0].console.print(message, highlight=False, markup=False)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Stop the live bar (nothing to do off a terminal); called on leaving the ``with`` block."""
        if self._bar is not None:
            self._bar[0].stop()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _rich_bar(stream, desc, unit, total, done):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.progress import (
        Progress as Bar,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text("" if task.speed is None else f"{task.speed:,.3g} {unit}/s")

    bar = Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(file=stream),
        transient=False,
    )
    task = bar.add_task(desc, total=total, completed=done, info="")
    bar.start()
    return bar, task
