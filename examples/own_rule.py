"""An update rule of one's own, compared with the built-in baseline through the token-dynamics study.

The rule is a value (``tokdyn.dynamics.Rule``): its ``init`` and ``step`` and the defaults of its
knobs. The package's loop gives it the stopping test, the step count and the labels; the study
gives it the metrics, the sweep over seeds x cluster counts x noise levels (the same data and
initial tokens per seed as the built-in methods) and paired t-tests of its ARI against the
baseline. Both settings of the rule below share one compilation (their knobs are traced).

    python examples/own_rule.py [--seeds 10] [--out DIR]

The same rule in the sweep command, paired by seed with the built-in baseline and its own knob
as an axis (settings.csv, pareto.csv and report.md name every method; report.md compares each
method's best setting with the baseline's, seed by seed):
``tokdyn sweep token-dynamics --rule-module examples/own_rule.py:RULES --method baseline,lloyd
--knob step_size=0.25,0.5,1 --temperature 1 --repulsion '' --momentum '' ...``
"""

import argparse
import dataclasses
import json
import os
import tempfile
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tokdyn import dynamics
from tokdyn.studies import token_dynamics


class Knobs(NamedTuple):  # the rule's knobs: traced, so settings share one compilation
    step_size: float = 1.0


def step(tokens, points, hp, s, key):  # hard assignment, then a (damped) move to the means
    d2 = jnp.sum((points.x[:, None] - tokens[None]) ** 2, axis=-1)  # (N, T)
    a = jax.nn.one_hot(jnp.argmin(d2, axis=1), tokens.shape[0]) * points.weights[:, None]  # no padded point
    sums = a.T @ points.x1  # (T, D + 1): each token's sum of points, then their count
    means = jnp.where(sums[:, -1:] > 0, sums[:, :-1] / jnp.maximum(sums[:, -1:], 1.0), tokens)
    return tokens + hp.step_size * (means - tokens)


LLOYD = dynamics.Rule(lambda points, tokens, hp: tokens, step, hparams=Knobs(), name="lloyd")
RULES = {"lloyd": LLOYD, "lloyd_damped": dataclasses.replace(LLOYD, hparams=Knobs(step_size=0.5))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per condition (default: 10)")
    parser.add_argument("--out", default=None, help="output directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    cfg = token_dynamics.Config(
        seeds=args.seeds,
        noise=(0.3, 0.9),
        n_clusters=(3, 4),
        methods=("baseline", *RULES),
        dim=2,
        points_per_cluster=40,
    )
    out = args.out or tempfile.mkdtemp(prefix="own_rule_")
    timings = token_dynamics.main(cfg, out, rules=RULES, quiet=True, plots=False)
    with open(os.path.join(out, "stat_tests.json")) as f:
        tests = json.load(f)
    print(
        f"{timings['n_runs']} runs in {timings['simulate_s']:.1f} s; paired t-tests of ARI against the baseline "
        f"({cfg.seeds} seeds per condition, paired by seed; Holm over {len(tests)} tests):"
    )
    print(f"{'method':<14}{'K':>3}{'noise':>7}{'mean dARI':>11}{'t':>8}{'p':>10}{'p_holm':>10}{'d_z':>7}")
    for t in tests:
        print(
            f"{t['method']:<14}{t['n_clusters']:>3}{t['noise']:>7.1f}{t['mean_diff']:>+11.4f}{t['t']:>8.2f}"
            f"{t['p']:>10.3g}{t['p_holm']:>10.3g}{t['d']:>7.2f}"
        )
    print(f"outputs (runs.csv, summary.csv, stat_tests.json, config.json) in {out}")


if __name__ == "__main__":
    main()
