"""Every figure the headline pages print can be traced to a raw file: no page but the dated history
page says its figures have none, every section of the benchmarks' CPU results names a raw file that
exists, every raw file a page cites exists, and the headline's rates are the medians of the raw
suite rows it cites (read from their ``suite.json``, not copied by hand into a test)."""

from __future__ import annotations

import glob
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY = os.path.join("docs", "benchmarks-history.md")
NO_RAW = re.compile(r"no\s+raw\s+(?:file|output|log)s?\s+(?:was\s+|were\s+)?kept", re.I)
# a raw file's path (from the repository's root or from benchmarks/): runs/<cpu|gpu|h100|h200...>/...
RAW_PATH = re.compile(r"\bruns/((?:cpu|gpu|h100|h200|recount)[A-Za-z0-9_.+-]*)(/[A-Za-z0-9_./+-]*)?")


def _read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def _pages() -> list[str]:
    out = ["README.md", os.path.join("benchmarks", "README.md")]
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)):
        rel = os.path.relpath(path, ROOT)
        if not rel.startswith((os.path.join("docs", "_build"), os.path.join("docs", "api"))):
            out.append(rel)
    return out


def _sections(text: str, level: str = "### ") -> dict[str, str]:
    parts = re.split(rf"^(?={re.escape(level)})", text, flags=re.M)
    return {p.splitlines()[0]: p for p in parts if p.startswith(level)}


@pytest.mark.parametrize("page", [p for p in _pages() if p != HISTORY])
def test_no_headline_page_prints_a_figure_without_its_raw_file(page):
    found = NO_RAW.search(_read(page))
    assert found is None, (
        f"{page} says {found.group(0)!r}: measure it again with its raw output under benchmarks/runs/, "
        f"or move it to {HISTORY}"
    )


def test_the_history_page_says_its_figures_are_not_traceable_and_is_linked():
    history = _read(HISTORY)
    assert "not traceable" in history.split("\n## ", 1)[0]
    assert re.search(r"^## 2026-\d\d-\d\d", history, re.M), "its sections are dated"
    assert "benchmarks-history" in _read(os.path.join("docs", "benchmarks.md"))
    assert "benchmarks-history" in _read(os.path.join("benchmarks", "README.md"))


def test_every_cpu_result_section_names_a_raw_file_that_exists():
    text = _read(os.path.join("benchmarks", "README.md"))
    results = text.split("\n## Results", 1)[1]
    sections = _sections(results)
    assert sections, "the CPU results have sections"
    for head, body in sections.items():
        dirs = {m.group(1) for m in RAW_PATH.finditer(body)}
        assert dirs, f"{head[:80]!r} names no raw file under benchmarks/runs/"
        for d in dirs:
            assert os.path.exists(os.path.join(ROOT, "benchmarks", "runs", d)), f"{head[:60]!r}: runs/{d} is missing"


@pytest.mark.parametrize("page", _pages())
def test_every_raw_file_a_page_cites_exists(page):
    for m in RAW_PATH.finditer(_read(page)):
        path = os.path.join(ROOT, "benchmarks", "runs", m.group(1), (m.group(2) or "").strip("/"))
        path = path.rstrip(".,;:/")
        assert os.path.exists(path), f"{page} cites {m.group(0)}: missing"


def _headline_dir(text: str) -> str:
    m = re.search(r"benchmarks/runs/(cpu-[0-9-]+suite-dynamics-[0-9a-f]+)", text)
    assert m, "the headline cites its raw suite run"
    return m.group(1)


def _medians(run: str) -> dict[str, float]:
    with open(os.path.join(ROOT, "benchmarks", "runs", run, "suite.json"), encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    return {r["name"]: r["median"] for r in rows if r.get("unit") == "runs/s" and r.get("status") == "ok"}


HEADLINE_ROWS = {  # the headline table's row -> the suite row it reports
    "tokdyn": "given data, early-exit while_loop (run)",
    "PyTorch": "peer: torch_batched, given data",
    "Numba": "peer: numba_parallel, given data",
    "NumPy batched": "peer: numpy_batched, given data",
    "the published way": "peer: published_way, given data",
}


def test_the_headline_rates_are_the_raw_suite_s_medians():
    page = _read(os.path.join("docs", "benchmarks.md"))
    run = _headline_dir(page)
    medians = _medians(run)
    table = page.split("## In brief", 1)[1].split("\n\n| ", 1)[1].split("\n\n", 1)[0]
    checked = 0
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = next((v for k, v in HEADLINE_ROWS.items() if cells[0].replace("*", "").startswith(k)), None)
        if row is None:
            continue
        printed = float(cells[1].replace(",", "").replace("*", ""))
        assert printed == pytest.approx(medians[row], rel=0.005, abs=0.5), (cells[0], printed, medians[row])
        checked += 1
    assert checked == len(HEADLINE_ROWS)
    assert run in _read("README.md"), "the README's speed figures cite the same run"


def test_the_3000_seed_holm_count_is_the_committed_stat_tests():
    readme = _read("README.md")
    m = re.search(r"(\d+) of (\d+) do at 3,000 seeds, (\d+) of them by at least 0\.01 ARI", readme)
    assert m, "the README states the comparisons that survive Holm at 3,000 seeds"
    with open(
        os.path.join(ROOT, "benchmarks", "runs", "cpu-2026-11-27-token-dynamics-3000-seeds", "stat_tests.json"),
        encoding="utf-8",
    ) as f:
        tests = json.load(f)
    survive = [t for t in tests if t["p_holm"] < 0.05]
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (
        len(survive),
        len(tests),
        sum(not t["negligible"] for t in survive),
    )
