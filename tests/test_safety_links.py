"""Nothing is ever removed through a link (case 2 of the provenance issue), as a hostile user tests
it: every place tokdyn removes or sets aside a file of a study directory resolves it against the
real output directory, and where a folder on its way (or the entry itself) is a symbolic link it
refuses, naming the link, and touches nothing outside the output directory."""

import dataclasses
import os
import pathlib
import re

import numpy as np
import pytest

import hostile
from tokdyn import io, reproduce, studies
from tokdyn.experiment import runner
from tokdyn.train import store
from tokdyn.experiment import study as study_dir
from tokdyn.studies import token_dynamics


@dataclasses.dataclass(frozen=True)
class Cfg:
    seeds: int = 2


def finished(out, name: str = "demo", tables=("metrics.csv",), seeds: int = 2) -> str:
    """A finished study directory at ``out`` (its stamp, a part, ``tables`` and its record)."""
    st = study_dir.Study.open(str(out), name, Cfg(seeds), outputs=tables)
    st.rows("a", lambda: [{"x": 1}])
    for rel in tables:
        with open(st.path(rel), "w") as f:
            f.write(f"table {rel} of {name}\n")
    st.finish()
    return str(out)


def refused(link) -> str:
    """The words a refusal names ``link`` with."""
    return re.escape(os.fspath(link)) + r".* is a symbolic link"


# ---------------------------------------------------------------------------------------------- clearing (--fresh)


def test_fresh_refuses_a_nested_study_moved_away_and_linked_back(tmp_path):
    out = tmp_path / "rp"  # the shape of `tokdyn reproduce`: a study directory holding another
    top = study_dir.Study.open(str(out), "outer", Cfg())
    finished(out / "video", "inner", tables=("metrics.csv", "summary.md"))
    top.finish()
    assert "video/metrics.csv" in study_dir.read_record(str(out))["outputs"]
    kept = hostile.move_and_link(out / "video", tmp_path / "keep")
    before, inside = hostile.snapshot(kept), hostile.snapshot(out)
    with pytest.raises(study_dir.Refused, match=refused(out / "video")):
        study_dir.Study.open(str(out), "outer", Cfg(seeds=3), fresh=True)
    assert hostile.snapshot(kept) == before and hostile.snapshot(out) == inside  # nothing removed, anywhere
    with pytest.raises(study_dir.Refused, match=refused(out / "video")):
        study_dir.clear(str(out))
    assert hostile.snapshot(kept) == before and hostile.snapshot(out) == inside


def test_fresh_refuses_a_recorded_table_under_a_linked_folder(tmp_path):
    out = finished(tmp_path / "d", tables=("tables/metrics.csv", "summary.md"))
    kept = hostile.move_and_link(os.path.join(out, "tables"), tmp_path / "keep")
    before, inside = hostile.snapshot(kept), hostile.snapshot(out)
    with pytest.raises(study_dir.Refused, match=refused(os.path.join(out, "tables"))):
        study_dir.Study.open(out, "demo", Cfg(seeds=3), fresh=True)
    assert hostile.snapshot(kept) == before and hostile.snapshot(out) == inside


def test_fresh_refuses_a_recorded_table_replaced_by_a_link(tmp_path):
    out = finished(tmp_path / "d", tables=("metrics.csv",))
    victim = tmp_path / "victim.csv"
    victim.write_text("a user's table")
    os.remove(os.path.join(out, "metrics.csv"))
    os.symlink(victim, os.path.join(out, "metrics.csv"))
    inside = hostile.snapshot(out)
    with pytest.raises(study_dir.Refused, match=refused(os.path.join(out, "metrics.csv"))):
        study_dir.clear(out)
    assert victim.read_text() == "a user's table" and hostile.snapshot(out) == inside


def test_fresh_through_an_output_directory_that_is_itself_a_link(tmp_path):
    real = finished(tmp_path / "real", tables=("tables/metrics.csv",))
    link = tmp_path / "link"  # --out a link the user chose: the real directory is cleared, the link kept
    os.symlink(real, link)
    st = study_dir.Study.open(str(link), "demo", Cfg(seeds=3), fresh=True)
    st.finish()
    assert os.path.islink(link) and not os.path.exists(os.path.join(real, "tables", "metrics.csv"))
    assert study_dir.read_stamp(real)["config"] == {"seeds": 3}


def test_clear_never_enters_a_linked_folder_and_removes_links_set_aside_not_their_targets(tmp_path):
    out = finished(tmp_path / "d")
    empty = tmp_path / "keep" / "plots"
    empty.mkdir(parents=True)
    os.symlink(empty, os.path.join(out, "plots"))  # a folder tokdyn removes once empty, here a link
    victim = tmp_path / "keep" / "victim.npz"
    victim.write_text("precious")
    os.makedirs(os.path.join(out, "parts", "corrupt"))
    os.symlink(victim, os.path.join(out, "parts", "corrupt", "x.npz.1"))  # a link tokdyn set aside
    study_dir.clear(out)
    assert os.path.islink(os.path.join(out, "plots")) and empty.is_dir() and victim.read_text() == "precious"
    assert not os.path.lexists(os.path.join(out, "parts"))  # the link set aside went, its target stays


# ---------------------------------------------------------------------------------------------- a rerun's removals


def test_rerun_refuses_to_remove_an_earlier_table_through_a_linked_folder(tmp_path):
    out = finished(tmp_path / "d", tables=("tables/metrics.csv",))
    kept = hostile.move_and_link(os.path.join(out, "tables"), tmp_path / "keep")
    before = hostile.snapshot(kept)
    st = study_dir.Study.open(out, "demo", Cfg())
    with pytest.raises(study_dir.Refused, match=refused(os.path.join(out, "tables"))):
        st.clear_other_outputs(Cfg(seeds=5), ["tables/metrics.csv"])
    with pytest.raises(study_dir.Refused, match=refused(os.path.join(out, "tables"))):
        st.remove_output("tables/metrics.csv")
    assert hostile.snapshot(kept) == before
    st.finish()


# ---------------------------------------------------------------------------------------------- set aside


def test_a_linked_parts_folder_is_set_aside_never_followed(tmp_path):
    out = str(tmp_path / "d")
    st = study_dir.Study.open(out, "demo", Cfg())
    elsewhere = tmp_path / "keep"
    elsewhere.mkdir()
    (elsewhere / "a.json").write_text("a user's file named like a part")
    os.symlink(elsewhere, os.path.join(out, "parts"))
    with pytest.warns(RuntimeWarning, match="set aside"):
        assert st.rows("a", lambda: [{"x": 1}]) == [{"x": 1}]
    assert (elsewhere / "a.json").read_text() == "a user's file named like a part"
    assert os.listdir(elsewhere) == ["a.json"] and not os.path.islink(os.path.join(out, "parts"))
    (moved,) = os.listdir(os.path.join(out, "corrupt"))
    assert moved.startswith("parts.") and os.path.islink(os.path.join(out, "corrupt", moved))
    st.finish()


def test_set_aside_refuses_a_linked_corrupt_folder(tmp_path):
    out = str(tmp_path / "d")
    st = study_dir.Study.open(out, "demo", Cfg())
    st.rows("a", lambda: [{"x": 1}])
    elsewhere = tmp_path / "keep"
    elsewhere.mkdir()
    corrupt = os.path.join(out, "parts", "corrupt")
    os.symlink(elsewhere, corrupt)
    hostile.truncate([os.path.join(out, "parts", "a.json")])
    with pytest.raises(io.OutputConflict, match=refused(corrupt)):
        st.rows("a", lambda: [{"x": 1}])  # a damaged part would be set aside into the link
    os.makedirs(os.path.join(out, "parts", "b.json"))  # a directory where a part belongs
    with pytest.raises(io.OutputConflict, match=refused(corrupt)):
        st.has("b")
    assert os.listdir(elsewhere) == [] and os.path.isdir(os.path.join(out, "parts", "b.json"))
    st.finish()


def test_a_damaged_array_part_is_never_set_aside_into_a_linked_corrupt_folder(tmp_path):
    out = str(tmp_path / "d")
    st = study_dir.Study.open(out, "demo", Cfg())
    st.part("p", lambda: {"v": np.arange(3.0)})
    elsewhere = tmp_path / "keep"
    elsewhere.mkdir()
    corrupt = os.path.join(out, "parts", "corrupt")
    os.symlink(elsewhere, corrupt)
    hostile.truncate([os.path.join(out, "parts", "p.npz")])
    with pytest.raises(io.OutputConflict, match=refused(corrupt)):
        st.part("p", lambda: {"v": np.arange(3.0)})
    with pytest.raises(io.OutputConflict, match=refused(corrupt)):  # a checkpoint a computation resumes from
        io.recomputing(os.path.join(out, "parts", "p.npz"), lambda: io.load_npz(os.path.join(out, "parts", "p.npz")))
    assert os.listdir(elsewhere) == [] and os.path.exists(os.path.join(out, "parts", "p.npz"))
    st.finish()


def test_a_damaged_reasoner_file_is_never_set_aside_into_a_linked_corrupt_folder(tmp_path):
    out = tmp_path / "latent"
    (out / "results").mkdir(parents=True)
    (out / "results" / "v.npz").write_bytes(b"not an array file")  # the answers of a finished variant, damaged
    elsewhere = tmp_path / "keep"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "results" / "corrupt")
    with pytest.raises(io.OutputConflict, match=refused(out / "results" / "corrupt")):
        store.finished(str(out), "v")
    assert os.listdir(elsewhere) == [] and (out / "results" / "v.npz").read_bytes() == b"not an array file"


def test_a_damaged_reasoner_file_is_never_set_aside_through_a_linked_results_folder(tmp_path):
    """`mv latent/results keep && ln -s "$PWD/keep" latent/results`, a model's answers damaged there:
    the store refuses naming the link; the user's folder is left as it was."""
    out = tmp_path / "latent"
    (out / "results").mkdir(parents=True)
    (out / "results" / "v.npz").write_bytes(b"not an array file")
    kept = pathlib.Path(hostile.move_and_link(out / "results", tmp_path / "keep"))
    before = hostile.snapshot(kept)
    with pytest.raises(io.OutputConflict, match=refused(out / "results")):
        store.finished(str(out), "v")
    assert hostile.snapshot(kept) == before


def test_set_aside_refuses_a_linked_folder_between_the_directory_and_the_file(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    elsewhere = tmp_path / "keep"
    elsewhere.mkdir()
    (elsewhere / "x.npz").write_text("a user's file")
    os.symlink(elsewhere, out / "checkpoints")
    with pytest.raises(io.OutputConflict, match=refused(out / "checkpoints")):
        io.set_aside(str(out / "checkpoints" / "x.npz"), "damaged", root=str(out))
    with pytest.raises(io.OutputConflict, match="cannot be set aside"):
        io.set_aside(str(tmp_path / "other" / "x.npz"), "damaged", root=str(out))  # outside the directory
    assert hostile.snapshot(elsewhere) == {"x.npz": b"a user's file"}


def test_a_sweep_never_sets_a_damaged_chunk_aside_through_a_linked_chunks_folder(tmp_path):
    """`mv s/chunks keep && ln -s "$PWD/keep" s/chunks`, a chunk damaged there, the sweep resumed:
    it refuses naming the link and moves nothing of the linked folder."""
    import jax

    from tokdyn.engine import sweep

    def f(key, a):
        return {"y": a * jax.random.normal(key)}

    grid, d = sweep.Grid(2, a=[1.0, 2.0]), tmp_path / "s"
    sweep.run(f, grid, key=jax.random.key(0), chunk_size=2, out=str(d), progress=False)
    kept = pathlib.Path(hostile.move_and_link(d / "chunks", tmp_path / "keep"))
    first = sorted(os.listdir(kept))[0]
    (kept / first).write_bytes(b"not a chunk")
    before = hostile.snapshot(kept)
    with pytest.raises(io.OutputConflict, match=refused(d / "chunks")):
        sweep.run(f, grid, key=jax.random.key(0), chunk_size=2, out=str(d), progress=False, resume=True)
    assert hostile.snapshot(kept) == before


def test_reproduce_never_sets_a_tampered_table_aside_through_a_linked_folder(tmp_path):
    """A study directory whose recorded table lies under a folder that became a link to a user's
    folder, the table edited there: reproduce's check refuses naming the link, the user's file stays."""
    out = tmp_path / "demo"
    out.mkdir()
    finished(out, tables=("tables/metrics.csv",))
    kept = pathlib.Path(hostile.move_and_link(out / "tables", tmp_path / "keep"))
    (kept / "metrics.csv").write_text("edited by hand\n")
    before = hostile.snapshot(kept)
    with pytest.raises(io.OutputConflict, match=refused(out / "tables")):
        reproduce._set_aside_unverified(str(out))
    assert hostile.snapshot(kept) == before


# ---------------------------------------------------------------------------------------------- the command


TINY = token_dynamics.Config(seeds=3, noise=(0.3,), n_clusters=(3,), methods=("baseline", "inertia"))


def stand_in_main(cfg, out, *, quiet, plots):
    """The token-dynamics study's declarations run with a stand-in for its science (no JAX work):
    its stamp, a kept part, its declared tables and its record."""
    spec = studies.spec("token-dynamics")

    def run(session, cfg):
        rows = session.rows("stand_in", lambda: [{"x": 1.5}])
        tables = {n: {"x": [r["x"] for r in rows]} if n.endswith(".csv") else "text\n" for n in spec.outputs}
        return runner.Result(tables, record={"stand_in": True})

    fake = dataclasses.replace(spec, run=run, figures=lambda *a: [], summary=lambda cfg, r: "a summary", printed=None)
    return runner.run_study(fake, cfg, out, quiet=quiet, plots=plots)


def reproduce_refuses_a_study_moved_away_and_linked_back(tmp_path, capsys):
    """The reproducer of the issue: `tokdyn reproduce --quick --studies token-dynamics --out rp`,
    then `mv rp/token-dynamics keep/ && ln -s "$PWD/keep/token-dynamics" rp/token-dynamics`, then the
    same command with `--matmul-precision high --fresh`: exit 2 naming the link, nothing touched."""
    out = tmp_path / "rp"
    argv = ["reproduce", "--quick", "--studies", "token-dynamics", "--no-plots", "--quiet", "--out", out]
    assert hostile.run(argv, capsys)[0] == 0
    kept = hostile.move_and_link(out / "token-dynamics", tmp_path / "keep")
    assert {"runs.csv", "study.json", "config.json"} <= set(os.listdir(kept))
    before, inside = hostile.snapshot(kept), hostile.snapshot(out)
    code, err = hostile.run([*argv, "--matmul-precision", "high", "--fresh"], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert re.search(refused(out / "token-dynamics"), err) and "nothing was removed" in err, err
    assert hostile.snapshot(kept) == before and hostile.snapshot(out) == inside


def test_reproduce_fresh_refuses_a_study_moved_away_and_linked_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "study_config", lambda name, quick, out: TINY)
    monkeypatch.setattr(token_dynamics, "main", stand_in_main)
    monkeypatch.setattr(reproduce, "findings", lambda out, ran=(): [])
    reproduce_refuses_a_study_moved_away_and_linked_back(tmp_path, capsys)


@pytest.mark.slow
def test_reproduce_fresh_refuses_a_real_study_moved_away_and_linked_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "study_config", lambda name, quick, out: TINY)  # the real study, small
    reproduce_refuses_a_study_moved_away_and_linked_back(tmp_path, capsys)
