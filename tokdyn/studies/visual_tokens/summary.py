"""``summary.md`` of the visual-token study (:func:`summarise`) and why a cell does or does not
reconstruct (:func:`cell_verdict`)."""

from __future__ import annotations

import numpy as np

from tokdyn.models.vtae import diagnostics


def _part_block(table: dict, sel, keys) -> list[str]:
    """The Markdown table of the rows ``sel``, grouped by ``keys``: each group's means over seeds."""
    groups = {}
    for i in np.flatnonzero(sel):
        groups.setdefault(tuple(table[k][i] for k in keys), []).append(i)
    out = [
        "| " + " | ".join(keys) + " | seeds | accuracy | acc. (occurrence) | dominant freq | collapsed "
        "| loss/lnV (eval) | train CE/lnV first→last | uniqueness |",
        "|" + "---|" * (len(keys) + 8),
    ]
    for g, idx in groups.items():
        m = lambda f: np.mean(np.asarray(table[f], float)[idx])
        fmt = lambda v: str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v)
        out.append(
            "| " + " | ".join(fmt(v) for v in g) + f" | {len(idx)} | {m('accuracy'):.3f} | "
            f"{m('accuracy_occurrence'):.3f} | {m('dominant_freq'):.3f} | {m('collapsed'):.2f} | "
            f"{m('loss_norm'):.3f} | {m('train_loss_norm_first'):.2f}→{m('train_loss_norm_last'):.3f} | "
            f"{m('uniqueness'):.3f} |"
        )
    return out


def _semantic_lines(table: dict) -> list[str]:
    """The semantic part's topology and composition scores per variant (means over seeds); none
    without the part."""
    sel = np.asarray(table["part"]) == "semantic"
    if not sel.any():
        return []
    lines = ["Topology and composition (grammar corpus, mean over seeds):", ""]
    for v in sorted(set(np.asarray(table["variant"])[sel])):
        idx = sel & (np.asarray(table["variant"]) == v)
        f = lambda k: (
            np.nanmean(np.asarray(table[k], float)[idx])
            if np.any(np.isfinite(np.asarray(table[k], float)[idx]))
            else float("nan")
        )
        lines.append(
            f"- {v}: k-NN preservation (k=5) {f('knn_preservation'):.3f}, trustworthiness "
            f"{f('trustworthiness'):.3f}, 'big cat' top-2 from the composed grid {f('composition_grid'):.3f}, "
            f"from the summed embeddings {f('composition_embedding'):.3f}"
        )
    lines.append("")
    return lines


def _verdict_lines(table: dict) -> list[str]:
    """The verdict: how many models collapsed, where, and how many reconstruct >= 99%."""
    coll = np.asarray(table["collapsed"], bool)
    acc = np.asarray(table["accuracy"], float)
    lines = [
        "## Verdict",
        "",
        f"{int(coll.sum())} of {coll.size} models collapsed (one prediction for > 90% of types). ",
    ]
    if coll.any():
        bad = sorted(
            {
                (
                    table["part"][i],
                    int(table["vocab_size"][i]),
                    int(table["grid"][i]),
                    int(table["colours"][i]),
                    table["mode"][i],
                    int(table["steps"][i]),
                )
                for i in np.flatnonzero(coll)
            }
        )
        lines.append(
            "Collapse occurred in: " + "; ".join(f"{p} V={v} {n}x{n}x{c} {m} {s} steps" for p, v, n, c, m, s in bad)
        )
    full = [
        (
            int(table["vocab_size"][i]),
            int(table["grid"][i]),
            int(table["colours"][i]),
            table["mode"][i],
            int(table["steps"][i]),
        )
        for i in np.flatnonzero(acc >= 0.99)
    ]
    lines.append(f"{len(full)} of {acc.size} models reconstruct >= 99% of their vocabulary.")
    return lines


def summarise(table: dict) -> str:
    """The README-ready summary (markdown)."""
    part = np.asarray(table["part"])
    lines = ["# Visual-token autoencoders: where collapse does and does not occur", ""]
    for name, keys, title in (
        ("poc", ("mode",), "5-token 3×3 binary proof of concept"),
        ("published", ("vocab_size", "steps", "variant"), "Published setting (5×5×3, Gumbel ST, sensitivity hinge)"),
        ("main", ("vocab_size", "grid", "colours", "mode", "steps"), "Vocabulary × grid × mode × budget"),
        ("curriculum", ("variant", "vocab_size", "steps"), "Curriculum"),
        ("semantic", ("variant",), "Semantic grounding vs arbitrary mapping"),
    ):
        sel = part == name
        if sel.any():
            lines += [f"## {title}", ""] + _part_block(table, sel, keys) + [""]
    lines += _semantic_lines(table)
    lines += _where_collapse(table)
    lines += _verdict_lines(table)
    return "\n".join(lines) + "\n"


STILL_FALLING = 0.02  # training CE fell by more than this fraction of ln V over the last 20% of steps
AT_CHANCE = 0.9  # final training CE / ln V above this: the model has not started to learn


def cell_verdict(accuracy, dominant_freq, drop_tail, vocab_size, grid, colours, ce_last=float("nan")) -> str:
    """Why a (mean-over-seeds) cell does or does not reconstruct.

    Args:
      accuracy: reconstruction accuracy over token types, in [0, 1].
      dominant_freq: the share of types decoded to the most frequent prediction.
      drop_tail: how much the training CE fell over the last 20% of steps, as a fraction of ln V.
      vocab_size: V, the number of token types.
      grid: N, the grid's side (N x N cells).
      colours: C, the colours per cell.
      ce_last: the final training CE as a fraction of ln V (NaN: unknown).

    Returns:
      ``"reconstructs"`` (accuracy >= 0.99), ``"capacity"`` (C^(N*N) < V), ``"collapse"``
      (dominant prediction > 0.9 of types), ``"at chance"`` (final CE > 0.9 ln V: not yet
      learning), ``"too few steps"`` (CE still falling by > 2% of ln V) or ``"plateau"`` (loss
      flat below chance, no collapse, yet imperfect).
    """
    if accuracy >= 0.99:
        return "reconstructs"
    if grid * grid * np.log10(colours) < np.log10(vocab_size) - 1e-12:
        return "capacity"
    if dominant_freq > diagnostics.COLLAPSE_THRESHOLD:
        return "collapse"
    if np.isfinite(ce_last) and ce_last > AT_CHANCE:
        return "at chance"
    if np.isfinite(drop_tail) and drop_tail > STILL_FALLING:
        return "too few steps"
    return "plateau"


def _budget_statements(verdicts: dict, budgets: list) -> list[str]:
    """Per budget, how many cells of the main grid reconstruct and which are limited by what; then
    the cells where training is adequate at the largest budget."""
    lines = []
    name = lambda k: f"V={k[0]} {k[1]}x{k[1]}x{k[2]} {k[3]}"
    for b in budgets:
        at = {k: v for k, v in verdicts.items() if k[4] == b}
        by = lambda what: [name(k) for k, v in at.items() if v == what]
        lines.append(
            f"At {b} steps: {len(by('reconstructs'))} of {len(at)} cells reconstruct >= 99%; "
            f"collapse in {len(by('collapse'))} ({'; '.join(by('collapse')) or 'none'}); "
            f"capacity-limited {len(by('capacity'))} ({'; '.join(by('capacity')) or 'none'}); "
            f"at chance {len(by('at chance'))} ({'; '.join(by('at chance')) or 'none'}); "
            f"too few steps {len(by('too few steps'))} ({'; '.join(by('too few steps')) or 'none'}); "
            f"plateau {len(by('plateau'))} ({'; '.join(by('plateau')) or 'none'})."
        )
    b = budgets[-1]
    adequate = {k: v for k, v in verdicts.items() if k[4] == b and v not in ("capacity", "at chance", "too few steps")}
    ok = sum(v == "reconstructs" for v in adequate.values())
    lines += [
        "",
        f"**Where training is adequate** ({b} steps, loss below chance and flat, grid with enough distinct "
        f"patterns): "
        f"{ok} of {len(adequate)} cells reconstruct >= 99% of their vocabulary; "
        f"{sum(v == 'collapse' for v in adequate.values())} collapse.",
        "",
    ]
    return lines


def _where_collapse(table: dict) -> list[str]:
    """Per (V, grid, mode) cell of the main part: the verdict at each budget, and the plain statement."""
    sel = np.asarray(table["part"]) == "main"
    if not sel.any():
        return []
    f = lambda k: np.asarray(table[k], float)
    keys = ("vocab_size", "grid", "colours", "mode", "steps")
    groups = {}
    for i in np.flatnonzero(sel):
        groups.setdefault(tuple(table[k][i] for k in keys), []).append(i)
    budgets = sorted({int(g[4]) for g in groups})
    cells = sorted({g[:4] for g in groups}, key=lambda g: (int(g[0]), int(g[1]), int(g[2]), str(g[3])))
    lines = [
        "## Where collapse does and does not occur",
        "",
        "Main grid, mean over seeds; verdict: `reconstructs` (accuracy >= 0.99), `capacity` (C^(N·N) < V), "
        "`collapse` (dominant prediction > 0.9), `at chance` (final training CE > "
        f"{AT_CHANCE:g} ln V: not yet learning), `too few steps` (training CE still falling by > "
        f"{STILL_FALLING:g} ln V over the last 20% of steps), `plateau` (flat loss, no collapse, imperfect).",
        "",
        "| V | grid | mode | "
        + " | ".join(f"{b} steps: accuracy / dominant / CE/lnV / verdict" for b in budgets)
        + " |",
        "|" + "---|" * (3 + len(budgets)),
    ]
    verdicts = {}
    for c in cells:
        V, n, col, mode = int(c[0]), int(c[1]), int(c[2]), str(c[3])
        row = [str(V), f"{n}x{n}x{col}", mode]
        for b in budgets:
            idx = next((v for g, v in groups.items() if g[:4] == c and int(g[4]) == b), None)
            if idx is None:
                row.append("-")
                continue
            m = lambda k: float(np.nanmean(f(k)[idx])) if np.any(np.isfinite(f(k)[idx])) else float("nan")
            v = cell_verdict(
                m("accuracy"), m("dominant_freq"), m("train_loss_drop_tail"), V, n, col, m("train_loss_norm_last")
            )
            verdicts[(V, n, col, mode, b)] = v
            row.append(f"{m('accuracy'):.3f} / {m('dominant_freq'):.3f} / {m('train_loss_norm_last'):.3f} / {v}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += _budget_statements(verdicts, budgets)
    return lines
