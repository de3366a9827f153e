"""The study directory (tokdyn.experiment.study) and the verified files under it (tokdyn.io); then
the hostile cases every study shares, once, parametrised over the registry, through the one runner
(tokdyn.experiment.runner)."""

import dataclasses
import json
import os
import re
import warnings

import numpy as np
import pytest

from tokdyn import io
from tokdyn.experiment import study as study_dir


@dataclasses.dataclass(frozen=True)
class Inner:
    steps: int = 100
    width: int = 8


@dataclasses.dataclass(frozen=True)
class Cfg:
    seeds: int = 2
    budgets: tuple = (10,)
    parts: tuple = ("a", "b")
    inner: Inner = Inner()


# ---------------------------------------------------------------------------------------------- verified files


def test_verified_file_round_trip_and_every_kind_of_damage(tmp_path):
    p = str(tmp_path / "x.bin")
    io.write_verified(p, b"hello world" * 100)
    assert io.read_verified(p) == b"hello world" * 100
    raw = open(p, "rb").read()
    for damaged, words in (
        (raw[:-5], "truncated"),
        (raw[:10], "no verification header"),
        (raw[:-1] + b"X", "SHA-256"),
        (b"", "no verification header"),
    ):
        with open(p, "wb") as f:
            f.write(damaged)
        with pytest.raises(io.CorruptFile, match=words) as e:
            io.read_verified(p)
        assert e.value.path == p and p in str(e.value)


def test_npz_and_pytree_files_are_verified_and_headerless_files_refused(tmp_path):
    p = str(tmp_path / "c.npz")
    tree = {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3, np.float32)}
    io.save_pytree(p, tree, step=3)
    back, meta = io.load_pytree(p, tree)
    np.testing.assert_array_equal(back["w"], tree["w"])
    assert int(meta["step"]) == 3
    data = open(p, "rb").read()
    for cut in (len(data) // 2, len(data) - 1, 30):
        with open(p, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(io.CorruptFile, match="c.npz"):
            io.load_pytree(p, tree)
    legacy = str(tmp_path / "legacy.npz")  # a plain .npz (no checksum): never read as a result
    np.savez(legacy, a=np.arange(3))
    with pytest.raises(io.CorruptFile, match="legacy.npz.*no verification header"):
        io.load_npz(legacy)


def test_kept_parts_set_a_corrupt_file_aside_and_recompute(tmp_path):
    p = str(tmp_path / "parts" / "x.npz")
    calls = []

    def compute():
        calls.append(1)
        return {"v": np.arange(4.0), "n": 3}

    first = io.kept(p, "s1", compute)
    again = io.kept(p, "s1", compute)
    assert len(calls) == 1 and np.array_equal(first["v"], again["v"]) and again["n"] == 3
    io.kept(p, "s2", compute)  # another stamp: recomputed
    assert len(calls) == 2
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) - 7)
    with pytest.warns(RuntimeWarning, match="x.npz.*set aside"):
        v = io.kept(p, "s2", compute)
    assert len(calls) == 3 and np.array_equal(v["v"], np.arange(4.0))
    aside = os.listdir(tmp_path / "parts" / "corrupt")
    assert len(aside) == 1 and aside[0].startswith("x.npz.")
    assert io.kept(p, "s2", compute)["n"] == 3 and len(calls) == 3  # the recomputed file reads back


def test_kept_rows_read_back_equal_to_the_first_run_nan_included(tmp_path):
    p = str(tmp_path / "r.json")
    rows = [{"a": np.float32(0.5), "b": float("nan"), "c": np.int64(3), "d": "x"}]
    first = io.kept_rows(p, "k", lambda: rows)
    second = io.kept_rows(p, "k", lambda: pytest.fail("recomputed"))
    assert first[0]["a"] == 0.5 and np.isnan(first[0]["b"]) and first[0]["c"] == 3 and first[0]["d"] == "x"
    assert json.dumps(first) == json.dumps(second)
    with open(p, "a") as f:
        f.write("garbage")
    with pytest.warns(RuntimeWarning, match="r.json"):
        io.kept_rows(p, "k", lambda: rows)


# ---------------------------------------------------------------------------------------------- the output path


def test_output_path_checks_name_out(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(study_dir.Refused, match="is a file"):
        study_dir.check_output(str(f))
    with pytest.raises(study_dir.Refused, match="cannot be created"):
        study_dir.check_output(str(f / "sub"))
    with pytest.raises(study_dir.Refused, match="virtual file system|cannot be created|cannot be written"):
        study_dir.check_output("/proc/tokdyn-study")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(study_dir.Refused, match="cannot be written"):
            study_dir.check_output(str(ro))
        with pytest.raises(study_dir.Refused, match="not writable"):
            study_dir.check_output(str(ro / "new" / "deeper"))
    finally:
        ro.chmod(0o700)
    with pytest.raises(TypeError, match="out"):
        study_dir.check_output(None)
    assert study_dir.check_output(str(tmp_path / "new" / "deeper")) == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # checking creates nothing


# ---------------------------------------------------------------------------------------------- stamps


def test_a_directory_of_another_configuration_is_refused_naming_every_field(tmp_path):
    out = str(tmp_path / "d")
    study_dir.Study.open(out, "demo", Cfg(), selection=("parts",))
    stamp = json.load(open(os.path.join(out, study_dir.STAMP)))
    assert stamp["study"] == "demo" and stamp["config"]["seeds"] == 2 and "parts" not in stamp["config"]
    assert stamp["tokdyn"] == __import__("tokdyn").__version__
    study_dir.Study.open(out, "demo", Cfg(parts=("a",)), selection=("parts",))  # a selection field: same study
    with pytest.raises(io.OutputConflict) as e:
        study_dir.Study.open(out, "demo", Cfg(seeds=3, budgets=(20,), inner=Inner(steps=5)), selection=("parts",))
    msg = str(e.value)
    for word in ("seeds: 2 there, 3 now", "budgets: [10] there, [20] now", "inner.steps: 100 there, 5 now", "--fresh"):
        assert word in msg, (word, msg)
    with pytest.raises(io.OutputConflict, match="holds the 'demo' study, not 'other'"):
        study_dir.Study.open(out, "other", Cfg())


def test_fresh_removes_what_the_old_configuration_wrote(tmp_path):
    out = str(tmp_path / "d")
    st = study_dir.Study.open(out, "demo", Cfg())
    st.rows("a", lambda: [{"x": 1}])
    from tokdyn.stats import figures

    figures.save(figures.figure((1, 1)), st.path("plots", "stale.png"))  # a figure tokdyn drew
    st = study_dir.Study.open(out, "demo", Cfg(seeds=5), fresh=True)
    st.release()
    assert sorted(os.listdir(out)) == [study_dir.STAMP]
    assert st.stamp["config"]["seeds"] == 5
    assert st.rows("a", lambda: [{"x": 2}]) == [{"x": 2}]


def test_unstamped_directories_are_never_written_into(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    for fresh in (False, True):
        with pytest.raises(io.OutputConflict, match="no tokdyn study stamped") as e:
            study_dir.Study.open(str(mine), "demo", Cfg(), fresh=fresh)
        assert "--fresh" not in str(e.value) and "empty or new directory" in str(e.value)
    assert os.listdir(mine) == ["thesis.tex"]
    old = tmp_path / "old"  # a config.json and no stamp: not known to be tokdyn's, --fresh or not
    old.mkdir()
    (old / "config.json").write_text('{"study": {}}')
    for fresh in (False, True):
        with pytest.raises(io.OutputConflict, match="no tokdyn study stamped"):
            study_dir.Study.open(str(old), "demo", Cfg(), fresh=fresh)
    assert os.listdir(old) == ["config.json"]
    empty = tmp_path / "empty"
    empty.mkdir()
    study_dir.Study.open(str(empty), "demo", Cfg())


def test_a_corrupt_stamp_is_refused_with_fresh_or_without(tmp_path):
    """A stamp that fails its checksum does not show the directory is tokdyn's: nothing in it is
    removed, and --fresh is not offered."""
    out = str(tmp_path / "d")
    study_dir.Study.open(out, "demo", Cfg()).release()
    with open(os.path.join(out, study_dir.STAMP), "r+b") as f:
        f.truncate(30)
    for fresh in (False, True):
        with pytest.raises(io.OutputConflict, match="cannot be read") as e:
            study_dir.Study.open(out, "demo", Cfg(), fresh=fresh)
        assert "--fresh" not in str(e.value)
    assert os.listdir(out) == [study_dir.STAMP]


def test_parts_are_keyed_by_the_stamp_and_their_own_key(tmp_path):
    st = study_dir.Study.open(str(tmp_path / "d"), "demo", Cfg())
    n = []
    compute = lambda: n.append(1) or {"v": np.ones(2)}  # noqa: E731
    st.part("p", compute, key={"model": "a"})
    st.part("p", compute, key={"model": "a"})
    assert len(n) == 1
    st.part("p", compute, key={"model": "b"})
    assert len(n) == 2
    assert not st.has("r")
    st.rows("r", lambda: [{"x": 1.5}])
    assert st.has("r") and not st.has("r", key="other")


def test_sources_enter_the_stamp_and_are_checked_against_the_expected_configuration(tmp_path):
    src = str(tmp_path / "src")
    study_dir.Study.open(src, "trainer", Cfg(inner=Inner(steps=100)))
    stamp = study_dir.source_stamp(src, "trainer", Cfg(inner=Inner(steps=100)))
    with pytest.raises(io.OutputConflict, match=r"inner.steps: 100 there, 5000 now"):
        study_dir.source_stamp(src, "trainer", Cfg(inner=Inner(steps=5000)))
    with pytest.raises(io.OutputConflict, match="holds the study 'trainer', not 'other'"):
        study_dir.source_stamp(src, "other")
    with pytest.raises(io.OutputConflict, match="holds no trainer study"):
        study_dir.source_stamp(str(tmp_path / "nothing"), "trainer")
    out = str(tmp_path / "analysis")
    study_dir.Study.open(out, "analysis", Cfg(), sources={"source": stamp})
    other = dict(stamp, config={**stamp["config"], "seeds": 9})
    with pytest.raises(io.OutputConflict, match="source source"):
        study_dir.Study.open(out, "analysis", Cfg(), sources={"source": other})


# ---------------------------------------------------------------------------------------------- resources


def test_resources_refuse_what_cannot_fit_and_announce_what_is_long(tmp_path):
    with pytest.raises(study_dir.Refused, match=r"make n_train smaller"):
        study_dir.check_resources("demo", study_dir.Estimate(memory=10**15, option="n_train"))
    study_dir.check_resources("demo", study_dir.Estimate(memory=10**6, option="n_train"))
    with pytest.raises(study_dir.Refused, match="GiB"):
        study_dir.check_resources("demo", study_dir.Estimate(memory=3 * 2**30, option="seeds"), memory=2**30)
    lines = []
    study_dir.check_resources("demo", study_dir.Estimate(memory=1, models=10**9, seconds=5 * 3600.0), note=lines.append)
    assert lines and "5.0 hours" in lines[0]
    with pytest.raises(study_dir.Refused, match="n_train"):
        study_dir.elements_fit("n_train", 10**12, 16)
    study_dir.elements_fit("n_train", 1000, 16)
    assert study_dir.available_memory() > 2**20
    with pytest.raises(study_dir.Refused):  # refused before the directory is touched
        study_dir.Study.open(
            str(tmp_path / "big"), "demo", Cfg(), estimate=study_dir.Estimate(memory=10**18, option="seeds")
        )
    assert not (tmp_path / "big").exists()


class _FakeGPU:
    platform, id, device_kind = "gpu", 0, "Fake H100"

    def __init__(self, limit, in_use=0):
        self.limit, self.in_use = limit, in_use

    def memory_stats(self):
        return {"bytes_limit": self.limit, "bytes_in_use": self.in_use}


def test_resources_are_checked_against_the_device_memory_and_the_host(monkeypatch):
    import jax

    cpu = jax.devices("cpu")[0]
    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [cpu])  # the CPU backend, on any machine
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert study_dir.available_memory() > 2**20 and study_dir.available_memory("device") > 2**20  # on CPU: the host's
    assert study_dir.memory_owner() is None
    with pytest.raises(ValueError, match="kind"):
        study_dir.available_memory("disk")
    on_cpu = []
    study_dir.check_resources(
        "demo", study_dir.Estimate(memory=1, models=10, work={"dynamics": 5 * 3600.0}), note=on_cpu.append
    )
    assert "(10 models or runs) will take about 5.0 hours at the rates of the reference CPU" in on_cpu[0]
    assert "not this cpu backend's" in on_cpu[0] and "TOKDYN_PROBE=off" in on_cpu[0]  # conftest
    with pytest.raises(study_dir.Refused, match="this machine can spare") as e:  # a host table on the CPU: as before
        study_dir.check_resources(
            "demo", study_dir.Estimate(memory=1, option="n_train", host_memory=10**18, host_option="seeds")
        )
    assert "make seeds smaller" in str(e.value)

    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [_FakeGPU(2 * 2**30, 2**30)])  # 1 GiB free
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert study_dir.available_memory("device") == 2**30 and study_dir.available_memory("host") > 2**20
    assert study_dir.memory_owner() == "the device gpu:0 (Fake H100)"
    with pytest.raises(study_dir.Refused) as e:  # fits the host, not the device
        study_dir.check_resources("demo", study_dir.Estimate(memory=2**30, option="batch_size"))
    text = str(e.value)
    assert "the device gpu:0 (Fake H100) can spare" in text and "1.0 GiB of its memory" in text
    assert "make batch_size smaller" in text and "this machine" not in text
    study_dir.check_resources(
        "demo", study_dir.Estimate(memory=2**29, option="batch_size")
    )  # 512 MiB: under 80% of 1 GiB
    study_dir.check_resources(
        "demo", study_dir.Estimate(memory=2**20, host_memory=2**31, host_option="seeds"), host_memory=2**40
    )  # a host table larger than the device's memory: the host's to hold
    with pytest.raises(study_dir.Refused, match="this machine can spare.*make seeds smaller"):
        study_dir.check_resources(
            "demo", study_dir.Estimate(memory=2**20, host_memory=2**31, host_option="seeds"), host_memory=2**31
        )
    lines = []
    study_dir.check_resources("demo", study_dir.Estimate(memory=1, models=10, seconds=5 * 3600.0), note=lines.append)
    assert (
        "(10 models or runs) will take about 5.0 hours at the rates of the reference CPU (2 x86_64 cores); the "
        "estimate does not split its work by kind, so it is not scaled to this gpu backend"
    ) in lines[0]
    study_dir.check_resources(
        "demo", study_dir.Estimate(memory=1, models=10, work={"training": 5 * 3600.0}), note=lines.append
    )
    assert (
        "at the rates of the reference CPU (2 x86_64 cores), not this gpu backend's (1 Fake H100; TOKDYN_PROBE=off)"
        in lines[1]
        and "2-core" not in lines[1]
    )


# ---------------------------------------------------------------------------------------------- matmul precision


def test_matmul_precision_is_checked_and_set():
    import jax

    with pytest.raises(
        ValueError,
        match=r"matmul_precision \(--matmul-precision\) must be one of highest, high, "
        r"default, got 'fast'",
    ):
        study_dir.check_matmul_precision("fast")
    with pytest.raises(ValueError, match="matmul_precision"):
        with study_dir.matmul_precision(None):
            pass
    before = jax.config.jax_default_matmul_precision  # the suite's (tests/conftest.py)
    with jax.default_matmul_precision(None):
        # nothing set: JAX's default, full float32 on the CPU, TF32 allowed on a GPU
        assert study_dir.precision_in_force() == ("highest" if jax.default_backend() == "cpu" else "default")
    for value in study_dir.MATMUL_PRECISIONS:
        with study_dir.matmul_precision(value):
            assert jax.config.jax_default_matmul_precision == value and study_dir.precision_in_force() == value
    with jax.default_matmul_precision("tensorfloat32"):  # JAX's alias, named as the option names it
        assert study_dir.precision_in_force() == "high"
    assert jax.config.jax_default_matmul_precision == before  # every setting ends with its block


def test_the_precision_is_stamped_only_when_not_the_default(tmp_path, monkeypatch):
    import jax

    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")  # the CPU backend, on any machine
    out = str(tmp_path / "s")
    study = study_dir.Study.open(out, "demo", Cfg())  # no precision set: on the CPU, full float32 (the default)
    plain = study_dir.read_stamp(out)
    assert "matmul_precision" not in plain and set(plain) == {"study", "tokdyn", "code", "config", "sources"}
    study.finish()
    assert "matmul_precision" not in study_dir.read_record(out)
    with study_dir.matmul_precision("highest"):  # the default named: the same stamp, resumed as it was
        again = study_dir.Study.open(out, "demo", Cfg())
        assert study_dir.read_stamp(out) == plain and again.key == study.key
        again.finish()
    with study_dir.matmul_precision("default"):  # another precision: refused, naming it
        with pytest.raises(io.OutputConflict, match="matmul_precision: highest there, default now"):
            study_dir.Study.open(out, "demo", Cfg())
        other = str(tmp_path / "t")
        st = study_dir.Study.open(other, "demo", Cfg())
        assert study_dir.read_stamp(other)["matmul_precision"] == "default" and st.key != study.key
        st.finish()
    assert study_dir.read_record(other)["matmul_precision"] == "default"
    with pytest.raises(io.OutputConflict, match="matmul_precision: default there, highest now"):
        study_dir.Study.open(other, "demo", Cfg())


def test_differences_are_dotted_and_complete():
    d = study_dir.differences({"a": 1, "b": {"c": 2, "d": 3}, "e": 0}, {"a": 1, "b": {"c": 4, "d": 3}, "f": 1})
    assert d == [("b.c", 2, 4), ("e", 0, "<absent>"), ("f", "<absent>", 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert study_dir.digest({"x": [1, 2]}) == study_dir.digest({"x": (1, 2)})


@pytest.mark.full
def test_processes_opening_one_new_directory_at_once_agree(tmp_path):
    """Several processes (the parts of one sweep, sharing the directory's lock) open a new directory
    together: none is refused, one stamp stands; a temporary stamp left by a killed writer blocks nothing."""
    import concurrent.futures
    import multiprocessing

    out = str(tmp_path / "d")
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs JAX's threads
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as pool:
        stamps = list(pool.map(_open_stamp, [out] * 8))
    assert len(set(stamps)) == 1
    other = str(tmp_path / "e")
    os.makedirs(other)
    with open(os.path.join(other, study_dir.STAMP + ".dead.tmp"), "w") as f:
        f.write("cut short")
    study_dir.Study.open(other, "demo", Cfg())


def _open_stamp(out):
    return study_dir.Study.open(out, "demo", Cfg(), shared=True).key


# ---------------------------------------------------------------------------------------------- every study, hostile
#
# The hostile cases every study shares, once, parametrised over the registry: each study's own
# ``main`` where the case must be refused before any work (so nothing of its science runs), and the
# runner with each study's declarations (name, selection, outputs, figures, sources, checks) but a
# stand-in for its science where the case needs a run (--fresh, kept parts). Each study's own test
# file checks its science: its tables, its resumption after a kill, its options.

import importlib  # noqa: E402
import importlib.util  # noqa: E402

import hostile  # noqa: E402
from conftest import jax_compilations  # noqa: E402
from tokdyn import studies  # noqa: E402
from tokdyn.experiment import findings  # noqa: E402
from tokdyn.experiment import registry, runner  # noqa: E402
from tokdyn.stats import figures  # noqa: E402
from tokdyn.train import store  # noqa: E402

NAMES = registry.NAMES
BAD = {
    "token-dynamics": ("seeds", 0, "seeds must be an int >= 1"),  # (field, value, words of the refusal)
    "latent-reasoning": ("patience", -1.0, "patience must be in (0, 1]"),
    "latent-diagnostics": ("n_instances", 0, "n_instances must be"),
}
OTHER = {
    "latent-reasoning": ("patience", 0.3),
    "latent-diagnostics": ("n_instances", 16),
}  # a field that is stamped, and another value of it
SEED = ("root_seed", 7)
COMPILE = "/jax/core/compile/backend_compile_duration"


def _config(name, tmp_path, **changes):
    """The study's quick preset; its sources (a finished latent-reasoning study's record, no organisms) under
    ``tmp_path``."""
    spec = studies.spec(name)
    cfg = spec.config.quick()
    for field, source in spec.sources.items():
        path = str(tmp_path / f"source-{source}")
        cfg = dataclasses.replace(cfg, **{field: path})
        if source == "latent-reasoning" and not os.path.exists(path):  # a finished study's record, no organisms
            organisms = {"latent": [os.path.join(path, "organisms", "latent", f"seed_{s}") for s in range(3)]}
            study_dir.Study.open(path, source, studies.spec(source).config.quick()).finish(organisms=organisms)
            # the recipe's result, written before the organisms' digests were recorded: read as they are
            os.makedirs(os.path.join(path, "results"))
            store.write_result(store.paths(path, "latent")["result"], {"variant": "latent"})
    return dataclasses.replace(cfg, **changes)


def _stand_in(spec, calls: list):
    """``spec`` with a stand-in for its science: ``run`` keeps one part (counted in ``calls``) and
    writes every declared output (and ``extra.csv`` when asked to), ``figures`` draws every declared
    figure (a glob pattern as one file), ``summary`` is one line (or a JSON value)."""

    def run(session, cfg):
        rows = session.rows("stand_in", lambda: calls.append(1) or [{"x": 1.5}])
        names = list(spec.outputs) + (["extra.csv"] if session.options.get("extra") else [])
        tables = {
            n: {"x": [r["x"] for r in rows]} if n.endswith(".csv") else {"x": 1} if n.endswith(".json") else "text\n"
            for n in names
        }
        with session.timed("stand_in"):
            pass
        return runner.Result(tables, record={"stand_in": True})

    def draw(session, cfg, result):
        return [figures.line_plot(session.path(f.replace("*", "x")), [0, 1], {"a": [0, 1]}) for f in spec.figure_files]

    summary = (lambda cfg, r: {"x": 1}) if (spec.summary_file or "").endswith(".json") else (lambda cfg, r: "a summary")
    return dataclasses.replace(spec, run=run, figures=draw, summary=summary, printed=None)


# The cases run through the stand-in (--fresh, kept parts) differ from study to study only in the
# declarations the runner reads. The default run takes one study of each kind of declaration: a
# source (latent-diagnostics), a JSON summary (collapse), figures named by a glob pattern and a
# selection (visual-tokens), no figures at all (token-dynamics-sweep); the other studies repeat a
# kind already checked and run in the full tier.
REPRESENTATIVE = ("latent-diagnostics", "collapse", "visual-tokens", "token-dynamics-sweep")
DECLARATIONS = [n if n in REPRESENTATIVE else pytest.param(n, marks=pytest.mark.full) for n in NAMES]
assert set(REPRESENTATIVE) <= set(NAMES), REPRESENTATIVE


def _files(out) -> dict:
    return {
        os.path.relpath(os.path.join(r, f), out): open(os.path.join(r, f), "rb").read()
        for r, _, fs in os.walk(out)
        for f in fs
    }


@pytest.mark.parametrize("name", NAMES)
def test_output_paths_that_cannot_be_written_exit_2_before_any_work(name, tmp_path, capsys, monkeypatch):
    hostile.unwritable_outputs_exit_2([*registry.entry(name).command, "--quick"], tmp_path, capsys, monkeypatch, name)


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_configuration_is_refused_before_anything_is_compiled_or_written(name, tmp_path):
    field, value, words = BAD.get(name, (SEED[0], -1, "root_seed must be an int in [0, 4294967295]"))
    cfg = _config(name, tmp_path, **{field: value})
    out = tmp_path / "out"
    with jax_compilations() as events, pytest.raises((ValueError, TypeError), match=re.escape(words)):
        importlib.import_module(registry.entry(name).module).main(cfg, str(out), quiet=True)
    assert events == [] and not out.exists()


@pytest.mark.parametrize("fresh", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_a_directory_tokdyn_did_not_stamp_is_refused_and_left_as_it_is(name, fresh, tmp_path):
    out = tmp_path / "out"  # what an earlier version wrote, or someone else: no stamp
    (out / "parts").mkdir(parents=True)
    (out / "parts" / "old.csv").write_text("seed\n0\n")
    (out / "config.json").write_text('{"study": "%s", "config": {}}' % name)
    before = _files(out)
    cfg = dataclasses.replace(
        _config(name, tmp_path), **{f: str(tmp_path / "no-source") for f in studies.spec(name).sources}
    )
    with pytest.raises(io.OutputConflict, match="no tokdyn study stamped"):
        importlib.import_module(registry.entry(name).module).main(cfg, str(out), quiet=True, fresh=fresh)
    assert _files(out) == before and not (tmp_path / "no-source").exists()  # not even a source touched


@pytest.mark.parametrize("name", NAMES)
def test_another_configuration_or_study_is_refused_naming_the_fields_before_any_work(name, tmp_path):
    spec = studies.spec(name)
    field, value = OTHER.get(name, SEED)
    cfg = _config(name, tmp_path)
    out = str(tmp_path / "out")
    runner.run_study(_stand_in(spec, []), dataclasses.replace(cfg, **{field: value}), out, quiet=True, plots=False)
    before = _files(out)
    main = importlib.import_module(registry.entry(name).module).main
    with jax_compilations() as events, pytest.raises(io.OutputConflict) as e:
        main(cfg, out, quiet=True)
    assert f"{field}: {value} there, {getattr(cfg, field)} now" in str(e.value) and "--fresh" in str(e.value)
    assert COMPILE not in events and _files(out) == before  # (a config's checks may trace, never compile)
    other = str(tmp_path / "other")
    study_dir.Study.open(other, "another-study", {"a": 1}).finish()
    with pytest.raises(io.OutputConflict, match=f"holds the 'another-study' study, not '{name}'"):
        main(cfg, other, quiet=True)


@pytest.mark.parametrize("name", DECLARATIONS)
def test_fresh_removes_only_what_tokdyn_wrote(name, tmp_path):
    spec = studies.spec(name)
    field, value = OTHER.get(name, SEED)
    cfg = _config(name, tmp_path)
    out = tmp_path / "out"
    calls = []
    runner.run_study(
        _stand_in(spec, calls), dataclasses.replace(cfg, **{field: value}), str(out), quiet=True, extra=True
    )
    (out / "notes.txt").write_text("mine")  # a user's files beside the study's
    (out / "parts" / "mine.json").write_text("{}")
    (out / "plots").mkdir(exist_ok=True)
    (out / "plots" / "mine.png").write_bytes(b"\x89PNG not tokdyn's")
    io.save_npz(str(out / "chunks" / "000-004.npz"), a=np.zeros(4))  # a file tokdyn wrote (verified)
    runner.run_study(_stand_in(spec, calls), cfg, str(out), quiet=True, plots=False, fresh=True)
    assert calls == [1, 1]  # the old part went with the rest, and was computed again
    assert not (out / "extra.csv").exists() and not (out / "chunks").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "parts" / "mine.json").read_text() == "{}"
    assert (out / "plots" / "mine.png").read_bytes() == b"\x89PNG not tokdyn's"
    assert not [f for f in figures_of(out) if "mine" not in f]  # --no-plots: the old configuration's are gone
    record = study_dir.read_record(str(out))
    assert record["config"][field] == getattr(cfg, field) and "extra.csv" not in record["outputs"]


def figures_of(out) -> list:
    return [os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs if f.endswith(".png")]


@pytest.mark.parametrize("name", DECLARATIONS)
def test_finished_parts_are_reused_and_a_damaged_one_is_named_and_recomputed(name, tmp_path):
    spec = studies.spec(name)
    cfg = _config(name, tmp_path)
    out = str(tmp_path / "out")
    calls = []
    stand_in = _stand_in(spec, calls)
    runner.run_study(stand_in, cfg, out, quiet=True)
    first = {k: v for k, v in _files(out).items() if k.endswith((".csv", ".md", ".txt")) or k == "summary.json"}
    runner.run_study(stand_in, cfg, out, quiet=True)
    assert calls == [1] and {k: _files(out)[k] for k in first} == first  # the same tables, nothing recomputed
    part = os.path.join(out, "parts", "stand_in.json")
    with open(part, "r+b") as f:
        f.truncate(os.path.getsize(part) // 2)
    with pytest.warns(RuntimeWarning, match="stand_in.json"):
        runner.run_study(stand_in, cfg, out, quiet=True)
    assert calls == [1, 1] and os.listdir(os.path.join(out, "parts", "corrupt"))
    assert {k: _files(out)[k] for k in first} == first
    record = study_dir.read_record(out)  # one record for every study: the whole configuration, one set of timings
    assert record["config"] == study_dir.config_dict(cfg) and record["stand_in"] is True
    assert record.get("selection", {}) == {k: study_dir.config_dict(cfg)[k] for k in spec.selection}
    assert set(record["timings"]) == {"stand_in_s", "plots_s", "total_s"}
    assert set(first) - {"summary.json"} <= set(record["outputs"]) | {spec.summary_file}


def test_the_docs_example_study_runs_resumes_and_judges_its_finding(tmp_path):
    """docs/studies/writing-a-study.md's complete study, as a user would write it: a module of
    science that the runner drives."""
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "studies", "writing-a-study.md")) as f:
        found = re.search(r"<!-- tests/test_study_runner.py runs this block -->\n```python\n(.*?)```", f.read(), re.S)
    path = tmp_path / "collapse_vs_temperature.py"
    path.write_text(found.group(1))
    spec = importlib.util.spec_from_file_location("collapse_vs_temperature", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(ValueError, match="temperatures must hold two or more increasing values"):
        module.Config(temperatures=(2.0, 1.0)).validate()
    cfg = module.Config(seeds=12)
    out = str(tmp_path / "out")
    assert module.main(cfg, out, quiet=True) is True
    rates, runs = io.read_csv(os.path.join(out, "rates.csv")), io.read_csv(os.path.join(out, "runs.csv"))
    assert runs["seed"].size == 12 * 2 and sorted(set(runs["temperature"])) == [1.0, 256.0]
    for t, c in zip(rates["temperature"], rates["collapsed"]):  # the rates are the runs' means
        assert c == pytest.approx(np.mean(runs["collapsed"][runs["temperature"] == t]))
    record = study_dir.read_record(out)
    assert set(record["timings"]) == {"simulate_s", "plots_s", "total_s"}
    assert record["estimate"]["work"] == {"dynamics": pytest.approx(24 / 300)}  # the time said, beside the timings
    assert record["estimate"]["sources"] == {"dynamics": "reference"}  # TOKDYN_PROBE=off (conftest): not measured
    assert record["estimate"]["seconds"] == pytest.approx(24 / 300) == record["estimate"]["reference_seconds"]
    assert os.path.exists(os.path.join(out, "rates.png"))
    assert "| temperature | collapse rate | ARI |" in open(os.path.join(out, "summary.md")).read()
    before = _files(out)["runs.csv"]
    with jax_compilations() as events:
        module.main(cfg, out, quiet=True)  # the kept part: nothing is simulated, traced or compiled again
    assert events == [] and _files(out)["runs.csv"] == before
    (f,) = module.SPEC.findings(out)
    assert f.key == "T1" and f.verdict in findings.VERDICTS and f.basis.startswith("lowest ")
    with open(os.path.join(out, "runs.csv"), "a") as fh:
        fh.write("256.0,99,1,1.0\n")  # changed after the study recorded it: never judged
    (f,) = module.SPEC.findings(out)
    assert f.verdict == "open" and "collapse-vs-temperature/runs.csv fails its verification" in f.basis


# ---------------------------------------------------------------------------------------------- parts shared by processes


def test_a_kept_part_is_read_without_computing_it(tmp_path):
    p, r = str(tmp_path / "x.npz"), str(tmp_path / "r.json")
    assert io.read_kept(p, "s") is None and io.read_kept(r, "s", rows=True) is None  # nothing there yet
    io.kept(p, "s", lambda: {"v": np.arange(3.0), "n": 2})
    io.kept_rows(r, "s", lambda: [{"a": 1}])
    got = io.read_kept(p, "s")
    assert np.array_equal(got["v"], np.arange(3.0)) and got["n"] == 2
    assert io.read_kept(r, "s", rows=True) == [{"a": 1}]
    assert io.read_kept(p, "other") is None and io.read_kept(r, "other", rows=True) is None  # another stamp
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) - 7)
    assert io.read_kept(p, "s") is None and os.path.exists(p)  # damaged: not read, left to its writer


@dataclasses.dataclass(frozen=True)
class Shared:
    """A study of parts that processes share.

    Attributes:
      n: how many parts.
    """

    n: int = 4

    def validate(self):
        return self

    def estimate(self):
        return study_dir.Estimate()


def _shared_run(session, cfg):
    names = [f"p{k}" for k in range(cfg.n)]
    who = session.share[0]
    done = {name: session.rows(name, lambda name=name: [{"part": name, "by": who}]) for name in session.deal(names)}
    if who != 0:
        return None
    others = [name for name in names if name not in done]
    done.update(zip(others, session.gather(others, rows=True)))
    return runner.Result({"parts.csv": io.to_columns([r for name in names for r in done[name]])})


SHARED = runner.Spec(name="shared-parts", config=Shared, run=_shared_run, summary_file=None, outputs=("parts.csv",))


def test_processes_deal_the_parts_and_process_0_writes_them_all(tmp_path, monkeypatch):
    """Two processes of one run (``part=(i, 2)``, here two threads, process 0 first): each computes every
    second part, process 0 waits for the other's on disk and writes the table of all, in order; the other
    writes nothing and returns None. One process alone waits for parts nobody writes until it gives up,
    naming them; ``fresh`` with several processes is refused."""
    import threading

    main = runner.entry(SHARED, __name__, returns="True.", parts=True)
    out = str(tmp_path / "shared")
    said = {}
    zero = threading.Thread(target=lambda: said.update(zero=main(Shared(), out, quiet=True, part=(0, 2))))
    zero.start()
    assert main(Shared(), out, quiet=True, part=(1, 2)) is None
    zero.join(60)
    assert said == {"zero": True}
    table = io.read_csv(os.path.join(out, "parts.csv"))
    assert list(table["part"]) == ["p0", "p1", "p2", "p3"] and list(table["by"]) == [0, 1, 0, 1]
    monkeypatch.setattr(runner, "PART_WAIT_S", 0.3)
    with pytest.raises(TimeoutError, match=r"waited 0 s without progress for the other processes' parts \(2 missing\)"):
        main(Shared(), str(tmp_path / "alone"), quiet=True, part=(0, 2))
    with pytest.raises(study_dir.Refused, match=r"fresh=True with part=\(0, 2\)"):
        main(Shared(), out, quiet=True, fresh=True, part=(0, 2))
    with pytest.raises(ValueError, match="part must be a pair"):
        main(Shared(), out, quiet=True, part=(2, 2))


@pytest.mark.parametrize("after", [1, 2])
def test_a_stamp_linked_while_another_process_looks_is_never_a_strangers_file(tmp_path, monkeypatch, after):
    """Processes of one job open a new directory at once: whichever look at the directory (its files,
    its stamp) another process's stamp lands after, the check sees an empty directory or a stamped one,
    never files without a stamp. A directory with a file and no stamp is still refused."""
    from tokdyn.experiment.study import ownership, stamps

    out = str(tmp_path / "new")
    os.makedirs(out)
    stamp = stamps.make_stamp("shared-parts", Shared(), outputs=["parts.csv"])
    looks = []

    def looked(fn):
        def look(path):
            value = fn(path)
            looks.append(fn)
            if len(looks) == after:
                stamps.stamp_once(path, stamp)  # the other process, right after this look
            return value

        return look

    monkeypatch.setattr(ownership, "read_stamp", looked(ownership.read_stamp))
    monkeypatch.setattr(ownership, "_has_files", looked(ownership._has_files))
    found = ownership.stamped_or_empty(out)
    assert found is None or found["config"] == stamp["config"]
    assert len(looks) >= after  # the stamp did land during the check
    monkeypatch.undo()
    stranger = str(tmp_path / "stranger")
    os.makedirs(stranger)
    open(os.path.join(stranger, "notes.txt"), "w").close()
    with pytest.raises(io.OutputConflict, match=r"no tokdyn study stamped \(notes\.txt\)"):
        ownership.stamped_or_empty(stranger)
