"""Counts of what the host does while a learned model trains, for the tests and the counts table:
bytes moved from the device to the host (:class:`HostFetches`), backend compiles
(:class:`Compiles`) and the per-call bytes of one ``train_many`` (:func:`host_bytes`).

Bytes to the host are counted where a fetch happens in JAX: ``jax.Array._value`` (the property
behind ``np.asarray``, ``float``, ``tolist``, ``jax.device_get`` of an array that is not one host
buffer: the path every fetch from a GPU takes) and, for arrays of one shard on the CPU (which NumPy
reads through the buffer protocol, bypassing ``_value``), ``np.asarray``/``np.array``/
``np.asanyarray``. Each array is counted once, at its first fetch (a GPU copies it once and
keeps the host copy). Run with two or more host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``) and ``train_many`` lays its models over
them, so every array it reads back has two shards and goes through ``_value``: then nothing is
missed, whatever NumPy function reads it."""

from __future__ import annotations

import numpy as np


class HostFetches:
    """Context manager counting device-to-host fetches: ``.bytes`` (sum of ``nbytes``), ``.arrays``
    (how many distinct arrays), ``.sizes`` (each one's nbytes, in order)."""

    def __init__(self):
        self.bytes, self.arrays, self.sizes = 0, 0, []
        self._seen = {}  # id -> array (held, so that an id is never reused within the count)

    def _count(self, a):
        if id(a) in self._seen:
            return
        self._seen[id(a)] = a
        self.bytes += int(a.nbytes)
        self.arrays += 1
        self.sizes.append(int(a.nbytes))

    def __enter__(self):
        import jax

        self._type = type(jax.numpy.zeros(()))
        self._prop = self._type.__dict__["_value"]
        prop, count = self._prop, self._count

        def value(a):
            if a._npy_value is None:
                count(a)
            return prop.fget(a)

        self._type._value = property(value)
        self._np = {n: getattr(np, n) for n in ("asarray", "array", "asanyarray")}
        for n, f in self._np.items():
            setattr(np, n, self._wrap(f))
        return self

    def _wrap(self, f):
        arrays, count = self._type, self._count

        def wrapped(a, *args, **kwargs):
            if isinstance(a, arrays) and len(a.sharding.device_set) == 1:
                count(a)  # one shard: NumPy reads it through the buffer protocol, not _value
            return f(a, *args, **kwargs)

        return wrapped

    def __exit__(self, *exc):
        self._type._value = self._prop
        for n, f in self._np.items():
            setattr(np, n, f)
        self._seen.clear()
        return False


_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_LISTENING = []


class Compiles:
    """Context manager counting backend compiles (``jax.monitoring``'s ``backend_compile_duration``
    events: one per program for which JAX asks the backend for an executable, compiled or loaded
    from the persistent compilation cache): ``.count``, ``.seconds`` and ``.names`` (each
    program's function name, in order)."""

    def __init__(self):
        self.count, self.seconds, self.names = 0, 0.0, []

    def __enter__(self):
        import jax

        if not _LISTENING:

            def on_event(event, duration, **kwargs):
                if event == _COMPILE_EVENT:
                    for c in _LISTENING[1:]:
                        c.count += 1
                        c.seconds += duration
                        c.names.append(str(kwargs.get("fun_name", "?")))

            jax.monitoring.register_event_duration_secs_listener(on_event)
            _LISTENING.append(on_event)
        _LISTENING.append(self)
        return self

    def __exit__(self, *exc):
        _LISTENING.remove(self)
        return False


def calibrate(k: int = 5) -> dict:
    """A known case: a jitted function whose output (1,000 float32: 4,000 bytes) is fetched from k
    calls, each read twice (``np.asarray``, then ``tolist``: the second must not count again), and
    a scalar summed on the device read by ``float`` (4 bytes); with two or more devices, the same
    function on an input sharded over them (its output has a shard per device) k more times.
    Returns ``counted`` and ``expected`` bytes."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    f = jax.jit(lambda x: x * 2.0 + 1.0)
    inputs = [jnp.ones(1000, jnp.float32)]
    if len(jax.devices()) > 1:
        mesh = Mesh(np.array(jax.devices()), ("d",))
        inputs.append(jax.device_put(inputs[0], NamedSharding(mesh, PartitionSpec("d"))))
    for x in inputs:
        f(x).block_until_ready()
    with HostFetches() as h:
        for x in inputs:
            for _ in range(k):
                y = f(x)
                np.asarray(y)
                y.tolist()
        float(jnp.sum(inputs[0]))
    return dict(counted=h.bytes, expected=len(inputs) * k * 4000 + 4, devices=len(jax.devices()))


def host_bytes(name: str, n_models: int = 2, calls=(2, 6), smoke: bool = True) -> dict:
    """Bytes fetched to the host by ``train_many`` ("scan") of the suite's model ``name``
    (``rows.training.learned_models``) at ``n_models`` models: after a first call (which compiles),
    two runs of ``calls[0]`` and ``calls[1]`` calls; their difference per call is what each further
    call fetches. Also what it must fetch: its curves, one float32 per model and column per call."""
    import types

    import jax

    from rows.training import learned_models
    from tokdyn import train

    s = types.SimpleNamespace(args=types.SimpleNamespace(smoke=smoke))
    tr, pool, keys, hp, _, k = learned_models(s, n_models)[name]()
    ex = train.Execution("scan")
    train.train_many(tr, pool, keys, hp, max_calls=1, execution=ex)
    got = {}
    for c in calls:
        with HostFetches() as h:
            res = train.train_many(tr, pool, keys, hp, max_calls=c, execution=ex)
        got[c] = h.bytes
    per_call = (got[calls[1]] - got[calls[0]]) / (calls[1] - calls[0])
    params = sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize for a in jax.tree_util.tree_leaves(res.state.params))
    return dict(
        name=name,
        models=n_models,
        steps_per_call=k,
        devices=len(jax.devices()),
        per_call_bytes=per_call,
        per_step_bytes=per_call / k,
        fixed_bytes=got[calls[0]] - calls[0] * per_call,
        columns=sorted(res.curves),
        report_bytes_per_call=len(res.curves) * n_models * 4,
        param_bytes_per_model=params,
    )
