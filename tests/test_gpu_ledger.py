"""The ledger of GPU measurements (benchmarks/ledger.py, benchmarks/runs/gpu-ledger.csv): every
figure re-read from its raw file with the commit and precision its raw row names, states that no
missing path, dirty tree or harness change can fool, the docs' GPU tables generated from it, and the
device call's plan: its order from the rows' states and the arithmetic by which one call of 540 s
measures every first-priority row (benchmarks/device_session.py, benchmarks/session_plan.py)."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import device_session  # noqa: E402
import ledger  # noqa: E402
import session_plan  # noqa: E402


def git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def head() -> str:
    return git("rev-parse", "HEAD")


@pytest.fixture(scope="module")
def rows():
    return ledger.load()


def test_every_measured_figure_is_its_raw_files(rows):
    measured = [r for r in rows if r.measured]
    assert len(measured) >= 10 and any(not r.measured for r in rows)
    for r in measured:
        assert os.path.exists(os.path.join(ROOT, r.raw)), r.raw
        value = ledger.read_value(r)
        assert value == pytest.approx(float(r.value), rel=1e-5), (r.id, r.device, value, r.value)
    # every path matches a file, every commit is its raw row's: the ledger has no problem
    assert ledger.problems(rows) == []


def test_a_row_whose_path_matches_no_file_is_refused_and_stale():
    # tokdyn/models/sequence.py became a package: a row naming the file could never go stale
    row = ledger.Row(
        id="r", device="h200", priority=1, step="s", what="w", unit="runs/s", precision="highest",
        match="a|b", source="log:(\\d+)", value="1", commit=head(), date="2026-01-01",
        raw="benchmarks/runs/h200-2026-11-27-ca6932f/README.md", paths="tokdyn/models/sequence.py;tokdyn/dynamics",
    )  # fmt: skip
    assert not os.path.exists(os.path.join(ROOT, "tokdyn/models/sequence.py"))
    assert any("tokdyn/models/sequence.py matches no file" in p for p in ledger.problems([row]))
    st, reason = ledger.why(row)
    assert st == "stale" and "tokdyn/models/sequence.py matches no file at HEAD" in reason
    row.paths = "tokdyn/models/sequence;tokdyn/dynamics"  # the package: current at HEAD
    assert ledger.why(row) == ("current", "")


def test_the_ledgers_commit_is_its_raw_rows(rows):
    # the rows measured at ca6932f name 1d7f9b7+dirty in their raw rows (the device's .git was
    # another commit's, the tree ca6932f's): the ledger says what the raw rows say, and is stale
    (r,) = [r for r in rows if r.id == "kernel-alone" and r.device == "h200"]
    assert ledger.raw_commit(r) == r.commit == "1d7f9b7+dirty"
    assert ledger.state(r) == "stale"
    claimed = ledger.Row(**{**r.__dict__, "commit": "ca6932f"})
    assert ledger.problems([claimed]) == ["kernel-alone (h200): commit ca6932f, its raw row says 1d7f9b7+dirty"]
    # a trace's commit is the study path's row beside it; a log's, the run folder's README's
    (k,) = [r for r in rows if r.id == "kernel-itself" and r.device == "h200"]
    assert ledger.raw_commit(k) == "1d7f9b7+dirty"
    (sw,) = [r for r in rows if r.id == "sweep-vtae"]
    assert ledger.raw_commit(sw) is None and sw.commit == "ca6932f" and ledger.problems([sw]) == []
    assert ledger.problems([ledger.Row(**{**sw.__dict__, "commit": "f7091be"})])


def test_every_row_depends_on_the_harness_that_timed_it():
    # the last commit that changed the harness's rows/base.py, and a row measured just before it whose
    # own paths did not change there: current before, stale after
    after = git("log", "-1", "--format=%H", "--", "benchmarks/rows/base.py")
    before = git("rev-parse", f"{after}^")
    own = "tokdyn/dynamics"
    assert not git("diff", "--name-only", before, after, "--", own)
    row = ledger.Row(
        id="r", device="h200", priority=1, step="s", what="w", unit="s", precision="highest", match="a|b",
        source="log:(\\d+)", value="1", commit=before, date="2026-01-01", raw="x", paths=own,
    )  # fmt: skip
    assert set(ledger.HARNESS) <= set(row.depends())
    assert ledger.why(row, head=before) == ("current", "")
    st, reason = ledger.why(row, head=after)
    assert st == "stale" and "benchmarks/rows/base.py" in reason
    # measured on a tree no commit holds, or at a commit unknown here: stale, never current
    assert ledger.why(ledger.Row(**{**row.__dict__, "commit": before[:7] + "+dirty"}), head=before)[0] == "stale"
    assert ledger.why(ledger.Row(**{**row.__dict__, "commit": "0" * 40}), head=before)[0] == "stale"


def test_every_row_states_its_precision(rows):
    assert all(r.precision in ledger.PRECISIONS for r in rows)
    for r in rows:
        if "TF32" in r.match:
            assert r.precision == "tf32-default", r.id
        elif r.match.startswith("vlm|"):
            assert r.precision == "bfloat16", r.id
    headline = {"kernel-alone", "kernel-itself", "study-path", "given-data-pallas", "given-data-while"}
    headline |= {"vtae-4096", "vtae-1024", "slots-1024-scan", "gemm-highest"}
    assert all(r.precision == "highest" for r in rows if r.id in headline)
    # the study path at ca6932f ran at JAX's default (TF32): stale, and the tables say so
    (sp,) = [r for r in rows if r.id == "study-path" and r.device == "h200"]
    assert ledger.raw_precision(sp) == "tf32-default"
    assert "its value was measured at tf32-default, the row is at highest" in ledger.why(sp)[1]
    table = ledger.render(rows)
    assert "| device | what | precision | value |" in table
    line = next(ln for ln in table.splitlines() if "the study path: `sweep.run`" in ln)
    assert "| tf32-default (the row: highest) |" in line
    # a row of Slot Attention measured at highest says only that
    line = next(ln for ln in table.splitlines() if "Slot Attention (the scenes study's), 1,024 seeds" in ln)
    assert "| highest | 5,231 model-steps/s |" in line
    assert ledger.precision_label(None) == "tf32-default" and ledger.precision_label("float32 (TF32 off)") == "highest"
    assert ledger.precision_label(None, has_field=False) == "none"


def test_the_docs_tables_say_which_rows_are_stale(rows):
    """A figure measured on a tree no commit holds, or at another precision than its row's, is
    printed as stale beside its value; the others as current at their commit, with the ledger's
    command to tell whether their code changed since."""
    table = ledger.render(rows)
    for r in rows:
        line = next(ln for ln in table.splitlines() if f"| {r.what}" in ln and ledger.DEVICES[r.device] in ln)
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        state = cells[4]
        if not r.measured:
            assert state == "unmeasured", line
        elif r.commit.endswith("+dirty") or ledger.raw_precision(r) != r.precision:
            assert state.startswith("stale: ") and ledger.why(r)[0] == "stale", line
        else:
            assert state == f"current at {r.commit}", line
    measured = next(r for r in rows if r.measured)
    dirty = ledger.Row(**{**dataclasses.asdict(measured), "commit": "abc1234+dirty"})
    assert ledger.recorded_state(dirty).startswith("stale: measured on a tree no commit holds")


def test_the_docs_gpu_tables_are_the_ledgers(rows):
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
                id=f"r{i}", device="h200", priority=prio, step=step, what="w", unit="runs/s", precision="highest",
                match="a|b", source="log:(\\d+)", value=value, commit=commit, date="2026-01-01" if value else "",
                raw="x" if value else "", paths="tokdyn",
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
    assert order[1][3] == [("r2", "unmeasured", 1)] and order[4][3] == [("r0", "current", 1)]
    # another device's rows do not count: every step in the default order
    assert [o[0] for o in ledger.step_order(rows, "h100", steps)] == steps


def test_record_sets_the_rows_a_device_call_measured(tmp_path):
    rows = rows_of(("dynamics", 1, "", ""), ("peers", 1, "", ""))
    rows[0].match, rows[1].match = "dynamics|kernel alone", "peers|missing"
    found = [
        dict(section="dynamics", name="kernel alone", status="ok", median=123.5, commit="abc1234"),
        dict(section="dynamics", name="kernel alone", status="error", commit="abc1234"),  # a failed rerun
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in found))
    done = ledger.record(rows, str(tmp_path), "h200", None, "2026-11-27")
    assert done == ["r0"]
    assert (rows[0].value, rows[0].commit, rows[0].date) == ("123.5", "abc1234", "2026-11-27")
    assert rows[0].raw.endswith("rows.jsonl") and not rows[1].measured
    assert ledger.record(rows, str(tmp_path), "h100", None, "2026-11-27") == []
    # a commit given that is not the raw row's is refused, naming both
    with pytest.raises(ValueError, match="--commit ca6932f, but .* names commit abc1234"):
        ledger.record(rows, str(tmp_path), "h200", "ca6932f", "2026-11-27")


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
    rows[1].device, rows[1].precision = "h200", "tf32"
    ledger.save(rows, str(path))
    with pytest.raises(ValueError, match="precision 'tf32'; allowed"):
        ledger.load(str(path))


def test_the_device_call_writes_the_kernels_own_rate_from_its_trace(tmp_path):
    # the H200 call at ca6932f: its trace and rows, as a device call's output folder
    import shutil

    run = os.path.join(ROOT, "benchmarks", "runs", "h200-2026-11-27-ca6932f")
    for name in ("trace.tgz", "rows.jsonl"):
        shutil.copy(os.path.join(run, name), tmp_path / name)
    device_session.kernel_row(types.SimpleNamespace(out=str(tmp_path)))
    row = ledger.jsonl_rows(str(tmp_path / "rows.jsonl"))[-1]
    assert row["name"] == device_session.KERNEL_ROW and row["status"] == "ok"
    # 999,972 runs in the chunk over the kernel's 98.82 ms in trace_summary.md
    assert row["median"] == pytest.approx(999_972 / 0.09882, rel=1e-3)
    rows = [r for r in ledger.load() if r.id == "kernel-itself" and r.device == "h200"]
    assert ledger.record(rows, str(tmp_path), "h200", None, "2026-11-27") == ["kernel-itself"]
    assert float(rows[0].value) == pytest.approx(row["median"], rel=1e-5)  # kept to 6 digits
    assert rows[0].commit == row["commit"]


# --------------------------------------------------------------------------- the device call's plan


def call_plan(device="h200", **kw):
    args = types.SimpleNamespace(
        smoke=False, out="/tmp/unused", studies_dir="/tmp/unused-studies", device=device, budget=540.0, **kw
    )
    steps, serves = device_session.ordered(args, device_session.plan(args))
    return args, steps, serves


def test_every_ledger_step_is_a_step_of_the_call(rows):
    _, steps, _ = call_plan()
    names = {st.name for st in steps}
    assert {r.step for r in rows} <= names
    assert set(session_plan.BUDGETS) <= names


def test_one_call_of_540_s_measures_every_first_priority_row(rows):
    # at HEAD every first-priority row of the H200 is to measure (stale or unmeasured)
    first = [r for r in rows if r.device == "h200" and r.priority == 1]
    ids = {r.id for r in first}
    assert {"kernel-alone", "kernel-itself", "study-path", "vtae-4096", "slots-1024-scan"} <= ids
    assert {f"qwen-3b-{x}" for x in ("vision-1", "prefill-b8", "prefill-b1", "decode-b8", "decode-b1")} <= ids
    assert all(ledger.state(r) != "current" for r in first)
    args, steps, serves = call_plan()
    a = session_plan.arithmetic(steps, serves)
    # the steps that serve them come first, setup with them; none serves 7B or 4,096-seed Slot Attention
    assert a["first"] and a["steps"][0] == "setup"
    assert {r.step for r in first} == set(a["steps"]) - {"setup"}
    assert not {"vlm:7b", "train:slots-4096"} & set(a["steps"])
    # their budgets (each a hard stop) fit the call with margin, so each starts whatever the others take;
    # each budget covers its expected seconds (the recorded step times) by at least 30%
    assert sum(a["budgets"].values()) <= args.budget - 30
    for name in a["steps"]:
        assert a["expected"][name] is not None, name
        assert a["budgets"][name] >= 1.3 * a["expected"][name], (name, a["budgets"][name], a["expected"][name])
    assert sum(a["expected"].values()) <= 0.6 * args.budget
    # the plan's text: each row's state as ledger.py gives it, its priority and precision
    text = session_plan.plan_text(args, steps, serves)
    for r in first:
        assert f"{r.id} [{ledger.state(r)}, p1, {r.precision}]" in text, r.id
    assert f"= {sum(a['budgets'].values()):.0f} s of 540 s" in text


def test_the_expected_seconds_are_the_raw_files():
    est = session_plan.estimates()
    run = os.path.join(ROOT, "benchmarks", "runs", "h200-2026-11-27-ca6932f")
    steps = {s["name"]: s["seconds"] for s in json.load(open(os.path.join(run, "session.json")))["steps"]}
    assert est["setup"].seconds == steps["setup"] == 14.2
    assert est["train:autoencoder"].seconds == steps["train:autoencoder"] == 17.0
    # the dynamics step's first rows by their clocks in session.log: ceilings to 16.9 s, kernel alone at
    # 22.0, study path at 30.7; the step's 99.6 s less its last row's 97.3 the process's start
    assert est["dynamics"].seconds == pytest.approx(2.3 + 16.9 + 2 * (5.1 + 8.7))
    # Slot Attention at 1,024 seeds, highest: 85.9 s on its call's clock after the ceilings' 14.3
    assert est["train:slots"].seconds == pytest.approx(2.3 + 85.9 - 14.3)
    # the VLM steps the H100 call ran: their own seconds there (session.json of the call and of its second)
    h100 = os.path.join(ROOT, "benchmarks", "runs", "h100-2026-11-28-d41d300")
    gpu = {}
    for path in (os.path.join(h100, "session.json"), os.path.join(h100, "call2", "session.json")):
        for s in json.load(open(path))["steps"]:
            if s["name"].startswith("vlm:") and s.get("seconds") is not None:
                gpu[s["name"]] = max(gpu.get(s["name"], 0.0), s["seconds"])
    assert gpu == {"vlm:3b": 47.1, "vlm:7b": 50.1, "vlm:7b-mediation": 100.9, "vlm:3b-mediation": 111.1}
    for name, seconds in gpu.items():
        assert est[name].seconds == seconds
    # the CPU-based rule a step no GPU call ran takes: the mediation programs' CPU compile (each row naming the
    # analysis) and their batches' work, read from the raw file
    analyses = ledger.jsonl_rows(session_plan.ANALYSES_COMPILE)
    for size, programs in (("3b", 10), ("7b", 10)):
        label = f"qwen2.5-vl {size} analyses"
        med = [
            r
            for r in analyses
            if r["name"].startswith(label) and set(session_plan.MEDIATION_NAMES) & set(r.get("analyses", ()))
        ]
        assert len(med) == programs and all(r["status"] == "ok" and r["platform"] == "cpu" for r in med)
        compile_s, n, flops = session_plan.mediation_compile(size)
        assert n == programs and compile_s == pytest.approx(sum(r["compile_s"] for r in med)) and flops > 1e15


def test_the_second_call_starts_with_the_7b_shapes_and_the_7b_mediation():
    args, steps, serves = call_plan(priority=2)
    a = session_plan.arithmetic(steps, serves, 2)
    order = [st.name for st in steps if st.name in set(a["steps"])]
    assert order[:5] == ["setup", "vlm:7b", "vlm:7b-mediation", "vlm:3b-mediation", "train:slots-4096"]
    assert "dynamics" not in order and "vlm:3b" not in order
    # the first three fit one call of 540 s at their budgets (each a hard stop), with margin; each mediation
    # step's budget covers its expected seconds (from the CPU compile rows) by at least 30%
    first = ["setup", "vlm:7b", "vlm:7b-mediation"]
    assert sum(a["budgets"][n] for n in first) <= args.budget - 60
    for name in ("vlm:7b-mediation", "vlm:3b-mediation"):
        assert a["budgets"][name] >= 1.3 * a["expected"][name], (name, a["budgets"][name], a["expected"][name])


def test_the_mediation_rows_are_the_vlm_rows_their_step_runs(rows):
    # the 7B mediation with latent-mode generation (and the 3B's) on the H200 at the second priority; each
    # row's match is the row rows.vlm writes at the study's GPU preset batch, which its
    # step's --rows selects and the model's own vlm step leaves out
    from rows import vlm, vlm_study

    mine = {(r.id, r.device): r for r in rows if r.id.endswith("-mediation-generated")}
    assert set(mine) == {
        ("qwen-7b-mediation-generated", "h200"),
        ("qwen-3b-mediation-generated", "h200"),
        ("qwen-7b-mediation-generated", "h100"),
    }
    for (rid, device), r in mine.items():
        size = rid.split("-")[1]
        assert r.unit == "instances/s" and r.precision == "bfloat16"
        assert r.priority == (2 if device == "h200" else 3) and r.step == f"vlm:{size}-mediation"
        batch = vlm_study.study_config(size).batch_size
        assert batch == {"3b": 16, "7b": 8}[size]
        name = f"qwen2.5-vl {size} shapes, random weights, bfloat16: {vlm.MEDIATION_ROW}, batch {batch}"
        assert r.match == f"vlm|{name}"
        assert "benchmarks/rows/vlm_study.py" in r.depends() and "tokdyn/models/vlm" in r.depends()
        assert re.search(device_session.MEDIATION_ROWS, f"vlm | {name}")
        assert not re.search(device_session.MODEL_ROWS, f"vlm | {name}")
    # the model's own rows, and the copy bandwidth their decode bound reads, stay with the vlm steps
    for r in rows:
        if r.step in ("vlm:3b", "vlm:7b"):
            assert re.search(device_session.MODEL_ROWS, r.match.replace("|", " | ", 1)), r.id
            assert not re.search(device_session.MEDIATION_ROWS, r.match.replace("|", " | ", 1)), r.id
    assert re.search(device_session.MODEL_ROWS, "ceilings | device-to-device elementwise copy")
