"""An honest best setting in the sweep's report: a rule that blows up on about half of its runs at
one setting (``step_size=2``) is left out of the best setting and the Pareto front unless asked
(``--best-over-nonfinite``), the headline says how many settings were left out and why, the best
setting is chosen on one half of the seeds and estimated on the other, and the paired comparison
gives p-values with Holm, difference first."""

import csv
import os
import textwrap

import numpy as np
import pytest

from tokdyn import cli
from tokdyn.studies import token_dynamics_sweep as tds

RULE = textwrap.dedent(
    """
    from typing import NamedTuple

    import jax
    import jax.numpy as jnp

    from tokdyn import dynamics


    class Knobs(NamedTuple):
        step_size: float = 1.0


    def step(tokens, points, hp, s, key):  # Lloyd's step, damped; NaN at step_size > 1.5 on half the data
        d2 = jnp.sum((points.x[:, None] - tokens[None]) ** 2, axis=-1)
        a = jax.nn.one_hot(jnp.argmin(d2, axis=1), tokens.shape[0]) * points.weights[:, None]
        sums = a.T @ points.x1
        means = jnp.where(sums[:, -1:] > 0, sums[:, :-1] / jnp.maximum(sums[:, -1:], 1.0), tokens)
        new = tokens + jnp.minimum(hp.step_size, 1.0) * (means - tokens)
        bad = (hp.step_size > 1.5) & (points.x[0, 0] > tokens[0, 0])  # about half of the runs blow up
        return jnp.where(bad, jnp.nan, new)


    NANNY = dynamics.Rule(lambda points, tokens, hp: tokens, step, hparams=Knobs(), name="nanny")
    """
)


def _sweep(tmp_path, name, *extra):
    path = tmp_path / "nanny.py"
    path.write_text(RULE)
    out = str(tmp_path / name)
    args = ["sweep", "token-dynamics", "--out", out, "--rule-module", f"{path}:NANNY", "--method", "baseline,nanny"]
    args += ["--temperature", "1", "--repulsion", "", "--momentum", "", "--knob", "step_size=0.5,2"]
    args += ["--noise", "0.3,0.9", "--n-clusters", "3", "--seeds", "8", "--dim", "2", "--points-per-cluster", "10"]
    args += ["--n-resamples", "200", "--no-cache", "--quiet", "--no-plots", *extra]
    assert cli.main(args) == 0
    return out


def test_settings_with_failed_runs_are_not_best_and_the_best_is_estimated_on_other_seeds(tmp_path):
    out = _sweep(tmp_path, "sweep")
    rows = list(csv.DictReader(open(os.path.join(out, "settings.csv"))))
    names = [r["method_name"] for r in rows]
    blown = [r for r in rows if int(float(r["nonfinite"])) > 0]
    assert [r["method_name"] for r in blown] == ["nanny"] and float(blown[0]["step_size"]) == 2.0
    assert 0 < int(float(blown[0]["nonfinite"])) < 2 * 8  # some runs of the setting blew up, not all
    assert blown[0]["on_front"] in ("False", "0") and blown[0]["eligible"] in ("False", "0")
    report = open(os.path.join(out, "report.md")).read()
    assert "Left out of the best setting and the Pareto front: 1 of 3 settings, each with a non-finite run" in report
    assert "chosen by its mean ARI on seeds 0–3 and estimated on seeds 4–7" in report
    best_line = report.split("## Best setting", 1)[1].split("\n\n")[1]
    assert "step_size=2" not in best_line
    assert "p_holm=" in report and "d_z=" in report and "Δ=" in report
    front = list(csv.DictReader(open(os.path.join(out, "pareto.csv"))))
    assert all(int(float(r["nonfinite"])) == 0 for r in front)
    assert names.count("nanny") == 2


def test_the_best_setting_is_a_held_out_estimate(tmp_path):
    from tokdyn.studies.token_dynamics_sweep.report import honest_best, seed_halves

    choose, held = seed_halves(8)
    assert choose.tolist() == [0, 1, 2, 3] and held.tolist() == [4, 5, 6, 7]
    assert [h.tolist() for h in seed_halves(3)] == [[0, 1, 2]] * 2  # too few to split
    rng = np.random.default_rng(0)
    ari = rng.uniform(0.5, 0.6, (5, 8))
    ari[3, :4] = 0.99  # best on the choosing seeds, ordinary on the others
    ari[4, :] = 1.0  # better everywhere, but not eligible
    values = {"ari": ari, "steps": np.ones((5, 8))}
    cfg = tds.Config(seeds=8, n_resamples=200)
    choice = honest_best(values, np.array([True, True, True, True, False]), cfg, np.arange(5))
    assert choice["row"] == 3 and choice["split"]
    assert choice["estimate"]["ari_heldout_mean"] == pytest.approx(ari[3, 4:].mean())
    assert choice["estimate"]["ari_heldout_high"] < 0.99
