"""The ``tokdyn`` command, generated from the configuration dataclasses.

    tokdyn study token-dynamics [--seeds N] [--dim D] ... [--out DIR] [--quiet] [--no-plots]
    tokdyn study collapse | visual-tokens | latent-reasoning [...]
    tokdyn sweep token-dynamics --temperature logspace:0.05:20:25 ... --out DIR
    tokdyn plot heatmap DIR --x temperature --y repulsion --metric ari [--where momentum=0.5]
    tokdyn reproduce [--quick] [--studies a,b,...] [--out DIR]
    tokdyn --study-module path/to/study.py:SPEC study NAME [...]   (a study of one's own)

Every subcommand is one entry of :func:`commands` (:data:`COMMANDS` and the studies of one's own:
an installed package's entry points, and the modules given with ``--study-module``); its options are its config's fields
(:func:`add_config_args`, help text from the config's ``Attributes:``), built back into the config
by :func:`config_from_args`. :func:`main` is the entry point: exit code 0 done, 2 an error found
before anything runs, 1 the run failed. Commands that run studies do so under the
``--matmul-precision`` they are given (default ``highest``;
:func:`tokdyn.experiment.study.matmul_precision`).

How the commands are built, the exit codes, and what the command sets before JAX is imported:
:ref:`cli-details`. One concept a module: :mod:`tokdyn.cli.options` (a config's fields as options
and back), :mod:`tokdyn.cli.launching` (the command as one process of several); this module the
parser and the entry point.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys
import traceback

from tokdyn.cli import launching
from tokdyn.cli.options import add_config_args, check_repeats, config_from_args, config_help, field_default
from tokdyn.experiment import registry
from tokdyn.io import metadata

__all__ = [
    "COMMANDS",
    "CONFIG_CLASSES",
    "DEFAULT_COMMANDS",
    "GROUPS",
    "INTERRUPTED",
    "MATMUL_PRECISIONS",
    "STUDY_MODULE",
    "add_config_args",
    "build_parser",
    "cache_dir",
    "check_repeats",
    "commands",
    "config_class",
    "config_from_args",
    "config_help",
    "draws_figures",
    "field_default",
    "main",
    "negative_values",
    "study_modules",
    "with_default_command",
]

COMMANDS = {  # (group, name): (module, entry point, help, default output directory or None)
    **{e.command: (e.module, "main", e.help, e.out) for e in registry.STUDIES},  # the studies, listed once
    ("plot", "heatmap"): (
        "tokdyn.studies.token_dynamics_sweep",
        "heatmap",
        "a metric of a finished sweep over two axes",
        None,
    ),
    ("reproduce", "all"): (
        "tokdyn.reproduce",
        "main",
        "run every study (reusing what is done), then write one report with a verdict per finding",
        "results/reproduce",
    ),
}
GROUPS = {
    "study": "run an end-to-end study",
    "sweep": "run a sweep over a grid of conditions x seeds (resumable)",
    "plot": "plot a finished sweep",
    "reproduce": "run every study, then write one report with a verdict per finding",
}
STUDY_MODULE = "--study-module"  # a study of one's own, for this command (tokdyn.studies.add_study_module)
DEFAULT_COMMANDS = {"reproduce": "all"}  # group -> its command when none is named ('tokdyn reproduce')
CONFIG_CLASSES = {("plot", "heatmap"): "HeatmapConfig"}  # default: the module's Config
MATMUL_PRECISIONS = ("highest", "high", "default")  # tokdyn.experiment.study.MATMUL_PRECISIONS (building
# the parser imports no JAX)


def commands() -> dict:
    """:data:`COMMANDS` with the studies of one's own known to this process after tokdyn's
    (:func:`tokdyn.experiment.registry.plugin_entries`), before ``plot`` and ``reproduce``."""
    own = {e.command: (e.module, "main", e.help, e.out) for e in registry.plugin_entries()}
    if not own:
        return COMMANDS
    studies = {k: v for k, v in COMMANDS.items() if k in {e.command for e in registry.STUDIES}}
    return {**studies, **{k: v for k, v in own.items() if k not in COMMANDS}, **COMMANDS}


def _study_entry(key):
    """The registry's entry of the study whose command is ``key`` (None for another command)."""
    return next((e for e in registry.studies() if e.command == key), None)


def study_modules(argv) -> tuple[list, list]:
    """``(argv without them, targets)`` of the ``--study-module TARGET`` options (or
    ``--study-module=TARGET``) anywhere in ``argv``; ``ValueError`` for one without its value."""
    rest, targets, argv = [], [], list(argv)
    i = 0
    while i < len(argv):
        a = str(argv[i])
        if a == STUDY_MODULE:
            if i + 1 >= len(argv) or str(argv[i + 1]).startswith("-"):
                raise ValueError(f"{STUDY_MODULE} needs a value: path/to/file.py:SPEC or module:SPEC")
            targets.append(str(argv[i + 1]))
            i += 2
            continue
        if a.startswith(STUDY_MODULE + "="):
            targets.append(a.partition("=")[2])
        else:
            rest.append(argv[i])
        i += 1
    return rest, targets


# ---------------------------------------------------------------------------------------------- the command


def _host_devices() -> None:
    """Expose every CPU core the process may run on as a host device (must run before JAX is imported): the
    cores of its affinity mask, not the machine's (a job given 4 of a node's 128 cores splits its work 4 ways,
    not 128)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        n = metadata.usable_cores()
        os.environ["XLA_FLAGS"] = (flags + f" --xla_force_host_platform_device_count={n}").strip()


def cache_dir() -> str:
    """The persistent compilation cache directory: ``$TOKDYN_CACHE_DIR`` or ``~/.cache/tokdyn/jax``."""
    return os.environ.get("TOKDYN_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "tokdyn", "jax"))


def _setup_jax(cache: bool) -> None:
    import jax

    if cache:
        jax.config.update("jax_compilation_cache_dir", cache_dir())
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def config_class(key):
    """``(module, config class)`` of a command ``(group, name)`` (a study of one's own: its spec's
    ``config``)."""
    e = _study_entry(key)
    if e is not None and e.plugin:
        from tokdyn import studies

        return studies.module(e.name), studies.spec(e.name).config
    module = importlib.import_module(commands()[key][0])
    return module, getattr(module, CONFIG_CLASSES.get(key, "Config"))


def _prog(key) -> str:
    """How the command ``key`` is called (a group's default command by the group alone)."""
    return "tokdyn " + (key[0] if DEFAULT_COMMANDS.get(key[0]) == key[1] else " ".join(key))


def with_default_command(argv) -> list:
    """``argv`` with a group's default command (:data:`DEFAULT_COMMANDS`) put in after the group
    when the word after it names none of the group's commands (``reproduce --quick`` ->
    ``reproduce all --quick``)."""
    argv = list(argv)
    words = [i for i, a in enumerate(argv) if not a.startswith("-")]
    if words and argv[words[0]] in DEFAULT_COMMANDS:
        i = words[0]
        group = argv[i]
        if i + 1 >= len(argv) or (group, argv[i + 1]) not in commands():
            argv.insert(i + 1, DEFAULT_COMMANDS[group])
    return argv


def draws_figures(key) -> bool:
    """Whether the command ``key`` draws figures (a study whose spec has ``figures``; ``reproduce``,
    whose studies do): only then does it offer ``--no-plots``."""
    e = _study_entry(key)
    if e is None:
        return True
    from tokdyn import studies

    return studies.spec(e.name).figures is not None


def _command_parser(sub, key, full: bool):
    module_name, entry, help_text, out = commands()[key]
    p = sub.add_parser(key[1], help=help_text, description=help_text, prog=_prog(key))
    if not full:  # only the command asked for is built in full (it imports its module)
        return p
    module, cls = config_class(key)
    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    said = " ".join(help_text.split()).rstrip(".")
    if not doc or " ".join(doc.split()).startswith(said):  # a study of one's own: its help is the docstring's
        p.description = doc or help_text
    else:
        p.description = f"{help_text}{'' if help_text.endswith(('.', '?', '!')) else '.'}\n\n{doc}"
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_args(p, cls)
    if callable(getattr(cls, "quick", None)):  # a preset (a field named quick is an option of its own)
        p.add_argument(
            "--quick",
            action="store_true",
            help="start from the quick preset (a few minutes); options given on top of it still apply",
        )
    if out is not None:
        p.add_argument("--out", default=out, help=f"output directory (default: {out})")
        p.add_argument("--quiet", action="store_true", help="no progress and no summary on the terminal")
        if draws_figures(key):
            p.add_argument("--no-plots", action="store_true", help="skip the figures")
        p.add_argument(
            "--fresh",
            action="store_true",
            help="remove what an earlier run of another configuration "
            "wrote in --out (only files tokdyn wrote there) and start afresh (without it such a directory "
            "is refused)",
        )
        p.add_argument(
            "--matmul-precision",
            choices=MATMUL_PRECISIONS,
            default="highest",
            help="precision of float32 matrix products (jax.default_matmul_precision) the run uses: "
            "'highest' is full float32 everywhere; 'high' and 'default' let an NVIDIA GPU use TF32; the "
            "CPU computes float32 products in full whatever the setting. Recorded in the stamp and "
            "config.json when not the default (default: highest)",
        )
    if launching.takes_part(module, commands()[key][1]):
        launching.add_launch_args(p)
    if key[0] == "reproduce":
        p.add_argument(
            "--verbose",
            action="store_true",
            help="print the full traceback of a study that fails (without it: one line each, the "
            "traceback kept in OUT/<study>-failure.log)",
        )
    p.add_argument("--no-cache", action="store_true", help="do not use JAX's persistent compilation cache")
    return p


def build_parser(argv=()) -> argparse.ArgumentParser:
    """The ``tokdyn`` parser; the subcommand named in ``argv`` (if any) is built in full."""
    argv = with_default_command(argv)
    words = [a for a in argv if not a.startswith("-")][:2]
    table = commands()
    origins = {e.command: e.origin for e in registry.plugin_entries()}
    names = {key: f"tokdyn {key[0]} {key[1]}" for key in table}
    width = max(len(n) for n in names.values())
    epilog = "commands:\n" + "\n".join(
        f"  {names[key]:<{width}} {table[key][2]}"
        + (f" (or '{_prog(key)}')" if _prog(key) != names[key] else "")
        + (f" [{origins[key]}]" if key in origins else "")
        for key in table
    )
    parser = argparse.ArgumentParser(
        prog="tokdyn",
        description="Token dynamics in latent visual reasoning.",
        epilog=epilog + "\n\n'tokdyn GROUP COMMAND --help' lists a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        STUDY_MODULE,
        metavar="PATH.py:SPEC",
        action="append",
        help="a study of one's own (a file or module:SPEC, SPEC its tokdyn.experiment.runner.Spec): "
        "its command 'tokdyn study NAME' and a study 'tokdyn reproduce --studies' can name; may be "
        "given several times, anywhere on the line (installed packages declare theirs as entry points "
        f"of the group '{registry.ENTRY_POINTS}')",
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="{" + ",".join(GROUPS) + "}")
    subs = {}
    for group, text in GROUPS.items():
        g = groups.add_parser(group, help=text, description=text)
        subs[group] = g.add_subparsers(dest="command", required=True)
    for key in table:
        _command_parser(subs[key[0]], key, full=tuple(words) == key)
    return parser


_NEGATIVE = re.compile(r"^-(\d|\.\d)")  # a value such as -1.5 or -1,-0.5 (no option starts with a digit)


def negative_values(argv: list) -> list:
    """``--option -1.5,-1`` as ``--option=-1.5,-1``: argparse takes a value that starts with ``-``
    and is not a single number for an option, and would refuse the list of negative numbers that
    options such as ``--refinement-log-scales`` take."""
    out = []
    for token in argv:
        if (
            out
            and _NEGATIVE.match(str(token))
            and str(out[-1]).startswith("--")
            and "=" not in str(out[-1])
            and str(out[-1]) != "--"
        ):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


INTERRUPTED = "tokdyn: interrupted (finished work is on disk; run the same command to resume)"


def main(argv=None) -> int:
    """Run the command; returns the exit code (0 done, 2 usage error, 1 the run failed, 130
    interrupted: a Ctrl-C at any moment, imports included, ends the command with one line,
    :data:`INTERRUPTED`, never a traceback, and never exit 0, even where a library caught the
    ``KeyboardInterrupt`` on its way: :func:`tokdyn.io.on_interrupt`). Called as the command (no
    ``argv``), an interrupted run ends the process there with status 130, skipping the interpreter's
    teardown (finished work is on disk already)."""
    from tokdyn import io

    io.reset_interrupt()
    previous = None
    try:
        previous = signal.signal(signal.SIGINT, io.on_interrupt)
    except ValueError:  # not the main thread: Python's own handler stays
        pass
    unraisable = sys.unraisablehook
    if previous is not None:  # a Ctrl-C landing in a gc callback: remembered, not printed
        sys.unraisablehook = io.unraisable_hook(unraisable)
    try:
        code = _main(argv)
        if io.interrupted() and code == 0:  # a Ctrl-C caught inside a library: the run was interrupted
            raise KeyboardInterrupt
        return code
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        if argv is None:  # the command itself: end here, as a signal would, without the interpreter's
            # teardown, which can crash (a segmentation fault) while XLA's threads were cut off mid-work
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = unraisable


class _Usage(Exception):
    """A usage error found before any work: exit 2 with its message (and the usage line when
    ``parser`` is given)."""

    def __init__(self, message: str, parser=None):
        super().__init__(message)
        self.parser = parser


def _parse(argv):
    """``(parser, args, key, module, cfg)`` of the command line: studies of one's own added,
    the configuration built and checked, the output path checked; a usage error raises
    :class:`_Usage`, ``--help`` and argparse's own errors ``SystemExit``."""
    try:
        argv, targets = study_modules(sys.argv[1:] if argv is None else argv)
        if targets:
            from tokdyn import studies

            for target in targets:
                studies.add_study_module(target)
        argv = negative_values(with_default_command(argv))
        parser = build_parser(argv)  # a study of one's own that cannot be imported, or whose SPEC is not one
    except ValueError as e:
        raise _Usage(f"tokdyn: error: {e}") from None
    args = parser.parse_args(argv)
    key = (args.group, args.command)
    module, cls = config_class(key)
    try:
        base = cls.quick() if getattr(args, "quick", False) else None
        cfg = config_from_args(cls, args, base)
        args.launch = launching.launch_of(args)
        if commands()[key][3] is not None:
            from tokdyn.experiment import study

            study.check_output(args.out)
    except (ValueError, TypeError) as e:
        raise _Usage(f"{_prog(key)}: error: {e}", parser) from None
    try:  # one process of several without --distributed: one line, no usage (the options are right)
        launching.check_alone(args)
    except ValueError as e:
        raise _Usage(f"{_prog(key)}: error: {e}") from None
    return parser, args, key, module, cfg


def _run_entry(args, key, module, cfg) -> None:
    """Call the command's function: a study's ``main`` under the matmul precision asked for, or
    another command's function (its returned text printed)."""
    from tokdyn.experiment import study

    table = commands()
    study_entry = _study_entry(key)
    if study_entry is not None and study_entry.plugin:
        from tokdyn import studies

        entry = studies.main_of(study_entry.name)
    else:
        entry = getattr(module, table[key][1])
    if table[key][3] is None:
        result = entry(cfg)
        if isinstance(result, str):
            print(result)
        return
    extra = {"fresh": True} if args.fresh else {}
    if getattr(args, "verbose", False):
        extra["verbose"] = True
    with study.matmul_precision(args.matmul_precision):  # every study of the run, reproduce's included
        entry(cfg, args.out, quiet=args.quiet, plots=not getattr(args, "no_plots", False), **extra)


def _condition_refused() -> type:
    """:class:`tokdyn.engine.sweep.ConditionRefused` when the engine is imported (a study ran a
    sweep), else a class nothing raises: the CLI never imports JAX for a usage error."""
    module = sys.modules.get("tokdyn.engine.sweep.running")
    return getattr(module, "ConditionRefused", _NeverRaised)


class _NeverRaised(Exception):
    """Raised by nothing (:func:`_condition_refused` without the engine)."""


def _main(argv) -> int:
    _host_devices()
    try:
        parser, args, key, module, cfg = _parse(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    except _Usage as e:
        if e.parser is not None:
            e.parser.print_usage(sys.stderr)
        print(e, file=sys.stderr)
        return 2
    from tokdyn import extras, io
    from tokdyn.experiment import study

    if args.launch is not None:  # before JAX runs anything; processes that do not meet: one line, no compile
        if not launching.is_child():  # meet the others, then do the work in a child (a C++ abort: one line)
            return launching.run_launched(
                args.launch, args.distributed_timeout, list(sys.argv[1:] if argv is None else argv), _prog(key)
            )
        from tokdyn.engine import launch

        launch.initialize(args.launch, args.distributed_timeout, check=False)
        launching.started()
    _setup_jax(cache=not args.no_cache)
    try:
        _run_entry(args, key, module, cfg)
    except (io.OutputConflict, study.Refused, io.CorruptFile, extras.MissingExtra, _condition_refused()) as e:
        # the output directory belongs to another configuration, a source fails its verification, a
        # package of an extra is missing, or a study of one's own handed the sweep engine a value out of
        # its range: a usage error
        parser.print_usage(sys.stderr)
        print(f"{_prog(key)}: error: {e}", file=sys.stderr)
        return 2
    except io.DiskFull as e:  # one line naming the file: no traceback of a full disk
        print(f"{_prog(key)}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if type(e).__name__ == "StudiesFailed" and not getattr(args, "verbose", False):  # each said in one line
            print(f"{_prog(key)}: {e}", file=sys.stderr)
            return 1
        traceback.print_exc()
        print(f"{_prog(key)}: the run failed (see the traceback above)", file=sys.stderr)
        return 1
    return 0
