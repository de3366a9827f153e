"""The ``tokdyn`` command.

    tokdyn study token-dynamics [--out DIR] [--seeds N] [--dim D] ...

Before JAX is imported, the CLI (1) exposes every CPU core as a host device, unless ``XLA_FLAGS``
already says otherwise, so runs are split over cores with ``shard_map``; and (2) enables JAX's
persistent compilation cache (``$TOKDYN_CACHE_DIR``, default ``~/.cache/tokdyn/jax``), where the
study also keeps its serialized executable, so a second invocation skips tracing and compiling.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)

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
