"""A batch's rows split over devices and a study's batches over processes (tokdyn.models.vlm.devices, the
``part`` of tokdyn.experiment.runner): on two host devices in one child process, generation of a batch whose
rows do not divide over them (three, padded to four) under a noise intervention keyed by each instance's id,
and the teacher-forced attention's concentration on the rows ``aligned`` places on the devices, equal one
device's (the tokens identical, the floats within float32 rounding scaled by their magnitude); generation
refuses ``devices=`` for images that come as one list; the study pads a batch to a multiple of the devices,
its padding rows counted nowhere, and says so. The ``vlm-diagnostics`` command takes the launch options. In
the full tier, the study's tables from the command on two host devices, and from two processes launched on
this machine, equal one device's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("safetensors")

from conftest import child_env  # noqa: E402
from tokdyn import io  # noqa: E402
from tokdyn.cli import launching  # noqa: E402
from tokdyn.engine import launch  # noqa: E402
from tokdyn.experiment import study as study_dir  # noqa: E402
from tokdyn.studies import vlm_diagnostics as vd  # noqa: E402
from tokdyn.studies.vlm_diagnostics import analyses  # noqa: E402

TWO_DEVICES = textwrap.dedent(
    """
    import dataclasses
    import numpy as np, jax
    from tokdyn.diagnostics import vlm
    from tokdyn.models.vlm import devices
    from tokdyn.studies import vlm_diagnostics as vd
    from tokdyn.studies.vlm_diagnostics import analyses, running

    def close(got, want, what):  # float32 rounding of two programs, compounded over the fed-back steps
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        scale = max(1.0, float(np.nanmax(np.abs(want))))
        err = float(np.nanmax(np.abs(got - want)))
        assert got.shape == want.shape and err <= 1e-5 * scale, (what, err, scale)

    assert len(jax.local_devices()) == 2
    cfg = vd.Config(n_instances=3, batch_size=3, n_latents=2, image_size=56, new_tokens=6)
    loaded = vd.open_checkpoint(cfg)
    (g,) = vd.encode(vd.make_instances(cfg, loaded.family), loaded, cfg)
    two = loaded.model  # the study's: its weights on both devices
    one = loaded.family.Model(loaded.config, jax.device_get(two.params))
    assert devices.row_devices(two.params) == tuple(jax.local_devices()) and devices.row_devices(one.params) == ()
    mode = vlm.Mode(loaded.latent_mode(2), 0, 6, (3, 5, 7), jax.random.key(4))
    # three rows under noise, padded to four on two devices: the last two the same prompt under two ids (in a
    # shuffled order), so that their latents differ by the noise alone, each row's drawn from its id's key
    rows = np.array([0, 1, 1])
    prompts = vlm.Prompts(
        g.prompt[rows], g.prompt_mask[rows], g.pixels[rows], g.grid, np.array([7, 3, 5]), np.ones(3, bool)
    )
    want = vlm.under_interventions(one, prompts, mode, ("noise",), scale=0.5)["noise"]
    got = vlm.under_interventions(two, prompts, mode, ("noise",), scale=0.5)["noise"]
    np.testing.assert_array_equal(got.tokens, want.tokens)
    close(got.latents, want.latents, "latents")
    close(got.scores, want.scores, "scores")
    assert np.abs(want.latents[1] - want.latents[2]).max() > 1e-3  # the noise acts, a draw per id
    # the study's batch: three instances padded to four rows, its padding row counted nowhere
    assert analyses.rows_of(cfg) == 4
    assert "--batch-size 3 does not divide over the 2 local devices" in running.padding_note(cfg)
    index, valid, take = analyses.chunk_of(g, 0, 3, analyses.rows_of(cfg))
    assert list(index) == [0, 1, 2, 2] and list(valid) == [True, True, True, False]
    # the teacher-forced analyses on those rows padded as the study pads them (the generation above, its rows
    # taken alike: no program of its own)
    four = vlm.Prompts(take(prompts.ids), take(prompts.mask), take(prompts.pixels), g.grid, index, valid)
    fields = ("tokens", "latents", "n_blocks", "block_steps", "complete", "scores", "stop_steps")
    gen = dataclasses.replace(want, **{f: take(np.asarray(getattr(want, f))) for f in fields})
    assert gen.complete[:, 0].all()  # every row wrote its block: the analyses read every row
    a, b = (vlm.aligned(m, four, gen, mode) for m in (one, two))
    split, whole = b[1]["input_ids"].sharding, a[1]["input_ids"].sharding
    assert len(split.device_set) == 2 and not split.is_fully_replicated and len(whole.device_set) == 1
    conc_one = vlm.concentration(a[0], one.params, a[1], top_k=2)
    conc_two = vlm.concentration(b[0], two.params, b[1], top_k=2)
    for field in ("entropy", "top_k_mass", "patch_share"):
        close(getattr(conc_two, field), getattr(conc_one, field), field)
    try:  # images as one list: no row split
        flat = g.pixels.reshape(-1, g.pixels.shape[-1])
        two.generate(g.prompt, flat, np.repeat(g.grid, 3, 0), g.prompt_mask, max_new_tokens=2, devices=jax.devices())
    except ValueError as e:
        assert "one image a row" in str(e), e
    else:
        raise AssertionError("devices= with one list of images was not refused")
    print("ok")
    """
)


# one child process on two host devices (about 9 CPU-s): the default check of the split; the study
# end to end on two devices and on two processes is the full tier's (below)
def test_a_batch_split_over_two_devices_runs_as_on_one_device():
    env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", TWO_DEVICES], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_the_study_pads_only_the_last_batch_on_one_device_and_takes_the_launch_options():
    index = np.arange(10, 15)

    class Group:
        pass

    g = Group()
    g.index = index
    i, valid, take = analyses.chunk_of(g, 3, 3)  # the last batch: two rows and the last repeated
    assert list(i) == [13, 14, 14] and list(valid) == [True, True, False]
    assert list(take(np.arange(5))) == [3, 4, 4]
    i, valid, _ = analyses.chunk_of(g, 0, 3, 4)  # padded past batch_size: the next batch's rows never enter
    assert list(i) == [10, 11, 12, 12] and list(valid) == [True, True, True, False]
    assert analyses.rows_of(vd.Config(batch_size=3)) == 3 and vd.running.padding_note(vd.Config(batch_size=3)) == ""
    assert launching.takes_part(vd, "main")  # the command offers --distributed (tokdyn.cli.launching)


# ---------------------------------------------------------------------------------------------- the full tier

MICRO = [
    "--quick",
    "--analyses",
    "accuracy,mediation",
    "--n-instances",
    "4",
    "--batch-size",
    "3",
    "--no-plots",
    "--no-cache",
]
COMMAND = [sys.executable, "-m", "tokdyn.cli", "study", "vlm-diagnostics", *MICRO]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = child_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    for name in [*launch.SLURM_VARIABLES, *launch.PLAIN_VARIABLES, launch.ENV_PORT, launch.ENV_LAUNCH_ID]:
        env.pop(name, None)
    return env


def assert_same_tables(got: str, want: str) -> None:
    """The study's tables of ``got`` equal ``want``'s: every text and integer cell identical, every float
    within float32 rounding of the two programs scaled by the column's magnitude, NaN where it is NaN."""
    for table in ("instances.csv", "accuracy.csv", "mediation.csv"):
        a, b = io.read_csv(os.path.join(got, table)), io.read_csv(os.path.join(want, table))
        assert list(a) == list(b), table
        for column in b:
            x, y = np.asarray(a[column]), np.asarray(b[column])
            if y.dtype.kind == "f":
                scale = max(1.0, float(np.nanmax(np.abs(y)))) if np.isfinite(y).any() else 1.0
                np.testing.assert_allclose(x, y, rtol=0, atol=1e-5 * scale, equal_nan=True, err_msg=table + column)
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"{table}: {column}")


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("vlm_one") / "out")
    subprocess.run([*COMMAND, "--out", out, "--quiet"], env=_env(1), check=True, timeout=900)
    return out


# the study from the command, as users run it (about 1 min a child on two cores); the default check of the
# property: test_a_batch_split_over_two_devices_runs_as_on_one_device
@pytest.mark.full
def test_the_study_on_two_host_devices_makes_one_devices_tables(one_device, tmp_path):
    """Batches of 3 instances (the last of 1) split over two host devices, each padded to 4 rows: the
    tables equal one device's."""
    out = str(tmp_path / "two")
    said = subprocess.run([*COMMAND, "--out", out], env=_env(2), capture_output=True, text=True, timeout=900)
    assert said.returncode == 0, said.stderr[-3000:]
    assert "every batch is padded to 4 rows" in said.stderr
    assert_same_tables(out, one_device)
    assert study_dir.read_record(out)["devices"] == 2 and study_dir.read_record(one_device)["devices"] == 1


# two child processes meeting through jax.distributed (about 1.5 min on two cores); the default checks of
# the property: test_a_batch_split_over_two_devices_runs_as_on_one_device (devices) and
# tests/test_study_runner.py::test_processes_deal_the_parts_and_process_0_writes_them_all (the parts dealt)
@pytest.mark.full
def test_two_processes_of_one_launch_make_one_devices_tables(one_device, tmp_path):
    """``tokdyn study vlm-diagnostics --distributed`` as two processes on this machine (process 0 by options,
    process 1 by TOKDYN_* variables), one device each: each runs its share of the clean runs, both wait for
    all of them (the sources of swap and mean are the whole set's), each runs its share of every analysis's
    batches, and process 0 writes tables equal to one process's."""
    out, address = str(tmp_path / "shared"), f"127.0.0.1:{_free_port()}"
    launches = [
        (["--coordinator-address", address, "--num-processes", "2", "--process-id", "0"], {}),
        (
            ["--distributed"],
            dict(TOKDYN_COORDINATOR_ADDRESS=address, TOKDYN_NUM_PROCESSES="2", TOKDYN_PROCESS_ID="1"),
        ),
    ]
    procs = [
        subprocess.Popen(
            [*COMMAND, "--out", out, *extra, "--distributed-timeout", "300"],
            env={**_env(1), **variables},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra, variables in launches
    ]
    said = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], said
    assert "part 1 of 2: done; part 0 writes the tables" in said[1][0]
    assert "# vlm-diagnostics" in said[0][0] and "# vlm-diagnostics" not in said[1][0]
    kept = {(name.split("__")[0], name.split("__")[-1]) for name in os.listdir(os.path.join(out, "parts"))}
    assert kept == {
        (a, f"{s:06d}.{e}") for a, e in (("clean", "npz"), ("accuracy", "json"), ("mediation", "json")) for s in (0, 3)
    }
    assert_same_tables(out, one_device)
    assert study_dir.read_record(out)["processes"] == 2
