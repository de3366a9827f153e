"""tokdyn.engine.launch and the sweep command's multi-process options: a SLURM job step's and a
plain launch's values read and checked (each refusal naming the variable or flag, before anything
compiles), a coordinator that cannot be reached refused within its timeout, and two processes
started with a simulated SLURM step on this machine making the sweep of one process (each with a
share of a grid that fits one chunk). The meeting of the processes, the refusals without
--distributed and the abort of a child: tests/test_launch_meeting.py."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import child_env
from tokdyn import cli, io
from tokdyn.engine import launch, sweep

STEP = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jax_slurm_address(monkeypatch, env) -> str:
    """The coordinator JAX's own SLURM detection derives from ``env`` (the independent reference)."""
    from jax._src.clusters import slurm_cluster

    for name in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.setenv(name, env[name])
    cls = slurm_cluster.SlurmCluster
    assert cls.is_env_present()
    try:
        return cls.get_coordinator_address(timeout_secs=None, override_coordinator_port=None)
    except TypeError:  # JAX before the port override
        return cls.get_coordinator_address(timeout_secs=None)


@pytest.mark.parametrize(
    "nodelist", ["node001", "node001,gpu2", "node[001-004],gpu2", "node[007,009-012]", "gpu-a[0100-0101]"]
)
def test_slurm_step_gives_every_process_the_same_coordinator_as_jax_detects(monkeypatch, nodelist):
    for i in (0, 1):
        env = dict(STEP, SLURM_STEP_NODELIST=nodelist, SLURM_PROCID=str(i))
        got = launch.resolve(env)
        assert (got.num_processes, got.process_id, got.kind) == (2, i, "slurm")
        assert got.coordinator_address == _jax_slurm_address(monkeypatch, env)
    port = launch.resolve(dict(STEP, SLURM_PROCID="1", TOKDYN_COORDINATOR_PORT="12345"))
    assert port.port == 12345 and "TOKDYN_COORDINATOR_PORT" in port.sources["coordinator_address"]
    assert launch.resolve(dict(STEP, SLURM_PROCID="1"), port=999).port == 999


@pytest.mark.parametrize(
    "env, named",
    [
        ({"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "2"}, ["SLURM_PROCID"]),
        ({"SLURM_NTASKS": "2"}, ["SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID"]),
        ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, ["SLURM_STEP_NODELIST", "srun"]),
        (dict(STEP, SLURM_PROCID="2"), ["SLURM_PROCID must be below SLURM_NTASKS=2, got 2"]),
        (dict(STEP, SLURM_PROCID="one"), ["SLURM_PROCID must be a whole number, got 'one'"]),
        (dict(STEP, SLURM_PROCID="0", SLURM_NTASKS="0"), ["SLURM_NTASKS must be >= 1, got 0"]),
        (dict(STEP, SLURM_PROCID="0", SLURM_STEP_NODELIST="node[01-"), ["SLURM_STEP_NODELIST", "node[01-"]),
        (dict(STEP, SLURM_PROCID="0", TOKDYN_COORDINATOR_PORT="70000"), ["TOKDYN_COORDINATOR_PORT", "70000"]),
        ({"TOKDYN_NUM_PROCESSES": "2"}, ["--coordinator-address (or TOKDYN_COORDINATOR_ADDRESS)", "--process-id"]),
        (
            {"TOKDYN_COORDINATOR_ADDRESS": "h:1", "TOKDYN_NUM_PROCESSES": "2", "TOKDYN_PROCESS_ID": "-1"},
            ["TOKDYN_PROCESS_ID must be >= 0, got -1"],
        ),
        (
            {"TOKDYN_COORDINATOR_ADDRESS": "h", "TOKDYN_NUM_PROCESSES": "2", "TOKDYN_PROCESS_ID": "0"},
            ["TOKDYN_COORDINATOR_ADDRESS must be HOST:PORT", "'h'"],
        ),
        ({}, ["no multi-process launch found", "--coordinator-address", "srun"]),
    ],
)
def test_partial_or_bad_environment_is_refused_naming_the_variable(env, named):
    with pytest.raises(ValueError) as e:
        launch.resolve(env)
    for text in named:
        assert text in str(e.value)


def test_plain_launch_flags_win_over_variables_and_are_checked():
    env = {"TOKDYN_COORDINATOR_ADDRESS": "a:1", "TOKDYN_NUM_PROCESSES": "3", "TOKDYN_PROCESS_ID": "2"}
    got = launch.resolve(env, process_id=1)
    assert (got.coordinator_address, got.num_processes, got.process_id) == ("a:1", 3, 1)
    assert got.sources == {
        "coordinator_address": "TOKDYN_COORDINATOR_ADDRESS",
        "num_processes": "TOKDYN_NUM_PROCESSES",
        "process_id": "--process-id",
    }
    assert launch.resolve({}, coordinator_address="[::1]:7", num_processes=2, process_id=0).host == "::1"
    with pytest.raises(ValueError, match="--process-id must be below --num-processes=2, got 2"):
        launch.resolve({}, coordinator_address="h:1", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match=r"--num-processes \(or TOKDYN_NUM_PROCESSES\) is not given"):
        launch.resolve(dict(STEP, SLURM_PROCID="0"), coordinator_address="h:1", process_id=0)  # flags: not SLURM


def test_unreachable_coordinator_is_refused_in_its_timeout():
    port = _free_port()  # nobody listens there
    one = launch.resolve({}, coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=1)
    t0 = time.monotonic()
    with pytest.raises(
        launch.LaunchError, match=f"could not reach the coordinator 127.0.0.1:{port} .from --coordinator"
    ):
        launch.check_coordinator(one, timeout_s=0.6)
    assert time.monotonic() - t0 < 5
    with pytest.raises(launch.LaunchError, match="does not resolve"):
        launch.check_coordinator(
            launch.resolve({}, coordinator_address="no-such-host.invalid:1", num_processes=2, process_id=1),
            timeout_s=0.1,
        )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = dict(
            STEP, SLURM_PROCID="0", SLURM_STEP_NODELIST="127.0.0.1", TOKDYN_COORDINATOR_PORT=str(taken.getsockname()[1])
        )
        with pytest.raises(launch.LaunchError, match="SLURM_STEP_NODELIST and TOKDYN_COORDINATOR_PORT.*port is taken"):
            launch.check_coordinator(launch.resolve(env))


def test_sweep_command_refuses_a_bad_launch_before_anything_runs(tmp_path, monkeypatch, capsys):
    for name in [*launch.SLURM_VARIABLES, *launch.PLAIN_VARIABLES]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    out = str(tmp_path / "x")
    argv = ["sweep", "token-dynamics", "--out", out, "--quiet", "--seeds", "2", "--distributed"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "SLURM_STEP_NODELIST, SLURM_PROCID are not set" in err and "srun" in err
    port = _free_port()
    flags = ["--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1"]
    t0 = time.monotonic()
    assert cli.main([*argv[:-1], *flags, "--distributed-timeout", "0.5"]) == 2
    assert time.monotonic() - t0 < 5
    assert f"could not reach the coordinator 127.0.0.1:{port} (from --coordinator-address)" in capsys.readouterr().err
    assert not os.path.exists(out)  # nothing ran, nothing written
    for bad in ("0", "nan", "inf"):
        assert cli.main([*argv[:-1], *flags, "--distributed-timeout", bad]) == 2
        assert "--distributed-timeout must be a positive, finite number of seconds" in capsys.readouterr().err
    with pytest.raises(ValueError, match="timeout_s must be a positive, finite number"):
        launch.initialize(
            launch.resolve({}, **dict(zip(("coordinator_address", "num_processes", "process_id"), flags[1::2]))), 0
        )
    assert cli.main([*argv[:-1], "--num-processes", "2"]) == 2
    assert "--coordinator-address (or TOKDYN_COORDINATOR_ADDRESS), --process-id" in capsys.readouterr().err
    assert cli.main(["study", "token-dynamics", "--help"]) == 0  # a study that does not share its work: no options
    assert "--distributed" not in capsys.readouterr().out


SMALL = [
    "--temperature",
    "0.5,2",
    "--repulsion",
    "0,0.1",
    "--noise",
    "0.3",
    "--n-clusters",
    "3",
    "--seeds",
    "4",
    "--dim",
    "2",
    "--points-per-cluster",
    "10",
    "--n-resamples",
    "200",
    "--chunk-size",
    "3",
]


def _launches(kind: str, port: int) -> list:
    """The two processes' extra options and variables: a simulated SLURM step (``srun -n 2`` on
    this machine) or a plain launch (process 0 by options, process 1 by TOKDYN_* variables)."""
    if kind == "slurm":
        step = dict(STEP, TOKDYN_COORDINATOR_PORT=str(port))
        return [(["--distributed"], {**step, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)}) for i in (0, 1)]
    address = f"127.0.0.1:{port}"
    flags = ["--coordinator-address", address, "--num-processes", "2", "--process-id", "0"]
    plain = dict(TOKDYN_COORDINATOR_ADDRESS=address, TOKDYN_NUM_PROCESSES="2", TOKDYN_PROCESS_ID="1")
    return [(flags, {}), (["--distributed"], plain)]


# three child processes that import JAX and compile the sweep (about 30 s on 2 cores, each)
@pytest.mark.full
@pytest.mark.parametrize("kind", ["slurm", "plain"])
def test_two_processes_started_together_make_the_one_process_sweep(tmp_path, kind):
    """`srun -n 2 tokdyn sweep token-dynamics --distributed ...` simulated on this machine (each
    process with its SLURM step's variables), or the plain launch on two hosts played on this one:
    two processes meet through the coordinator they were given, each runs its share into one
    directory, and the union equals the sweep of one process (the same program: one host device
    each)."""
    env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    for name in [*launch.SLURM_VARIABLES, *launch.PLAIN_VARIABLES, "SLURM_LOCALID", launch.ENV_PORT]:
        env.pop(name, None)
    cmd = [sys.executable, "-m", "tokdyn.cli", "sweep", "token-dynamics", "--no-plots", "--no-cache"]
    shared, alone = str(tmp_path / "shared"), str(tmp_path / "alone")
    # the plain launch without --chunk-size: the 32 runs fit one chunk of the default size, which is
    # cut in two so that process 1 has a share too
    options = SMALL if kind == "slurm" else SMALL[:-2]
    procs = [
        subprocess.Popen(
            [*cmd, "--out", shared, *extra, "--distributed-timeout", "120", *options],
            env={**env, **variables},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra, variables in _launches(kind, _free_port())
    ]
    subprocess.run([*cmd, "--out", alone, "--quiet", *SMALL], env=env, check=True)
    said = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], said
    assert "part 1 of 2: done" in said[1][0] and "32 runs in" in said[0][0]  # the step's indices, the share of each
    assert "has no chunk" not in said[1][1], said[1][1]
    if kind == "plain":
        for g in ["", *os.listdir(shared)]:
            if os.path.exists(os.path.join(shared, g, "manifest.json")):
                assert sweep.read_manifest(os.path.join(shared, g))["chunk_size"] == 16
    groups = [g for g in ["", *sorted(os.listdir(alone))] if os.path.exists(os.path.join(alone, g, "manifest.json"))]
    assert groups == [
        g for g in ["", *sorted(os.listdir(shared))] if os.path.exists(os.path.join(shared, g, "manifest.json"))
    ]
    for g in groups:
        a, b = sweep.load(os.path.join(alone, g)), sweep.load(os.path.join(shared, g))
        assert set(a.columns) == set(b.columns) and len(a) == 32
        for field in a.columns:
            np.testing.assert_array_equal(b[field], a[field], err_msg=f"{g}: {field}")
    for table in ("summary.csv", "settings.csv"):  # process 0 wrote the analysis, of the same runs
        got, want = io.read_csv(os.path.join(shared, table)), io.read_csv(os.path.join(alone, table))
        for k in want:
            if np.asarray(want[k]).dtype.kind == "f":
                np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=0, equal_nan=True)
            else:
                np.testing.assert_array_equal(got[k], want[k])
