"""The latent-reasoning study's findings O1, O2a and O2b (tokdyn.studies.latent_reasoning.findings) on accuracy tables
written here: the verdicts at values far from every threshold, the seeds paired by their number whatever the
rows' order, the latent recipes told from the others by their recipe, and a directory without a table leaving
every claim open."""

from __future__ import annotations

import numpy as np
import pytest

from tokdyn.experiment import findings as experiment_findings
from tokdyn.studies import latent_reasoning as lo
from tokdyn.studies.latent_reasoning import findings as lof


def table(acc: dict, chance: float = 0.275) -> dict:
    """accuracy.csv's columns from ``{(recipe, family): [accuracy per seed]}``, the rows in reverse seed order
    (the findings pair seeds by number, not by row)."""
    cols = {k: [] for k in ("variant", "family", "seed", "accuracy", "chance", "converged")}
    for (recipe, family), values in acc.items():
        for seed in reversed(range(len(values))):
            for k, v in zip(cols, (recipe, family, seed, values[seed], chance, 0)):
                cols[k].append(v)
    return {k: np.asarray(v) for k, v in cols.items()}


@pytest.mark.parametrize(
    "seeds, verdict",
    [
        ([0.99, 1.0, 0.985], "reproduced"),
        ([147 / 150, 1.0, 1.0], "reproduced"),  # at the level in exact arithmetic
        ([1.0, 0.95, 1.0], "open"),  # one seed short, the mean's interval holds the level
        ([0.55, 0.6, 0.5], "refuted"),
        ([1.0, 1.0], "open"),  # too few seeds
    ],
)
def test_o1_reads_the_image_in_every_seed(seeds, verdict):
    f = lof.reads_image(table({("direct", "read"): seeds, ("direct", "gravity"): [0.2] * len(seeds)}))
    assert f.key == "O1" and f.verdict == verdict
    assert f.rows[0][-1] == verdict and f.rows[0][4] == "0.275"


def test_o2a_and_o2b_pair_seeds_and_judge_each_family():
    direct = {"read": [1.0, 1.0, 1.0], "gravity": [0.70, 0.74, 0.72], "path": [0.47, 0.48, 0.46]}
    text = {"read": [1.0, 1.0, 1.0], "gravity": [0.99, 0.98, 1.0], "path": [0.48, 0.485, 0.47]}
    latent = {"read": [0.9, 0.95, 0.97], "gravity": [0.80, 0.81, 0.83], "path": [0.47, 0.47, 0.47]}
    lvr = {"read": [0.9, 0.9, 0.9], "gravity": [0.75, 0.70, 0.72], "path": [0.48, 0.50, 0.49]}
    pause = {"read": [1.0, 1.0, 1.0], "gravity": [1.0, 1.0, 1.0], "path": [0.6, 0.6, 0.6]}  # no latents: not counted
    acc = {}
    for recipe, values in (
        ("direct", direct),
        ("text", text),
        ("latent", latent),
        ("latent_lvr", lvr),
        ("pause", pause),
    ):
        acc.update({(recipe, f): v for f, v in values.items()})
    t = table(acc)
    o2a = lof.text_helps(t)
    rows = {r[0]: r for r in o2a.rows}
    assert list(rows) == ["gravity", "path"]  # every family but read
    diff = np.subtract(text["gravity"], direct["gravity"])  # seed by seed
    expect = experiment_findings.seed_interval(diff, experiment_findings.difference_bounds(experiment_findings.RATE))
    assert rows["gravity"][3] == experiment_findings.interval(*expect[:3]) and expect[1] > lof.ACCURACY_MARGIN
    assert rows["gravity"][-1] == "reproduced"
    # on path text and direct differ by 0.01 +- 0.005: the interval lies below the margin
    assert rows["path"][-1] == "refuted" and o2a.verdict == "refuted"

    o2b = lof.latents_short(t)
    rows = {r[0]: r for r in o2b.rows}
    assert rows["gravity"][1] == "latent" and rows["path"][1] == "latent_lvr"  # the best by mean; pause left out
    assert rows["gravity"][-1] == "reproduced"  # text 0.99 against 0.81
    share = (np.mean(latent["gravity"]) - np.mean(direct["gravity"])) / (
        np.mean(text["gravity"]) - np.mean(direct["gravity"])
    )
    assert rows["gravity"][5] == f"{share:.2f}"
    assert rows["path"][5] == "–"  # text's gain over direct on path is within the margin: no share of it
    assert o2b.verdict == "refuted"  # on path latent_lvr reaches text (0.49 against 0.478)


def test_without_the_recipes_or_the_table_every_claim_stays_open(tmp_path):
    only_direct = lof.verdicts(table({("direct", "read"): [1.0, 1.0, 1.0]}))
    assert [f.verdict for f in only_direct] == ["reproduced", "open", "open"]
    found = lo.SPEC.findings(str(tmp_path))
    assert [f.key for f in found] == ["O1", "O2a", "O2b"]
    assert all(f.verdict == "open" and "missing" in f.basis for f in found)


def test_the_studys_summary_states_each_finding_with_its_verdict(tmp_path):
    """The summary a run writes ends with O1, O2a and O2b judged on its table, as reproduce judges them: decided
    by a default run of 3 seeds, open in the quick preset's smoke run whatever the numbers."""
    from tokdyn.experiment import runner

    t = table({("direct", "read"): [0.99, 1.0, 0.985], ("direct", "gravity"): [0.4, 0.45, 0.5]})
    conv = {"variant": ["direct"] * 3, "seed": [0, 1, 2], "converged": [True] * 3, "steps": [4000] * 3}
    r = runner.Result({}, data=dict(acc=t, conv=conv, families=("read", "gravity"), out=str(tmp_path), done=True))
    text = lo.summary(lo.Config(), r)
    assert "| direct | 0.992 (0.98-1.00) | 0.450 (0.40-0.50) |  | 3/3 | 4000 |" in text.splitlines()
    findings = text[text.index("## Findings") :].splitlines()
    assert findings[2].startswith("- **O1. Organisms: `direct` reads the image: reproduced**. ")
    assert [line[:7] for line in findings[2:]] == ["- **O1.", "- **O2a", "- **O2b"]
    assert "open" in findings[3] and "open" in findings[4]  # no `text`: nothing to compare
    quick = lo.summary(lo.Config.quick(), r)
    assert "- **O1. Organisms: `direct` reads the image: open (smoke run: 3 seeds)**. " in quick
