"""What a study's configuration asks of the machine, checked before it runs: memory
(:class:`Estimate`, :func:`check_resources`, :func:`available_memory`), array sizes XLA can index
(:func:`elements_fit`) and the time it will take here (:func:`time_here`, :func:`time_record`)."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping, Optional

from tokdyn.experiment import rates as backend_rates
from tokdyn.experiment.study.paths import Refused


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a study's configuration will ask of the machine, before it runs.

    Attributes:
      memory: bytes of the largest allocation the run will hold at once (an estimate from the
        configuration's sizes; XLA's buffers come on top), checked against the device's memory
        (:func:`available_memory` ``("device")``: on the CPU backend, the host's).
      option: the option that sets ``memory`` (named in the refusal: the one to change).
      models: models trained, or runs simulated, in all.
      seconds: a rough time on the reference CPU, the 2-core machine the studies' constants were
        fitted on (None: not estimated); the sum of ``work`` where that is given.
      host_memory: bytes of the largest allocation held in host memory alone (NumPy tables,
        rows), where the estimate tells it apart from ``memory`` (0: it does not, and ``memory``
        counts everything); checked against the host's memory.
      host_option: the option that sets ``host_memory``.
      work: ``seconds`` split by the kind of work (``{"dynamics": ..., "training": ...,
        "host": ...}``, :mod:`tokdyn.experiment.rates`), each scaled by this machine's measured
        speed at that kind (:func:`time_here`); empty: ``seconds`` is not split, and stays the
        reference CPU's.
    """

    memory: float = 0.0
    option: str = ""
    models: int = 0
    seconds: Optional[float] = None
    host_memory: float = 0.0
    host_option: str = ""
    work: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.work, Mapping):
            raise TypeError(f"work must be a mapping of kinds to seconds, got {self.work!r}")
        bad = [k for k in self.work if k not in backend_rates.KINDS]
        if bad:
            raise ValueError(f"work: kinds must be among {', '.join(backend_rates.KINDS)}, got {bad}")
        try:
            work = {k: float(v) for k, v in self.work.items()}
        except (TypeError, ValueError):
            work = None
        if work is None or not all(math.isfinite(v) and v >= 0 for v in work.values()):
            raise ValueError(f"work: seconds must be finite numbers >= 0, got {dict(self.work)}")
        object.__setattr__(self, "work", work)
        if work:
            total = float(sum(work.values()))
            if self.seconds is None:
                object.__setattr__(self, "seconds", total)
            elif abs(self.seconds - total) > 1e-6 * max(1.0, total):
                raise ValueError(f"seconds={self.seconds} is not the sum of work ({total}): give one or the other")


LONG_SECONDS = 3600.0  # a run estimated to take longer than this here says so before it starts, even when quiet
SAY_SECONDS = 60.0  # a run estimated to take this long or longer here says so before it starts, unless quiet
MAX_ELEMENTS = 2**31 - 1  # XLA indexes an array's elements with 32-bit integers on many paths
MEMORY_KINDS = ("host", "device")


def available_memory(kind: str = "host") -> int:
    """Bytes of memory available to a new allocation. ``kind="host"``: this machine's
    (``MemAvailable`` of ``/proc/meminfo``; the physical memory where that cannot be read).
    ``kind="device"``: the first local JAX device's, where the studies' large arrays live
    (``bytes_limit - bytes_in_use`` of its ``memory_stats()``,
    :func:`tokdyn.engine.execute.device_memory`); the host's on the CPU backend, or where the
    device reports no memory statistics."""
    if kind not in MEMORY_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MEMORY_KINDS)}, got {kind!r}")
    if kind == "device":
        from tokdyn.engine import execute

        free = execute.device_memory()
        if free is not None:
            return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2**62


def memory_owner() -> Optional[str]:
    """What :func:`available_memory` ``("device")`` reads, as words for a message: the first local
    device (``"the device gpu:0 (NVIDIA H100 80GB HBM3)"``) where it reports its own memory;
    ``None`` where the device's memory is the host's (the CPU backend)."""
    import jax

    from tokdyn.engine import execute

    device = jax.local_devices()[0]
    if execute.device_memory(device) is None:
        return None
    kind = getattr(device, "device_kind", "")
    return f"the device {device.platform}:{device.id}" + (f" ({kind})" if kind else "")


def check_resources(
    study: str,
    estimate: Estimate,
    *,
    memory: Optional[int] = None,
    note=None,
    host_memory: Optional[int] = None,
    say_from: float = LONG_SECONDS,
) -> None:
    """Refuse an ``estimate`` that cannot fit in memory, and say how long it will take.

    Raises :class:`~tokdyn.experiment.study.Refused` (naming the option, the limit and whose memory it is) when the
    estimate's ``memory`` exceeds 80% of the device's available memory or its ``host_memory`` 80%
    of this machine's. Nothing is refused for its time alone.

    Args:
      study: the study's name, which starts every message.
      estimate: the :class:`Estimate` of the configuration (bytes, seconds, models).
      memory: the device memory available, in bytes; default :func:`available_memory`
        ``("device")`` (on the CPU backend, this machine's).
      note: optional callable taking one line of text; told the time the configuration will take
        here (:func:`time_here`: its work at the rates measured on the running backend) when that
        is at least ``say_from`` seconds, and always past :data:`LONG_SECONDS`.
      host_memory: this machine's memory available, in bytes; default :func:`available_memory`
        ``("host")``.
      say_from: seconds from which the time is said through ``note``.
    """
    owner = memory_owner()
    checks = [(estimate.memory, estimate.option, available_memory("device") if memory is None else int(memory), owner)]
    if estimate.host_memory > 0:
        checks.append(
            (
                estimate.host_memory,
                estimate.host_option,
                available_memory("host") if host_memory is None else int(host_memory),
                None,
            )
        )
    for need, option, limit, device in sorted(checks, key=lambda c: -c[0]):  # the largest named first
        if need > 0.8 * limit:
            whose = (
                f"{device} can spare (80% of the {_bytes(limit)} of its memory available)"
                if device
                else f"this machine can spare (80% of the {_bytes(limit)} available)"
            )
            raise Refused(
                f"{study}: this configuration needs about {_bytes(need)} at once, more than the "
                f"{_bytes(0.8 * limit)} {whose}: make {option or 'the sizes'} smaller"
            )
    if note is not None and estimate.seconds is not None:
        seconds, where = time_here(estimate)
        if seconds > LONG_SECONDS or seconds >= say_from:
            resume = "; finished work is kept, and the same command resumes it" if seconds > LONG_SECONDS else ""
            note(
                f"{study}: this configuration ({estimate.models:,} models or runs) will take about "
                f"{duration(seconds)} {where}{resume}"
            )


def time_here(estimate: Estimate, rates: Optional[backend_rates.Rates] = None) -> tuple:
    """``(seconds, where)``: how long ``estimate`` (with its ``seconds``) will take on this machine,
    and, in words, at which rates: its ``work`` at ``rates`` (default
    :func:`tokdyn.experiment.rates.for_estimate`, measured on the running backend when the work is
    long, else those measured before or the reference CPU's), or, where it gives no ``work``, its
    ``seconds`` at the reference CPU's rates."""
    if not estimate.work:
        import jax

        return float(estimate.seconds), (
            f"at the rates of {backend_rates.REFERENCE_DEVICE}; the estimate does not split its "
            f"work by kind, so it is not scaled to this {jax.default_backend()} backend"
        )
    rates = backend_rates.for_estimate(estimate.work) if rates is None else rates
    return rates.seconds(estimate.work), rates.words(list(estimate.work))


def time_record(estimate: Estimate) -> Optional[dict]:
    """The estimate's time as ``config.json`` records it (None where it has none): ``seconds`` on
    this machine, ``reference_seconds``, ``work`` by kind, and the ``speeds``, their ``sources``
    (:class:`tokdyn.experiment.rates.Rates`), the ``backend`` and ``device`` they are of; rates are
    never measured for it (those measured or kept before, else the reference CPU's)."""
    if estimate.seconds is None:
        return None
    if not estimate.work:
        return dict(seconds=float(estimate.seconds), reference_seconds=float(estimate.seconds))
    rates = backend_rates.current(list(estimate.work), probe=False)
    return dict(
        seconds=rates.seconds(estimate.work),
        reference_seconds=float(estimate.seconds),
        work=dict(estimate.work),
        speeds={k: rates.speed(k) for k in rates.sources},
        sources=dict(rates.sources),
        backend=rates.backend,
        device=rates.device,
    )


def duration(seconds: float) -> str:
    """``seconds`` in words: ``"40 s"``, ``"12 min"``, ``"3.5 hours"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} hours"


def largest_option(cfg, names) -> str:
    """Of the options ``names`` of ``cfg`` (a study's config dataclass) that scale a size, the one
    furthest above its default (``type(cfg)()``'s; the largest entry of a tuple): the option a
    refusal names as the one to change."""
    base = type(cfg)()

    def ratio(name):
        v, b = getattr(cfg, name), getattr(base, name)
        if isinstance(v, tuple):
            v, b = max(v), max(b)
        return v / max(1, b)

    return max(names, key=ratio)


def elements_fit(name: str, *sizes: int) -> None:
    """:class:`~tokdyn.experiment.study.Refused` naming ``name`` when an array of ``prod(sizes)``
    elements would overflow XLA's 32-bit element indexing (a crash of the process, not an error,
    once compiled)."""
    n = 1
    for s in sizes:
        n *= int(s)
    if n > MAX_ELEMENTS:
        raise Refused(
            f"{name} makes an array of {n:,} elements, more than the {MAX_ELEMENTS:,} one array may hold: "
            f"make {name} smaller"
        )


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"
