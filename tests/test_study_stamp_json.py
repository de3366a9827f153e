"""A study directory's stamp, study.json, read as a user would: ``json.load`` reads it (its
checksum a field of its own), a change to it is still caught before any work, and a directory
stamped in the older format (a verification line before the JSON) is still read and reused."""

import dataclasses
import hashlib
import json
import os

import pytest

from tokdyn import io
from tokdyn.engine.sweep import store
from tokdyn.experiment import study as study_dir


@dataclasses.dataclass(frozen=True)
class Cfg:
    seeds: int = 2
    rate: float = 0.003


def test_the_stamp_is_json_with_its_checksum_inside(tmp_path):
    out = str(tmp_path / "d")
    study_dir.Study.open(out, "demo", Cfg())
    path = os.path.join(out, study_dir.STAMP)
    with open(path) as f:
        stamp = json.load(f)
    assert stamp["study"] == "demo" and stamp["config"] == {"seeds": 2, "rate": 0.003}
    body = {k: v for k, v in stamp.items() if k != "checksum"}  # the checksum, recomputed here
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert stamp["checksum"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert study_dir.read_stamp(out) == body and store._study_stamped(out)
    study_dir.Study.open(out, "demo", Cfg(rate=3e-3))  # the same values: reopened


def test_a_changed_stamp_is_refused_before_any_work(tmp_path):
    out = str(tmp_path / "d")
    study_dir.Study.open(out, "demo", Cfg())
    path = os.path.join(out, study_dir.STAMP)
    stamp = json.load(open(path))
    stamp["config"]["seeds"] = 3  # edited by hand: the checksum no longer matches
    with open(path, "w") as f:
        json.dump(stamp, f)
    with pytest.raises(io.OutputConflict, match="checksum differs"):
        study_dir.Study.open(out, "demo", Cfg(seeds=3))
    assert not store._study_stamped(out)
    with open(path, "w") as f:
        f.write(json.dumps(stamp)[:-5])  # cut short
    with pytest.raises(io.OutputConflict, match="not JSON"):
        study_dir.read_stamp(out)


def test_a_directory_stamped_in_the_older_format_is_still_read(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    old = study_dir.Study.open(str(tmp_path / "model"), "demo", Cfg()).stamp  # what the stamp holds
    path = str(out / study_dir.STAMP)
    io.write_verified(path, json.dumps(old, indent=2, sort_keys=True).encode())  # the older format
    assert open(path, "rb").read().startswith(io.MAGIC)
    assert study_dir.read_stamp(str(out)) == old and store._study_stamped(str(out))
    study_dir.Study.open(str(out), "demo", Cfg())  # reused, not refused
    with open(path, "r+b") as f:  # an altered byte of the older format is caught as before
        f.seek(-3, os.SEEK_END)
        f.write(b"X")
    with pytest.raises(io.OutputConflict, match="SHA-256 differs"):
        study_dir.read_stamp(str(out))
