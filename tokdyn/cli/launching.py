"""The command as one process of several: the multi-process options of a command that shares its
work (:func:`add_launch_args`, read back by :func:`launch_of`), the refusal of a command started
as one of several processes without them (:func:`check_alone`), and the run of such a process
(:func:`run_launched`).

A launched process first meets the others (:func:`tokdyn.engine.launch.check_coordinator`: a
launch whose processes disagree, a coordinator that is something else, or a process 0 left alone
end there, exit 2, one line); it then runs the command in a child process of its own, which starts
``jax.distributed`` and does the work, so that what JAX still ends with a C++ abort (a process that
stopped between the meeting and JAX's, the hosts losing each other during the run) becomes one line
naming the launch instead of an abort's stack trace: exit 2 when JAX's processes never met, 1 when
the run had started (its finished chunks are on disk; the same command resumes it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

CHILD = "TOKDYN_LAUNCHED_FD"  # set in the child: the processes have met; the file descriptor to say JAX started on
FATAL = re.compile(rb"(?m)^F\d{4} [^\n]*?\] ([^\n]*)|^\*\*\* (?:Check failure stack trace|SIGABRT)")


def takes_part(module, entry: str) -> bool:
    """Whether a command's function shares its work between processes (its ``main`` takes
    ``part``, as the token-dynamics sweep's does): such a command gets the multi-process options
    (:func:`tokdyn.engine.launch.resolve`)."""
    import inspect

    fn = getattr(module, entry, None)
    try:
        return callable(fn) and "part" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def add_launch_args(p) -> None:
    """The multi-process options (:mod:`tokdyn.engine.launch`) of a command that shares its work."""
    from tokdyn.engine import launch

    g = p.add_argument_group(
        "several processes or hosts",
        "jax.distributed is started first; each process runs its share of the chunks into one --out\n"
        "(a shared filesystem), and process 0 writes the report once all are there. Without\n"
        "--distributed, a process that is one task of several (SLURM) or has TOKDYN_* launch\n"
        "variables set is refused",
    )
    g.add_argument(
        "--distributed",
        action="store_true",
        help="run as one process of several: under srun, SLURM's variables say which "
        f"({', '.join(launch.SLURM_VARIABLES)}); otherwise give the three options below (or "
        f"{', '.join(launch.PLAIN_VARIABLES)}); any of them implies --distributed",
    )
    g.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's host and a free port on it")
    g.add_argument("--num-processes", metavar="N", help="the number of processes")
    g.add_argument("--process-id", metavar="I", help="this process's index, 0 to N-1")
    g.add_argument(
        "--coordinator-port",
        metavar="PORT",
        help=f"under SLURM: the coordinator's port (or {launch.ENV_PORT}; default 61440 + SLURM_JOB_ID %% 4096)",
    )
    g.add_argument(
        "--distributed-timeout",
        metavar="SECONDS",
        type=float,
        default=launch.DEFAULT_TIMEOUT_S,
        help="how long the processes wait for each other to start (default: %(default)g)",
    )


def launch_of(args):
    """The :class:`tokdyn.engine.launch.Launch` the command line asks for, or None (ValueError
    naming the option or variable that is missing or wrong)."""
    names = ("coordinator_address", "num_processes", "process_id", "coordinator_port")
    if not hasattr(args, "distributed"):
        return None
    flags = {n: getattr(args, n) for n in names}
    if not args.distributed and all(v is None for v in flags.values()):
        return None
    if not 0 < args.distributed_timeout < float("inf"):
        raise ValueError(
            f"--distributed-timeout must be a positive, finite number of seconds, got {args.distributed_timeout}"
        )
    from tokdyn.engine import launch

    port = flags.pop("coordinator_port")
    return launch.resolve(**flags, port=port)


def check_alone(args, env=None) -> None:
    """``ValueError`` when the command is not a launch (no ``--distributed``) but this process is
    one of several (:func:`tokdyn.engine.launch.undeclared`: a SLURM step of several tasks,
    ``TOKDYN_*`` launch variables): each would run the whole command into the same output. The
    message names the variables, and ``--distributed`` where the command has it."""
    from tokdyn.engine import launch

    if getattr(args, "launch", None) is not None or os.environ.get(CHILD):
        return
    why = launch.undeclared(env)
    if why is None:
        return
    if hasattr(args, "distributed"):
        raise ValueError(
            f"{why}, and the command was not given --distributed: each process would run the whole command "
            "into the same --out. Add --distributed (the processes then share the work), or run one process "
            "(srun -n 1; unset the TOKDYN_* launch variables)"
        )
    raise ValueError(
        f"{why}: this command runs as one process (it has no --distributed), and each process would run it "
        "whole. Run one process (srun -n 1; unset the TOKDYN_* launch variables)"
    )


def is_child() -> bool:
    """Whether this process is the child of a launched process (:func:`run_launched`): the
    processes have met, and it starts ``jax.distributed`` and does the work."""
    return bool(os.environ.get(CHILD))


def started() -> None:
    """In the child: tell the launched process that ``jax.distributed`` has started (an abort
    after this is one of the run, not of the meeting)."""
    fd = os.environ.get(CHILD)
    if fd and fd.isdigit():
        try:
            os.write(int(fd), b"1")
            os.close(int(fd))
        except OSError:
            pass


def run_launched(launch, timeout_s: float, argv: list, prog: str, command=None) -> int:
    """Meet the other processes (:func:`tokdyn.engine.launch.check_coordinator`), then run the
    command ``argv`` in a child process (``command`` + ``argv``, by default ``python -m tokdyn.cli
    ARGV``; its standard output this process's, its standard error passed through; the launch's id in
    its ``TOKDYN_LAUNCH_ID``, :func:`tokdyn.engine.launch.launch_id`) and return its exit code. A ``LaunchError`` of
    the meeting is one line, exit 2; the child ended by a signal: one line naming the launch
    (SIGABRT, JAX's C++ abort: exit 2 before JAX's processes met, else 1, the abort's own stack
    trace not shown, its first line quoted); a Ctrl-C or SIGTERM to this process is passed on."""
    from tokdyn.engine import launch as launching

    who = f"process {launch.process_id} of {launch.num_processes}"
    try:
        ident = launching.check_coordinator(launch, timeout_s)
    except launching.LaunchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    read, write = os.pipe()
    env = {**os.environ, CHILD: str(write), launching.ENV_LAUNCH_ID: ident}
    child = subprocess.Popen(
        [*(command or [sys.executable, "-m", "tokdyn.cli"]), *argv],
        env=env,
        stderr=subprocess.PIPE,
        pass_fds=(write,),
        # a group of its own: a Ctrl-C at the terminal reaches this process, which passes it on once
        **({"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}),
    )
    os.close(write)
    forward = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in forward:
            signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    except ValueError:  # not the main thread: the child is signalled as the process group is
        forward = {}
    try:
        fatal = _pass_stderr(child.stderr)
        code = child.wait()
    finally:
        for sig, handler in forward.items():
            signal.signal(sig, handler)
        ready = _read_all(read)
    if code >= 0 and code != 134:
        return code
    if code in (-signal.SIGABRT, 134):
        said = f" (JAX said: {fatal})" if fatal else ""
        if not ready:
            print(
                f"{prog}: error: {who}: jax.distributed could not start after the processes met at "
                f"{launch.coordinator_address}{said}: did another process stop? Start all of them again",
                file=sys.stderr,
            )
            return 2
        print(
            f"{prog}: error: {who} was ended by JAX's distributed runtime during the run{said}: another process "
            "stopped or the hosts lost each other. Finished work is on disk: start the same processes again to "
            "resume",
            file=sys.stderr,
        )
        return 1
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "unknown"
    print(f"{prog}: error: {who} ended by signal {-code} ({name})", file=sys.stderr)
    return 128 - code


def _pass_stderr(stream) -> str:
    """Pass the child's standard error through to this process's as it comes, up to an abort's
    report (a line ``F... ] message`` or ``*** Check failure stack trace``), which is held back;
    returns the report's message ('' when none). A line that may begin such a report waits for
    its end before it is passed on."""
    held, pending = b"", b""
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        if held:
            held += chunk
            continue
        chunk, pending = pending + chunk, b""
        m = FATAL.search(chunk)
        if m:
            _write(chunk[: m.start()])
            held = chunk[m.start() :]
            continue
        tail = chunk[chunk.rfind(b"\n") + 1 :]
        if _MAY_BEGIN.match(tail):  # perhaps the start of a report: wait for the rest of the line
            chunk, pending = chunk[: len(chunk) - len(tail)], tail
        _write(chunk)
    _write(pending)
    stream.close()
    fatal = next((g.decode(errors="replace").strip() for g in FATAL.findall(held) if g), "")
    return fatal[:300]


_MAY_BEGIN = re.compile(rb"(?:F\d{0,4}(?: [^\n]*)?|\*{1,3}(?: [^\n]*)?)\Z")


def _write(data: bytes) -> None:
    """``data`` on this process's standard error (as text, where a test may capture it)."""
    if not data:
        return
    try:
        sys.stderr.write(data.decode(errors="replace"))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _read_all(fd: int) -> bytes:
    """What the child wrote to the pipe ``fd`` (read to its end, then closed)."""
    data = b""
    try:
        while True:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        os.close(fd)
    return data
