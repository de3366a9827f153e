"""The ``tokdyn`` command.

    tokdyn study token-dynamics [--out DIR] [--seeds N] [--dim D] ...
    tokdyn study collapse [--out DIR] [--shapes blobs2,aniso2] [--n-tokens 2,4,8] [--seeds N] ...
    tokdyn sweep token-dynamics --temperature logspace:0.05:20:25 --repulsion linspace:0:0.2:11 ... --out DIR
    tokdyn plot heatmap DIR --x temperature --y repulsion --metric ari [--where momentum=0.5]

Before JAX is imported, the CLI (1) exposes every CPU core as a host device, unless ``XLA_FLAGS``
already says otherwise, so runs are split over cores with ``shard_map``; and (2) enables JAX's
persistent compilation cache (``$TOKDYN_CACHE_DIR``, default ``~/.cache/tokdyn/jax``), where the
study also keeps its serialized executable, so a second invocation skips tracing and compiling.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys


def _host_devices() -> None:
    """Expose every CPU core as a host device (must run before JAX is imported)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        n = os.cpu_count() or 1
        os.environ["XLA_FLAGS"] = (flags + f" --xla_force_host_platform_device_count={n}").strip()


def _cache_dir() -> str:
    return os.environ.get("TOKDYN_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "tokdyn", "jax"))


def _setup_jax(cache: bool = True) -> None:
    import jax

    if cache:
        jax.config.update("jax_compilation_cache_dir", _cache_dir())
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _floats(text: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of numbers, got {text!r}")


def _ints(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}")


def _names(text: str) -> tuple:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _study_parser(sub) -> None:
    from tokdyn.studies.token_dynamics import Config

    d = Config()
    p = sub.add_parser("token-dynamics", help="four update rules on Gaussian clusters (the published study)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/token-dynamics", help="output directory")
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds per condition (0..N-1)")
    p.add_argument("--noise", type=_floats, default=d.noise, help="comma list of cluster std values")
    p.add_argument("--n-clusters", type=_ints, default=d.n_clusters, help="comma list of K values")
    p.add_argument("--methods", type=_names, default=d.methods, help="comma list of methods")
    p.add_argument("--n-tokens", type=int, default=d.n_tokens)
    p.add_argument("--dim", type=int, default=d.dim, help="data dimension D")
    p.add_argument("--points-per-cluster", type=int, default=d.points_per_cluster)
    p.add_argument("--centers", default=d.centers, help="centre layout: uniform | normal")
    p.add_argument("--center-box", type=float, default=d.center_box, help="centre box half-width (or scale)")
    p.add_argument("--init", default=d.init, help="token init: data | normal | data_mean")
    p.add_argument("--init-scale", type=float, default=d.init_scale)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--n-steps", type=int, default=d.n_steps)
    p.add_argument("--tol", type=float, default=d.tol)
    p.add_argument("--root-seed", type=int, default=d.root_seed, help="root PRNG seed")
    p.add_argument("--chunk-size", type=int, default=None, help="runs per compiled call")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--no-cache", action="store_true", help="disable the persistent compilation cache")
    p.add_argument("--quiet", action="store_true")


def _collapse_parser(sub) -> None:
    from tokdyn.studies.collapse import Config as CollapseConfig

    d = CollapseConfig()
    p = sub.add_parser("collapse", help="collapse threshold, Jacobian spectra and phase diagrams vs the theory",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/collapse", help="output directory (finished sweeps are resumed)")
    p.add_argument("--shapes", type=_names, default=d.shapes, help="comma list of data shapes")
    p.add_argument("--n-tokens", type=_ints, default=d.n_tokens, help="comma list of token counts T")
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds per threshold condition")
    p.add_argument("--n-ratios", type=int, default=d.n_ratios, help="tau/tau_c values (log-spaced, + 0.9..1.1)")
    p.add_argument("--ratio-min", type=float, default=d.ratio_min)
    p.add_argument("--ratio-max", type=float, default=d.ratio_max)
    p.add_argument("--n-points", type=int, default=d.n_points)
    p.add_argument("--n-steps", type=int, default=d.n_steps)
    p.add_argument("--merge-rel", type=float, default=d.merge_rel, help="merge tolerance / RMS data radius")
    p.add_argument("--tol-rel", type=float, default=d.tol_rel, help="convergence tolerance / RMS data radius")
    p.add_argument("--phase-noise", type=_floats, default=d.phase_noise)
    p.add_argument("--phase-tokens", type=_ints, default=d.phase_tokens)
    p.add_argument("--momentum", type=_floats, default=d.momentum)
    p.add_argument("--repulsion-rel", type=_floats, default=d.repulsion_rel)
    p.add_argument("--phase-seeds", type=int, default=d.phase_seeds)
    p.add_argument("--phase-ratios", type=int, default=d.phase_ratios)
    p.add_argument("--convergence-runs", type=int, default=d.convergence_runs, help="runs of the convergence-time check")
    p.add_argument("--root-seed", type=int, default=d.root_seed)
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--no-cache", action="store_true", help="disable the persistent compilation cache")
    p.add_argument("--quiet", action="store_true")


def _run_collapse(args, parser) -> int:
    import dataclasses

    from tokdyn.studies.collapse import Config as CollapseConfig

    try:
        cfg = CollapseConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CollapseConfig)}).validate()
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    _setup_jax(cache=not args.no_cache)
    from tokdyn.studies import collapse

    collapse.main(cfg, args.out, quiet=args.quiet, plots=not args.no_plots)


def _visual_tokens_parser(sub) -> None:
    from tokdyn.studies.visual_tokens import PARTS, StudyConfig

    d = StudyConfig()
    p = sub.add_parser("visual-tokens", help="text tokens <-> colour grids: reconstruction and collapse",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/visual-tokens", help="output directory (finished parts are kept)")
    p.add_argument("--vocab-sizes", type=_ints, default=d.vocab_sizes)
    p.add_argument("--grids", default=",".join(f"{n}x{c}" for n, c in d.grids), help="comma list of NxC")
    p.add_argument("--modes", type=_names, default=d.modes)
    p.add_argument("--budgets", type=_ints, default=d.budgets, help="training steps")
    p.add_argument("--parts", type=_names, default=PARTS)
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--root-seed", type=int, default=d.root_seed)
    p.add_argument("--quick", action="store_true", help="a few-minute version (smaller everything)")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--quiet", action="store_true")


def _latent_parser(sub) -> None:
    from tokdyn.latent.train import VARIANTS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("latent-reasoning", help="train the tiny latent reasoner every way, evaluate per task family",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train", action="store_true", help="train (or resume) the variants")
    p.add_argument("--out", default="results/latent-reasoning", help="output directory")
    p.add_argument("--variants", type=_names, default=tuple(VARIANTS), help="comma list of variants")
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument("--heads", type=int, default=d.heads)
    p.add_argument("--n-latents", type=int, default=d.n_latents)
    p.add_argument("--projection", default=d.projection, help="latent feedback projection: none | layernorm | linear")
    p.add_argument("--align-weight", type=float, default=d.align_weight)
    p.add_argument("--curriculum-stages", type=int, default=d.curriculum_stages)
    p.add_argument("--steps-per-call", type=int, default=d.steps_per_call, help="steps per checkpoint")
    p.add_argument("--grid-size", type=int, default=d.task.grid_size)
    p.add_argument("--n-colours", type=int, default=d.task.n_colours)
    p.add_argument("--n-train", type=int, default=d.n_train)
    p.add_argument("--n-test", type=int, default=d.n_test)
    p.add_argument("--root-seed", type=int, default=d.root_seed)
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly after this long (resume later)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true")


def _run_visual_tokens(args, parser) -> int:
    from tokdyn.studies import visual_tokens as vt

    try:
        grids = tuple(tuple(int(v) for v in g.lower().split("x")) for g in args.grids.split(",") if g.strip())
        if any(len(g) != 2 for g in grids):
            raise ValueError(f"--grids expects NxC entries such as 5x3, got {args.grids!r}")
        base = vt.StudyConfig.quick() if args.quick else vt.StudyConfig()
        over = dict(parts=args.parts, root_seed=args.root_seed)
        if not args.quick:
            over.update(vocab_sizes=args.vocab_sizes, grids=grids, modes=args.modes, budgets=args.budgets,
                        seeds=args.seeds)
        sc = dataclasses.replace(base, **over).validate()
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    _setup_jax()
    vt.main(sc, args.out, quiet=args.quiet, plots_on=not args.no_plots)


def _run_latent(args, parser) -> int:
    from tokdyn.latent.tasks import TaskConfig
    from tokdyn.latent.train import TrainConfig

    if not args.train:
        parser.error("latent-reasoning needs --train (it trains, or resumes, every variant)")
    try:
        cfg = TrainConfig(task=TaskConfig(grid_size=args.grid_size, n_colours=args.n_colours), seeds=args.seeds,
                          steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                          width=args.width, depth=args.depth, heads=args.heads, n_latents=args.n_latents,
                          projection=args.projection, align_weight=args.align_weight,
                          curriculum_stages=args.curriculum_stages, steps_per_call=args.steps_per_call,
                          n_train=args.n_train, n_test=args.n_test, root_seed=args.root_seed).validate()
        from tokdyn.studies import latent_reasoning

        latent_reasoning.main(cfg, args.out, variants=args.variants, max_minutes=args.max_minutes, quiet=args.quiet,
                              plots=not args.no_plots)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    return 0


def _sweep_parser(sub) -> None:
    from tokdyn.studies import token_dynamics_sweep as tds

    d = tds.SweepConfig()
    p = sub.add_parser("token-dynamics", help="token dynamics over any grid of rule and data conditions x seeds",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Axis values: a comma list (0.3,0.6), linspace:a:b:n or logspace:a:b:n. "
                                   "A single value fixes that condition.")
    for name, default in tds.DEFAULT_AXES:
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=default, help=f"{name} axis")
    for name in tds.EXTRA_AXES:
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                       help="comma list of registered method names (an axis; temperature etc. override)"
                       if name == "method" else f"{name} axis of the extended rules (default: not an axis)")
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds per condition")
    p.add_argument("--out", default="results/token-dynamics-sweep", help="output directory")
    p.add_argument("--resume", action="store_true", help="continue the sweep already in --out")
    p.add_argument("--chunk-size", type=int, default=None, help="runs per chunk (the unit saved to disk)")
    for name in ("n_tokens", "dim", "points_per_cluster", "n_steps", "root_seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("center_box", "init_scale", "tol"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--centers", default=d.centers, help="centre layout: uniform | normal")
    p.add_argument("--init", default=d.init, help="token init: data | normal | data_mean")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--no-cache", action="store_true", help="disable the persistent compilation cache")
    p.add_argument("--quiet", action="store_true", help="no progress and no summary")


def _plot_parser(sub) -> None:
    p = sub.add_parser("heatmap", help="a metric over two axes of a finished sweep",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dir", help="sweep directory")
    p.add_argument("--x", required=True, help="axis on the horizontal")
    p.add_argument("--y", required=True, help="axis on the vertical")
    p.add_argument("--metric", default="ari", help="output field")
    p.add_argument("--stat", default="mean", choices=("mean", "std"))
    p.add_argument("--where", default="", help="fix other axes: name=value,name=value (else pooled)")


def _where(text: str) -> dict:
    out = {}
    for part in (t.strip() for t in text.split(",") if t.strip()):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--where expects name=value pairs separated by commas, got {part!r}")
    return out


def _run_sweep(args, parser) -> int:
    from tokdyn import sweep
    from tokdyn.studies import token_dynamics_sweep as tds

    try:
        axes = tuple((name, tuple(sweep.parse_axis(name, getattr(args, name)).tolist())) for name, _ in tds.DEFAULT_AXES)
        axes += tuple((name, _names(getattr(args, name)) if name == "method" else
                       tuple(sweep.parse_axis(name, getattr(args, name)).tolist()))
                      for name in tds.EXTRA_AXES if getattr(args, name) is not None)
        fields = ("seeds", "n_tokens", "dim", "points_per_cluster", "centers", "center_box", "init", "init_scale",
                  "n_steps", "tol", "root_seed")
        cfg = tds.SweepConfig(axes=axes, **{f: getattr(args, f) for f in fields}).validate()
        if args.bootstrap < 1:
            raise ValueError(f"--bootstrap must be >= 1, got {args.bootstrap}")
        if args.chunk_size is not None and args.chunk_size < 1:
            raise ValueError(f"--chunk-size must be >= 1, got {args.chunk_size}")
        if not args.resume and os.path.exists(os.path.join(args.out, "manifest.json")):
            raise ValueError(f"--out {args.out} already holds a sweep: pass --resume to continue it, "
                             "or choose another directory")
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    _setup_jax(cache=not args.no_cache)
    try:
        tds.main(cfg, args.out, resume=args.resume, chunk_size=args.chunk_size, quiet=args.quiet,
                 plots=not args.no_plots, cache_dir=None if args.no_cache else _cache_dir(),
                 n_resamples=args.bootstrap)
    except ValueError as e:  # e.g. resuming with different arguments
        parser.error(str(e))
    return 0


def _run_plot(args, parser) -> int:
    from tokdyn import report, summary
    from tokdyn.studies import token_dynamics_sweep as tds

    try:
        where = _where(args.where)
        path = os.path.join(args.dir, "summary.csv")
        if os.path.exists(path):
            cond = report.read_csv(path)
        else:
            cond = summary.condition_stats(args.dir)
            report.write_csv(path, cond)
        if args.metric not in summary._table_fields(cond):
            raise ValueError(f"--metric {args.metric!r} is not an output of this sweep; "
                             f"metrics: {summary._table_fields(cond)}")
        job = tds.heatmap_job(args.dir, cond, args.x, args.y, args.metric, where=where, stat=args.stat)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    print(report.draw(job))
    return 0


def main(argv=None) -> int:
    _host_devices()
    argv = sys.argv[1:] if argv is None else list(argv)
    worker = None
    if argv[:2] == ["study", "token-dynamics"] and "--no-plots" not in argv and not ({"-h", "--help"} & set(argv)):
        from tokdyn.report import PlotWorker  # no JAX: starts matplotlib's import on another core now

        worker = PlotWorker()
    try:
        return _main(argv, worker)
    finally:
        if worker is not None:
            worker.close()


def _main(argv, worker) -> int:
    parser = argparse.ArgumentParser(prog="tokdyn", description="Token dynamics in latent visual reasoning.")
    cmds = parser.add_subparsers(dest="command", required=True)
    study = cmds.add_parser("study", help="run an end-to-end study")
    studies = study.add_subparsers(dest="study", required=True)
    _study_parser(studies)
    _collapse_parser(studies)
    _visual_tokens_parser(studies)
    _latent_parser(studies)
    sweeps = cmds.add_parser("sweep", help="run a sweep over a grid of conditions x seeds (resumable)")
    _sweep_parser(sweeps.add_subparsers(dest="sweep", required=True))
    plot = cmds.add_parser("plot", help="plot a finished sweep")
    _plot_parser(plot.add_subparsers(dest="plot", required=True))
    args = parser.parse_args(argv)

    if args.command == "sweep":
        return _run_sweep(args, parser)
    if args.command == "plot":
        return _run_plot(args, parser)
    if args.command == "study" and args.study == "collapse":
        return _run_collapse(args, parser)
    if args.command == "study" and args.study == "visual-tokens":
        return _run_visual_tokens(args, parser)

    if args.command == "study" and args.study == "latent-reasoning":
        _setup_jax()
        return _run_latent(args, parser)
    if args.command == "study" and args.study == "token-dynamics":
        from tokdyn.studies.token_dynamics import Config

        fields = ("seeds", "noise", "n_clusters", "methods", "n_tokens", "dim", "points_per_cluster", "centers",
                  "center_box", "init", "init_scale", "temperature", "n_steps", "tol", "root_seed")
        cfg = Config(**{f: getattr(args, f) for f in fields})
        try:
            cfg.validate()
        except (ValueError, TypeError) as e:
            parser.error(str(e))
        _setup_jax(cache=not args.no_cache)
        from tokdyn.studies import token_dynamics

        token_dynamics.main(cfg, args.out, quiet=args.quiet, plots=not args.no_plots, chunk_size=args.chunk_size,
                            plot_worker=worker, cache_dir=None if args.no_cache else _cache_dir())
        return 0
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
