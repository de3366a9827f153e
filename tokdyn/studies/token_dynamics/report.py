"""The tables a token-dynamics run prints: :func:`format_tables`."""

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
    if rows:
        lines += ["", "Noise 0.3, K = 4  —  ours | published", f"{'method':<19}{'ARI (mean±std)':>29}{'steps':>16}"]
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
        for t in sorted(sig, key=lambda t: t["p"])[:6]:
            lines.append(
                f"  {t['method']:<19} noise {t['noise']:.1f} K={t['n_clusters']}: {findings.paired_cell(t, 4)}"
            )
        lines.append(
            "  (published: one significant before correction, inertia+repulsion at noise 0.3, K=4: p=0.017, d=0.46)"
        )
    return "\n".join(lines)
