"""The ``on_log`` hooks of ``train_many``: TensorBoard (``TensorBoardLogger``, read back with the
``tensorboard`` package's own event reader) and Weights & Biases (``WandbLogger``, the real package
in offline mode, read back from the run's ``.wandb`` file with wandb's own protobuf records; a full
execution, the default run checks it on a stand-in run object). What each wrote for each model is
compared with the curves ``train_many`` recorded. No network."""

import glob
import json
import os
import struct
import sys
import time

import numpy as np
import pytest

from test_train import evaluate, keys_and_hparams, toy_data, toy_trainer
from tokdyn import train

tbx = pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def wandb_history(path: str) -> dict[int, dict[str, float]]:
    """step -> {key: value} of the history rows in a W&B run file (``run-<id>.wandb``): a 7-byte
    header (``:W&B``, magic, version), then LevelDB's log format (32 KiB blocks of records, each
    a 7-byte header: CRC, length, type FULL/FIRST/MIDDLE/LAST), each record a ``Record`` message."""
    from wandb.proto import wandb_internal_pb2 as wandb_pb

    raw = open(path, "rb").read()
    assert raw[:4] == b":W&B"
    pos, part, rows = 7, b"", {}
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if kind == 0:
            break
        part += raw[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL, LAST
            record = wandb_pb.Record()
            record.ParseFromString(part)
            part = b""
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                rows[int(record.history.step.num)] = items
    return rows


def _train_logged(on_log):
    """The toy models (2 settings x 3 seeds) trained with evaluations every 2nd call, ``on_log``
    called after every call; returns ``(result, names, [(step, sorted log names)])``."""
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams(seeds=3, lrs=(0.05, 0.2))
    seen = []

    def spy(step, logs):
        seen.append((step, sorted(logs)))
        on_log(step, logs)

    res = train.train_many(tr, data, keys, hp, evaluation=train.Evaluation(evaluate, every=2), on_log=spy)
    # what on_log receives: each call's training logs, and the evaluations where they ran
    assert [s for s, _ in seen] == [int(s) for s in res.steps]
    assert "val_loss" in seen[0][1] and "val_loss" not in seen[2][1]
    return res, train.model_names(hp, seeds=3), seen


def test_tensorboard_hook_logs_every_model_as_a_run_read_back_by_tensorboard(tmp_path):
    keys, hp = keys_and_hparams(seeds=3, lrs=(0.05, 0.2))
    names = train.model_names(hp, seeds=3)
    assert names[0] == "learning_rate=0.05,seed=0" and names[5] == "learning_rate=0.2,seed=2"
    with train.TensorBoardLogger(str(tmp_path / "tb"), names) as tb:
        res, _, _ = _train_logged(tb)
    steps = [int(s) for s in res.steps]
    for i, name in enumerate(names):  # one run per model, a tag per metric
        acc = event_accumulator.EventAccumulator(str(tmp_path / "tb" / name))
        acc.Reload()
        assert set(acc.Tags()["scalars"]) == set(res.curves)
        for metric, curve in res.curves.items():
            events = acc.Scalars(metric)
            want = [(s, v) for s, v in zip(steps, curve[i]) if np.isfinite(v)]
            assert [e.step for e in events] == [s for s, _ in want]
            np.testing.assert_allclose([e.value for e in events], [v for _, v in want], rtol=1e-6)


@pytest.mark.full  # the real wandb (about 3 s to import it and to start and finish a run); the default run:
# WandbLogger on a stand-in run in the test below
def test_wandb_hook_logs_every_model_under_its_name_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    keys, hp = keys_and_hparams(seeds=3, lrs=(0.05, 0.2))
    names = train.model_names(hp, seeds=3)
    with train.WandbLogger(names, mode="offline", dir=str(tmp_path), project="toy") as wb:
        res, _, _ = _train_logged(wb)
        assert isinstance(wb.run, wandb.sdk.wandb_run.Run)
    assert wb.run is None  # the run it started is finished
    files = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1
    steps = [int(s) for s in res.steps]
    # wandb's writer is a process of its own (wandb-core): on a loaded machine the file can still be
    # short of its records when finish() returns, so it is read until it holds every step (60 s at most)
    deadline = time.monotonic() + 60.0
    while sorted(history := wandb_history(files[0])) != steps and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(history) == steps, f"{files[0]} ({os.path.getsize(files[0])} bytes): steps {sorted(history)}"
    for c, step in enumerate(steps):  # one run, <metric>/<model name> per value
        row = history[step]
        for metric, curve in res.curves.items():
            for i, name in enumerate(names):
                key = f"{metric}/{name}"
                if np.isfinite(curve[i, c]):
                    np.testing.assert_allclose(row[key], curve[i, c], rtol=1e-6)
                else:
                    assert key not in row  # an evaluation that did not run at this call


def test_loggers_check_what_they_are_given_and_name_a_missing_extra(tmp_path, monkeypatch):
    tb = train.TensorBoardLogger(str(tmp_path / "tb"))
    tb(5, {})  # nothing to log: the number of models is not fixed yet
    tb(10, {"loss": np.array([1.0, 2.0, 3.0])})
    tb.close()
    assert sorted(os.listdir(tmp_path / "tb")) == ["model_0", "model_1", "model_2"]
    tb = train.TensorBoardLogger(str(tmp_path / "tb2"), ["a", "b"])
    with pytest.raises(ValueError, match=r"logs\['loss'\] must have shape \(2,\), one per model, got \(3,\)"):
        tb(10, {"loss": np.zeros(3)})
    flat = train.TensorBoardLogger(str(tmp_path / "flat"), ["a", "b"], runs=False)  # one run, a tag per model
    flat(10, {"loss": np.array([1.5, 2.5])})
    flat.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "flat"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["loss/a", "loss/b"] and acc.Scalars("loss/b")[0].value == 2.5
    resource = pytest.importorskip("resource")
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:
        many = train.TensorBoardLogger(str(tmp_path / "many"))
        with pytest.raises(ValueError, match=f"{soft} open files: pass runs=False"):
            many(10, {"loss": np.zeros(soft)})
        assert not os.path.exists(tmp_path / "many")  # refused before a file is opened
    with pytest.raises(ValueError, match="names must differ"):
        train.TensorBoardLogger(str(tmp_path), ["a", "a"])
    with pytest.raises(ValueError, match="without '..'"):
        train.TensorBoardLogger(str(tmp_path), ["../out"])
    with pytest.raises(ValueError, match="seeds must be an int >= 1 that divides the number of models M=6"):
        train.model_names(keys_and_hparams(seeds=3)[1], seeds=4)
    close = keys_and_hparams(seeds=1, lrs=(0.1, 0.1000001, 0.3))[1]  # apart in the 7th digit: more digits
    assert train.model_names(close) == [
        "learning_rate=0.100000001",
        "learning_rate=0.100000098",
        "learning_rate=0.300000012",
    ]
    same = keys_and_hparams(seeds=1, lrs=(0.1, 0.1))[1]  # one setting twice: numbered apart
    assert train.model_names(same) == ["model_0", "model_1"]
    twice = keys_and_hparams(seeds=1, lrs=(0.1, 0.1, 0.2))[1]
    assert train.model_names(twice) == [
        "learning_rate=0.1,model_0",
        "learning_rate=0.1,model_1",
        "learning_rate=0.2,model_2",
    ]

    class Run:  # an existing run is logged to and left open
        def __init__(self):
            self.rows, self.finished = [], False

        def log(self, row, step):
            self.rows.append((step, row))

        def finish(self):
            self.finished = True

    run = Run()
    with train.WandbLogger(run=run) as wb:
        wb(20, {"loss": np.array([0.5, np.nan])})
    assert run.rows[0][0] == 20 and run.rows[0][1]["loss/model_0"] == 0.5 and np.isnan(run.rows[0][1]["loss/model_1"])
    assert not run.finished
    with pytest.raises(TypeError, match="give run or wandb.init's arguments, not both"):
        train.WandbLogger(run=run, project="p")

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if the extras were not installed
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(
        ImportError, match=r"'tensorboardX' of the 'tensorboard' extra.*pip install -e \"\.\[tensorboard\]\""
    ):
        train.TensorBoardLogger(str(tmp_path / "tb3"))
    with pytest.raises(ImportError, match=r"'wandb' of the 'wandb' extra.*pip install -e \"\.\[wandb\]\""):
        train.WandbLogger(mode="offline")


def test_a_checkpoint_writes_the_curves_first_so_a_resumed_run_goes_on_where_it_stopped(tmp_path):
    """A run killed after its second checkpoint (its logger never closed, nothing flushed by time)
    has the curves of both checkpointed calls in its event files, read back by TensorBoard's reader;
    resumed in the same second with a new logger, the curves go on from the checkpoint, every step
    once, the values train_many recorded."""
    data, tr = toy_data(), toy_trainer()  # 4 calls of 10 steps
    keys, hp = keys_and_hparams(seeds=1, lrs=(0.05, 0.2))
    names = train.model_names(hp)
    ck, logdir = str(tmp_path / "ck.npz"), str(tmp_path / "tb")
    tb = train.TensorBoardLogger(logdir, names, flush_secs=3600)
    calls = []

    def killed_at_the_third_call(step, logs):
        calls.append(step)
        if len(calls) == 3:  # after the checkpoint of step 20, before that of step 30
            raise KeyboardInterrupt
        tb(step, logs)

    with pytest.raises(KeyboardInterrupt):
        train.train_many(
            tr, data, keys, hp, checkpointing=train.Checkpointing(ck, "toy"), on_log=killed_at_the_third_call
        )

    def on_disk(name):
        acc = event_accumulator.EventAccumulator(os.path.join(logdir, name))
        acc.Reload()
        return [(e.step, e.value) for e in acc.Scalars("loss")]

    for name in names:  # the process died here: what is on disk reaches the checkpoint
        assert [s for s, _ in on_disk(name)] == [10, 20]
    with train.TensorBoardLogger(logdir, names) as again:
        res = train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(ck, "toy"), on_log=again)
    assert [int(s) for s in res.steps] == [10, 20, 30, 40]
    for i, name in enumerate(names):
        got = on_disk(name)
        assert [s for s, _ in got] == [10, 20, 30, 40]
        np.testing.assert_allclose([v for _, v in got], res.curves["loss"][i], rtol=1e-6)
    tb.close()
