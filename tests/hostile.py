"""Checks a hostile user runs against every study command (shared by the studies' test files)."""

from __future__ import annotations

import dataclasses
import os
import shutil

from tokdyn import cli


def run(args, capsys) -> tuple[int, str]:
    """``tokdyn ARGS`` in this process (no compilation cache of the CLI's): (exit code, stderr)."""
    code = cli.main([*map(str, args), "--no-cache"])
    return code, capsys.readouterr().err


def unwritable_outputs_exit_2(args, tmp_path, capsys, monkeypatch, tag: str) -> None:
    """``tokdyn ARGS --out X`` exits 2, before any work and without a traceback, for X a file, a
    path under a file, a path under /proc, and a read-only directory (new or existing); nothing
    is written anywhere."""
    f = tmp_path / "a-file"
    f.write_text("x")
    for out, words in ((f, "is a file"), (f / "sub", "cannot be created"), (f"/proc/tokdyn-{tag}", "out='/proc")):
        code, err = run([*args, "--out", out], capsys)
        assert code == 2 and words in err and "Traceback" not in err, err
    ro = tmp_path / "read-only"
    ro.mkdir()
    real = os.access  # as root every directory is writable: make this one read-only for the check
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if os.fspath(p) == str(ro) else real(p, mode, **k))
    for out in (ro, ro / "new"):
        code, err = run([*args, "--out", out], capsys)
        assert code == 2 and str(ro) in err and "writ" in err and "Traceback" not in err, err
    assert os.listdir(ro) == [] and f.read_text() == "x"


def refused_before_any_work(args, words: str, tmp_path, capsys) -> None:
    """``tokdyn ARGS --out X`` exits 2 with ``words`` in its message, without a traceback, and X is
    never created."""
    out = tmp_path / "out"
    code, err = run([*args, "--out", out], capsys)
    assert code == 2 and words in err and "Traceback" not in err, err
    assert not out.exists()


def options(cfg) -> list[str]:
    """The options that spell out every field of the study configuration ``cfg`` on the command
    line (a tuple as a comma list, a bool as ``--name`` / ``--no-name``)."""
    out = []
    for f in dataclasses.fields(cfg):
        v, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + flag[2:])
        else:
            out += [flag, ",".join(map(str, v)) if isinstance(v, tuple) else str(v)]
    return out


def read(path) -> bytes:
    """The bytes of the file ``path``."""
    with open(path, "rb") as f:
        return f.read()


def copy(directory, tmp_path) -> str:
    """A copy of the study directory ``directory`` in ``tmp_path`` (a test's to change)."""
    out = str(tmp_path / "copy")
    shutil.copytree(directory, out)
    return out
