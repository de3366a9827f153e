"""How fast the running backend does tokdyn's kinds of work, measured by short probes, for the
studies' time estimates.

A study's ``Config.estimate()`` counts its work in seconds of the **reference CPU**
(:data:`REFERENCE_DEVICE`), split by kind (:data:`KINDS`: ``"dynamics"``, ``"training"``,
``"host"``). A short probe of each kind (:data:`PROBES`), over its rate on the reference CPU
(:data:`REFERENCE_RATES`), gives this machine's speed, and the time here is
``sum(work[k] / speed(k))`` (:meth:`Rates.seconds`). Rates are measured once per process and
backend and kept on disk (:func:`cache_file`); ``TOKDYN_PROBE`` (:data:`ENV`) is ``disk`` (the
default), ``process`` or ``off``::

    from tokdyn.experiment import rates
    r = rates.current()                # measured, or read back: Rates(rates={...}, backend="cpu", ...)
    r.speed("dynamics")                # this machine's speed against the reference CPU's
    r.seconds({"dynamics": 120.0, "host": 10.0})   # seconds here of 2 min of runs + 10 s of host work

What each probe measures, and how far to trust an estimate: :ref:`the-estimate`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from typing import Callable, Mapping, Optional, Sequence

from tokdyn.io import metadata


KINDS = ("dynamics", "training", "host")  # the kinds of work, each measured by its probe
UNITS = {"dynamics": "runs a second", "training": "FLOP a second", "host": "compiles a second"}
# The probes' rates on the reference CPU, the machine the studies' constants were fitted on (2 x86_64
# cores shared with other work, the tokdyn command's setup: one host device per core): the medians of
# 15 measurements, 2026-11-26, at load averages 6-8 (interquartile ranges 5,500-6,700 runs/s,
# 3.1e10-4.2e10 FLOP/s, 0.71-0.89 compiles/s; benchmarks/README.md).
REFERENCE_RATES = {"dynamics": 6300.0, "training": 3.4e10, "host": 0.85}
REFERENCE_DEVICE = "the reference CPU (2 x86_64 cores)"
PROBE_MIN_SECONDS = 120.0  # an estimate under this many seconds on the reference CPU never runs a probe
MIN_SECONDS = {"cpu": 0.5, "accelerator": 0.3}  # each probe's timed calls last at least this long
MAX_AGE_DAYS = 30.0  # rates kept on disk longer than this are measured again
ENV = "TOKDYN_PROBE"
MODES = ("disk", "process", "off")
VERSION = 1  # of the probes: rates measured by another version are not read back


@dataclasses.dataclass(frozen=True)
class Rates:
    """How fast one backend does each kind of work.

    Attributes:
      rates: kind -> the probe's rate (:data:`UNITS`), for the kinds of :data:`KINDS` measured or
        read back; a kind absent runs at the reference CPU's speed.
      backend: the JAX backend the rates are of (``"cpu"``, ``"gpu"``, ``"tpu"``).
      device: the machine, in words (``"1 NVIDIA H100 80GB HBM3"``, ``"2 host devices on 2 cores"``).
      sources: kind -> ``"measured"`` (by a probe in this process), ``"cached"`` (read back from
        :func:`cache_file`), ``"reference"`` (:data:`REFERENCE_RATES`: not measured) or
        ``"failed"`` (its probe failed in this process: the reference's rate).
      probe_seconds: wall time the probes of this process took, compiles included (0 when none ran).
    """

    rates: Mapping[str, float]
    backend: str
    device: str
    sources: Mapping[str, str]
    probe_seconds: float = 0.0

    def speed(self, kind: str) -> float:
        """This machine's speed at ``kind`` of work against the reference CPU's: the probe's rate
        over :data:`REFERENCE_RATES` (1 for a kind not measured)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        rate = self.rates.get(kind)
        return 1.0 if rate is None else float(rate) / REFERENCE_RATES[kind]

    def seconds(self, work: Mapping[str, float]) -> float:
        """Seconds here of ``work`` (kind -> seconds on the reference CPU): ``sum(work[k] /
        speed(k))``."""
        return float(sum(float(s) / self.speed(k) for k, s in work.items()))

    def words(self, kinds: Optional[Sequence[str]] = None) -> str:
        """Where the rates of ``kinds`` (default: every kind it holds) come from, for a message:
        ``"at the rates measured on this gpu backend (1 NVIDIA H100 80GB HBM3; dynamics 95x,
        training 310x the reference CPU's; probed in 4.1 s)"``."""
        kinds = list(self.sources if kinds is None else kinds)
        ours = [k for k in kinds if self.sources.get(k, "reference") in ("measured", "cached")]
        if not ours:
            reason = (
                f"{ENV}=off"
                if mode() == "off"
                else "its probe failed"
                if any(self.sources.get(k) == "failed" for k in kinds)
                else "not measured for a run this short"
            )
            return f"at the rates of {REFERENCE_DEVICE}, not this {self.backend} backend's ({self.device}; {reason})"
        speeds = ", ".join(f"{k} {_times(self.speed(k))}" for k in ours)
        when = (
            f"probed in {self.probe_seconds:.1f} s"
            if any(self.sources[k] == "measured" for k in ours)
            else f"measured before, kept in {cache_file()}"
        )
        rest = [k for k in kinds if k not in ours]
        also = f"; {', '.join(rest)} at the reference CPU's rates" if rest else ""
        return (
            f"at the rates measured on this {self.backend} backend ({self.device}; {speeds} the reference "
            f"CPU's; {when}{also})"
        )


def _times(x: float) -> str:
    return f"{x:.2g}x" if x < 10 else f"{x:.0f}x"


# ---------------------------------------------------------------------------------------------- the probes


def _accelerator() -> bool:
    import jax

    return jax.default_backend() != "cpu"


def _timed(call: Callable[[int], float], min_seconds: float, windows: int = 3) -> float:
    """Units a second of ``call(i)`` (which does its work, waits for it and returns its units):
    one call compiles, one warms, then ``windows`` windows of calls, each at least
    ``min_seconds / windows`` long (and one call), are timed; the median window's rate (a burst
    of other work on a shared machine moves one window, not the rate)."""
    call(0)
    call(1)
    i, out = 2, []
    for _ in range(windows):
        units, t0 = 0.0, time.perf_counter()
        while True:
            units += call(i)
            i += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds / windows:
                break
        out.append(units / elapsed)
    return float(sorted(out)[len(out) // 2])


DYNAMICS_CHUNK = 128  # runs per device and chunk on a CPU (an accelerator's: the smallest a study uses)
DYNAMICS_CHUNKS = 4  # chunks a call: the sweep's fixed cost a call (its code digest, tracing) shared as in a study


def probe_dynamics(min_seconds: float) -> float:
    """Runs a second of :class:`tokdyn.engine.runs.ClusterRun` at its defaults (the built-in rule,
    and on a GPU its fused kernel, as the studies run it) through :func:`tokdyn.engine.sweep.run`:
    3 cluster counts x 3 noise levels x seeds under common random numbers, :data:`DYNAMICS_CHUNKS`
    chunks a call, of :data:`DYNAMICS_CHUNK` runs per device on a CPU (a hundred or so: its
    sequential map's rate does not grow with the chunk; on an accelerator the smallest chunk a
    study uses, :data:`tokdyn.engine.execute.ACCELERATOR_CHUNK`, whose width sets its rate)."""
    import jax
    import numpy as np

    from tokdyn.engine import execute, sweep
    from tokdyn.engine.runs import ClusterRun

    per_device = execute.ACCELERATOR_CHUNK[0] if _accelerator() else DYNAMICS_CHUNK
    chunk = per_device * jax.local_device_count()
    grid = sweep.Grid(
        n_clusters=np.array([3, 4, 5]),
        noise=np.array([0.3, 0.6, 0.9], np.float32),
        seeds=max(1, DYNAMICS_CHUNKS * chunk // 9),
        seed_major=True,
    )
    fn = ClusterRun()

    def call(i):
        sweep.run(
            fn, grid, key=jax.random.key(i), chunk_size=chunk, progress=False, common_random_numbers=True, part=(0, 1)
        )  # NumPy results: the work is done
        return float(len(grid))

    return _timed(call, min_seconds)


TRAINING_SHAPE = dict(length=64, width=64)  # the probe's sequence: 64 tokens of width 64
TRAINING_BATCH = {"cpu": 8, "accelerator": 512}  # sequences a step


def training_flops(batch: int, length: int, width: int) -> float:
    """FLOP of one training step of the probe's transformer block (forward, and backward at twice
    the forward's): the projections and the MLP (12 W^2 a token), the attention's two products
    (2 L W a token), times 2 a multiply-add, times 3."""
    return 3.0 * 2.0 * batch * length * (12 * width * width + 2 * length * width)


def _training_program(batch: int):
    """``(step, args)``: the training probe's step (loss, gradient, Adam update of one pre-norm
    transformer block, new function objects each call, not yet compiled) and its arguments,
    drawn on the host (no eager JAX operation, each of which would compile)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    L, W = TRAINING_SHAPE["length"], TRAINING_SHAPE["width"]
    rng = np.random.default_rng(0)
    shapes = dict(wq=(W, W), wk=(W, W), wv=(W, W), wo=(W, W), w1=(W, 4 * W), w2=(4 * W, W))
    params = {n: jnp.asarray(rng.standard_normal(s, np.float32) / math.sqrt(s[0])) for n, s in shapes.items()}
    x, y = (jnp.asarray(rng.standard_normal((batch, L, W), np.float32)) for _ in range(2))
    opt = optax.adam(1e-3)

    def loss(p, x, y):
        h = x - x.mean(-1, keepdims=True)
        a = jax.nn.softmax((h @ p["wq"]) @ jnp.swapaxes(h @ p["wk"], -1, -2) / math.sqrt(W), axis=-1)  # (B, L, L)
        x = x + (a @ (h @ p["wv"])) @ p["wo"]
        x = x + jax.nn.gelu((x - x.mean(-1, keepdims=True)) @ p["w1"]) @ p["w2"]
        return jnp.mean((x - y) ** 2)

    def step(p, s, x, y):
        value, g = jax.value_and_grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, value

    state = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(opt.init, params))  # Adam's
    return step, (params, state, x, y)


_COMPILED: dict = {}  # key of identity() -> (the training probe's compiled step, its arguments, compile seconds)


def _compiled_training():
    """The training probe's step compiled for the running backend, its arguments and the seconds
    its compile took (tracing, lowering and XLA's compile, with JAX's persistent compilation
    cache off and a new function, so nothing is read back; after a warm-up compile of a trivial
    program, JAX's one-time setup): compiled once per process and backend, for both
    :func:`probe_training` and :func:`probe_host`."""
    import jax
    import jax.numpy as jnp

    key = _key(identity())
    if key not in _COMPILED:
        jax.jit(lambda v: v + 1).lower(jnp.zeros(())).compile()
        step, args = _training_program(TRAINING_BATCH["accelerator" if _accelerator() else "cpu"])
        cached = jax.config.jax_enable_compilation_cache
        try:
            jax.config.update("jax_enable_compilation_cache", False)
            t0 = time.perf_counter()
            compiled = jax.jit(step).lower(*args).compile()
            _COMPILED[key] = (compiled, args, time.perf_counter() - t0)
        finally:
            jax.config.update("jax_enable_compilation_cache", cached)
    return _COMPILED[key]


def probe_training(min_seconds: float) -> float:
    """FLOP a second of a training step (loss, gradient, Adam update, one compiled call) of one
    pre-norm transformer block (single-head attention and a 4x MLP) on :data:`TRAINING_SHAPE`
    sequences, :data:`TRAINING_BATCH` a step, float32 under the matmul precision in force; FLOP
    counted by :func:`training_flops`."""
    import jax

    step, (params, opt_state, x, y), _ = _compiled_training()
    batch = x.shape[0]
    state = [params, opt_state]
    flops = training_flops(batch, TRAINING_SHAPE["length"], TRAINING_SHAPE["width"])

    def call(i):
        p, s, value = step(state[0], state[1], x, y)
        jax.block_until_ready(value)
        state[:] = [p, s]
        return flops

    return _timed(call, min_seconds)


def probe_host(min_seconds: float) -> float:
    """Compiles a second of the training probe's step for the running backend (one compile with
    the caches off, shared with :func:`probe_training`): the host's speed at what every study
    does besides its device work (compiling, and the Python around it). ``min_seconds`` is not
    used: one compile is the measurement."""
    return 1.0 / _compiled_training()[2]


PROBES: Mapping[str, Callable[[float], float]] = {
    "dynamics": probe_dynamics,
    "training": probe_training,
    "host": probe_host,
}


# ---------------------------------------------------------------------------------------------- measuring, keeping


def mode() -> str:
    """``TOKDYN_PROBE`` (:data:`ENV`): ``"disk"`` (unset), ``"process"`` or ``"off"``;
    ``ValueError`` naming the variable for another value."""
    value = os.environ.get(ENV, "").strip().lower() or "disk"
    if value not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}, got {os.environ.get(ENV)!r}")
    return value


def cache_file() -> str:
    """Where measured rates are kept: ``$XDG_CACHE_HOME/tokdyn/rates.json`` (default
    ``~/.cache/tokdyn/rates.json``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tokdyn", "rates.json")


def identity() -> dict:
    """What the rates of this process depend on: the backend, its devices, the host's cores, the
    JAX, jaxlib and tokdyn versions, ``XLA_FLAGS``, the matmul precision in force and the probes'
    :data:`VERSION` (the key of :func:`cache_file`'s entries)."""
    import jax
    import jaxlib

    import tokdyn

    devices = jax.local_devices()
    cores = metadata.usable_cores()
    precision = jax.config.jax_default_matmul_precision
    return dict(
        backend=jax.default_backend(),
        device_kind=str(getattr(devices[0], "device_kind", "")),
        devices=len(devices),
        cores=cores,
        jax=jax.__version__,
        jaxlib=jaxlib.__version__,
        tokdyn=tokdyn.__version__,
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        precision=str(getattr(precision, "name", precision)),
        probes=VERSION,
    )


def _device_words(ident: dict) -> str:
    if ident["backend"] == "cpu":
        n = ident["devices"]
        return f"{n} host device{'s' if n > 1 else ''} on {ident['cores']} cores"
    return f"{ident['devices']} {ident['device_kind'] or ident['backend']}"


def _key(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


_MEMORY: dict = {}  # key of identity() -> {kind: (rate, source)}, this process's
_PROBE_SECONDS: dict = {}  # key -> seconds the probes of this process took
_FAILED: dict = {}  # key -> kinds whose probe failed in this process (not tried again)


def _read_disk() -> dict:
    try:
        with open(cache_file()) as f:
            entries = json.load(f)
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_disk(key: str, ident: dict, measured: Mapping[str, float]) -> None:
    from tokdyn import io

    entries = _read_disk()
    entry = entries.get(key) if isinstance(entries.get(key), dict) else {}
    rates = dict(entry.get("rates", {})) if isinstance(entry.get("rates"), dict) else {}
    stamps = dict(entry.get("measured_at", {})) if isinstance(entry.get("measured_at"), dict) else {}
    now = time.time()
    for k, v in measured.items():
        rates[k], stamps[k] = float(v), now
    entries[key] = dict(identity=ident, rates=rates, measured_at=stamps, units={k: UNITS[k] for k in rates})
    try:
        io.write_json(cache_file(), entries)
    except OSError:
        pass  # a cache that cannot be written is measured again next time


def _from_disk(key: str, kinds: Sequence[str]) -> dict:
    entry = _read_disk().get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("rates"), dict):
        return {}
    stamps = entry.get("measured_at") if isinstance(entry.get("measured_at"), dict) else {}
    out = {}
    for k in kinds:
        v, t = entry["rates"].get(k), stamps.get(k)
        if (
            isinstance(v, (int, float))
            and isinstance(t, (int, float))
            and math.isfinite(v)
            and v > 0
            and 0 <= time.time() - t < MAX_AGE_DAYS * 86400
        ):
            out[k] = float(v)
    return out


def _check_kinds(kinds) -> tuple:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"kinds must be among {', '.join(KINDS)}, got {bad}")
    return kinds


def measure(kinds: Sequence[str] = KINDS, *, min_seconds: Optional[float] = None) -> Rates:
    """Run the probes of ``kinds`` (:data:`PROBES`) now, on the default backend, each timed for
    at least ``min_seconds`` after its compiled, warmed call (default :data:`MIN_SECONDS` of the
    backend); no cache is read or written. A probe whose rate is not a positive finite number
    raises ``RuntimeError`` naming it."""
    kinds = _check_kinds(kinds)
    ident = identity()
    if min_seconds is None:
        min_seconds = MIN_SECONDS["cpu" if ident["backend"] == "cpu" else "accelerator"]
    t0 = time.perf_counter()
    out = {}
    for k in kinds:
        rate = float(PROBES[k](float(min_seconds)))
        if not (math.isfinite(rate) and rate > 0):
            raise RuntimeError(f"the {k} probe measured {rate!r} {UNITS[k]}, not a positive finite rate")
        out[k] = rate
    return Rates(out, ident["backend"], _device_words(ident), {k: "measured" for k in out}, time.perf_counter() - t0)


def current(kinds: Sequence[str] = KINDS, *, probe: bool = True) -> Rates:
    """The rates of ``kinds`` on the running backend: those this process measured, else those kept
    on disk (:func:`cache_file`, unless :func:`mode` is ``"process"``), else, when ``probe``,
    measured now by :func:`measure` (and kept), else the reference CPU's (``sources``
    ``"reference"``). Under ``TOKDYN_PROBE=off`` always the reference CPU's. A probe that fails
    is said in a ``RuntimeWarning`` and not tried again in this process: its kind keeps the
    reference CPU's rate (an estimate never stops a run)."""
    kinds = _check_kinds(kinds)
    how = mode()
    ident = identity()
    key = _key(ident)
    known = _MEMORY.setdefault(key, {})
    if how != "off":
        missing = [k for k in kinds if k not in known]
        if missing and how == "disk":
            for k, v in _from_disk(key, missing).items():
                known[k] = (v, "cached")
            missing = [k for k in kinds if k not in known]
        failed = _FAILED.setdefault(key, set())
        missing = [k for k in missing if k not in failed]
        for k in missing if probe else ():
            try:
                fresh = measure([k])
            except Exception as e:  # an estimate never stops a run: said, then the reference's rate
                failed.add(k)
                warnings.warn(
                    f"the time estimate's probe of {k} failed ({type(e).__name__}: {e}); the estimate "
                    f"uses the rate of {REFERENCE_DEVICE}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            _PROBE_SECONDS[key] = _PROBE_SECONDS.get(key, 0.0) + fresh.probe_seconds
            known[k] = (fresh.rates[k], "measured")
            if how == "disk":
                _write_disk(key, ident, fresh.rates)
    rates = {k: known[k][0] for k in kinds if how != "off" and k in known}
    failed = _FAILED.get(key, set())
    sources = {k: (known[k][1] if k in rates else "failed" if k in failed else "reference") for k in kinds}
    return Rates(rates, ident["backend"], _device_words(ident), sources, _PROBE_SECONDS.get(key, 0.0))


def for_estimate(work: Mapping[str, float]) -> Rates:
    """The rates to time ``work`` (kind -> seconds on the reference CPU) with: :func:`current` of
    its kinds, measured only when the work adds up to at least :data:`PROBE_MIN_SECONDS` (a
    shorter run never waits for a probe: rates measured before are used, else the reference's)."""
    kinds = list(work)
    return current(kinds, probe=sum(float(s) for s in work.values()) >= PROBE_MIN_SECONDS)


def forget() -> None:
    """Forget the rates this process measured or read, and the probes' compiled program (the disk
    cache is left as it is)."""
    _MEMORY.clear()
    _PROBE_SECONDS.clear()
    _FAILED.clear()
    _COMPILED.clear()
