"""The ledger of GPU measurements (benchmarks/ledger.py, benchmarks/runs/gpu-ledger.csv): every
figure re-read from its raw file, the docs' GPU tables generated from it, the device call's order
from the rows' states, and recording a device call's output."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import ledger  # noqa: E402


def head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def test_every_measured_figure_is_its_raw_files():
    rows = ledger.load()
    measured = [r for r in rows if r.measured]
    assert len(measured) >= 10 and any(not r.measured for r in rows)
    for r in measured:
        assert os.path.exists(os.path.join(ROOT, r.raw)), r.raw
        value = ledger.read_value(r)
        assert value == pytest.approx(float(r.value), rel=1e-5), (r.id, r.device, value, r.value)


def test_the_docs_gpu_tables_are_the_ledgers():
    rows = ledger.load()
    for name in ledger.DOCS:
        with open(os.path.join(ROOT, name)) as f:
            text = f.read()
        spans = ledger.blocks(text)
        assert spans, f"{name} has no generated GPU table"
        for a, b, priority in spans:
            assert text[a:b].strip() == ledger.render(rows, priority), (
                f"{name}: run python benchmarks/ledger.py --write"
            )
    # the README's shows the first priority's rows, benchmarks/README.md's every row
    assert [s[2] for s in ledger.blocks(open(os.path.join(ROOT, "README.md")).read())] == [1]
    assert ledger.render(rows).count("\n") > ledger.render(rows, 1).count("\n") > 5


def rows_of(*specs):
    out = []
    for i, (step, prio, value, commit) in enumerate(specs):
        out.append(
            ledger.Row(
                id=f"r{i}", device="h200", priority=prio, step=step, what="w", unit="runs/s", match="a|b",
                value=value, commit=commit, date="2026-01-01" if value else "", raw="x" if value else "",
                paths="tokdyn",
            )
        )  # fmt: skip
    return out


def test_step_order_is_by_priority_then_unmeasured_before_stale_then_current():
    h = head()
    rows = rows_of(
        ("dynamics", 1, "5", h),  # current: its paths did not change since HEAD
        ("train:slots", 2, "", ""),  # unmeasured
        ("train:iodine", 1, "", ""),  # unmeasured, a higher priority
        ("peers", 1, "5", h + "+dirty"),  # stale: measured on a tree no commit holds
    )
    steps = ["setup", "dynamics", "train:slots", "train:iodine", "peers", "compile"]
    order = ledger.step_order(rows, "h200", steps)
    # a stale priority-1 row comes before an unmeasured priority-2 one
    assert [o[0] for o in order] == ["setup", "train:iodine", "peers", "train:slots", "dynamics", "compile"]
    assert [o[1] for o in order[1:]] == ["unmeasured", "stale", "unmeasured", "current", "current"]
    # another device's rows do not count: every step in the default order
    assert [o[0] for o in ledger.step_order(rows, "h100", steps)] == steps
    # a commit this repository does not know is stale, never current
    assert ledger.state(rows_of(("dynamics", 1, "5", "0" * 40))[0]) == "stale"


def test_record_sets_the_rows_a_device_call_measured(tmp_path):
    rows = rows_of(("dynamics", 1, "", ""), ("peers", 1, "", ""))
    rows[0].match, rows[1].match = "dynamics|kernel alone", "peers|missing"
    found = [
        dict(section="dynamics", name="kernel alone", status="ok", median=123.5),
        dict(section="dynamics", name="kernel alone", status="error"),  # a failed rerun does not count
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in found))
    done = ledger.record(rows, str(tmp_path), "h200", "abc1234", "2026-11-27")
    assert done == ["r0"]
    assert (rows[0].value, rows[0].commit, rows[0].date) == ("123.5", "abc1234", "2026-11-27")
    assert rows[0].raw.endswith("rows.jsonl") and not rows[1].measured
    assert ledger.record(rows, str(tmp_path), "h100", "abc1234", "2026-11-27") == []


def test_a_bad_ledger_is_refused(tmp_path):
    path = tmp_path / "l.csv"
    rows = rows_of(("dynamics", 1, "", ""), ("dynamics", 1, "", ""))
    rows[1].id = "r0"
    ledger.save(rows, str(path))
    with pytest.raises(ValueError, match="appears twice"):
        ledger.load(str(path))
    rows[1].id, rows[1].device = "r1", "a100"
    ledger.save(rows, str(path))
    with pytest.raises(ValueError, match="device 'a100'"):
        ledger.load(str(path))


def test_the_device_call_writes_the_kernels_own_rate_from_its_trace(tmp_path):
    # the H200 call at ca6932f: its trace and rows, as a device call's output folder
    import shutil
    import types

    import device_session

    run = os.path.join(ROOT, "benchmarks", "runs", "h200-2026-11-27-ca6932f")
    for name in ("trace.tgz", "rows.jsonl"):
        shutil.copy(os.path.join(run, name), tmp_path / name)
    device_session.kernel_row(types.SimpleNamespace(out=str(tmp_path)))
    row = ledger.jsonl_rows(str(tmp_path / "rows.jsonl"))[-1]
    assert row["name"] == device_session.KERNEL_ROW and row["status"] == "ok"
    # 999,972 runs in the chunk over the kernel's 98.82 ms in trace_summary.md
    assert row["median"] == pytest.approx(999_972 / 0.09882, rel=1e-3)
    rows = [r for r in ledger.load() if r.id == "kernel-itself" and r.device == "h200"]
    assert ledger.record(rows, str(tmp_path), "h200", "c", "2026-11-27") == ["kernel-itself"]
    assert float(rows[0].value) == pytest.approx(row["median"], rel=1e-5)  # kept to 6 digits
