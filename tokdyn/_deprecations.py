"""Every deprecated name of the package, in one dated table with the version that removes it.

A deprecated name keeps working until its removal version and warns (``DeprecationWarning``) with
its entry's :func:`notice` after what it says is replaced by what. The mechanisms that warn read
this table: the module :mod:`tokdyn.fused` (on import), the module ``__getattr__`` of :mod:`tokdyn.models`
(the Qwen2.5-VL modules that moved into the family's package and the diagnostics), that of
``tokdyn.models.latent`` (the package of the Flax reasoner, removed with it but for this name: its tasks, now
:mod:`tokdyn.data.grid_tasks`) and the flat keywords of
:func:`tokdyn.train.train_many` (:func:`tokdyn.train.options.from_legacy`). A test checks that every
entry names what replaces it and that no entry has outlived its removal version.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Deprecation:
    """One deprecated name: ``what`` it is, what ``replacement`` to use, the version (``since``) and
    ``date`` (ISO) it was deprecated in, and the version that removes it (``removal``)."""

    what: str
    replacement: str
    since: str
    date: str
    removal: str


TABLE = {
    "tokdyn.fused": Deprecation(
        what="the module tokdyn.fused",
        replacement="tokdyn.dynamics.pallas (the built-in rule's 'pallas' backend)",
        since="0.1.0",
        date="2026-11-26",
        removal="0.2.0",
    ),
    "tokdyn.models.qwen2_5_vl_apply": Deprecation(
        what="the module tokdyn.models.qwen2_5_vl_apply",
        replacement="tokdyn.models.qwen2_5_vl.adapter (the family's apply adapter, in the family's package)",
        since="0.1.0",
        date="2026-11-27",
        removal="0.2.0",
    ),
    "tokdyn.models.qwen2_5_vl_probes": Deprecation(
        what="the module tokdyn.models.qwen2_5_vl_probes",
        replacement="tokdyn.models.qwen2_5_vl.probes (in the family's package)",
        since="0.1.0",
        date="2026-11-27",
        removal="0.2.0",
    ),
    "tokdyn.models.qwen2_5_vl_analyses": Deprecation(
        what="the module tokdyn.models.qwen2_5_vl_analyses",
        replacement="tokdyn.diagnostics.vlm (the analyses sit in the diagnostics' layer, above the models)",
        since="0.1.0",
        date="2026-11-27",
        removal="0.2.0",
    ),
    "tokdyn.models.qwen2_5_vl generation names": Deprecation(
        what="tokdyn.models.qwen2_5_vl's chat, decoding, generation and latent modules and its Chat, Generation, "
        "GenerationConfig, Intervention and LatentMode",
        replacement="tokdyn.models.vlm (the layer every family shares: tokdyn.models.vlm.chat, .decoding, "
        ".generation, .latent, .interventions)",
        since="0.1.0",
        date="2026-11-28",
        removal="0.2.0",
    ),
    "tokdyn.models.latent.tasks": Deprecation(
        what="the module tokdyn.models.latent.tasks",
        replacement="tokdyn.data.grid_tasks (the grid tasks of the Qwen2.5-VL organisms, in the synthetic data's "
        "package)",
        since="0.1.0",
        date="2026-11-29",
        removal="0.2.0",
    ),
    "train_many flat keywords": Deprecation(
        what="train_many's flat keywords (checkpoint, stamp, evaluate, evaluate_every, keep_best, best_mode, "
        "stop, strategy, devices, batch_size, vectorised_init)",
        replacement="the option values train.Checkpointing, train.Evaluation and train.Execution",
        since="0.1.0",
        date="2026-11-26",
        removal="0.2.0",
    ),
}
"""The deprecations, by the name their warnings look them up by."""


def notice(name: str) -> str:
    """The dated part of a deprecation warning for the :data:`TABLE` entry ``name``:
    ``" (deprecated in tokdyn 0.1.0, 2026-11-26; removed in 0.2.0)"``."""
    d = TABLE[name]
    return f" (deprecated in tokdyn {d.since}, {d.date}; removed in {d.removal})"
