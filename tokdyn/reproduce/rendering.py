"""The report of ``tokdyn reproduce``, rendered: :func:`report` (Markdown: the verdicts, a section a
finding, the studies' status and time, their figures) and :func:`to_html` (the same as a standalone
page), from the findings and the run's record that :mod:`tokdyn.reproduce` computes and keeps;
:func:`reported`, the studies a report covers. Nothing here runs a study or judges a finding.
"""

from __future__ import annotations

import html
import os
import re
from typing import Mapping, Sequence

import numpy as np

from tokdyn.experiment import registry
from tokdyn.experiment.findings import BOOTSTRAP_SEEDS, MIN_SEEDS, Finding
from tokdyn.studies import spec as study_spec

SKIP_DIRS = {"parts", "sweeps", "chunks", "checkpoints", "corrupt", "curves", "results"}  # no figures of the report


def reported(out: str, ran: Sequence[str] = ()) -> tuple:
    """The studies a report on ``out`` covers: those with a directory under ``out`` and those of
    ``ran`` (the studies a run ran or recorded, one that failed before writing anything included);
    never a study that was not run. tokdyn's run by default (:data:`tokdyn.reproduce.DEFAULT_STUDIES`) first, then
    its others, then the studies of one's own known to this process."""
    there = lambda name: name in ran or os.path.isdir(os.path.join(out, name))  # noqa: E731
    every = (*registry.DEFAULT, *registry.NAMES, *(e.name for e in registry.plugin_entries()))
    return tuple(n for n in dict.fromkeys(every) if there(n))


def figures_of(out: str, study: str, limit: int = 12) -> list[str]:
    """The figures (PNG) of a study directory, as paths relative to ``out`` (parts, sweeps and
    checkpoints left out; at most ``limit``)."""
    root = os.path.join(out, study)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        found += [os.path.relpath(os.path.join(dirpath, n), out) for n in sorted(filenames) if n.endswith(".png")]
    return found[:limit]


def duration(s) -> str:
    """Seconds ``s`` as the report writes them (``12.3 s``, ``4 min 05 s``; ``–`` for none)."""
    if s is None or not np.isfinite(s):
        return "–"
    s = float(s)
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:02.0f} s"


def markdown_table(header, rows) -> list[str]:
    """The lines of a Markdown pipe table of ``header`` and ``rows`` (a ``|`` in a cell escaped)."""
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(esc, r)) + " |" for r in rows
    ]


def report(out: str, found: Sequence[Finding], record: Mapping) -> str:
    """The report (Markdown) on the findings ``found`` and the studies' ``record`` (study ->
    status, seconds, error, as :func:`tokdyn.reproduce.main` keeps it in ``config.json``)."""
    studies = record.get("studies", {})
    lines = _verdicts(found, record) + _finding_sections(found, studies)
    lines += _studies_section(out, record) + _figures_section(out)
    return "\n".join(lines).rstrip() + "\n"


def _verdicts(found: Sequence[Finding], record: Mapping) -> list[str]:
    """The report's title, preset and table of verdicts, and how a verdict is decided."""
    preset = (
        "**quick** (each study's quick preset: a smoke run of minutes; most verdicts stay open)"
        if record.get("quick")
        else "**default** (each study's default configuration)"
    )
    lines = [
        "# tokdyn reproduce: report",
        "",
        f"Preset: {preset}. tokdyn {record.get('tokdyn', '?')}, {record.get('machine', '')}. "
        f"Written {record.get('written', '')}.",
        "",
        "## Verdicts",
        "",
    ]
    lines += markdown_table(
        ("finding", "verdict", "claim", "rests on"),
        [[f"{f.key}. {f.title}", f"**{f.label}**", f.claim, f.basis] for f in found],
    )
    lines += [
        "",
        "How a verdict is decided: intervals, never points. A quick preset never decides: each of its "
        "verdicts is open (smoke run), and each finding declares the fewest seeds (or runs) that may decide "
        "it. Intervals over seeds are 95% intervals of the "
        f"mean (a percentile bootstrap from {BOOTSTRAP_SEEDS} seeds on, Student's t below, made on the logit "
        f"scale of a bounded score's range so that it stays inside it); fewer than "
        f"{MIN_SEEDS} seeds give no interval and decide nothing. Every threshold has a margin between reproduced and refuted where "
        "the verdict is open. A claim stated in general is refuted when one unit (method, variant) refutes it, "
        "reproduced when every unit it applies to reproduces it, and open otherwise. Each finding below states "
        "its rule and lists its units; every number is computed from the studies' files in this directory.",
        "",
    ]
    return lines


def _finding_sections(found: Sequence[Finding], studies: Mapping) -> list[str]:
    """One section a finding: its claim, rule, basis and table, and the study it is from."""
    lines = []
    for f in found:
        lines += [
            f"## {f.key}. {f.title}: {f.label}",
            "",
            f"**Claim** ({f.origin}): {f.claim}",
            "",
            f"**Rule**: {f.rule} Decided only by a run that is not a quick preset, with at least {f.min_seeds} "
            f"seeds" + (f" and {f.min_runs} runs" if f.min_runs else "") + ".",
            "",
            f"**Rests on**: {f.basis or '–'}",
            "",
        ]
        if f.rows:
            lines += markdown_table(f.header, f.rows) + [""]
        lines += [f"From `{f.study}/` ({_status_line(studies.get(f.study))}).", ""]
    return lines


def _studies_section(out: str, record: Mapping) -> list[str]:
    """Every study's status and time, this run's time and load, and the studies' errors."""
    studies = record.get("studies", {})
    lines = [
        "## Studies: status and time",
        "",
        "Time: the wall time of the latest run of the study (a study finished earlier is reused and takes "
        "seconds), and its time when it was computed (the run that finished it in this directory).",
        "",
    ]
    rows, ran = [], set(record.get("ran", ()))
    for name in reported(out, ran_studies(record)):
        r = studies.get(name)
        summary = study_spec(name).link
        have = os.path.exists(os.path.join(out, name, summary))
        status = "not run" if not r else r.get("status", "–") + ("" if name in ran else " (an earlier run)")
        rows.append(
            [
                name,
                status,
                duration(r.get("seconds")) if r else "–",
                duration(r.get("computed_seconds")) if r else "–",
                f"[{name}/{summary}]({name}/{summary})" if have else "–",
            ]
        )
    lines += markdown_table(("study", "status", "time (latest run)", "time (when computed)", "summary"), rows)
    total = sum(studies[n].get("seconds") or 0.0 for n in ran if isinstance(studies.get(n), Mapping))
    lines += [
        "",
        f"This run: {duration(total)} for {len(ran)} studies; load average (1, 5, 15 min) "
        f"{record.get('load_start', '–')} at its start, {record.get('load', '–')} at its end.",
        "",
    ]
    errors = [(n, r["error"]) for n, r in studies.items() if r.get("error")]
    if errors:
        lines += ["Errors:", ""] + [f"- {n}: `{e}`" for n, e in errors] + [""]
    return lines


def ran_studies(record: Mapping) -> tuple:
    """The studies a run's ``record`` names: those it ran and those it keeps a status of."""
    return (*record.get("ran", ()), *record.get("studies", {}))


def _figures_section(out: str) -> list[str]:
    """Every study's figures."""
    lines = ["## Figures", ""]
    for name in reported(out):
        figs = figures_of(out, name)
        if figs:
            lines += [f"### {name}", ""] + [f"![{os.path.basename(p)}]({p})" for p in figs] + [""]
    return lines


def _status_line(r) -> str:
    if not r:
        return "not run by reproduce"
    return f"{r.get('status')}, {duration(r.get('seconds'))} this run"


# ---------------------------------------------------------------------------------------------- Markdown -> HTML


def _inline(text: str) -> str:
    out, parts = [], re.split(r"(`[^`]*`)", text)
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part, quote=False).replace("\\|", "|")
        s = re.sub(
            r"!\[([^\]]*)\]\(([^)\s]+)\)",
            lambda m: f'<img src="{m.group(2)}" alt="{m.group(1)}" loading="lazy">',
            s.replace('"', "&quot;"),
        )
        s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        out.append(s)
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def to_html(markdown: str, title: str = "tokdyn reproduce") -> str:
    """The report's Markdown as a standalone HTML page: the subset :func:`report` writes (headings,
    paragraphs, bullet lists, pipe tables, images, links, inline code, bold)."""
    body, para, lines, i = [], [], markdown.splitlines(), 0

    def flush():
        if para:
            body.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush()
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            flush()
            body.append(f"<h{len(m.group(1))}>{_inline(m.group(2))}</h{len(m.group(1))}>")
        elif line.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head, rows = _cells(block[0]), [_cells(r) for r in block[2:]]
            body.append(
                "<table><thead><tr>"
                + "".join(f"<th>{_inline(c)}</th>" for c in head)
                + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                + "</tbody></table>"
            )
            continue
        elif line.startswith("- "):
            flush()
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        else:
            para.append(line.strip())
        i += 1
    flush()
    style = (
        "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;"
        "line-height:1.45}table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}"
        "td,th{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top}th{background:#f3f3f3}"
        "img{max-width:100%;margin:.5rem 0;display:block}code{background:#f3f3f3;padding:0 .2rem}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
