"""The collapse study's headline numbers: ``summary.json`` (:func:`summarise`) and its printed
form (:func:`format_summary`)."""

from __future__ import annotations

import numpy as np


def summarise(thr, jac, conv, mom, rep, ratios) -> dict:
    """The headline numbers (``summary.json``) of the parts' rows and runs.

    Args:
      thr: :func:`~tokdyn.studies.collapse.threshold_part`'s rows (one per data shape x T).
      jac: :func:`~tokdyn.studies.collapse.jacobian_part`'s rows (one per eigenvalue).
      conv: :func:`~tokdyn.studies.collapse.convergence_part`'s rows (one per run).
      mom: the momentum x ratio sweep of :func:`~tokdyn.studies.collapse.phase_parts`.
      rep: the repulsion x ratio sweep of :func:`~tokdyn.studies.collapse.phase_parts`.
      ratios: (R,) the values of tau / tau_c swept (the rates are read from the sweeps' own
        ``ratio`` column).

    Returns:
      A dict: the threshold check's largest relative error, the Jacobian check's largest
      eigenvalue error, the Spearman correlation and median ratio of observed to predicted
      convergence steps (converged runs of 3 steps or more), and per momentum or repulsion value
      the collapse, merge and non-convergence rates above tau_c (1.15 tau_c; 3.1 tau_c for
      non-convergence).
    """
    from scipy.stats import spearmanr

    obs = np.array([r["observed"] for r in conv], float)
    pred = np.array([r["predicted"] for r in conv], float)
    ok = np.array([r["converged"] for r in conv]) & np.isfinite(pred) & (obs >= 3)
    rel = np.array([r["rel_error"] for r in thr], float)
    rep_hi = (rep["repulsion_rel"] > 0) & (rep["ratio"] > 1.0)
    return dict(
        threshold_max_abs_rel_error=float(np.nanmax(np.abs(rel))),
        threshold_all_within_10pct=bool(np.all(np.abs(rel) <= 0.1)),
        jacobian_max_abs_error=float(max(r["abs_error"] for r in jac)),
        convergence_runs=int(ok.sum()),
        convergence_spearman=float(spearmanr(pred[ok], obs[ok]).statistic) if ok.sum() > 2 else float("nan"),
        convergence_median_observed_over_predicted=float(np.median(obs[ok] / pred[ok])) if ok.any() else float("nan"),
        momentum_collapse_rate_above_tc={
            f"{b:g}": float(mom["collapsed"][(mom["momentum"] == np.float32(b)) & (mom["ratio"] > 1.15)].mean())
            for b in np.unique(mom["momentum"])
        },
        repulsion_merged_rate_above_tc={
            f"{g:g}": float(rep["merged"][(rep["repulsion_rel"] == np.float32(g)) & (rep["ratio"] > 1.15)].mean())
            for g in np.unique(rep["repulsion_rel"])
        },
        repulsion_nonconverged_rate_above_3tc={
            f"{g:g}": float(1 - rep["converged"][(rep["repulsion_rel"] == np.float32(g)) & (rep["ratio"] > 3.1)].mean())
            for g in np.unique(rep["repulsion_rel"])
        },
        repulsion_runs_above_tc=int(rep_hi.sum()),
    )


def format_summary(s: dict) -> str:
    """The numbers of :func:`summarise` as the lines a run prints at its end."""
    lines = [
        f"threshold: max |tau_50 / tau_c - 1| = {s['threshold_max_abs_rel_error']:.3f} "
        f"(all within 10%: {s['threshold_all_within_10pct']})",
        f"jacobian: max |predicted - numerical eigenvalue| = {s['jacobian_max_abs_error']:.2e}",
        f"convergence time: {s['convergence_runs']} runs, Spearman {s['convergence_spearman']:.2f}, "
        f"median observed/predicted {s['convergence_median_observed_over_predicted']:.2f}",
        "momentum: collapse rate above 1.15 tau_c "
        + ", ".join(f"beta={k}: {v:.2f}" for k, v in s["momentum_collapse_rate_above_tc"].items()),
        "repulsion: merged rate above 1.15 tau_c "
        + ", ".join(f"{k}: {v:.2f}" for k, v in s["repulsion_merged_rate_above_tc"].items()),
        "repulsion: non-converged above 3.1 tau_c "
        + ", ".join(f"{k}: {v:.2f}" for k, v in s["repulsion_nonconverged_rate_above_3tc"].items()),
    ]
    if "real" in s:
        r = s["real"]
        lines += [
            f"real scenes ({r['scenes']} of {r['data']}), encoder features: max |tau_50 / tau_c - 1| = "
            f"{r['threshold_max_abs_rel_error']:.3f} ({r['threshold_never_crossed']} never crossed 1/2); collapse "
            f"rate <= 0.9 tau_c {r['rate_below_mean']:.2f}, >= 1.1 tau_c {r['rate_above_mean']:.2f}",
            f"real scenes, the trained Slot Attention: duplicate slots {r['slot_duplicates_mean']:.2f} a scene "
            f"(scenes with one: {r['scenes_with_duplicate_slots']:.2f}), unused {r['slot_unused_mean']:.2f}, FG-ARI "
            f"{r['slot_fg_ari_mean']:.2f}",
        ]
    return "\n".join(lines)
