"""The studies, listed once: the command line (:mod:`tokdyn.cli`), ``tokdyn reproduce``
(:mod:`tokdyn.reproduce`), the docs' study index and the tests all read :data:`STUDIES`.

Each :class:`Entry` names a study's module by its import path, so reading the registry imports
neither JAX nor any study (the command line sets XLA's flags before JAX loads; and this layer never
imports a study). The module holds the study as a value, its ``SPEC``
(:class:`tokdyn.experiment.runner.Spec`: what it writes, its findings, ...), which
:func:`tokdyn.studies.spec` loads by name. The order of :data:`STUDIES` is the order ``tokdyn
reproduce`` runs them in and ``tokdyn --help`` lists them.
"""

from __future__ import annotations

import dataclasses


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
    """

    name: str
    command: tuple
    module: str
    help: str
    out: str


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
        "train the tiny latent reasoner every way, evaluate per task family",
        "results/latent-reasoning",
    ),
    Entry(
        "latent-diagnostics",
        ("study", "latent-diagnostics"),
        "tokdyn.studies.latent_diagnostics",
        "causal mediation, latent-block decomposition, collapse and probes of the trained reasoners",
        "results/latent-diagnostics",
    ),
    Entry(
        "latent-optimisation",
        ("study", "latent-optimisation"),
        "tokdyn.studies.latent_optimisation",
        "confidence-driven latent optimisation (DMLR) and visual grounding of the trained reasoners",
        "results/latent-optimisation",
    ),
    Entry(
        "video",
        ("study", "video"),
        "tokdyn.studies.video",
        "sprite videos: carried tokens' identity through occlusion and their collapse over time, per predictor",
        "results/video",
    ),
)

NAMES = tuple(e.name for e in STUDIES)


def entry(name: str) -> Entry:
    """The :class:`Entry` of the study ``name`` (ValueError naming the studies for another name)."""
    for e in STUDIES:
        if e.name == name:
            return e
    raise ValueError(f"unknown study {name!r}; choose from {', '.join(NAMES)}")
