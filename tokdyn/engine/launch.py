"""One job on several processes or hosts: :func:`resolve` reads a launch (the coordinator's
address, the number of processes, this process's index) from a SLURM job step's environment or
from a plain launch's flags and variables, every value checked with the variable that gave it
named; :func:`check_coordinator` makes the processes meet before JAX does (process 0 serves the
coordinator's address; the others say their number of processes and index, and a launch whose
processes disagree, or a process 0 left alone, is a named :class:`LaunchError` on every process
within a timeout); :func:`initialize` then starts ``jax.distributed``. :func:`undeclared` tells a
process that is one of several although no launch was asked for (a SLURM step of several tasks,
``TOKDYN_*`` variables): the ``tokdyn`` command refuses to run the whole work once per task.

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
import json
import math
import os
import socket
import time

ENV_COORDINATOR = "TOKDYN_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "TOKDYN_NUM_PROCESSES"
ENV_PROCESS_ID = "TOKDYN_PROCESS_ID"
ENV_PORT = "TOKDYN_COORDINATOR_PORT"
ENV_LAUNCH_ID = "TOKDYN_LAUNCH_ID"  # set by the tokdyn command for the work of a launched process: launch_id()
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


def undeclared(env=None) -> str | None:
    """Why this process looks like one of several although no launch was asked for (``None``: it
    does not): inside a SLURM job step of more than one task (``SLURM_STEP_NUM_TASKS``, or
    ``SLURM_NTASKS`` inside a step), or with any ``TOKDYN_*`` launch variable set. A command run
    so without ``--distributed`` would do the whole work once per task; the text names the
    variables. (A batch script itself, outside ``srun``, is no step: its ``SLURM_NTASKS`` is the
    allocation's, and it runs the command once.)"""
    env = os.environ if env is None else env
    named = [v for v in (*PLAIN_VARIABLES, ENV_PORT) if v in env]
    if named:
        return f"{', '.join(f'{v}={env[v]}' for v in named)} {'is' if len(named) == 1 else 'are'} set"
    for name in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
        if name == "SLURM_NTASKS" and "SLURM_STEP_NODELIST" not in env and "SLURM_STEP_ID" not in env:
            break  # not inside a step: a batch script's SLURM_NTASKS is the allocation's
        text = env.get(name, "").strip()
        if text:
            try:
                tasks = int(text)
            except ValueError:
                continue
            if tasks > 1:
                return f"this process is one task of {tasks} of a SLURM job step ({name}={text})"
            return None
    return None


HANDSHAKE = "tokdyn-launch/1"  # the first word of every message of the meeting before jax.distributed
ANSWER_S = 10.0  # how long a process waits for process 0's first answer once connected


class _Channel:
    """A connection of the meeting: JSON lines ``{"handshake": HANDSHAKE, ...}`` each way, read
    through a buffer (two messages may come in one packet)."""

    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def send(self, **message) -> None:
        """Send one message."""
        self.sock.sendall((json.dumps({"handshake": HANDSHAKE, **message}) + "\n").encode())

    def tell(self, **message) -> None:
        """Send one message, ignoring a process that has gone meanwhile."""
        try:
            self.send(**message)
        except OSError:
            pass

    def receive(self, timeout_s: float):
        """The next message (a dict), ``None`` at the connection's end, or the raw bytes received
        when they are not a message of the meeting; ``socket.timeout`` when nothing came in
        ``timeout_s``."""
        self.sock.settimeout(max(0.05, timeout_s))
        while b"\n" not in self.buffer and len(self.buffer) < 65536:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        if not self.buffer:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            return line
        return message if isinstance(message, dict) and message.get("handshake") == HANDSHAKE else line

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


def check_coordinator(launch: Launch, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Meet every process of ``launch`` before ``jax.distributed`` starts (whose own failure to meet
    ends the process with a C++ abort, after its timeout, without a word on why).

    Process 0 serves the coordinator's address: its host must be this machine and its port free.
    It listens there for the others, each of which connects (trying every 0.2 s for at most
    ``timeout_s`` seconds) and says its number of processes and its index; once all have come,
    process 0 lets every one go and lets go of the port, which ``jax.distributed``'s coordinator
    takes next. A launch whose processes disagree (another number of processes, an index twice)
    is refused on every process that took part, naming the values and where each came from;
    process 0 alone after ``timeout_s`` names the processes that never came; a process whose
    coordinator's port answers as something else than process 0 of a launch says so.

    Returns:
      The launch's id: a random word process 0 draws and tells every process as it lets them go, the
      same on every process of this launch and on no other (:func:`launch_id`).

    Raises:
      LaunchError: naming the address and the flag or variable it came from.
    """
    if launch.process_id == 0:
        return _serve(launch, timeout_s)
    return _join(launch, timeout_s)


def launch_id(env=None) -> str | None:
    """The id of the launch this process is one of (:func:`check_coordinator`'s, which the ``tokdyn`` command
    hands its work as ``TOKDYN_LAUNCH_ID``), or None (no launch): what tells the processes of one launch,
    which share their work and one output directory, from an independent run into the same directory."""
    env = os.environ if env is None else env
    return env.get(ENV_LAUNCH_ID) or None


def _where(launch: Launch) -> str:
    return f"{launch.coordinator_address} (from {launch.sources['coordinator_address']})"


def _bind(launch: Launch):
    """Process 0's listening socket on the coordinator's address; a LaunchError when the port is
    taken or the address is not this machine's."""
    error = None
    for family, kind, proto, _, address in _addresses(launch):
        s = socket.socket(family, kind, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
            s.listen(max(8, launch.num_processes))
            return s
        except OSError as e:
            error = e
            s.close()
    reason = (
        "its port is taken on this machine (choose another port)"
        if error is not None and error.errno == errno.EADDRINUSE
        else f"process 0 serves it, and its address is not this machine's ({error})"
    )
    raise LaunchError(f"the coordinator {_where(launch)} cannot be served here: {reason}")


def _disagreement(launch: Launch, hello: dict, joined: dict) -> str | None:
    """What is wrong with a process's ``hello`` for process 0's ``launch`` (``joined``: index ->
    connection of those come before), or None."""
    n, i = hello.get("num_processes"), hello.get("process_id")
    source = hello.get("sources", {})
    if n != launch.num_processes:
        return (
            f"the processes disagree on the number of processes: process {i} was started with {n} (from "
            f"{source.get('num_processes', '?')}), process 0 with {launch.num_processes} (from "
            f"{launch.sources['num_processes']}); start every process with the same number"
        )
    if not isinstance(i, int) or not 0 < i < launch.num_processes or i in joined:
        return (
            f"two processes were started with the index {i} (from {source.get('process_id', '?')}): give each "
            f"process its own index, 0 to {launch.num_processes - 1}"
        )
    return None


def _serve(launch: Launch, timeout_s: float) -> str:
    """Process 0's part of :func:`check_coordinator`; returns the launch's id, which it tells the others."""
    ident = os.urandom(8).hex()
    joined: dict = {}  # index -> connection
    problem, deadline = None, time.monotonic() + timeout_s
    with _bind(launch) as server:
        server.settimeout(0.2)
        try:
            while len(joined) < launch.num_processes - 1 and time.monotonic() < deadline:
                try:
                    conn = _Channel(server.accept()[0])
                except socket.timeout:
                    continue
                try:
                    hello = conn.receive(ANSWER_S)
                except OSError:
                    hello = None
                if not isinstance(hello, dict):  # not a process of a launch: not one of ours
                    conn.close()
                    continue
                said = problem or _disagreement(launch, hello, joined)
                if said is not None:
                    # every process that comes within a few seconds of the problem hears of it
                    if problem is None:
                        problem, deadline = said, min(deadline, time.monotonic() + ANSWER_S)
                        for other in joined.values():
                            other.tell(error=said)
                    conn.tell(error=said)
                    conn.close()
                    continue
                conn.tell(waiting=True, num_processes=launch.num_processes)
                joined[hello["process_id"]] = conn
            if problem is not None:
                raise LaunchError(f"process 0 of {launch.num_processes}: {problem}")
            missing = sorted(set(range(1, launch.num_processes)) - set(joined))
            if missing:
                said = (
                    f"process 0 of {launch.num_processes} waited {timeout_s:g} s at the coordinator {_where(launch)} "
                    f"for process{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))}, which never "
                    "came: were they started, with this address (--distributed-timeout to wait longer)?"
                )
                for other in joined.values():
                    other.tell(error=said)
                raise LaunchError(said)
            for other in joined.values():
                other.tell(go=True, launch=ident)
            for other in joined.values():  # the others close first: the port is free for JAX's coordinator
                try:
                    other.receive(ANSWER_S)
                except OSError:
                    pass
        finally:
            for other in joined.values():
                other.close()
    return ident


def _join(launch: Launch, timeout_s: float) -> str:
    """A process other than 0's part of :func:`check_coordinator`; returns the launch's id process 0 told."""
    me = f"process {launch.process_id} of {launch.num_processes}"
    deadline = time.monotonic() + timeout_s
    addresses = _addresses(launch)
    while True:
        for family, kind, proto, _, address in addresses:
            s = socket.socket(family, kind, proto)
            s.settimeout(max(0.1, min(2.0, deadline - time.monotonic())))
            try:
                s.connect(address)
            except OSError:
                s.close()
                continue
            with s:
                return _meet(_Channel(s), launch, me, timeout_s)
        if time.monotonic() >= deadline:
            raise LaunchError(
                f"{me} could not reach the coordinator {_where(launch)} in {timeout_s:g} s: is process 0 running "
                "on that host, and is the port open between the hosts?"
            )
        time.sleep(0.2)


def _meet(s: _Channel, launch: Launch, me: str, timeout_s: float) -> str:
    """Say who this process is on the connection ``s`` to process 0, and wait until it lets every
    process go (a LaunchError naming what it said otherwise); returns the launch's id it told."""
    sources = {k: launch.sources[k] for k in ("num_processes", "process_id")}
    stranger = (
        f"{me}: the coordinator's port {_where(launch)} answers, but not as process 0 of a tokdyn launch "
        "({}): is another program using it? Choose another port (process 0 must be started with tokdyn too)"
    )
    try:
        s.send(num_processes=launch.num_processes, process_id=launch.process_id, sources=sources)
        first = s.receive(ANSWER_S)
    except socket.timeout:
        raise LaunchError(stranger.format(f"no answer in {ANSWER_S:g} s")) from None
    except OSError as e:
        raise LaunchError(stranger.format(f"the connection failed: {e}")) from None
    if not isinstance(first, dict):
        raise LaunchError(stranger.format("it closed the connection" if first is None else f"it said {first[:40]!r}"))
    message = first
    try:
        while "waiting" in message and "go" not in message and "error" not in message:
            message = s.receive(timeout_s + ANSWER_S)  # process 0 waits at most its own timeout
            if not isinstance(message, dict):
                raise LaunchError(f"{me}: process 0 at {_where(launch)} left the meeting before it was complete")
    except socket.timeout:
        raise LaunchError(f"{me}: process 0 at {_where(launch)} did not let the processes go in time") from None
    if "error" in message:
        raise LaunchError(f"{me}: {message['error']}")
    return str(message.get("launch") or "")


def initialize(launch: Launch, timeout_s: float = DEFAULT_TIMEOUT_S, *, check: bool = True) -> None:
    """Start ``jax.distributed`` for ``launch`` (:func:`check_coordinator` first, unless ``check``
    is False: the processes have met already), with JAX's own detection of the cluster off and
    ``timeout_s`` as its time for all processes to connect. Must come before JAX runs any
    computation in this process; afterwards ``jax.process_index()`` and ``jax.process_count()`` are
    the launch's, and :func:`tokdyn.engine.sweep.run` deals each process its share of the chunks by
    them.

    What :func:`check_coordinator` cannot rule out (a process that stops between the meeting and
    JAX's, a network that lets the meeting through but not JAX) still ends the process with
    JAX's C++ abort; the ``tokdyn`` command runs the work in a child process and turns that into
    one line naming the launch (:mod:`tokdyn.cli.launching`)."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be a positive, finite number of seconds, got {timeout_s!r}")
    if check:
        check_coordinator(launch, timeout_s)
    import jax

    jax.distributed.initialize(
        coordinator_address=launch.coordinator_address,
        num_processes=launch.num_processes,
        process_id=launch.process_id,
        cluster_detection_method="deactivate",
        initialization_timeout=max(1, int(round(timeout_s))),
    )
