"""How far the token-dynamics study's 30-seed means move from block to block: reads a study
directory's ``runs.csv`` (``tokdyn study token-dynamics --seeds N --out DIR``), and prints each
method's mean ARI over every seed, the means of consecutive blocks of ``--block`` seeds (their
spread, and where seeds 0 to block-1, the default run's, sit among them), beside the published
values, and the study's own verdicts of findings 1a/1b on the directory.

    python benchmarks/seed_blocks.py DIR [--block 30]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--block", type=int, default=30)
    args = ap.parse_args(argv)
    from tokdyn.studies import token_dynamics as td
    from tokdyn.studies.token_dynamics import published

    with open(os.path.join(args.out, "runs.csv")) as f:
        rows = list(csv.DictReader(f))
    seeds = np.array([int(r["seed"]) for r in rows])
    n_seeds = seeds.max() + 1
    n_blocks = n_seeds // args.block
    print(f"{args.out}: {len(rows):,} runs, {n_seeds:,} seeds; blocks of {args.block} seeds: {n_blocks}")
    print(f"machine {platform.machine()}, {os.cpu_count()} cores; Python {sys.version.split()[0]}")
    print()
    print(
        "| method | mean ARI, every seed | block means: SD | min / max | seeds 0-29's block: mean, percentile | published |"
    )
    print("|---|---:|---:|---|---|---:|")
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = np.array([r["method"] == method for r in rows])
        ari = np.array([float(r["ari"]) for r in rows])[sel]
        per_seed = np.bincount(seeds[sel], weights=ari, minlength=n_seeds) / np.bincount(seeds[sel], minlength=n_seeds)
        blocks = per_seed[: n_blocks * args.block].reshape(n_blocks, args.block).mean(axis=1)
        first = blocks[0]
        pct = 100.0 * np.mean(blocks <= first)
        pub = published.PUBLISHED_OVERALL.get(method, {})
        pub_text = f"{pub['ari']:.3f}" if isinstance(pub, dict) and "ari" in pub else ""
        print(
            f"| {method} | {per_seed.mean():.3f} | {blocks.std(ddof=1):.3f} | {blocks.min():.3f} / {blocks.max():.3f} "
            f"| {first:.3f}, {pct:.0f}th | {pub_text} |"
        )
    print()
    for f in td.findings(args.out):
        print(f"finding {f.key}: {f.verdict}: {f.basis}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
