"""One job on several processes or hosts: :func:`resolve` reads a launch (the coordinator's
address, the number of processes, this process's index) from a SLURM job step's environment or
from a plain launch's flags and variables, every value checked with the variable that gave it
named; :func:`initialize` checks that the coordinator can be reached (process 0: that its address
is this machine's and its port free) within a timeout, then starts ``jax.distributed``.

Under SLURM (``srun`` inside an allocation), the step's variables give the launch:
``SLURM_PROCID`` the process index, ``SLURM_NTASKS`` the number of processes,
``SLURM_STEP_NODELIST``'s first host the coordinator, on port ``61440 + SLURM_JOB_ID % 4096`` (the
rule JAX's own SLURM detection uses) unless ``TOKDYN_COORDINATOR_PORT`` names another. A plain
launch gives all three itself: ``TOKDYN_COORDINATOR_ADDRESS`` (``HOST:PORT``, process 0's host),
``TOKDYN_NUM_PROCESSES``, ``TOKDYN_PROCESS_ID`` (or the arguments of :func:`resolve`, which win).

Nothing here touches JAX's backend before :func:`initialize` calls ``jax.distributed.initialize``,
which must come before any computation. JAX's own detection of the cluster is switched off there:
the launch is the one :func:`resolve` checked, and every process sees all of its host's devices
(one process per host; with several processes on a host, give each its own devices through the
launcher, e.g. SLURM's ``--gpus-per-task``).
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import socket
import time

ENV_COORDINATOR = "TOKDYN_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "TOKDYN_NUM_PROCESSES"
ENV_PROCESS_ID = "TOKDYN_PROCESS_ID"
ENV_PORT = "TOKDYN_COORDINATOR_PORT"
PLAIN_VARIABLES = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID")
DEFAULT_TIMEOUT_S = 300.0


class LaunchError(RuntimeError):
    """The processes of a launch could not meet: the coordinator was not reached in time, or process
    0 cannot serve it (its address is not this machine's, or its port is taken). The message names
    the address and the flag or variable that gave it."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """One process's part of a multi-process job, as :func:`resolve` read it.

    Attributes:
      coordinator_address: ``HOST:PORT`` of the coordinator, which process 0 serves.
      num_processes: the number of processes of the job.
      process_id: this process's index, ``0 <= process_id < num_processes``.
      kind: ``"slurm"`` (a SLURM job step's variables) or ``"plain"`` (flags or ``TOKDYN_*`` variables).
      sources: where each of the three fields was read, ``{field: "the flag or variable"}``, for
        the messages.
    """

    coordinator_address: str
    num_processes: int
    process_id: int
    kind: str
    sources: dict

    @property
    def host(self) -> str:
        """The coordinator's host (brackets of an IPv6 address removed)."""
        return self.coordinator_address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        """The coordinator's port."""
        return int(self.coordinator_address.rsplit(":", 1)[1])


def _int(text, name: str, low: int) -> int:
    """``text`` (a flag's or a variable's value) as an int ``>= low``, else a ValueError naming ``name``."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise TypeError(f"{name} must be an int, got {text!r} of type {type(text).__name__}")
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _check_address(address, name: str) -> str:
    """``HOST:PORT`` with a port in 1..65535 (an IPv6 host in brackets), else a ValueError naming ``name``."""
    if not isinstance(address, str):
        raise TypeError(f"{name} must be a string HOST:PORT, got {address!r} of type {type(address).__name__}")
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{name} must be HOST:PORT with a port in 1..65535 (such as node001:61440), got {address!r}")
    return address.strip()


def first_host(nodelist: str, name: str = "SLURM_STEP_NODELIST") -> str:
    """The first host of a SLURM host list: ``node001`` of ``node001,gpu2``, ``node[001-004],gpu2``
    or ``node[007,009-012]`` (zero padding kept); a ValueError naming ``name`` when it is empty or
    malformed."""
    text = nodelist.strip()
    cut = next((i for i, ch in enumerate(text) if ch in ",["), len(text))
    prefix = text[:cut]
    if cut < len(text) and text[cut] == "[":
        inside, close, _ = text[cut + 1 :].partition("]")
        first = inside.split(",")[0].split("-")[0]
        if not close or not first.isdigit():
            raise ValueError(f"{name} is not a SLURM host list (such as node[001-004],gpu2), got {nodelist!r}")
        return prefix + first
    if not prefix:
        raise ValueError(f"{name} names no host, got {nodelist!r}")
    return prefix


def resolve(
    env=None, *, coordinator_address: str | None = None, num_processes=None, process_id=None, port=None
) -> Launch:
    """This process's :class:`Launch`, read from the arguments (a plain launch's flags) or the
    environment, checked before anything starts.

    A plain launch: any of ``coordinator_address``, ``num_processes``, ``process_id`` given (or any
    of ``TOKDYN_COORDINATOR_ADDRESS``, ``TOKDYN_NUM_PROCESSES``, ``TOKDYN_PROCESS_ID`` set; an
    argument wins over its variable) needs all three. Otherwise a SLURM job step: any of
    ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``, ``SLURM_PROCID`` set needs all four
    (inside a batch script but outside ``srun`` there is no step: ``SLURM_STEP_NODELIST`` is
    missing). The SLURM coordinator's port: ``port``, else ``TOKDYN_COORDINATOR_PORT``, else
    ``61440 + SLURM_JOB_ID % 4096``.

    Args:
      env: the environment (default ``os.environ``).
      coordinator_address, num_processes, process_id: a plain launch's values (flags).
      port: the coordinator's port under SLURM.

    Raises:
      ValueError: naming the missing or malformed flag or variable (and what is allowed), or when
        no launch is found at all.
    """
    env = os.environ if env is None else env
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    flags = {"coordinator_address": "--coordinator-address", "num_processes": "--num-processes"}
    flags["process_id"] = "--process-id"
    variables = dict(zip(given, PLAIN_VARIABLES))
    if any(v is not None for v in given.values()) or any(v in env for v in PLAIN_VARIABLES):
        values, sources = {}, {}
        for field, value in given.items():
            if value is not None:
                values[field], sources[field] = value, flags[field]
            elif variables[field] in env:
                values[field], sources[field] = env[variables[field]], variables[field]
        missing = [f"{flags[f]} (or {variables[f]})" for f in given if f not in values]
        if missing:
            raise ValueError(
                f"a multi-process launch needs the coordinator's address, the number of processes and this "
                f"process's index: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not given "
                f"(given: {', '.join(sources.values())})"
            )
        address = _check_address(values["coordinator_address"], sources["coordinator_address"])
        n = _int(values["num_processes"], sources["num_processes"], 1)
        i = _int(values["process_id"], sources["process_id"], 0)
        if i >= n:
            raise ValueError(f"{sources['process_id']} must be below {sources['num_processes']}={n}, got {i}")
        return Launch(address, n, i, "plain", sources)
    if any(v in env for v in SLURM_VARIABLES):
        missing = [v for v in SLURM_VARIABLES if not env.get(v, "").strip()]
        if missing:
            hint = (
                " (start the processes with srun inside the job: a batch script itself is no job step)"
                if "SLURM_STEP_NODELIST" in missing and "SLURM_JOB_ID" in env
                else ""
            )
            raise ValueError(
                f"a SLURM launch needs {', '.join(SLURM_VARIABLES)}: {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set{hint}"
            )
        job = _int(env["SLURM_JOB_ID"], "SLURM_JOB_ID", 0)
        n = _int(env["SLURM_NTASKS"], "SLURM_NTASKS", 1)
        i = _int(env["SLURM_PROCID"], "SLURM_PROCID", 0)
        if i >= n:
            raise ValueError(f"SLURM_PROCID must be below SLURM_NTASKS={n}, got {i}")
        if port is not None:
            p, port_source = _int(port, "--coordinator-port", 1), "--coordinator-port"
        elif ENV_PORT in env:
            p, port_source = _int(env[ENV_PORT], ENV_PORT, 1), ENV_PORT
        else:
            p, port_source = 61440 + job % 4096, "SLURM_JOB_ID"
        if p > 65535:
            raise ValueError(f"{port_source} must be a port in 1..65535, got {p}")
        host = first_host(env["SLURM_STEP_NODELIST"])
        sources = {"coordinator_address": f"SLURM_STEP_NODELIST and {port_source}"}
        sources.update(num_processes="SLURM_NTASKS", process_id="SLURM_PROCID")
        return Launch(f"{host}:{p}", n, i, "slurm", sources)
    raise ValueError(
        "no multi-process launch found: give --coordinator-address, --num-processes and --process-id (or "
        f"{', '.join(PLAIN_VARIABLES)}), or start the processes with srun inside a SLURM job "
        f"({', '.join(SLURM_VARIABLES)})"
    )


def _addresses(launch: Launch) -> list:
    """The coordinator's socket addresses; a LaunchError naming where the host came from when it
    does not resolve."""
    try:
        return socket.getaddrinfo(launch.host, launch.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise LaunchError(
            f"the coordinator's host {launch.host!r} (from {launch.sources['coordinator_address']}) "
            f"does not resolve: {e}"
        ) from None


def check_coordinator(launch: Launch, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Check that the processes can meet, before ``jax.distributed`` starts (whose own failure to
    connect ends the process without a word on why).

    Process 0 serves the coordinator: its host must be this machine and its port free (a bind to
    it, let go at once). Any other process waits until the coordinator accepts a connection,
    trying every 0.2 s for at most ``timeout_s`` seconds.

    Raises:
      LaunchError: naming the address and the flag or variable it came from.
    """
    where = f"{launch.coordinator_address} (from {launch.sources['coordinator_address']})"
    addresses = _addresses(launch)
    if launch.process_id == 0:
        error = None
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(address)
                    return
                except OSError as e:
                    error = e
        reason = (
            "its port is taken on this machine (choose another port)"
            if error is not None and error.errno == errno.EADDRINUSE
            else f"process 0 serves it, and its address is not this machine's ({error})"
        )
        raise LaunchError(f"the coordinator {where} cannot be served here: {reason}")
    deadline = time.monotonic() + timeout_s
    while True:
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(max(0.1, min(2.0, deadline - time.monotonic())))
                try:
                    s.connect(address)
                    return
                except OSError:
                    pass
        if time.monotonic() >= deadline:
            raise LaunchError(
                f"process {launch.process_id} of {launch.num_processes} could not reach the coordinator {where} "
                f"in {timeout_s:g} s: is process 0 running on that host, and is the port open between the hosts?"
            )
        time.sleep(0.2)


def initialize(launch: Launch, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Start ``jax.distributed`` for ``launch`` (:func:`check_coordinator` first), with JAX's own
    detection of the cluster off and ``timeout_s`` as its time for all processes to connect. Must
    come before JAX runs any computation in this process; afterwards ``jax.process_index()`` and
    ``jax.process_count()`` are the launch's, and :func:`tokdyn.engine.sweep.run` deals each
    process its share of the chunks by them."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be a positive, finite number of seconds, got {timeout_s!r}")
    check_coordinator(launch, timeout_s)
    import jax

    jax.distributed.initialize(
        coordinator_address=launch.coordinator_address,
        num_processes=launch.num_processes,
        process_id=launch.process_id,
        cluster_detection_method="deactivate",
        initialization_timeout=max(1, int(round(timeout_s))),
    )
