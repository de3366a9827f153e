"""The tables of a token-dynamics run: those it prints (:func:`format_tables`: the overall means
and the one condition with published figures) and ``summary.md`` (:func:`summary_markdown`: every
table, each condition's included)."""

from __future__ import annotations

import numpy as np

from tokdyn.experiment import findings
from tokdyn.studies.token_dynamics.published import PUBLISHED_NOISE03_K4, PUBLISHED_OVERALL


def format_tables(overall: list[dict], summary: list[dict], tests: list[dict]) -> str:
    """The tables a run prints (from :func:`~tokdyn.studies.token_dynamics.tables.summarise` and :func:`~tokdyn.studies.token_dynamics.tables.stat_tests`): every method's
    means over all conditions and those at noise 0.3, K = 4, each beside the published figures, and
    the paired t-tests significant before correction (the 6 smallest p), each difference first
    (:func:`tokdyn.experiment.findings.paired_cell`), a difference below the metric's practical
    threshold labelled negligible."""
    lines = [
        "Overall (mean over all conditions)  —  ours | published",
        f"{'method':<19}{'ARI':>15}{'NMI':>15}{'steps':>15}{'collapse':>13}",
    ]
    for r in overall:
        pub = PUBLISHED_OVERALL.get(r["method"])
        f = lambda a, b, p=3: f"{a:.{p}f} | {b:.{p}f}" if b is not None else f"{a:.{p}f} |   -  "
        g = lambda key, p=3: pub[key] if pub else None
        lines.append(
            f"{r['method']:<19}{f(r['ari_mean'], g('ari')):>15}{f(r['nmi_mean'], g('nmi')):>15}"
            f"{f(r['steps_mean'], g('steps'), 2):>15}{f(r['collapsed_mean'], g('collapsed'), 2):>13}"
        )
    rows = [r for r in summary if r["n_clusters"] == 4 and np.isclose(r["noise"], 0.3)]
    n_cond = len({(r["n_clusters"], float(r["noise"])) for r in summary})
    if rows:
        shown = (
            f" (the one condition of {n_cond} with published figures; every condition's table is in summary.md)"
            if n_cond > 1
            else ""
        )
        lines += [
            "",
            f"Noise 0.3, K = 4  —  ours | published{shown}",
            f"{'method':<19}{'ARI (mean±std)':>29}{'steps':>16}",
        ]
        for r in rows:
            pub = PUBLISHED_NOISE03_K4.get(r["method"])
            ours = f"{r['ari_mean']:.3f}±{r['ari_std']:.3f}"
            theirs = f"{pub['ari']:.3f}±{pub['ari_std']:.3f}" if pub else "-"
            steps = f"{r['steps_mean']:.2f} | " + (f"{pub['steps']:.2f}" if pub else "-")
            lines.append(f"{r['method']:<19}{ours + ' | ' + theirs:>29}{steps:>16}")
    if tests:
        sig = [t for t in tests if t["p"] < 0.05]
        dropped = sum(t.get("n_dropped", 0) for t in tests)
        if dropped:
            lines += [
                "",
                f"Paired t-tests: {dropped} pair(s) with a non-finite run on either side dropped (the tests "
                "are over the remaining pairs).",
            ]
        metric = tests[0]["metric"]
        lines += [
            "",
            f"Paired t-tests of {metric.upper()} vs baseline: {len(tests)} tests, {len(sig)} with p < 0.05 before "
            f"correction, {sum(t['p_holm'] < 0.05 for t in tests)} after Holm, "
            f"{sum(t['p_holm'] < 0.05 and not t.get('negligible') for t in tests)} of them with a difference of "
            f"at least {findings.NEGLIGIBLE.get(metric, 0):g} (the practical threshold; smaller is negligible). "
            "Δ: the mean difference (method − baseline) with its 95% interval over seeds.",
        ]
        if len(sig) > 6:
            lines.append(f"  (the 6 smallest p of {len(sig)}; every test is in summary.md and stat_tests.json)")
        for t in sorted(sig, key=lambda t: t["p"])[:6]:
            lines.append(
                f"  {t['method']:<19} noise {t['noise']:.1f} K={t['n_clusters']}: {findings.paired_cell(t, 4)}"
            )
        lines.append(
            "  (published: one significant before correction, inertia+repulsion at noise 0.3, K=4: p=0.017, d=0.46)"
        )
    return "\n".join(lines)


def _cell(mean, std, digits: int = 3) -> str:
    return "–" if not np.isfinite(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_markdown(overall: list[dict], summary: list[dict], tests: list[dict]) -> str:
    """``summary.md``: every table of the run in Markdown: the overall means of every method beside
    the published figures, one table per condition (noise x K: every method's ARI, NMI, steps and
    collapse rate, mean ± std over the runs that stayed finite, the published figures beside those
    of noise 0.3, K = 4, the only condition the paper tabulates), and every paired t-test against
    the baseline (difference first, :func:`tokdyn.experiment.findings.paired_cell`)."""

    def pub_cell(pub, key, digits=3):
        return "–" if pub is None or pub.get(key) is None else f"{pub[key]:.{digits}f}"

    lines = [
        "# Token dynamics: the published table rerun",
        "",
        "Means ± standard deviations over the runs whose metrics are all finite (a run that blew up is "
        "left out and counted). Tables: the overall means, then each condition (noise x K), then every "
        "paired t-test; runs.csv, summary.csv, overall.csv and stat_tests.json hold the same numbers.",
        "",
        "## Overall (mean over all conditions)",
        "",
        "| method | ARI | published | NMI | published | steps | published | collapse | published | left out |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in overall:
        pub = PUBLISHED_OVERALL.get(r["method"])
        lines.append(
            f"| {r['method']} | {r['ari_mean']:.3f} | {pub_cell(pub, 'ari')} | {r['nmi_mean']:.3f} | "
            f"{pub_cell(pub, 'nmi')} | {r['steps_mean']:.2f} | {pub_cell(pub, 'steps', 2)} | "
            f"{r['collapsed_mean']:.2f} | {pub_cell(pub, 'collapsed', 2)} | {int(r['n_nonfinite'])} of {int(r['n_runs'])} |"
        )
    conditions = sorted({(float(r["noise"]), int(r["n_clusters"])) for r in summary})
    lines += ["", f"## Each condition ({len(conditions)})"]
    for noise, k in conditions:
        published = np.isclose(noise, 0.3) and k == 4
        lines += [
            "",
            f"### Noise {noise:g}, K = {k}" + (" (the condition the paper tabulates)" if published else ""),
            "",
            "| method | ARI | NMI | steps | collapse | left out |"
            + (" published ARI | published steps |" if published else ""),
            "|---|---|---|---|---|---|" + ("---|---|" if published else ""),
        ]
        for r in summary:
            if int(r["n_clusters"]) != k or not np.isclose(float(r["noise"]), noise):
                continue
            row = (
                f"| {r['method']} | {_cell(r['ari_mean'], r['ari_std'])} | {_cell(r['nmi_mean'], r['nmi_std'])} | "
                f"{_cell(r['steps_mean'], r['steps_std'], 2)} | {_cell(r['collapsed_mean'], r['collapsed_std'], 2)} | "
                f"{int(r['n_nonfinite'])} of {int(r['n_runs'])} |"
            )
            if published:
                pub = PUBLISHED_NOISE03_K4.get(r["method"])
                ari = "–" if pub is None else f"{pub['ari']:.3f} ± {pub['ari_std']:.3f}"
                row += f" {ari} | {pub_cell(pub, 'steps', 2)} |"
            lines.append(row)
    if tests:
        metric = tests[0]["metric"]
        lines += [
            "",
            f"## Paired t-tests of {metric.upper()} against the baseline ({len(tests)})",
            "",
            "Per condition, paired by seed: the mean difference (method − baseline) with its 95% interval over "
            "seeds, t, p, Holm's p over every test of this table, d_z; a difference below "
            f"{findings.NEGLIGIBLE.get(metric, 0):g} is negligible whatever its p.",
            "",
            "| method | noise | K | difference |",
            "|---|---|---|---|",
        ]
        for t in tests:
            cell = findings.paired_cell(t, 4).replace("|", "\\|")
            lines.append(f"| {t['method']} | {t['noise']:g} | {t['n_clusters']} | {cell} |")
    return "\n".join(lines)
