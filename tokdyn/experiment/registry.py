"""The studies, listed once: the command line (:mod:`tokdyn.cli`), ``tokdyn reproduce``
(:mod:`tokdyn.reproduce`), the docs' study index and the tests all read :data:`STUDIES`.

Each :class:`Entry` names a study's module by its import path, so reading the registry imports
neither JAX nor any study (the command line sets XLA's flags before JAX loads; and this layer never
imports a study). The module holds the study as a value, its ``SPEC``
(:class:`tokdyn.experiment.runner.Spec`: what it writes, its findings, ...), which
:func:`tokdyn.studies.spec` loads by name. The order of :data:`STUDIES` is the order ``tokdyn
reproduce`` runs them in and ``tokdyn --help`` lists them.

Studies of one's own join them without editing tokdyn (:doc:`/studies/writing-a-study`): a
package declares its studies as entry points of the group :data:`ENTRY_POINTS` (``tokdyn.studies``;
the entry point's name is the study's name, its value ``module:SPEC``), found by
:func:`plugin_entries` from the installed packages' metadata alone (nothing is imported to list
them), and a module given to the command (``tokdyn --study-module path.py:SPEC``) is added with
:func:`add` once :func:`tokdyn.studies.add_study_module` has loaded it. :func:`studies`,
:func:`names` and :func:`entry` read every study, the package's first.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.metadata
import importlib.util
import re
import sys
import warnings


@dataclasses.dataclass(frozen=True)
class Entry:
    """One study.

    Attributes:
      name: the study's name: ``tokdyn reproduce``'s ``--studies`` value and its directory there.
      command: ``(group, name)`` of its command (``tokdyn study scenes`` is ``("study", "scenes")``).
      module: the import path of its module, whose ``SPEC`` is the study as a value and whose
        ``main(cfg, out, ...)`` runs it (the command calls it).
      help: one line for ``tokdyn --help``.
      out: the default ``--out`` directory.
      spec: the attribute of the module that holds the study's ``SPEC`` (a study of one's own may
        name another).
      origin: where the study comes from: ``"tokdyn"`` (listed here), ``"entry point of DIST"`` (an
        installed package's, :data:`ENTRY_POINTS`) or ``"--study-module TARGET"`` (:func:`add`).
      reads: the studies whose output (directory) this one reads, by name: each is listed before
        it, its spec's ``sources`` name only these, ``tokdyn reproduce`` runs them first
        (:func:`in_order`) and points the sources at their directories, and the study reaches
        their configuration and trained models through their specs
        (:mod:`tokdyn.experiment.analysis`), never by importing them.
      by_default: whether ``tokdyn reproduce`` runs it when ``--studies`` is not given. A study
        sized for an accelerator (a learned model's sweep whose defaults would take hours on two
        CPU cores) is False: it runs when named, and its command is there as for any study.
    """

    name: str
    command: tuple
    module: str
    help: str
    out: str
    spec: str = "SPEC"
    origin: str = "tokdyn"
    reads: tuple = ()
    by_default: bool = True

    @property
    def plugin(self) -> bool:
        """True for a study that is not the package's own (an entry point's or a module added)."""
        return self.origin != "tokdyn"


STUDIES = (
    Entry(
        "token-dynamics",
        ("study", "token-dynamics"),
        "tokdyn.studies.token_dynamics",
        "four update rules on Gaussian clusters (the published study)",
        "results/token-dynamics",
    ),
    Entry(
        "token-dynamics-sweep",
        ("sweep", "token-dynamics"),
        "tokdyn.studies.token_dynamics_sweep",
        "token dynamics over any grid of rule and data conditions x seeds (resumable)",
        "results/token-dynamics-sweep",
    ),
    Entry(
        "vtae-sweep",
        ("sweep", "vtae"),
        "tokdyn.studies.learned_sweep.vtae",
        "visual-token autoencoders over any grid of their traced knobs x seeds (resumable, paired by seed)",
        "results/vtae-sweep",
    ),
    Entry(
        "slots-sweep",
        ("sweep", "slots"),
        "tokdyn.studies.learned_sweep.slots",
        "Slot Attention autoencoders on sprite scenes over their learning rate x seeds (resumable, paired by seed)",
        "results/slots-sweep",
        by_default=False,
    ),
    Entry(
        "iodine-sweep",
        ("sweep", "iodine"),
        "tokdyn.studies.learned_sweep.iodine",
        "IODINE on sprite scenes over its learning rate x seeds (resumable, paired by seed)",
        "results/iodine-sweep",
        by_default=False,
    ),
    Entry(
        "savi-sweep",
        ("sweep", "savi"),
        "tokdyn.studies.learned_sweep.savi",
        "SAVi on sprite videos over its learning rate x seeds (resumable, paired by seed)",
        "results/savi-sweep",
        by_default=False,
    ),
    Entry(
        "grid-diffusion-sweep",
        ("sweep", "grid-diffusion"),
        "tokdyn.studies.learned_sweep.grid_diffusion",
        "the grid-diffusion study's models over their learning rate and loss weight x seeds (resumable, paired by seed)",
        "results/grid-diffusion-sweep",
        by_default=False,
    ),
    Entry(
        "collapse",
        ("study", "collapse"),
        "tokdyn.studies.collapse",
        "collapse threshold, Jacobian spectra and phase diagrams vs the theory",
        "results/collapse",
    ),
    Entry(
        "scenes",
        ("study", "scenes"),
        "tokdyn.studies.object_discovery",
        "sprite scenes: fixed token dynamics and k-means on pixel features vs a learned Slot Attention (FG-ARI, "
        "mIoU, collapse)",
        "results/scenes",
    ),
    Entry(
        "visual-tokens",
        ("study", "visual-tokens"),
        "tokdyn.studies.visual_tokens",
        "text tokens <-> colour grids: reconstruction and collapse",
        "results/visual-tokens",
    ),
    Entry(
        "grid-diffusion",
        ("study", "grid-diffusion"),
        "tokdyn.studies.grid_diffusion",
        "diffusion over visual-token grids (DDPM, D3PM) vs token-level diffusion and an autoregressive baseline",
        "results/grid-diffusion",
    ),
    Entry(
        "latent-reasoning",
        ("study", "latent-reasoning"),
        "tokdyn.studies.latent_reasoning",
        "train the Qwen2.5-VL organisms every way, evaluate per task family, save each as a checkpoint",
        "results/latent-reasoning",
        by_default=False,
    ),
    Entry(
        "latent-diagnostics",
        ("study", "latent-diagnostics"),
        "tokdyn.studies.latent_diagnostics",
        "the latent analyses (decomposition, mediation, DMLR) of every trained organism of a latent-reasoning directory, "
        "judged over seeds",
        "results/latent-diagnostics",
        reads=("latent-reasoning",),
        by_default=False,
    ),
    Entry(
        "vlm-diagnostics",
        ("study", "vlm-diagnostics"),
        "tokdyn.studies.vlm_diagnostics",
        "grounding, perception-token dynamics, decomposition, mediation and DMLR on a local Qwen2.5-VL checkpoint "
        "(--model DIR; without it a tiny random model)",
        "results/vlm-diagnostics",
        by_default=False,
    ),
    Entry(
        "video",
        ("study", "video"),
        "tokdyn.studies.video",
        "sprite videos: carried tokens' identity through occlusion and their collapse over time, per predictor",
        "results/video",
    ),
)

NAMES = tuple(e.name for e in STUDIES)  # the package's own studies
DEFAULT = tuple(e.name for e in STUDIES if e.by_default)  # those tokdyn reproduce runs unless told
ENTRY_POINTS = "tokdyn.studies"  # the entry-point group of studies of one's own
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a study's name: a command word and a directory name
_ADDED: dict = {}  # name -> Entry of the modules added in this process (add)


def check_name(name, what: str) -> str:
    """``name`` when it can name a study of one's own: a command word and a directory name
    (letters, digits, ``_``, ``.``, ``-``; not starting with ``-``) that no study of the package
    has; ``ValueError`` naming ``what`` otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{what}: a study's name must be letters, digits, '_', '.' or '-' (not starting with "
            f"'-' or '.'), got {name!r}"
        )
    if name in NAMES:
        raise ValueError(f"{what}: {name!r} is the name of one of tokdyn's studies: choose another")
    return name


def _first_line(module: str) -> str | None:
    """The first paragraph of the docstring of ``module``, read from its file without running it
    (finding a module inside a package imports that package's ``__init__``; None when it cannot be
    found)."""
    try:
        found = importlib.util.find_spec(module)
        with open(found.origin, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read()))
    except Exception:  # noqa: BLE001 (a help line only: a study that cannot be read says so when run)
        return None
    return " ".join((doc or "").strip().split("\n\n")[0].split()) or None


@functools.lru_cache(maxsize=None)
def entry_point_entries() -> tuple:
    """The studies the installed packages declare as entry points of :data:`ENTRY_POINTS`
    (``[project.entry-points."tokdyn.studies"]`` of a ``pyproject.toml``: ``NAME = "module:SPEC"``),
    ordered by name, read from the packages' metadata (the help line from the module's docstring,
    read without running it). An entry point whose name is taken (by one of tokdyn's studies or an
    earlier entry point) or is not a study's name is left out with a warning, so that one broken
    package cannot take the command away. Read once per process."""
    found, seen = [], {}
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINTS), key=lambda e: (e.name, e.value)):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an unnamed package"
        module, _, attr = ep.value.partition(":")
        module, attr = module.strip(), attr.strip() or "SPEC"
        if seen.get(ep.name) == ep.value:  # the same package found twice on the path
            continue
        try:
            check_name(ep.name, f"entry point {ep.name!r} of {dist}")
            if ep.name in seen:
                raise ValueError(f"entry point {ep.name!r} of {dist}: another package declares a study of that name")
            if not module or not attr.isidentifier():
                raise ValueError(f"entry point {ep.name!r} of {dist}: its value must be module:SPEC, got {ep.value!r}")
        except ValueError as e:
            warnings.warn(f"{e}; it is left out", RuntimeWarning, stacklevel=2)
            continue
        seen[ep.name] = ep.value
        found.append(
            Entry(
                ep.name,
                ("study", ep.name),
                module,
                _first_line(module) or f"a study of {dist}",
                f"results/{ep.name}",
                spec=attr,
                origin=f"entry point of {dist}",
            )
        )
    return tuple(found)


def add(e: Entry) -> Entry:
    """Add the study ``e`` (a module given to the command, :func:`tokdyn.studies.add_study_module`)
    for this process; the same entry again is a no-op. A study an installed package declares
    under the same name (an entry point) gives way to it, with a note on stderr: the module given
    explicitly is the one meant. ``ValueError`` when another module given is named so."""
    check_name(e.name, e.origin)
    other = _ADDED.get(e.name)
    if other is not None and other != e:
        raise ValueError(f"{e.origin}: the study {e.name!r} is there already ({other.origin}): choose another name")
    installed = next((o for o in entry_point_entries() if o.name == e.name), None)
    if installed is not None and other is None:
        print(
            f"tokdyn: note: the study {e.name!r} is also installed ({installed.origin}); {e.origin} is used "
            "for this command",
            file=sys.stderr,
        )
    _ADDED[e.name] = e
    return e


def plugin_entries() -> tuple:
    """The studies of one's own known to this process: the installed packages' entry points
    (:func:`entry_point_entries`; one of the name of a module added is that module's), then the
    modules added (:func:`add`)."""
    points = tuple(e for e in entry_point_entries() if e.name not in _ADDED)
    return (*points, *_ADDED.values())


def studies() -> tuple:
    """Every study: tokdyn's own (:data:`STUDIES`), then the studies of one's own
    (:func:`plugin_entries`)."""
    return (*STUDIES, *plugin_entries())


def names() -> tuple:
    """The names of :func:`studies`."""
    return tuple(e.name for e in studies())


def in_order(selected) -> tuple:
    """The studies ``selected`` (names) in an order that runs every study after those of them it
    reads (``reads`` of :class:`Entry`), otherwise in the order given: what ``tokdyn reproduce`` runs."""
    selected = list(dict.fromkeys(selected))
    reads = {n: [r for r in entry(n).reads if r in selected] for n in selected}
    done, order = set(), []

    def visit(name, path=()):
        if name in done:
            return
        if name in path:
            raise ValueError(f"the studies {' -> '.join((*path, name))} read each other's output in a circle")
        for r in reads[name]:
            visit(r, (*path, name))
        done.add(name)
        order.append(name)

    for name in selected:
        visit(name)
    return tuple(order)


def entry(name: str) -> Entry:
    """The :class:`Entry` of the study ``name`` (ValueError naming the studies for another name)."""
    for e in studies():
        if e.name == name:
            return e
    raise ValueError(f"unknown study {name!r}; choose from {', '.join(names())}")
