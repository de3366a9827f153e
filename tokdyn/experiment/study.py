"""The study directory: one output directory per study configuration, stamped before any work,
whose parts cannot be mixed up with another configuration's, lost or read back corrupt.

* :meth:`Study.open` checks the path (:func:`check_output`) and the resources
  (:class:`Estimate`, :func:`check_resources`), compares the configuration with the directory's
  stamp (``study.json``; another configuration is refused with
  :class:`tokdyn.io.OutputConflict` unless ``fresh``), takes the directory's :func:`lock` and
  writes the stamp.
* :meth:`Study.part` and :meth:`Study.rows` keep each finished part in ``parts/``, keyed by the
  stamp and checksummed; :meth:`Study.finish` writes ``config.json``.
* :func:`read_record`, :func:`verify_output`, :func:`read_table` and :func:`read_output_json` read
  a study's files back, refusing one changed after the study wrote it; :func:`source_stamp`
  checks the directory an analysis reads.

Every study uses it through :func:`tokdyn.experiment.runner.run_study`. What each step checks
and refuses: :ref:`study-directory`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

from tokdyn import io
from tokdyn.experiment import rates as R

STAMP = "study.json"  # the stamp of a study directory
RECORD = "config.json"  # what the finished study records: configuration, environment, timings, outputs
LOCK_FILE = ".tokdyn-lock"  # the lock, where the directory itself cannot be locked (never removed)
TABLE_SUFFIXES = (".csv", ".json", ".md", ".txt")  # the files :meth:`Study.finish` records the SHA-256 of
VERIFIED_FOLDERS = ("parts", "corrupt", "checkpoints", "chunks")  # files verified one by one (not recorded)
FIGURE_FOLDER = "plots"
DEEPEST = 100  # room left in a path for the deepest file a study writes under ``out``


class Refused(ValueError):
    """A study refused before any work: an output path it cannot write, or a configuration this
    machine cannot hold (a usage error: the command exits 2)."""


# ---------------------------------------------------------------------------------------------- the output path


def check_output(out) -> str:
    """``out`` as a path a study can write into; :class:`Refused` (a ``ValueError``) naming ``out``
    when it is a file, cannot be created or cannot be written. Creates nothing."""
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise TypeError(f"out must be a directory path, got {out!r}")
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise Refused(f"out={out!r} is a file, not a directory: choose a directory for the study's outputs")
    probe = out
    while not os.path.exists(probe):  # the nearest existing ancestor must let us create the rest
        parent = os.path.dirname(os.path.abspath(probe))
        if parent == os.path.abspath(probe):
            break
        probe = parent
    if not os.path.isdir(probe):
        raise Refused(f"out={out!r} cannot be created: {probe!r} is a file")
    name_max, path_max = _pathconf(probe, "PC_NAME_MAX", 255), _pathconf(probe, "PC_PATH_MAX", 4096)
    full = os.path.abspath(out)
    for part in full.split(os.sep):
        if len(os.fsencode(part)) > name_max:
            raise Refused(
                f"out={_short(out, 80)!r} holds a name of {len(os.fsencode(part))} bytes ({_short(part, 24)!r}), "
                f"more than the {name_max} this file system allows: choose a shorter --out"
            )
    if len(os.fsencode(full)) + DEEPEST > path_max:
        raise Refused(
            f"out={_short(out, 80)!r} is {len(os.fsencode(full))} bytes long: with the {DEEPEST} a study's "
            f"files need under it, more than the {path_max} this file system allows in a path: choose a "
            "shorter --out"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "cannot be written" if probe == out else f"cannot be created ({probe!r} is not writable)"
        raise Refused(f"out={out!r} {what}: choose a directory you can write to")
    if os.path.abspath(probe).startswith(("/proc", "/sys")):
        raise Refused(f"out={out!r} lies in a virtual file system ({probe!r}): choose a directory on a disk")
    return out


def _pathconf(path: str, name: str, fallback: int) -> int:
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError):
        return fallback
    return value if value and value > 0 else fallback


# ---------------------------------------------------------------------------------------------- resources


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
        bad = [k for k in self.work if k not in R.KINDS]
        if bad:
            raise ValueError(f"work: kinds must be among {', '.join(R.KINDS)}, got {bad}")
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

    Raises :class:`Refused` (naming the option, the limit and whose memory it is) when the
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


def time_here(estimate: Estimate, rates: Optional[R.Rates] = None) -> tuple:
    """``(seconds, where)``: how long ``estimate`` (with its ``seconds``) will take on this machine,
    and, in words, at which rates: its ``work`` at ``rates`` (default
    :func:`tokdyn.experiment.rates.for_estimate`, measured on the running backend when the work is
    long, else those measured before or the reference CPU's), or, where it gives no ``work``, its
    ``seconds`` at the reference CPU's rates."""
    if not estimate.work:
        import jax

        return float(estimate.seconds), (
            f"at the rates of {R.REFERENCE_DEVICE}; the estimate does not split its "
            f"work by kind, so it is not scaled to this {jax.default_backend()} backend"
        )
    rates = R.for_estimate(estimate.work) if rates is None else rates
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
    rates = R.current(list(estimate.work), probe=False)
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
    """:class:`Refused` naming ``name`` when an array of ``prod(sizes)`` elements would overflow
    XLA's 32-bit element indexing (a crash of the process, not an error, once compiled)."""
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


# ---------------------------------------------------------------------------------------------- matmul precision


MATMUL_PRECISIONS = ("highest", "high", "default")  # the values of --matmul-precision
DEFAULT_MATMUL_PRECISION = "highest"  # every study's, unless asked otherwise; never written into a stamp
_PRECISION_NAMES = {"float32": "highest", "tensorfloat32": "high", "bfloat16": "default"}  # JAX's aliases


def check_matmul_precision(value) -> str:
    """``value`` as a precision of float32 matrix products a study may run under (one of
    :data:`MATMUL_PRECISIONS`); ``ValueError`` naming ``matmul_precision``, the value and what is
    allowed."""
    if not isinstance(value, str) or value not in MATMUL_PRECISIONS:
        raise ValueError(
            f"matmul_precision (--matmul-precision) must be one of {', '.join(MATMUL_PRECISIONS)}, got {value!r}"
        )
    return value


@contextlib.contextmanager
def matmul_precision(value: str = DEFAULT_MATMUL_PRECISION):
    """Run the block under ``jax.default_matmul_precision(value)``, checked first
    (:func:`check_matmul_precision`): how float32 matrix products without a ``precision`` of their
    own are computed. ``"highest"`` is full float32 everywhere; ``"high"`` and ``"default"`` let an
    NVIDIA GPU use TF32 (or a TPU bfloat16 passes). The CPU backend computes float32 products in
    full float32 whatever the setting. The ``tokdyn`` command runs every study under the one its
    ``--matmul-precision`` names (default ``"highest"``); a study records the precision in force
    (:func:`precision_in_force`) in its stamp and ``config.json`` when it is not the default."""
    value = check_matmul_precision(value)
    import jax

    with jax.default_matmul_precision(value):
        yield value


def precision_in_force() -> str:
    """The precision of float32 matrix products in force, as one of :data:`MATMUL_PRECISIONS`
    (JAX's aliases ``float32``, ``tensorfloat32``, ``bfloat16`` named so; another setting as JAX
    spells it). Where none is set, JAX's default, which is ``"highest"`` on the CPU backend (XLA:CPU
    computes float32 products in full float32) and ``"default"`` on an accelerator."""
    import jax

    value = jax.config.jax_default_matmul_precision
    if value is None:
        return DEFAULT_MATMUL_PRECISION if jax.default_backend() == "cpu" else "default"
    value = str(getattr(value, "name", value)).lower()
    return _PRECISION_NAMES.get(value, value)


# ---------------------------------------------------------------------------------------------- stamps


def version() -> str:
    """The installed tokdyn's version (part of every stamp)."""
    return __import__("tokdyn").__version__


def config_dict(cfg) -> dict:
    """A configuration (a dataclass, or a mapping) as plain JSON values."""
    value = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return json.loads(json.dumps(io.jsonable(value)))


def digest(obj) -> str:
    """A short, stable hash of a JSON-able value (its canonical JSON)."""
    text = json.dumps(io.jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: Mapping, new: Mapping, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(field, old value, new value)`` of every field that differs, nested fields as dotted
    names (``training.steps``); a field one side lacks shows as ``<absent>``."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append((f"{prefix}{k}", a, b))
    return out


def describe(diffs: Sequence[tuple[str, Any, Any]], limit: int = 8) -> str:
    """:func:`differences` as one line of text (the first ``limit`` of them)."""
    shown = [f"{k}: {_short(a)} there, {_short(b)} now" for k, a, b in diffs[:limit]]
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(shown) + more


def _short(v, width: int = 60) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= width else text[: width - 3] + "..."


def read_stamp(out: str) -> Optional[dict]:
    """The stamp of the study directory ``out`` (None when it has none); ``OutputConflict`` when the
    stamp cannot be read, fails its checksum or lacks the study's keys: then the directory is not
    known to be tokdyn's, and nothing in it is trusted, written or removed."""
    path = os.path.join(out, STAMP)
    if not os.path.lexists(path):
        return None
    try:
        if io.not_a_file(path):
            raise io.CorruptFile(path, io.not_a_file(path))
        stamp = json.loads(io.read_verified(path))
    except (io.CorruptFile, ValueError, OSError) as e:
        raise io.OutputConflict(
            f"{path} cannot be read ({e}): {out!r} is not known to be a tokdyn study's directory "
            "and nothing in it can be trusted; choose an empty or new directory"
        ) from None
    if (
        not isinstance(stamp, dict)
        or not {"study", "tokdyn", "config"} <= set(stamp)
        or not isinstance(stamp["config"], dict)
    ):
        raise io.OutputConflict(
            f"{path} is not a study's stamp: {out!r} is not known to be a tokdyn study's "
            "directory; choose an empty or new directory"
        )
    return stamp


def source_stamp(source: str, study: str, expected=None, *, selection: Sequence[str] = (), option: str = "source"):
    """The stamp of the directory ``source`` of the study ``study`` that an analysis reads.

    Args:
      source: the directory the analysis reads.
      study: the name of the study that must have written it.
      expected: optional configuration the analysis expects its source to have; a stamp of
        another configuration (or another tokdyn version) is refused, naming the fields that differ.
      selection: fields of ``expected`` left out of the comparison (they only choose parts).
      option: the option's name used in messages.

    Returns:
      The stamp (a dict). Raises ``OutputConflict`` when ``source`` holds no such study or one of
      another configuration.
    """
    stamp = read_stamp(source)
    if stamp is None:
        raise io.OutputConflict(f"{option}={source!r} holds no {study} study (no {STAMP})")
    if stamp["study"] != study:
        raise io.OutputConflict(f"{option}={source!r} holds the study {stamp['study']!r}, not {study!r}")
    if expected is not None:
        want = {k: v for k, v in config_dict(expected).items() if k not in selection}
        diffs = differences(stamp["config"], want)
        if stamp.get("tokdyn") != version():
            diffs.append(("tokdyn version", stamp.get("tokdyn"), version()))
        if diffs:
            raise io.OutputConflict(
                f"{option}={source!r} was made with another configuration than this study expects "
                f"({describe(diffs)}): choose the source made with these settings, or another "
                f"{option} for this study to fill"
            )
    return stamp


# ---------------------------------------------------------------------------------------------- the lock


_HELD: dict = {}  # (st_dev, st_ino) of a study directory -> this process's lock of it: fd, count, token


def lock(out: str, *, exclusive: bool = False, blocking: bool = True) -> int:
    """Take the lock of the study directory ``out`` (``fcntl.flock`` on the directory itself, or on
    its ``.tokdyn-lock`` where a file system cannot lock a directory): shared, as a running study
    holds it, or ``exclusive``, as ``fresh`` does; ``BlockingIOError`` when not ``blocking`` and
    another open description holds it in a conflicting mode. Returns the descriptor that holds it
    (:func:`unlock` releases it; so does the end of the process)."""
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, mode)
            return fd
        except BlockingIOError:
            raise
        except OSError as e:  # a file system that locks no directory: a lock file inside it
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
                raise
        os.close(fd)
        path = os.path.join(out, LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise Refused(
                f"{path} cannot be opened as the study's lock ({e.strerror}): it is not tokdyn's; move it "
                "away, or choose another --out"
            ) from None
        fcntl.flock(fd, mode)
        return fd
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise


def unlock(fd: int) -> None:
    """Release a lock :func:`lock` took."""
    try:
        os.close(fd)
    except OSError:
        pass


def _dir_id(out: str):
    st = os.stat(out)
    return st.st_dev, st.st_ino


def _register(out: str, fd: int) -> tuple:
    """Keep ``fd`` (a shared lock of ``out``) as this process's; one descriptor per directory,
    counted per study. Returns the token :func:`_release` takes."""
    ident = _dir_id(out)
    held = _HELD.get(ident)
    if held is None:
        held = _HELD[ident] = {"fd": fd, "count": 0, "token": object()}
    elif held["fd"] != fd:
        unlock(fd)  # this process holds the directory's lock already: one descriptor is enough
    held["count"] += 1
    return ident, held["token"]


def _release(ident, token) -> None:
    held = _HELD.get(ident)
    if held is None or held["token"] is not token:
        return
    held["count"] -= 1
    if held["count"] <= 0:
        del _HELD[ident]
        unlock(held["fd"])


def _lock_nested(out: str) -> list:
    """The exclusive locks of the study directories inside ``out`` (whose files ``fresh`` removes
    too); :class:`Refused` naming the first where a study is running."""
    fds = []
    try:
        for rel_root, root, _, files in _walk(out):
            if rel_root and STAMP in files:
                fds.append(_take_exclusive(root))
    except BaseException:
        for fd in fds:
            unlock(fd)
        raise
    return fds


def _take_exclusive(out: str) -> int:
    """``out``'s lock, exclusive, for ``fresh``: this process's own studies there let theirs go;
    :class:`Refused` when another study runs there."""
    held = _HELD.pop(_dir_id(out), None)
    if held is not None:
        unlock(held["fd"])
    try:
        return lock(out, exclusive=True, blocking=False)
    except BlockingIOError:
        raise Refused(
            f"a study is running in out={out!r} (it holds the directory's lock): --fresh would remove "
            "its files under it; wait until it ends, or choose another --out"
        ) from None


# ---------------------------------------------------------------------------------------------- the study directory


class Study:
    """A study's output directory, opened by :meth:`open` (:ref:`study-directory`)."""

    def __init__(self, out: str, stamp: dict, *, quiet: bool = False):
        self.out, self.stamp, self.quiet = out, stamp, quiet
        # what every part is keyed by unless it names a key of its own (the declared outputs aside:
        # they name files, not results)
        self.key = digest({k: v for k, v in stamp.items() if k != "outputs"})
        self._lock = None
        self._foreign: dict = {}

    @property
    def name(self) -> str:
        """The study's name (``study`` of the stamp)."""
        return self.stamp["study"]

    @classmethod
    def open(
        cls,
        out,
        study: str,
        cfg,
        *,
        fresh: bool = False,
        selection: Sequence[str] = (),
        sources: Optional[Mapping[str, dict]] = None,
        estimate: Optional[Estimate] = None,
        quiet: bool = False,
        extra: Optional[Mapping] = None,
        outputs: Sequence[str] = (),
    ) -> "Study":
        """Check, lock, then stamp the output directory ``out`` of ``study`` for ``cfg``.

        What a stamp holds and when a directory is refused: :ref:`study-directory`.

        Args:
          out: the study's output directory (created if absent).
          study: the study's name.
          cfg: its configuration (a frozen dataclass), stamped.
          fresh: remove what another configuration wrote in ``out`` (only files tokdyn wrote) and
            start afresh; refused while a study runs there.
          selection: fields of ``cfg`` that only choose which parts run, left out of the stamp (a
            rerun may add parts).
          sources: name -> the stamp of a directory the study reads (:func:`source_stamp`).
          estimate: optional :class:`Estimate`, checked by :func:`check_resources` first; a long
            run is said even when ``quiet``.
          quiet: say a run's expected time only past :data:`LONG_SECONDS`.
          extra: anything else the results depend on (JSON-able), stamped with the configuration.
          outputs: the files (paths relative to ``out``) the study will write, stamped, so that
            ``fresh`` removes them even when a run died before :meth:`finish`; a file there that
            tokdyn did not write is refused.

        Returns:
          The open :class:`Study`, holding the directory's lock.
        """
        out = check_output(out)
        declared = sorted({relative(p, "outputs") for p in outputs})
        if estimate is not None:  # a long run is said even when quiet
            check_resources(
                study,
                estimate,
                note=lambda s: print(s, file=sys.stderr),
                say_from=LONG_SECONDS if quiet else SAY_SECONDS,
            )
        config = {k: v for k, v in config_dict(cfg).items() if k not in selection}
        stamp = {
            "study": study,
            "tokdyn": version(),
            "config": config,
            "sources": {k: digest(v) for k, v in (sources or {}).items()},
        }
        if extra:
            stamp["extra"] = json.loads(json.dumps(io.jsonable(dict(extra))))
        precision = precision_in_force()
        if precision != DEFAULT_MATMUL_PRECISION:  # absent: the default
            stamp["matmul_precision"] = precision
        if declared:
            stamp["outputs"] = declared
        if os.path.isdir(out):
            _stamped_or_empty(out)  # refused before anything is created in a directory not known to be ours
        os.makedirs(out, exist_ok=True)
        fd = _take_exclusive(out) if fresh else lock(out)
        try:
            old = _stamped_or_empty(out)  # again, under the lock: a --fresh elsewhere may have changed it
            if old is not None and (fresh or _conflicts(old, stamp)):
                if not fresh:
                    raise io.OutputConflict(_conflict_message(out, old, stamp))
                _check_in_the_way(out, declared, owned_outputs(out))
                nested = _lock_nested(out)
                try:
                    clear(out)
                finally:
                    for other in nested:
                        unlock(other)
                old = None
            if old is None and not _stamp_once(out, stamp):  # another process stamped it first: compare
                old = read_stamp(out)
                if _conflicts(old, stamp):
                    raise io.OutputConflict(_conflict_message(out, old, stamp))
            if old is not None:
                _check_in_the_way(out, declared, owned_outputs(out))
                if not set(declared) <= set(old.get("outputs", ())):  # the stamp lists every output declared
                    union = sorted(set(declared) | set(old.get("outputs", ())))
                    io.write_verified(
                        os.path.join(out, STAMP),
                        json.dumps({**old, "outputs": union}, indent=2, sort_keys=True).encode(),
                    )
            if fresh:
                fcntl.flock(fd, fcntl.LOCK_SH)  # the study runs on, like any other, under the shared lock
        except BaseException:
            unlock(fd)
            raise
        self = cls(out, stamp, quiet=quiet)
        self._lock = _register(out, fd)
        self._foreign = _foreign_tables(out, owned_outputs(out))
        return self

    # -------------------------------------------------------------------------- paths and parts

    def path(self, *names: str) -> str:
        """A path inside the study directory (its folders created)."""
        p = os.path.join(self.out, *names)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def part_path(self, name: str, suffix: str = ".npz") -> str:
        """The file of the part ``name`` (``parts/<name><suffix>``)."""
        folder = os.path.join(self.out, "parts")
        if os.path.islink(folder) or (os.path.lexists(folder) and not os.path.isdir(folder)):
            io.set_aside(folder, io.not_a_file(folder) or "a file where the parts' folder belongs")
        return self.path("parts", name + suffix)

    def _part_key(self, key) -> str:
        return self.key if key is None else f"{self.key}:{digest(key)}"

    def part(self, name: str, compute: Callable[[], Mapping[str, Any]], *, key=None) -> dict:
        """``compute()`` (a dict of arrays and numbers), kept as ``parts/<name>.npz``
        (:func:`tokdyn.io.kept`, keyed by the directory's stamp and ``key``)."""
        return io.kept(self.part_path(name), self._part_key(key), compute)

    def rows(self, name: str, compute: Callable[[], Sequence[Mapping[str, Any]]], *, key=None) -> list[dict]:
        """``compute()`` (table rows), kept as ``parts/<name>.json`` (:func:`tokdyn.io.kept_rows`)."""
        return io.kept_rows(self.part_path(name, ".json"), self._part_key(key), compute)

    def has(self, name: str, *, key=None) -> bool:
        """Whether the rows part ``name`` is already kept (and readable) for this stamp. A directory
        or a symbolic link where the part belongs is set aside (:func:`tokdyn.io.set_aside`)."""
        path = self.part_path(name, ".json")
        if os.path.lexists(path) and io.not_a_file(path):
            io.set_aside(path, io.not_a_file(path))
            return False
        if not os.path.exists(path):
            return False
        try:
            return json.loads(io.read_verified(path)).get("stamp") == self._part_key(key)
        except (io.CorruptFile, ValueError, AttributeError):
            return False

    def clear_other_outputs(
        self, cfg, outputs: Sequence[str], figures: Sequence[str] = (), *, keep_figures: bool = True
    ) -> None:
        """Remove an earlier run's outputs unless it recorded this very configuration.

        The directory never shows another selection's results beside this run's. Only files
        tokdyn wrote go (listed by the record or the stamp, or figures it drew); anything else is
        left.

        Args:
          cfg: this run's configuration; nothing goes when the directory's ``config.json`` records
            it (selection fields included).
          outputs: paths (relative to the directory) of the tables, summary and record.
          figures: paths of the figures.
          keep_figures: False: the figures go in any case (they are redrawn, or not drawn).
        """
        same = False
        record = os.path.join(self.out, RECORD)
        if os.path.exists(record):
            try:
                same = io.read_json(record).get("config") == config_dict(cfg)
            except (ValueError, OSError, AttributeError):
                same = False
        owned = owned_outputs(self.out)
        for name in (() if same else tuple(outputs)) + (tuple(figures) if not same or not keep_figures else ()):
            self.remove_output(name, owned=owned)

    def remove_output(self, name: str, *, owned: Optional[set] = None) -> bool:
        """Remove the file ``name`` (relative to the study directory) of an earlier run if tokdyn
        wrote it (listed by the record or the stamp, the record itself, or a figure tokdyn drew);
        a symbolic link or anything else is left as it is. Returns whether it was removed."""
        path = os.path.join(self.out, name)
        owned = owned_outputs(self.out) if owned is None else owned
        if _is_file(path) and (relative(name) in owned or relative(name) == RECORD or _drawn_by_tokdyn(path)):
            os.remove(path)
            return True
        return False

    def finish(self, **record) -> str:
        """Write ``config.json``: the stamp (study, configuration, version, sources), the
        environment, ``record`` (timings, headline numbers), ``"outputs"``: the SHA-256 of every
        table the study wrote (each regular ``.csv``, ``.json``, ``.md`` or ``.txt`` under ``out``
        but the stamp, the record, and what lies in ``parts/``, ``corrupt/``, ``checkpoints/``,
        ``chunks/`` (verified file by file) or ``plots/``; never a file that was there, not
        tokdyn's, when the study opened) and ``"checksum"``, the SHA-256 of the other fields'
        canonical JSON. Releases the directory's lock. Read it back with :func:`read_record`."""
        outputs = {}
        for rel in _tables(self.out):
            path = os.path.join(self.out, rel)
            if rel in self._foreign and self._foreign[rel] == _file_id(path):
                continue  # a file of someone else's, there before the study, untouched by it
            outputs[rel] = io.file_sha256(path)
        stamp = {k: v for k, v in self.stamp.items() if k != "outputs"}
        try:
            return io.write_checked_json(
                os.path.join(self.out, RECORD), {**stamp, **record, "environment": io.environment(), "outputs": outputs}
            )
        finally:
            if self._lock is not None:
                _release(*self._lock)
                self._lock = None


# ---------------------------------------------------------------------------------------------- reading a study's files


def read_record(out: str) -> dict:
    """The verified ``config.json`` of the study directory ``out`` (without its checksum):
    :class:`tokdyn.io.CorruptFile` naming the file when it lacks its checksum or the checksum
    differs; ``FileNotFoundError`` when absent."""
    return io.read_checked_json(os.path.join(os.fspath(out), RECORD))


def _verified_bytes(out: str, name: str) -> tuple[str, bytes]:
    rel = relative(name, "name")
    path = os.path.join(os.fspath(out), rel)
    if not os.path.lexists(path):
        raise FileNotFoundError(errno.ENOENT, f"{path}: no such output of the study in {out!r}", path)
    record = read_record(out)
    listed = record.get("outputs")
    if not isinstance(listed, dict) or rel not in listed:
        raise io.CorruptFile(
            path,
            f"{os.path.join(os.fspath(out), RECORD)} does not list it among the study's "
            "outputs: not a file the study wrote",
        )
    problem = io.not_a_file(path)
    if problem:
        raise io.CorruptFile(path, problem)
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != listed[rel]:
        raise io.CorruptFile(
            path, f"its SHA-256 differs from the one {RECORD} records: it was changed after the study wrote it"
        )
    return path, data


def verify_output(out: str, name: str) -> str:
    """The path of the output ``name`` (relative to the study directory ``out``) after checking
    its SHA-256 against the record (:func:`read_record`): :class:`tokdyn.io.CorruptFile` naming
    the file when it differs or the record does not list it; ``FileNotFoundError`` when absent."""
    return _verified_bytes(out, name)[0]


def read_table(out: str, name: str) -> dict:
    """The columns of the CSV output ``name`` of the study directory ``out``
    (:func:`tokdyn.io.read_csv`), verified first (:func:`verify_output`)."""
    return io.parse_csv(_verified_bytes(out, name)[1].decode())


def read_output_json(out: str, name: str):
    """The JSON value of the output ``name`` of the study directory ``out``, verified first
    (:func:`verify_output`)."""
    path, data = _verified_bytes(out, name)
    try:
        return json.loads(data)
    except ValueError as e:
        raise io.CorruptFile(path, f"not JSON: {e}") from None


def relative(name, what: str = "name") -> str:
    """``name`` as a normalised path inside a study directory (``/`` separated); ``ValueError``
    naming ``what`` for an absolute path or one that leaves the directory."""
    text = os.fspath(name)
    norm = os.path.normpath(text).replace(os.sep, "/")
    if not text or os.path.isabs(text) or norm == "." or norm == ".." or norm.startswith("../"):
        raise ValueError(f"{what}: {text!r} is not a path inside the study directory")
    return norm


# ---------------------------------------------------------------------------------------------- what is tokdyn's


_TEMPORARY = re.compile(r"\.([0-9a-f]{12}|\d+\.[0-9a-f]{8})\.tmp$")  # atomic_write's and _stamp_once's


def _is_file(path: str) -> bool:
    """A regular file (a symbolic link is not: tokdyn never writes one)."""
    return not os.path.islink(path) and os.path.isfile(path)


def _file_id(path: str):
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _drawn_by_tokdyn(path: str) -> bool:
    from tokdyn.stats import figures

    return _is_file(path) and figures.drawn_by_tokdyn(path)


def _is_verified(path: str) -> bool:
    try:
        return _is_file(path) and io.is_verified(path)
    except OSError:
        return False


def owned_outputs(out: str) -> set:
    """The outputs of the study directory ``out`` that tokdyn wrote by name: those its stamp
    declares and those its record lists (when the record verifies)."""
    owned = set()
    try:
        stamp = read_stamp(out) or {}
    except io.OutputConflict:
        stamp = {}
    for rel in stamp.get("outputs", ()) if isinstance(stamp.get("outputs"), list) else ():
        try:
            owned.add(relative(rel))
        except (TypeError, ValueError):
            pass
    try:
        listed = read_record(out).get("outputs", {})
    except (OSError, ValueError):
        listed = {}
    for rel in listed if isinstance(listed, dict) else ():
        try:
            owned.add(relative(rel))
        except (TypeError, ValueError):
            pass
    return owned


def _check_in_the_way(out: str, declared: Sequence[str], owned: set) -> None:
    """:class:`Refused` naming the first entry where the study will write one of its ``declared``
    outputs (or its record) that tokdyn did not write."""
    for rel in (*declared, RECORD):
        path = os.path.join(out, rel)
        if not os.path.lexists(path):
            continue
        if rel == RECORD and _is_file(path):
            continue
        if io.not_a_file(path) or rel not in owned:
            raise Refused(
                f"{path} is in the way of the study's output {rel!r}: "
                f"{io.not_a_file(path) or 'a file tokdyn did not write'}, left as it is; move it away, or "
                "choose another --out"
            )


def _walk(out: str):
    """``(folder relative to out, folder path, subfolder names, file names)`` under ``out``, never
    following a symbolic link; the caller may prune the subfolder names."""
    for root, dirs, files in os.walk(out, followlinks=False):
        rel = os.path.relpath(root, out).replace(os.sep, "/")
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [d for d in dirs if d not in links]
        yield ("" if rel == "." else rel), root, dirs, files + links


def _tables(out: str) -> list[str]:
    """The tables under ``out`` that :meth:`Study.finish` records (relative paths)."""
    found = []
    for rel_root, root, dirs, files in _walk(out):
        dirs[:] = [d for d in dirs if d not in VERIFIED_FOLDERS and d != FIGURE_FOLDER]
        for name in files:
            rel = f"{rel_root}/{name}" if rel_root else name
            if rel in (STAMP, RECORD) or not name.endswith(TABLE_SUFFIXES):
                continue
            if _is_file(os.path.join(root, name)):
                found.append(rel)
    return sorted(found)


def _foreign_tables(out: str, owned: set) -> dict:
    """Tables in ``out`` that tokdyn did not write (not listed by stamp or record), with their
    file identity: :meth:`Study.finish` leaves them out of the record unless the study replaced them."""
    return {rel: _file_id(os.path.join(out, rel)) for rel in _tables(out) if rel not in owned}


def _stamp_once(out: str, stamp: dict) -> bool:
    """Write ``out``'s stamp unless it has one: a complete file under a temporary name, then a
    hard link to the final name, which fails if another process linked its stamp first (several
    processes of one sweep may open a new directory at once). True when this process wrote it."""
    path = os.path.join(out, STAMP)
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    data = json.dumps(stamp, indent=2, sort_keys=True).encode()
    try:
        io.write_verified(tmp, data)
    except io.DiskFull as e:  # named by the file it was for
        raise io.DiskFull(path, e.needed, e.free, e.errno) from None
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)


def _has_files(out: str) -> bool:
    """Whether ``out`` holds anything but the temporaries of writes cut short (or under way) and
    the lock."""
    return any(not io.is_temporary(e.name) and e.name != LOCK_FILE for e in os.scandir(out))


def check_directory(out: str) -> None:
    """:class:`tokdyn.io.OutputConflict` when ``out`` is a directory that is not known to be a
    study's (it holds files and no verified stamp): such a directory is never written into nor
    cleared. :meth:`Study.open` checks this first; the study runner checks it before a study
    touches anything else (a source it reads, say)."""
    if os.path.isdir(out):
        _stamped_or_empty(out)


def _stamped_or_empty(out: str) -> Optional[dict]:
    """The stamp of ``out`` (None for an empty directory); ``OutputConflict`` for a directory not
    known to be a study's: a stamp that cannot be verified, or files and no stamp. Such a directory
    is never written into nor cleared, with ``fresh`` or without."""
    old = read_stamp(out)
    if old is None and _has_files(out):
        loose = sorted(e for e in os.listdir(out) if e != LOCK_FILE and not io.is_temporary(e))
        raise io.OutputConflict(
            f"out={out!r} holds files that no tokdyn study stamped ({', '.join(loose[:5])}"
            f"{', ...' if len(loose) > 5 else ''}): they are left as they are; choose an empty or new directory"
        )
    return old


def _conflicts(old: dict, new: dict) -> bool:
    return any(old.get(k) != new.get(k) for k in ("study", "tokdyn", "config", "sources", "extra")) or old.get(
        "matmul_precision", DEFAULT_MATMUL_PRECISION
    ) != new.get("matmul_precision", DEFAULT_MATMUL_PRECISION)


def _conflict_message(out: str, old: dict, new: dict) -> str:
    if old.get("study") != new["study"]:
        return (
            f"out={out!r} holds the {old.get('study')!r} study, not {new['study']!r}: choose another directory "
            f"(--fresh would remove the {old.get('study')} results)"
        )
    diffs = differences(old.get("config", {}), new["config"])
    if old.get("tokdyn") != new["tokdyn"]:
        diffs.append(("tokdyn version", old.get("tokdyn"), new["tokdyn"]))
    for k, a in sorted(old.get("sources", {}).items()):
        b = new["sources"].get(k)
        if a != b:
            diffs.append((f"source {k}", f"stamp {a}", f"stamp {b}" if b else "<absent>"))
    for k in sorted(set(new["sources"]) - set(old.get("sources", {}))):
        diffs.append((f"source {k}", "<absent>", f"stamp {new['sources'][k]}"))
    diffs += differences(old.get("extra", {}), new.get("extra", {}), "extra.")
    precisions = [d.get("matmul_precision", DEFAULT_MATMUL_PRECISION) for d in (old, new)]
    if precisions[0] != precisions[1]:
        diffs.append(("matmul_precision", *precisions))
    return (
        f"out={out!r} holds a {new['study']} study of another configuration ({describe(diffs)}): rerun with "
        "those settings to resume it, choose another --out, or pass --fresh to remove its results and start "
        "afresh"
    )


KNOWN_FOLDERS = (*VERIFIED_FOLDERS, FIGURE_FOLDER)  # folders tokdyn makes: removed by clear() once empty


def clear(out: str) -> list[str]:
    """Remove what tokdyn wrote in the study directory ``out``, and nothing else: the record,
    the outputs the stamp declares and the record lists, files that carry tokdyn's verification
    header (parts, chunks, checkpoints), the temporaries of its writes, what it set aside in
    ``corrupt/`` folders (files and links; a directory set aside is left), the figures it drew;
    then the folders this emptied, and the stamp last (a cut-off clear leaves a directory still
    recognised as the old study's). A directory without a verified stamp is refused
    (``OutputConflict``). Never follows a symbolic link; never removes a folder that holds
    anything. Returns the paths removed. Call it under the directory's exclusive lock
    (:meth:`Study.open` with ``fresh`` does)."""
    if read_stamp(out) is None:
        _stamped_or_empty(out)
        return []
    owned = owned_outputs(out)
    for rel_root, root, _, files in _walk(out):  # a study directory inside this one (reproduce's): its outputs too
        if rel_root and STAMP in files:
            owned |= {f"{rel_root}/{rel}" for rel in owned_outputs(root) | {RECORD}}
    removed, touched = [], set()

    def remove(path):
        os.remove(path)
        removed.append(path)
        touched.add(os.path.dirname(path))

    for rel in sorted(owned | {RECORD}):
        path = os.path.join(out, rel)
        if _is_file(path):
            remove(path)
    for rel_root, root, dirs, files in _walk(out):
        in_corrupt = os.path.basename(root) == "corrupt" and rel_root != ""
        if in_corrupt:
            dirs[:] = []  # a directory set aside is someone else's: never entered
        for name in files:
            path = os.path.join(root, name)
            if rel_root == "" and name == STAMP:
                continue
            if (
                (in_corrupt and (os.path.islink(path) or _is_file(path)))
                or (_TEMPORARY.search(name) and _is_file(path))
                or _is_verified(path)
                or _drawn_by_tokdyn(path)
            ):
                remove(path)
    for root, _dirs, _files in os.walk(out, topdown=False, followlinks=False):
        if os.path.samefile(root, out) or os.path.islink(root):
            continue
        if (root in touched or os.path.basename(root) in KNOWN_FOLDERS) and not os.listdir(root):
            os.rmdir(root)
            touched.add(os.path.dirname(root))
    stamp = os.path.join(out, STAMP)
    if _is_file(stamp):
        remove(stamp)
    return removed
