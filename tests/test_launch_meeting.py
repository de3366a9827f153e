"""The processes of a launch meet before JAX's do (tokdyn.engine.launch.check_coordinator): a launch
whose processes disagree on the number of processes or share an index is a named error on every
process that took part; process 0 alone, and a coordinator's port that answers as something else,
are named within their timeouts (JAX itself ends such processes with a C++ abort). A command
started as one of several processes without --distributed (a SLURM step of several tasks, TOKDYN_*
variables) is refused. A launched process runs the work in a child, whose C++ abort becomes one
line (tokdyn.cli.launching.run_launched). The sockets here are real, on this machine; nothing
imports JAX's distributed runtime but the full-tier test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import child_env
from tokdyn import cli
from tokdyn.cli import launching
from tokdyn.engine import launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _meet(specs, timeout_s=0.5, ids=None) -> dict:
    """Each ``(num_processes, process_id)`` of ``specs`` meets at one fresh address in its own thread
    (process 0 first); returns ``{k: "ok" or the LaunchError's text}`` by position in ``specs`` (and puts
    the launch id each was told in ``ids``)."""
    address, out = f"127.0.0.1:{_free_port()}", {}
    ids = {} if ids is None else ids

    def one(k, n, i):
        try:
            ids[k] = launch.check_coordinator(
                launch.resolve({}, coordinator_address=address, num_processes=n, process_id=i), timeout_s
            )
            out[k] = "ok"
        except launch.LaunchError as e:
            out[k] = str(e)

    threads = [threading.Thread(target=one, args=(k, n, i)) for k, (n, i) in enumerate(specs)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(30)
    return out


def test_processes_that_agree_meet_and_leave_the_port_free():
    """... and every process of one launch is told its one id (the work of a launched process reads it as
    TOKDYN_LAUNCH_ID), which no other launch has."""
    ids, again = {}, {}
    assert _meet([(3, 0), (3, 2), (3, 1)], timeout_s=5, ids=ids) == {0: "ok", 1: "ok", 2: "ok"}
    assert _meet([(1, 0)], ids=again) == {0: "ok"}  # one process: nobody to wait for
    assert len(set(ids.values())) == 1 and len(ids[0]) == 16 and again[0] != ids[0]
    assert launch.launch_id({launch.ENV_LAUNCH_ID: ids[0]}) == ids[0] and launch.launch_id({}) is None


@pytest.mark.parametrize(
    "specs, said",
    [
        ([(2, 0), (3, 1)], "process 1 was started with 3 (from --num-processes), process 0 with 2"),
        ([(3, 0), (2, 1)], "process 1 was started with 2 (from --num-processes), process 0 with 3"),
        ([(3, 0), (3, 1), (3, 1)], "two processes were started with the index 1 (from --process-id)"),
    ],
)
def test_processes_that_disagree_are_refused_on_every_process(specs, said):
    t0 = time.monotonic()
    out = _meet(specs)
    assert time.monotonic() - t0 < 5
    assert sorted(out) == list(range(len(specs)))
    for k, text in out.items():  # every process, process 0 included, names the disagreement
        assert said in text, (k, text)
    assert out[0].startswith(f"process 0 of {specs[0][0]}:")


def test_process_0_alone_and_a_port_that_is_no_coordinator_are_named(monkeypatch):
    (text,) = _meet([(2, 0)], timeout_s=0.3).values()
    assert (
        "process 0 of 2 waited 0.3 s at the coordinator 127.0.0.1:" in text
        and "for process 1, which never came" in text
    )
    monkeypatch.setattr(launch, "ANSWER_S", 0.3)
    for answer in (b"HTTP/1.1 400 Bad Request\r\n\r\n", None):  # another server; one that says nothing
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()

            def serve(server=server, answer=answer):
                conn, _ = server.accept()
                if answer is not None:
                    conn.sendall(answer)
                time.sleep(0.6)
                conn.close()

            threading.Thread(target=serve, daemon=True).start()
            one = launch.resolve(
                {}, coordinator_address=f"127.0.0.1:{server.getsockname()[1]}", num_processes=2, process_id=1
            )
            with pytest.raises(launch.LaunchError, match="answers, but not as process 0 of a tokdyn launch") as e:
                launch.check_coordinator(one, 2.0)
            assert ("HTTP/1.1 400" in str(e.value)) == (answer is not None)


def _clean_env(monkeypatch):
    for name in [*launch.SLURM_VARIABLES, *launch.PLAIN_VARIABLES, launch.ENV_PORT, "SLURM_STEP_NUM_TASKS"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(launching.CHILD, raising=False)


@pytest.mark.parametrize(
    "env, named",
    [
        ({"SLURM_STEP_NODELIST": "n[1-2]", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "4"}, "SLURM_STEP_NUM_TASKS=4"),
        (
            {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"},
            "SLURM_NTASKS=2",
        ),
        ({"TOKDYN_NUM_PROCESSES": "2"}, "TOKDYN_NUM_PROCESSES=2 is set"),
        (
            {"TOKDYN_COORDINATOR_ADDRESS": "h:1", "TOKDYN_PROCESS_ID": "1"},
            "TOKDYN_COORDINATOR_ADDRESS=h:1, TOKDYN_PROCESS_ID=1",
        ),
    ],
)
def test_a_command_without_distributed_refuses_to_run_once_per_task(tmp_path, monkeypatch, capsys, env, named):
    _clean_env(monkeypatch)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = str(tmp_path / "sweep")
    assert cli.main(["sweep", "token-dynamics", "--out", out, "--quiet", "--seeds", "2"]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()  # one line
    assert err.startswith("tokdyn sweep token-dynamics: error: ") and named in err and "Add --distributed" in err
    assert cli.main(["study", "token-dynamics", "--out", str(tmp_path / "study"), "--quiet"]) == 2  # no --distributed
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert named in err and "this command runs as one process" in err
    assert not os.path.exists(out) and not os.path.exists(tmp_path / "study")


def test_a_batch_script_or_a_single_task_step_is_one_process():
    assert launch.undeclared({}) is None
    # sbatch -n 4 script.sh: the script itself is no step; it runs the command once
    assert launch.undeclared({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"}) is None
    one = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "4"}
    assert launch.undeclared(one) is None  # srun -n 1 inside a larger allocation


def test_the_command_names_a_process_0_left_alone_and_a_disagreement(tmp_path, monkeypatch, capsys):
    _clean_env(monkeypatch)
    out = str(tmp_path / "x")
    address = f"127.0.0.1:{_free_port()}"
    base = ["sweep", "token-dynamics", "--out", out, "--quiet", "--seeds", "2", "--coordinator-address", address]
    assert cli.main([*base, "--num-processes", "2", "--process-id", "0", "--distributed-timeout", "0.3"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "error: process 0 of 2 waited 0.3 s" in line and "which never came" in line
    zero = launch.resolve({}, coordinator_address=address, num_processes=2, process_id=0)
    monkeypatch.setattr(launch, "ANSWER_S", 0.5)  # process 0 tells late comers for 0.5 s, then gives up
    said = []
    thread = threading.Thread(target=lambda: said.append(_raised(launch.check_coordinator, zero, 5.0)))
    thread.start()
    time.sleep(0.1)
    assert cli.main([*base, "--num-processes", "3", "--process-id", "1", "--distributed-timeout", "5"]) == 2
    thread.join(30)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "process 1 of 3: the processes disagree on the number of processes" in line
    assert "disagree on the number of processes" in said[0]
    assert not os.path.exists(out)


def _raised(fn, *args) -> str:
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - the text of whatever it raised
        return str(e)
    return ""


ABORT = (
    "import os, sys\n"
    "sys.stderr.write('a line before\\n'); sys.stderr.flush()\n"
    "if {ready}:\n"
    "    os.write(int(os.environ['" + launching.CHILD + "']), b'1')\n"
    "sys.stderr.write('F1127 17:33:26.483144   26698 client.h:80] Terminating process because the JAX distributed "
    "service detected fatal errors.\\n*** Check failure stack trace: ***\\n    @     0x7f0b2b8963e3  nanobind\\n')\n"
    "sys.stderr.flush(); os.abort()\n"
)


@pytest.mark.parametrize("ready, code, said", [(False, 2, "could not start"), (True, 1, "during the run")])
def test_an_abort_of_the_child_is_one_line_naming_the_launch(capsys, ready, code, said):
    one = launch.resolve({}, coordinator_address=f"127.0.0.1:{_free_port()}", num_processes=1, process_id=0)
    got = launching.run_launched(
        one, 1.0, [], "tokdyn sweep x", command=[sys.executable, "-c", ABORT.format(ready=ready)]
    )
    assert got == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "a line before" and len(lines) == 2  # the abort's report held back
    assert lines[1].startswith("tokdyn sweep x: error: process 0 of 1") and said in lines[1]
    assert "JAX said: Terminating process because the JAX distributed service detected fatal errors." in lines[1]
    clean = [sys.executable, "-c", "import sys; sys.stderr.write('F is a letter\\n'); sys.exit(3)"]
    assert launching.run_launched(one, 1.0, [], "p", command=clean) == 3  # an exit code passed on
    assert capsys.readouterr().err == "F is a letter\n"


# a child that imports JAX and starts its distributed runtime (about 10 s on 2 cores)
@pytest.mark.full
def test_a_process_that_meets_then_vanishes_ends_the_other_in_one_line(tmp_path):
    """Process 1 (played here by a socket) meets process 0, then never starts JAX: process 0's child
    waits in jax.distributed.initialize for its timeout and is ended by JAX's C++ abort; the command
    says so in one line, exit 2, and writes nothing."""
    address = f"127.0.0.1:{_free_port()}"
    env = child_env(JAX_PLATFORMS="cpu")
    for name in [*launch.SLURM_VARIABLES, *launch.PLAIN_VARIABLES, launch.ENV_PORT]:
        env.pop(name, None)
    out = str(tmp_path / "x")
    zero = subprocess.Popen(
        [sys.executable, "-m", "tokdyn.cli", "sweep", "token-dynamics", "--out", out, "--quiet", "--seeds", "2"]
        + ["--coordinator-address", address, "--num-processes", "2", "--process-id", "0", "--distributed-timeout", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    one = launch.resolve({}, coordinator_address=address, num_processes=2, process_id=1)
    launch.check_coordinator(one, 60)  # met; this "process" then never starts JAX
    _, err = zero.communicate(timeout=300)
    assert zero.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "process 0 of 2: jax.distributed could not start after the processes met" in lines[0]
    assert "Check failure" not in err and not os.path.exists(out)
