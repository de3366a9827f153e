"""Data safety of the study runner and its files, as a hostile user tests it (cases 1, 4 and 6 of
the data-safety issue): tokdyn removes only what it wrote, reads back only what verifies, and
refuses, naming the file, what it cannot write."""

import dataclasses
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tokdyn import cli, io
from tokdyn.experiment import study as study_dir
from tokdyn.stats import figures

SMALL = [
    "--seeds",
    "2",
    "--noise",
    "0.3",
    "--n-clusters",
    "3",
    "--dim",
    "2",
    "--points-per-cluster",
    "6",
    "--quiet",
    "--no-plots",
    "--no-cache",
]


def tokdyn(args, capsys) -> tuple[int, str]:
    code = cli.main(["study", "token-dynamics", *map(str, args)])
    return code, capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class Cfg:
    seeds: int = 2


def user_project(root) -> dict:
    """A directory of a user's own: a model's config.json, a thesis, code and a checkpoint."""
    files = {
        "config.json": '{"hidden_size": 768}',
        "thesis.tex": "\\chapter{Years of work}",
        "src/train.py": "print('train')",
        "checkpoints/model.bin": "weights",
    }
    for name, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "w") as f:
            f.write(text)
    return files


def intact(root, files: dict) -> bool:
    return all(open(os.path.join(root, n)).read() == t for n, t in files.items())


# ---------------------------------------------------------------------------------------------- case 1: --fresh


def test_case1_fresh_never_deletes_user_files(tmp_path, capsys):
    d = str(tmp_path / "userproj")
    files = user_project(d)
    for fresh in ([], ["--fresh"]):
        code, err = tokdyn(["--out", d, *SMALL, *fresh], capsys)
        assert code == 2 and "Traceback" not in err, err
        assert "no tokdyn study stamped" in err and "empty or new directory" in err
        assert "--fresh" not in err.split("error:")[1], err  # never offered for a directory not tokdyn's
        assert intact(d, files) and sorted(os.listdir(d)) == ["checkpoints", "config.json", "src", "thesis.tex"]
    with pytest.raises(io.OutputConflict):  # clear() itself refuses such a directory
        study_dir.clear(d)
    assert intact(d, files)


@pytest.mark.full
def test_case1_fresh_keeps_foreign_files_in_stamped_dir(tmp_path, capsys):
    d = tmp_path / "td"
    assert tokdyn(["--out", d, *SMALL], capsys)[0] == 0
    ours = {"runs.csv", "summary.csv", "overall.csv", "stat_tests.json", "summary.md"}
    assert set(study_dir.read_record(d)["outputs"]) == ours
    foreign = {
        "notes.txt": "my notes",
        "src/analysis.py": "x = 1",
        "plots/mine.png": "my own figure",
        "parts/keep.txt": "mine too",
        "checkpoints/model.bin": "weights",
    }
    for name, text in foreign.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    figures.save(figures.figure((1, 1)), str(d / "plots" / "drawn.png"))  # one tokdyn drew
    io.write_verified(str(d / "parts" / "old.json"), b"{}")  # a part tokdyn wrote
    code, err = tokdyn(["--out", d, *SMALL, "--seeds", "3"], capsys)  # another configuration: refused
    assert code == 2 and "--fresh" in err  # tokdyn's own directory: --fresh is offered
    code, err = tokdyn(["--out", d, *SMALL, "--seeds", "3", "--fresh"], capsys)
    assert code == 0, err
    assert intact(d, foreign)
    assert not (d / "plots" / "drawn.png").exists() and not (d / "parts" / "old.json").exists()
    record = study_dir.read_record(d)
    assert record["config"]["seeds"] == 3 and set(record["outputs"]) == ours  # the user's notes are not listed
    assert study_dir.read_table(d, "runs.csv")["seed"].size == 4 * 3


def test_case1_declared_outputs_are_stamped_removed_by_fresh_and_never_overwrite_a_user_file(tmp_path):
    out = str(tmp_path / "d")
    st = study_dir.Study.open(out, "demo", Cfg(), outputs=("results.csv", "tables/summary.md"))
    assert json.load(open(os.path.join(out, study_dir.STAMP)))["outputs"] == [
        "results.csv",
        "tables/summary.md",
    ]
    io.write_csv(st.path("results.csv"), {"a": [1]})  # the run dies here, before finish
    (tmp_path / "d" / "mine.txt").write_text("keep")
    study_dir.Study.open(out, "demo", Cfg(seeds=3), fresh=True, outputs=("tables/summary.md",)).release()
    assert sorted(os.listdir(out)) == ["mine.txt", study_dir.STAMP]  # the declared output went, the user's file stays
    (tmp_path / "d" / "results.csv").write_text("a user's table where the study writes its own")
    for fresh, seeds in ((False, 3), (True, 4)):
        with pytest.raises(study_dir.Refused, match=r"results.csv.*in the way"):
            study_dir.Study.open(
                out, "demo", Cfg(seeds=seeds), fresh=fresh, outputs=("results.csv", "tables/summary.md")
            )
    assert (tmp_path / "d" / "results.csv").read_text().startswith("a user's table")
    with pytest.raises(ValueError, match="outputs"):
        study_dir.Study.open(str(tmp_path / "e"), "demo", Cfg(), outputs=("../escape.csv",))


def test_case1_clear_removes_only_what_tokdyn_wrote(tmp_path):
    out = str(tmp_path / "d")
    st = study_dir.Study.open(out, "demo", Cfg())
    st.rows("a", lambda: [{"x": 1}])
    (tmp_path / "d" / "parts" / "a.json.0123456789ab.tmp").write_text("cut short")
    (tmp_path / "d" / "parts" / "mine.csv").write_text("mine")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("precious")
    os.symlink(victim, tmp_path / "d" / "linked")  # a link into the user's files: never followed
    os.makedirs(tmp_path / "d" / "parts" / "b.json")  # a directory where a part belongs ...
    (tmp_path / "d" / "parts" / "b.json" / "inside.txt").write_text("precious too")
    with pytest.warns(RuntimeWarning, match="set aside"):
        st.rows("b", lambda: [{"x": 2}])  # ... set aside into parts/corrupt, not emptied
    (tmp_path / "d" / "report.tmp").write_text("a user's file with a temporary's suffix")
    st.release()  # the study is over (clear runs under the directory's exclusive lock)
    study_dir.clear(out)
    left = sorted(os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs)
    assert left[0].startswith("parts/corrupt/b.json.") and left[0].endswith("inside.txt")
    assert left[1:] == ["parts/mine.csv", "report.tmp"] and os.path.islink(os.path.join(out, "linked"))
    assert (victim / "data.txt").read_text() == "precious"


def test_case1_fresh_refused_while_study_running(tmp_path, capsys):
    d = str(tmp_path / "td")
    assert tokdyn(["--out", d, *SMALL], capsys)[0] == 0
    before = {n: open(os.path.join(d, n), "rb").read() for n in (study_dir.STAMP, study_dir.RECORD, "runs.csv")}
    fd = study_dir.lock(d)  # the parts of one job filling it hold the shared lock (a separate open file description)
    try:
        code, err = tokdyn(["--out", d, *SMALL, "--seeds", "3", "--fresh"], capsys)
        assert code == 2 and "a study is running in" in err and d in err, err
        assert all(open(os.path.join(d, n), "rb").read() == b for n, b in before.items())
        study_dir.Study.open(
            d, "token-dynamics", _td_cfg(), selection=_td_selection(), quiet=True, shared=True
        ).release()  # another part of the same job shares it
        with pytest.raises(study_dir.Refused, match="is in use"):  # a run of its own does not
            study_dir.Study.open(d, "token-dynamics", _td_cfg(), selection=_td_selection(), quiet=True)
    finally:
        study_dir.unlock(fd)
    # a study running in another process
    script = (
        "import sys, time; from tokdyn.experiment import study as study_dir; "
        "study_dir.Study.open(sys.argv[1], 'demo', {'seeds': 2}); print('open', flush=True); time.sleep(120)"
    )
    other = str(tmp_path / "other")
    proc = subprocess.Popen([sys.executable, "-c", script, other], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        with pytest.raises(study_dir.Refused, match="a study is running"):
            study_dir.Study.open(other, "demo", {"seeds": 3}, fresh=True)
        assert json.load(open(os.path.join(other, study_dir.STAMP)))["config"] == {"seeds": 2}
    finally:
        proc.kill()
        proc.wait()
    study_dir.Study.open(other, "demo", {"seeds": 3}, fresh=True)  # the study ended: --fresh goes ahead
    inner = os.path.join(other, "inner")  # a study directory inside (as reproduce keeps its studies)
    study_dir.Study.open(inner, "demo", {"seeds": 1}).release()
    fd = study_dir.lock(inner)
    try:
        with pytest.raises(study_dir.Refused, match="a study is running in.*inner"):
            study_dir.Study.open(other, "demo", {"seeds": 4}, fresh=True)
    finally:
        study_dir.unlock(fd)
    study_dir.Study.open(other, "demo", {"seeds": 4}, fresh=True).release()
    assert os.listdir(other) == [study_dir.STAMP]  # the inner study's files went too, its folder once empty


def _td_cfg():
    from tokdyn.studies import token_dynamics as td

    return td.Config(seeds=2, noise=(0.3,), n_clusters=(3,), dim=2, points_per_cluster=6)


def _td_selection():
    from tokdyn.studies import token_dynamics as td

    return td.SPEC.selection


# ---------------------------------------------------------------------------------------------- case 4: verification


def test_case4_headerless_npz_is_corrupt(tmp_path):
    p = str(tmp_path / "part.npz")
    np.savez(p, stamp=np.asarray("s"), v=np.arange(3))  # a plain .npz: no verification header
    with pytest.raises(io.CorruptFile, match="part.npz.*no verification header"):
        io.load_npz(p)
    with pytest.raises(io.CorruptFile, match="no verification header"):
        io.load_pytree(p, {"v": np.arange(3)})
    with pytest.warns(RuntimeWarning, match="set aside"):
        assert io.kept(p, "s", lambda: {"v": np.ones(2)})["v"].tolist() == [1.0, 1.0]  # recomputed
    assert io.is_verified(p)


def test_case4_part_directory_or_symlink_set_aside(tmp_path):
    out = tmp_path / "d"
    st = study_dir.Study.open(str(out), "demo", Cfg())
    (out / "parts" / "poc.json").mkdir(parents=True)
    (out / "parts" / "poc.json" / "keep.txt").write_text("not ours")
    with pytest.warns(RuntimeWarning, match="poc.json.*a directory"):
        assert not st.has("poc")
    assert st.rows("poc", lambda: [{"x": 1}]) == [{"x": 1}]  # no IsADirectoryError: recomputed
    victim = tmp_path / "victim.npz"
    io.save_npz(str(victim), stamp=np.asarray(st.key), v=np.arange(3))  # a valid part elsewhere
    before = victim.read_bytes()
    os.symlink(victim, out / "parts" / "x.npz")
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        assert st.part("x", lambda: {"v": np.zeros(2)})["v"].tolist() == [0.0, 0.0]  # never followed
    assert victim.read_bytes() == before and not os.path.islink(out / "parts" / "x.npz")
    os.symlink(victim, out / "parts" / "r.json")
    with pytest.warns(RuntimeWarning):
        assert st.rows("r", lambda: [{"y": 2}]) == [{"y": 2}]
    aside = sorted(os.listdir(out / "parts" / "corrupt"))
    assert len(aside) == 3
    kept_dir = out / "parts" / "corrupt" / next(a for a in aside if a.startswith("poc.json"))
    assert (kept_dir / "keep.txt").read_text() == "not ours"  # moved whole, never emptied
    assert victim.read_bytes() == before


def _finished(tmp_path):
    out = str(tmp_path / "src")
    st = study_dir.Study.open(out, "demo", Cfg())
    io.write_csv(st.path("results.csv"), {"model": ["a", "b"], "acc": [0.5, 0.75]})
    io.write_json(st.path("tables", "tests.json"), [{"p": 0.01}])
    io.write_verified(st.path("parts", "p.json"), b"{}")
    st.finish(timings={"total_s": 1.0})
    return out


def test_case4_tampered_table_refused_by_read_table(tmp_path, capsys, monkeypatch):
    out = _finished(tmp_path)
    assert set(study_dir.read_record(out)["outputs"]) == {"results.csv", "tables/tests.json"}
    assert study_dir.read_table(out, "results.csv")["acc"].tolist() == [0.5, 0.75]
    assert study_dir.read_output_json(out, "tables/tests.json") == [{"p": 0.01}]
    assert study_dir.verify_output(out, "results.csv") == os.path.join(out, "results.csv")
    path = os.path.join(out, "results.csv")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("0.75", "0.95"))  # a better result, by hand
    with pytest.raises(io.CorruptFile, match="results.csv.*SHA-256") as e:
        study_dir.read_table(out, "results.csv")
    assert e.value.path == path
    with open(os.path.join(out, "extra.csv"), "w") as f:
        f.write("a\n1\n")
    with pytest.raises(io.CorruptFile, match="extra.csv.*does not list it"):
        study_dir.read_table(out, "extra.csv")
    with pytest.raises(FileNotFoundError):
        study_dir.verify_output(out, "absent.csv")
    from tokdyn.studies import token_dynamics

    def reads_its_source(cfg, out, **kw):
        study_dir.read_table(str(tmp_path / "src"), "results.csv")

    monkeypatch.setattr(token_dynamics, "main", reads_its_source)
    code, err = tokdyn(["--out", tmp_path / "new", "--no-cache"], capsys)
    assert code == 2 and "results.csv" in err and "Traceback" not in err, err


def test_case4_record_without_checksum(tmp_path):
    out = _finished(tmp_path)
    path = os.path.join(out, study_dir.RECORD)
    record = json.load(open(path))
    assert record["checksum"] == io.json_checksum(record)
    plain = {k: v for k, v in record.items() if k != "checksum"}
    with open(path, "w") as f:
        json.dump(plain, f)
    for call in (lambda: study_dir.read_record(out), lambda: study_dir.read_table(out, "results.csv")):
        with pytest.raises(io.CorruptFile, match="config.json.*no checksum"):
            call()
    with open(path, "w") as f:  # a listed hash changed to match a tampered table: the checksum differs
        json.dump({**record, "outputs": {**record["outputs"], "results.csv": "0" * 64}}, f)
    with pytest.raises(io.CorruptFile, match="config.json.*checksum differs"):
        study_dir.read_record(out)
    os.remove(path)
    with pytest.raises(FileNotFoundError):
        study_dir.read_record(out)


# ---------------------------------------------------------------------------------------------- case 6: smaller gaps


def _disk_full_on(word, monkeypatch):
    real = os.fsync

    def fsync(fd):
        if word in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_case6_disk_full_one_line_exit1(tmp_path, capsys, monkeypatch):
    p = tmp_path / "t.csv"
    io.write_csv(str(p), {"a": [1]})
    _disk_full_on("t.csv", monkeypatch)
    with pytest.raises(io.DiskFull) as e:
        io.write_csv(str(p), {"a": list(range(1000))})
    msg = str(e.value)
    assert str(p) in msg and "bytes free" in msg and "needs" in msg and "\n" not in msg
    assert isinstance(e.value, OSError) and e.value.path == str(p)
    assert os.listdir(tmp_path) == ["t.csv"] and p.read_text() == "a\n1\n"  # nothing half-written kept
    monkeypatch.undo()
    _disk_full_on("x.bin", monkeypatch)
    with pytest.raises(io.DiskFull, match=r"x.bin.*needs"):
        io.write_verified(str(tmp_path / "x.bin"), b"0" * 100)
    monkeypatch.undo()
    _disk_full_on("td", monkeypatch)  # the study's first write (its stamp) finds the disk full
    code, err = tokdyn(["--out", tmp_path / "td", *SMALL], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert os.path.join(str(tmp_path / "td"), study_dir.STAMP) in lines[0] and "no space left" in lines[0]
    assert not any(io.is_temporary(n) for n in os.listdir(tmp_path / "td"))


def test_case6_figure_never_follows_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    plots = tmp_path / "out" / "plots"
    plots.mkdir(parents=True)
    os.symlink("../../victim.txt", plots / "ari_mean.png")
    figures.line_plot(str(plots / "ari_mean.png"), [0, 1], {"a": [0.0, 1.0]})
    assert victim.read_text() == "precious"
    assert not os.path.islink(plots / "ari_mean.png")
    assert (plots / "ari_mean.png").read_bytes().startswith(b"\x89PNG")
    assert os.listdir(plots) == ["ari_mean.png"]


def test_case6_long_out_exit2_nothing_created(tmp_path, capsys):
    for out in (
        tmp_path / "parent" / ("a" * 300) / "deeper",
        tmp_path.joinpath("parent", *(["b" * 200] * 20)),
    ):  # each name fits, the whole path does not
        code, err = tokdyn(["--out", out, *SMALL], capsys)
        assert code == 2 and "Traceback" not in err and "out=" in err and "choose a shorter --out" in err, err
        assert "255" in err or "4096" in err or "allows" in err
    assert os.listdir(tmp_path) == []
    with pytest.raises(study_dir.Refused, match="allows"):
        study_dir.Study.open(str(tmp_path / ("c" * 256)), "demo", Cfg())
    assert os.listdir(tmp_path) == []
