"""Checks a hostile user runs against every study command (shared by the studies' test files)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings

from tokdyn import cli, io
from tokdyn.experiment import study as study_dir


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


def truncate(paths, keep: int = 2) -> None:
    """Cut each file of ``paths`` to 1/``keep`` of its size (a write that stopped midway)."""
    for path in paths:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // keep)


def truncated_parts_recomputed(args, cfg, out, finished, damaged, tables, keep: int = 2) -> None:
    """``out``, a copy of the finished study directory ``finished`` of ``cfg``, with its parts
    ``damaged`` (names in ``parts/``) cut to 1/``keep`` and its ``config.json`` to 20 bytes:
    ``tokdyn ARGS`` (a rerun into ``out``) exits 0, names each damaged part in a warning as set
    aside, moves them to ``parts/corrupt/``, records ``cfg`` in a new ``config.json`` and writes
    every one of ``tables`` again, byte for byte as ``finished`` holds it."""
    truncate([os.path.join(out, "parts", name) for name in damaged], keep)
    with open(os.path.join(out, "config.json"), "r+b") as f:  # the record of the finished run, too
        f.truncate(20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(args) == 0
    said = " ".join(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    for name in damaged:
        assert f"{name} could not be read back" in said and "set aside" in said, (name, said)
    assert len(os.listdir(os.path.join(out, "parts", "corrupt"))) == len(damaged)
    assert io.read_json(os.path.join(out, "config.json"))["config"] == study_dir.config_dict(cfg)
    for name in tables:
        assert read(os.path.join(out, name)) == read(os.path.join(finished, name)), name


def snapshot(root) -> dict:
    """Every entry under ``root`` as ``{relative path: bytes of a file, or "-> target" of a
    link}``, found without following a link: what a test compares to show that nothing there was
    touched."""
    found = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                found[rel] = read(path)
            else:
                found[rel] = "<dir>"
    return found


def move_and_link(path, keep) -> str:
    """Move the entry ``path`` into the folder ``keep`` (outside the output directory) and leave a
    symbolic link to it where it was (``mv out/x keep/x && ln -s "$PWD/keep/x" out/x``); returns
    its new path."""
    os.makedirs(keep, exist_ok=True)
    target = os.path.join(os.fspath(keep), os.path.basename(os.fspath(path)))
    os.rename(path, target)
    os.symlink(os.path.abspath(target), path)
    return target
