"""tokdyn sweep vtae (tokdyn.studies.learned_sweep): the command runs, a rerun reads the chunks
back without training anything, the results are train_many's on the same seeds x settings, bad
axes and values are refused before anything is compiled, and the report's rows are NumPy's and
SciPy's."""

import dataclasses
import os

import jax
import numpy as np
import pytest
import scipy.stats
from conftest import jax_compilations

from tokdyn import cli, io, train
from tokdyn.engine import sweep
from tokdyn.models import vtae as vtae_model
from tokdyn.studies.learned_sweep import report, run_sweep, vtae
from tokdyn.train import optim

COMPILE = "/jax/core/compile/backend_compile_duration"
TINY_MODEL = vtae_model.Config(
    hidden=8, batch_size=8, train=optim.Config(steps=4, steps_per_call=2, warmup=0, decay="constant", clip_norm=0.0)
)
TINY = vtae.Config(
    seeds=4, learning_rate="3e-3,3e-2", tau_end="0.3", baseline="learning_rate=0.03", chunk_size=3, lanes=2,
    n_resamples=300, model=TINY_MODEL,
)  # fmt: skip


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(config, directory) of the tiny sweep, run once (4 chunks of 3 models: 2 conditions x 4 seeds)."""
    out = str(tmp_path_factory.mktemp("vtae-sweep"))
    run_sweep(TINY, out, progress=False)
    return TINY, out


@pytest.mark.full
def test_the_results_are_train_many_on_the_same_seeds_and_settings(swept):
    cfg, out = swept
    got = sweep.load(out)
    root = jax.random.key(cfg.root_seed)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(np.arange(cfg.seeds, dtype=np.uint32))
    hp = dataclasses.replace(vtae_model.Hparams(), learning_rate=np.array([3e-3, 3e-2]), tau_end=0.3)
    keys, hps = train.grid(seed_keys, hp)  # model h * S + s: the grid's order (the seed fastest)
    model = cfg.task()
    res = train.train_many(vtae_model.trainer(cfg.model), vtae_model.inputs(cfg.model), keys, hps)
    want = jax.vmap(model.outputs)(keys, res.state.hparams, res.state)
    np.testing.assert_array_equal(got.columns["seed"], np.tile(np.arange(cfg.seeds), 2))
    np.testing.assert_allclose(got.columns["learning_rate"], np.repeat([3e-3, 3e-2], cfg.seeds), rtol=1e-6)
    for name in cfg.MODEL.metrics + ("skipped",):
        a, b = np.asarray(got.columns[name], np.float64), np.asarray(want[name], np.float64)
        scale = max(1.0, float(np.max(np.abs(b))))  # two programs: equal up to float32 rounding
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * scale, err_msg=name)


@pytest.mark.full
def test_a_rerun_reads_every_chunk_back_without_compiling_or_writing(swept):
    cfg, out = swept
    chunks = os.path.join(out, "chunks")
    before = {f: os.stat(os.path.join(chunks, f)).st_mtime_ns for f in os.listdir(chunks)}
    assert len(before) == 3  # 8 models in chunks of 3
    with jax_compilations() as events:
        run_sweep(cfg, out, progress=False)
    assert COMPILE not in events
    assert {f: os.stat(os.path.join(chunks, f)).st_mtime_ns for f in os.listdir(chunks)} == before


@pytest.mark.full
def test_another_configuration_is_refused_in_the_same_directory(swept):
    cfg, out = swept
    with pytest.raises(io.OutputConflict):
        run_sweep(dataclasses.replace(cfg, tau_end="0.1"), out, progress=False)


@pytest.mark.full
def test_report_rows_are_numpy_and_scipy_on_the_chunks(swept):
    cfg, out = swept
    result = report.analysis(out, cfg)
    cols = sweep.load(out).columns
    table, paired = result.tables["conditions.csv"], result.tables["paired.csv"]
    assert result.data["baseline"] == 1  # learning_rate=0.03
    lr = np.asarray(cols["learning_rate"], np.float64)
    for i, value in enumerate((3e-3, 3e-2)):
        sel = np.isclose(lr, value)
        for m in cfg.MODEL.metrics:
            np.testing.assert_allclose(table[f"{m}_mean"][i], np.mean(cols[m][sel]), rtol=1e-6, atol=1e-9)
    for j, m in enumerate(cfg.MODEL.metrics):
        assert paired["metric"][j] == m and np.isclose(paired["learning_rate"][j], 3e-3)
        a = np.asarray(cols[m][np.isclose(lr, 3e-3)], np.float64)
        b = np.asarray(cols[m][np.isclose(lr, 3e-2)], np.float64)
        np.testing.assert_allclose(paired["mean_diff"][j], np.mean(a - b), rtol=1e-6, atol=1e-9)
        if np.ptp(a - b) > 0:
            ref = scipy.stats.ttest_rel(a, b)
            np.testing.assert_allclose([paired["t"][j], paired["p"][j]], [ref.statistic, ref.pvalue], rtol=1e-6)
            assert paired["diff_low"][j] <= paired["mean_diff"][j] <= paired["diff_high"][j]
    assert "(baseline)" in result.data["report"] and "learning_rate=0.003" in result.data["report"]


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(baseline="tau_start=1"), "baseline: 'tau_start' is a knob of the model that is not swept"),
        (dict(baseline="nope=1"), "baseline: 'nope' is no knob of the model"),
        (dict(baseline="learning_rate=0.5"), "baseline: learning_rate=0.5 is not a value of the axis"),
        (dict(learning_rate="-1,1"), "learning_rate must be in (0, inf]"),
        (dict(tau_end="0.1,0.1"), "tau_end"),
        (dict(seeds=0), "seeds must be an int >= 1"),
    ],
)
def test_bad_axes_and_values_are_refused_before_anything_is_compiled(changes, words, tmp_path):
    with jax_compilations() as events, pytest.raises(ValueError, match=__import__("re").escape(words)):
        vtae.main(dataclasses.replace(TINY, **changes), str(tmp_path / "out"), quiet=True)
    assert COMPILE not in events and not (tmp_path / "out").exists()


@pytest.mark.full
def test_the_command_runs_and_is_listed(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sweep", "vtae", "--seeds", "2", "--learning-rate", "0.01", "--tau-end", "", "--hidden", "8",
            "--batch-size", "8", "--steps", "2", "--steps-per-call", "2", "--n-resamples", "50", "--out", out,
            "--quiet", "--no-cache"]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 0, capsys.readouterr().err
    assert {"conditions.csv", "paired.csv", "report.md", "manifest.json"} <= set(os.listdir(out))
    assert "One condition only" in (out / "report.md").read_text()
    assert (out / "plots" / "loss.png").stat().st_size > 1000 and (out / "plots" / "by_learning_rate.png").exists()
    assert cli.main(["sweep", "vtae", "--nope", "1", "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(SystemExit):
        cli.build_parser(["sweep"]).parse_args(["sweep", "--help"])
    assert "vtae" in capsys.readouterr().out


def test_the_chunk_on_an_accelerator_is_sized_from_the_device_memory(monkeypatch, tmp_path):
    from tokdyn.engine import execute
    from tokdyn.studies.learned_sweep import running

    monkeypatch.setattr(running.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(running.jax, "local_device_count", lambda: 1)
    monkeypatch.setattr(execute, "run_bytes", lambda fn, args: 1000)  # bytes per model, as XLA would report
    monkeypatch.setattr(execute, "device_memory", lambda: 4_000_000)
    cfg = dataclasses.replace(TINY, chunk_size=0)
    assert running.chunk_size(cfg) == 512  # the largest power of two in a quarter of 4 MB at 1 kB a model
    assert running.chunk_size(dataclasses.replace(TINY, chunk_size=7)) == 7
    (tmp_path / "manifest.json").write_text("{}")
    assert running.chunk_size(cfg, str(tmp_path)) is None  # resuming: the chunk size on disk
