"""Two ways a study directory could hold results no run of the code as it is would give, both refused
before any work: results made by other code of tokdyn (an edited module, a ``git pull`` under the
editable install; every stamp holds the package's code, module by module, and a directory stamped
before it did is refused in words, not a crash), and a second run into a directory a study is running
in (the directory's lock is held alone by a run; the lock file names its process and host, a lock
left by a killed process of this host is taken over with a note, one of another host is refused)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

import tokdyn
from tokdyn import cli, io
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.study import stamps

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


def token_dynamics(out, capsys, *more) -> tuple[int, str]:
    code = cli.main(["study", "token-dynamics", "--out", str(out), *SMALL, *more])
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    """The command's error: one line, the last."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("tokdyn study token-dynamics: error: "), err
    return lines[-1]


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """The stamp reads tokdyn's code from a copy of the package, which the test may edit (the
    package that runs is the installed one: only what the stamp says of it changes)."""
    copy = tmp_path / "package" / "tokdyn"
    shutil.copytree(os.path.dirname(tokdyn.__file__), copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(stamps, "PACKAGE", str(copy))
    return copy


# ------------------------------------------------------------------------------------- tokdyn's code


def test_the_stamp_holds_every_module_of_the_package(package_copy):
    code = stamps.package_code()
    files = [
        os.path.join(r, f)
        for r, ds, fs in os.walk(package_copy)
        for f in fs
        if f.endswith(".py") and "__pycache__" not in r
    ]
    assert len(code) == len(files) > 250
    assert {"tokdyn", "tokdyn.experiment.runner", "tokdyn.dynamics", "tokdyn.models.families"} <= set(code)
    path = package_copy / "experiment" / "runner.py"
    assert code["tokdyn.experiment.runner"] == io.file_sha256(str(path))[:16]
    path.write_text(path.read_text() + "\n# a comment counts\n")
    changed = stamps.package_code()
    assert [k for k in code if code[k] != changed[k]] == ["tokdyn.experiment.runner"]


def test_an_edited_module_of_tokdyn_is_refused_on_resume_naming_it(tmp_path, capsys, package_copy):
    out = tmp_path / "td"
    assert token_dynamics(out, capsys)[0] == 0
    module = package_copy / "dynamics" / "builtin.py"
    original = module.read_text()
    module.write_text(original.replace("def ", "def  ", 1))  # an edit, as a git pull brings one
    code, err = token_dynamics(out, capsys)
    line = error_line(err)
    assert code == 2 and "made by other code of tokdyn" in line and "'tokdyn.dynamics.builtin'" in line, line
    assert str(module) in line and "--fresh" in line and "another --out" in line
    assert not os.path.exists(out / study_dir.LOCK_FILE)  # a refused run holds nothing
    module.write_text(original)  # the code restored: its results resume
    assert token_dynamics(out, capsys)[0] == 0


def test_a_directory_stamped_before_the_code_was_is_refused_in_words(tmp_path, capsys):
    out = tmp_path / "td"
    assert token_dynamics(out, capsys)[0] == 0
    old = {k: v for k, v in study_dir.read_stamp(str(out)).items() if k != "code"}  # as tokdyn 0.1.0 wrote it
    study_dir.write_stamp(str(out / study_dir.STAMP), old)
    code, err = token_dynamics(out, capsys)
    line = error_line(err)
    assert code == 2 and "made by tokdyn 0.1.0 before a stamp recorded tokdyn's code" in line, line
    assert "cannot be told" in line and "--fresh" in line
    assert token_dynamics(out, capsys, "--fresh")[0] == 0


def test_an_analysis_refuses_a_source_made_by_other_code(tmp_path, package_copy):
    src = str(tmp_path / "src")
    study_dir.Study.open(src, "demo", {"seeds": 2}).finish()
    assert study_dir.source_stamp(src, "demo", expected={"seeds": 2})["study"] == "demo"
    module = package_copy / "io" / "files.py"
    module.write_text(module.read_text() + "\n")
    with pytest.raises(io.OutputConflict, match=r"src'? was made by other code of tokdyn.*'tokdyn\.io\.files'"):
        study_dir.source_stamp(src, "demo", expected={"seeds": 2})


# ------------------------------------------------------------------------------------------- the lock

HOLD = (
    "import sys, time; from tokdyn.experiment import study as study_dir; "
    "study_dir.Study.open(sys.argv[1], sys.argv[2], {'seeds': 2}); print('open', flush=True); time.sleep(120)"
)


def holding(out: str, study: str = "demo") -> subprocess.Popen:
    """A child process that runs a study in ``out`` (it holds the directory's lock) until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, out, study], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"
    return proc


def test_a_second_run_into_a_directory_a_study_runs_in_is_refused_naming_the_first(tmp_path, capsys):
    out = str(tmp_path / "td")
    proc = holding(out, "token-dynamics")
    try:
        code, err = token_dynamics(out, capsys)
        line = error_line(err)
        assert code == 2 and f"process {proc.pid} on host {socket.gethostname()}" in line, line
        assert "the token-dynamics study" in line and os.path.join(out, study_dir.LOCK_FILE) in line
        assert "wait until it ends, or choose another --out" in line
        assert not os.path.exists(os.path.join(out, "parts"))  # no work done
        with pytest.raises(study_dir.Refused, match=f"process {proc.pid}"):  # the API refuses it the same way
            study_dir.Study.open(out, "demo", {"seeds": 2})
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_note(tmp_path, capsys):
    out = str(tmp_path / "d")
    proc = holding(out)
    record = json.load(open(os.path.join(out, study_dir.LOCK_FILE)))
    assert record["pid"] == proc.pid and record["host"] == socket.gethostname() and record["study"] == "demo"
    os.kill(proc.pid, signal.SIGKILL)  # killed: the kernel lets the lock go, the lock file stays
    proc.wait()
    assert os.path.exists(os.path.join(out, study_dir.LOCK_FILE))
    study = study_dir.Study.open(out, "demo", {"seeds": 2})
    err = capsys.readouterr().err
    assert f"took over the lock of out={out!r} left by process {proc.pid} on host" in err, err
    assert "which no longer runs" in err
    assert json.load(open(os.path.join(out, study_dir.LOCK_FILE)))["pid"] == os.getpid()
    study.finish()  # the lock let go: its file goes with it
    assert sorted(os.listdir(out)) == [study_dir.RECORD, study_dir.STAMP]
    study_dir.Study.open(out, "demo", {"seeds": 2}).release()
    assert "took over" not in capsys.readouterr().err


def test_a_lock_of_another_host_is_refused_naming_its_file(tmp_path):
    out = str(tmp_path / "d")
    study_dir.Study.open(out, "demo", {"seeds": 2}).finish()
    path = os.path.join(out, study_dir.LOCK_FILE)
    with open(path, "w") as f:
        json.dump({"pid": 4242, "host": "node-elsewhere", "study": "demo", "since": "2026-11-28 10:00:00"}, f)
    with pytest.raises(
        study_dir.Refused, match=r"process 4242 on host node-elsewhere.*cannot tell whether it still runs"
    ):
        study_dir.Study.open(out, "demo", {"seeds": 2})
    os.remove(path)  # the way out the message gives
    study_dir.Study.open(out, "demo", {"seeds": 2}).release()
    os.mkdir(path)  # not a file tokdyn wrote: named, left as it is
    with pytest.raises(study_dir.Refused, match=r"\.tokdyn-lock is where a study records .* not a file tokdyn wrote"):
        study_dir.Study.open(out, "demo", {"seeds": 2})
    assert os.path.isdir(path)


def test_the_parts_of_one_job_share_the_directory(tmp_path):
    out = str(tmp_path / "d")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tokdyn.experiment import study as study_dir; "
            "study_dir.Study.open(sys.argv[1], 'demo', {'seeds': 2}, shared=True); print('open', flush=True); "
            "time.sleep(120)",
            out,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "open"
        study_dir.Study.open(out, "demo", {"seeds": 2}, shared=True).release()  # another part
        with pytest.raises(study_dir.Refused, match="its lock file names none"):  # a run of its own
            study_dir.Study.open(out, "demo", {"seeds": 2})
    finally:
        proc.kill()
        proc.wait()
