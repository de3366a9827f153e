"""The latent-diagnostics study: the seeds' latent-reasoning analyses asked of every trained organism of a
latent-reasoning directory, seed by seed, and the findings of the boundary markers' share (O3) and of mediation
(O4a, O4b) and of confidence-driven latent optimisation (O5) judged over seeds.

``tokdyn study latent-diagnostics --source SRC --out DIR`` (:func:`main`, :class:`Config`) reads a
``tokdyn study latent-reasoning`` directory (its record: the recipes finished, their organisms and the tasks
they were trained on), writes fresh multiple-choice instances of every task family (:func:`write_instances`: a
stream of the organisms' root seed that none of their splits draws) and runs ``vlm-diagnostics`` on each
organism of the chosen recipes (``--latents generated``: the latents each writes itself; the accuracy, the
decomposition of its block, the mediation analyses and DMLR with and without its visual injection) into
``DIR/organisms/RECIPE/seed_S/``, each a study directory of its own that resumes. It then reduces every
organism's tables to a few numbers per task family (:func:`organism_rows`: accuracy, the block's gain, the
markers' share of it, each intervention's flip rate, each image perturbation's shift of the latents, DMLR's
change in accuracy) in ``organisms.csv``, with ``summary.md`` (means and ranges over seeds), ``organisms.png``
and ``config.json``. The analyses are :mod:`tokdyn.diagnostics.vlm`'s, through the vlm-diagnostics
study, found by name (:mod:`tokdyn.experiment.loading`): this study imports no other.

The findings (:mod:`tokdyn.studies.latent_diagnostics.findings`) and the page:
:doc:`/studies/latent-diagnostics`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import jax
import numpy as np

from tokdyn import _checks, extras, io
from tokdyn.experiment import findings as experiment_findings
from tokdyn.diagnostics import vlm
from tokdyn.experiment import analysis, loading, runner
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.findings import judge
from tokdyn.models.organism import tasks as organism_tasks
from tokdyn.models.organism import training as organism
from tokdyn.studies.latent_diagnostics.findings import (  # noqa: F401
    FLIP_CONNECTED,
    FLIP_DISCONNECTED,
    MARKERS_BAND,
    SHIFT_CONNECTED,
    SHIFT_DISCONNECTED,
    STUDY,
    verdicts,
)

SOURCE = "latent-reasoning"  # the study whose directory this one reads
DIAGNOSTICS = "vlm-diagnostics"  # the study run on each organism
ANALYSES = ("accuracy", "decomposition", "mediation", "optimisation", "injection")  # vlm-diagnostics' it reduces
INSTANCE_STREAM = 3  # the organisms' root seed's stream of these instances (their splits draw 0, 1 and 2)
SELECTION = ("preset",)
# The time estimate's calls: seconds of the analyses of one default-sized organism at Config.n_instances' default,
# on the reference CPU (tokdyn.experiment.rates; scaled by this machine's training rate). vlm-diagnostics' own
# estimate, made for checkpoints whose time is their floating-point work, counts about a tenth of it for these
# small models, whose generation loops are dispatch-bound. The default run's three `latent` organisms took 201-246 s
# each on one core of the 2-core VM (the first compiling every program), where the training probe cached then read
# 2.21x the reference (benchmarks/runs/cpu-2026-11-29-latent-diagnostics-default-5e5dd2b/diag/organisms/latent/
# seed_*/config.json): about 470 s at the reference. (Three less-trained organisms took 542-564 s each there on
# 2026-11-28, when the probe read 0.54x: about 300 s. The probe's reading moves with the machine's load more than
# the analyses' time does.)
ORGANISM_SECONDS = 470.0
TABLE = "organisms.csv"
COLUMNS = ("recipe", "seed", "family", "measure", "kind", "level", "value", "n")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study (stamped into its directory, recorded in ``config.json``).

    Attributes:
      source: the latent-reasoning study directory whose organisms are diagnosed.
      recipes: the recipes whose organisms are diagnosed (names of the source's finished recipes); empty: every
        finished recipe of the source whose organisms feed latents back (those the analyses are about).
      n_instances: multiple-choice instances of each task family, drawn fresh for this study.
      batch_size: instances per compiled call of the analyses.
      preset: 'quick' for the quick preset (its summary then says so in its first line), else empty.
    """

    source: str = "results/latent-reasoning"
    recipes: tuple = ()
    n_instances: int = 64
    batch_size: int = 32
    preset: str = ""

    def validate(self) -> "Config":
        """Check every field; a ``ValueError``/``TypeError`` naming it. Returns ``self``."""
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"source must be the path of a latent-reasoning study directory, got {self.source!r}")
        if isinstance(self.recipes, str):
            raise TypeError(f"recipes must be a sequence of recipe names, got {self.recipes!r}")
        for name in self.recipes:
            if not isinstance(name, str):
                raise TypeError(f"recipes must be names of {sorted(organism.VARIANTS)}, got {name!r}")
            if organism.variant(name).block != "feedback":
                raise ValueError(
                    f"recipes: {name!r} feeds no latents back, so its organisms write no latent block for the "
                    f"analyses to act on; choose among {sorted(n for n, v in organism.VARIANTS.items() if v.block == 'feedback')}"
                )
        _checks.distinct("recipes", self.recipes)
        _checks.positive_int("n_instances", self.n_instances)
        _checks.positive_int("batch_size", self.batch_size)
        # the least the arrays hold (an image of 28 x 28 pixels, a sequence of 64 tokens): refused before any work
        study_dir.elements_fit("n_instances", self.n_instances, 28 * 28 * 3 * 2)
        study_dir.elements_fit("batch_size", self.batch_size, 64, 64, 2)
        _checks.choice("preset", self.preset, ("", "quick"))
        return self

    def estimate(self) -> study_dir.Estimate:
        """vlm-diagnostics' estimate for the source's first organism (:func:`diagnostics_config`) for its memory
        and its compiles (once: the organisms share their programs), and :data:`ORGANISM_SECONDS` a diagnosed
        organism for the analyses' calls, in proportion to ``n_instances``; nothing when the source cannot be
        read (the checks refuse it first)."""
        try:
            record = study_dir.read_record(self.source)
            names = recipes(self, record)
            count = sum(organisms().saved(record)[n] for n in names)
            model = organisms().path(self.source, names[0], 0)
            families = len(organisms().training(record).tasks.task.families)
            one = dataclasses.replace(
                diagnostics_config(self, record, model, []), n_instances=self.n_instances * families
            ).estimate()
        except (OSError, ValueError, KeyError, IndexError, TypeError, io.CorruptFile):
            return study_dir.Estimate()  # no source to size it from (yet): the checks name what is missing
        calls = ORGANISM_SECONDS * self.n_instances / Config.n_instances * count  # the class's: the default
        return dataclasses.replace(one, models=count, work={"host": one.work["host"], "training": calls}, seconds=None)

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version: 8 instances a family, in batches of 8 (the source as given)."""
        return cls(n_instances=8, batch_size=8, preset="quick")


# ---------------------------------------------------------------------------------------------- the source


def organisms():
    """The source study's organisms as its readers see them (its ``SPEC.store``, found by name)."""
    return analysis.source_store(SOURCE)


def read_source(cfg: Config) -> dict:
    """The source's record, checked to hold a latent-reasoning study with organisms of the chosen recipes
    (without ``recipes``, of a recipe that feeds latents back), each organism's files as they were saved;
    :class:`~tokdyn.experiment.study.Refused` naming what is missing or changed."""
    record = organisms().open_source(cfg.source, cfg.recipes)
    organisms().verify(cfg.source, recipes(cfg, record))
    return record


def recipes(cfg: Config, record: dict) -> list:
    """The recipes diagnosed: ``cfg.recipes``, else the source's saved recipes that feed latents back."""
    return list(cfg.recipes) or list(organisms().saved(record, latent_only=True))


def write_instances(out: str, record: dict, n: int) -> list:
    """Write ``n`` multiple-choice instances of every family of the source's tasks as
    ``out/instances/FAMILY.jsonl`` (:func:`tokdyn.models.organism.tasks.write_jsonl`, the images beside each),
    drawn from stream :data:`INSTANCE_STREAM` of the organisms' root seed (family ``i`` from its ``i``-th
    key): the same instances for the same source, none of them drawn by its splits' streams. A file already
    written is kept. Returns the files, in the families' order."""
    training = organisms().training(record)
    tcfg = training.tasks
    root = jax.random.fold_in(jax.random.fold_in(jax.random.key(training.root_seed), 0), INSTANCE_STREAM)
    files = []
    for i, family in enumerate(tcfg.task.families):
        path = os.path.join(out, "instances", f"{family}.jsonl")
        if not os.path.exists(path):
            one = dataclasses.replace(tcfg, task=dataclasses.replace(tcfg.task, families=(family,)))
            batch = organism_tasks.generate(jax.random.fold_in(root, i), n, one)
            organism_tasks.write_jsonl(path, organism_tasks.examples(batch, one))
        files.append(path)
    return files


def organism_out(out: str, recipe: str, seed: int) -> str:
    """Where the diagnostics of seed ``seed`` of ``recipe`` are kept: ``out/organisms/RECIPE/seed_SEED``."""
    return os.path.join(out, "organisms", recipe, f"seed_{seed}")


# ---------------------------------------------------------------------------------------------- the reduction


def _column(table: dict, name: str) -> np.ndarray:
    return np.asarray(table[name])


def organism_rows(
    recipe: str,
    seed: int,
    instances: dict,
    accuracy: dict,
    decomposition: dict,
    mediation: dict,
    optimisation: Optional[dict] = None,
    injection: Optional[dict] = None,
) -> list:
    """One organism's vlm-diagnostics tables reduced to rows of :data:`COLUMNS`, per family (its instances'
    ``benchmark``) and over all (``"all"``):

    - ``accuracy``: the share of right answers of the clean run (``setting`` none; a run the token limit cut is
      left out, as the vlm-diagnostics study leaves it);
    - ``block_gain``: the accuracy with the whole block minus with no block (the decomposition's ``full`` and
      ``no_block``); ``markers_share`` (kind ``markers_only``): the markers alone's accuracy above no block, as
      a share of that gain (NaN where the gain is not positive);
    - ``flip`` (kind: the intervention): the share of answers an intervention on the latents changes;
    - ``shift`` (kind: the image perturbation, level its level): the latents' mean cosine distance from the
      clean run's under a perturbed image (over the latent steps and the perturbation's draws);
    - ``dmlr`` (kind ``optimisation``: DMLR's confidence-driven optimisation of the latents; ``injection``: with
      its visual injection): the accuracy after the optimisation minus before (the tables' ``correct_best`` and
      ``correct_before``; without the tables, none).

    ``n``: the instances each value pools."""
    bench = {int(i): str(b) for i, b in zip(_column(instances, "instance"), _column(instances, "benchmark"))}
    families = list(dict.fromkeys(bench.values()))
    rows = []

    def add(family, measure, kind, level, value, n):
        rows.append([recipe, seed, family, measure, kind, level, float(value), int(n)])

    def fam_mask(table, family):
        inst = _column(table, "instance").astype(int)
        return np.ones(inst.shape, bool) if family == "all" else np.asarray([bench.get(i) == family for i in inst])

    for family in [*families, "all"]:
        a = accuracy
        sel = fam_mask(a, family) & (experiment_findings.strings(a, "setting") == "none")
        sel &= experiment_findings.numbers(a, "cut") == 0
        add(family, "accuracy", "", "", _mean(experiment_findings.numbers(a, "correct")[sel]), sel.sum())
        d = decomposition
        dsel = fam_mask(d, family) & (experiment_findings.strings(d, "measure") == "correct")
        setting, correct = experiment_findings.strings(d, "setting"), experiment_findings.numbers(d, "correct")
        settings = ("full", "no_block", "markers_only")
        inst = _column(d, "instance").astype(int)
        # each setting's answers in the instances' order: the (K, B) rows of vlm.gain_kept
        correct_by = np.stack(
            [correct[dsel & (setting == s)][np.argsort(inst[dsel & (setting == s)])] for s in settings]
        )
        n = correct_by.shape[1]
        add(family, "block_gain", "", "", _mean(correct_by[0]) - _mean(correct_by[1]), n)
        share = vlm.gain_kept(correct_by, settings)["markers_only"] if n else float("nan")
        add(family, "markers_share", "markers_only", "", share, n)
        m = mediation
        msel = fam_mask(m, family)
        path, kind = experiment_findings.strings(m, "path"), experiment_findings.strings(m, "kind")
        flipped = experiment_findings.numbers(m, "flipped")
        for k in dict.fromkeys(kind[msel & (path == "latent_answer")].tolist()):
            s = msel & (path == "latent_answer") & (kind == k)
            add(family, "flip", k, "", _mean(flipped[s]), s.sum())
        level, dist = experiment_findings.numbers(m, "level"), experiment_findings.numbers(m, "cosine_distance")
        inp = msel & (path == "input_latent")
        for k, lv in dict.fromkeys(zip(kind[inp].tolist(), level[inp].tolist())):
            s = inp & (kind == k) & (level == lv)
            add(family, "shift", k, f"{lv:g}", _mean(dist[s]), len(set(_column(m, "instance")[s].tolist())))
        for k, o in (("optimisation", optimisation), ("injection", injection)):
            if o is None:
                continue
            change = experiment_findings.numbers(o, "correct_best") - experiment_findings.numbers(o, "correct_before")
            osel = fam_mask(o, family) & np.isfinite(change)
            add(family, "dmlr", k, "", _mean(change[osel]), osel.sum())
    return rows


def _mean(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def read_organism(path: str) -> tuple:
    """The tables of one organism's vlm-diagnostics directory ``path`` that :func:`organism_rows` reduces,
    read verified against its record (``instances.csv`` first)."""
    return tuple(study_dir.read_table(path, f"{name}.csv") for name in ("instances", *ANALYSES))


# ---------------------------------------------------------------------------------------------- the study


def check(session: runner.Session, cfg: Config) -> None:
    """The ``models`` extra's packages, the configuration's checks, and ``out`` apart from the source
    (``--fresh`` would remove it)."""
    extras.require(
        "models", "tokdyn study latent-diagnostics (the organisms' tokenizer, chat template and checkpoints)"
    )
    cfg.validate()
    analysis.check_apart(session.out, cfg.source)


def prepare(session: runner.Session, cfg: Config) -> dict:
    """The source's checks (:func:`read_source`), after the output directory's and before it is opened, and its
    stamp (it enters this study's: another source refuses a resume)."""
    session.context["record"] = read_source(cfg)
    return {"source": study_dir.source_stamp(cfg.source, SOURCE)}


def diagnostics_config(cfg: Config, record: dict, model: str, files: list):
    """The vlm-diagnostics configuration run on the organism ``model`` over the instance ``files``, its images
    at the side the source's organisms were trained on."""
    vcfg = loading.spec(DIAGNOSTICS).config
    return vcfg(
        model=model,
        instances=",".join(files),
        image_size=organisms().training(record).tasks.image_size,
        batch_size=cfg.batch_size,
        analyses=ANALYSES,
        latents="generated",
        preset=cfg.preset,
    )


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """Write the instances, diagnose every organism of the chosen recipes (each resumable) and reduce them."""
    record = session.context.get("record") or read_source(cfg)
    out = session.out
    files = write_instances(out, record, cfg.n_instances)
    names = recipes(cfg, record)
    saved = organisms().saved(record)
    diagnose = loading.main_of(DIAGNOSTICS)
    todo = [(name, s, organisms().path(cfg.source, name, s)) for name in names for s in range(saved[name])]
    rows = []
    with io.Progress(len(todo), desc=STUDY, unit="organisms", quiet=session.quiet) as progress:
        for name, seed, model in todo:
            where = organism_out(out, name, seed)
            progress.note(f"{name} seed {seed}")
            diagnose(diagnostics_config(cfg, record, model, files), where, quiet=True, plots=False)
            rows.extend(organism_rows(name, seed, *read_organism(where)))
            progress.update(1)
    table = {c: [r[i] for r in rows] for i, c in enumerate(COLUMNS)}
    return runner.Result(
        {TABLE: table},
        data=dict(table=table, out=out),
        record=dict(recipes=names, instances=[os.path.relpath(f, out) for f in files]),
        value=True,
    )


def strongest(value, kind, level, sel) -> Optional[tuple]:
    """The ``(kind, level)`` among the rows ``sel`` whose values have the highest mean (NaN means last; None
    without rows): a recipe's strongest intervention or perturbation."""
    labels = list(dict.fromkeys(zip(kind[sel].tolist(), level[sel].tolist())))
    if not labels:
        return None
    means = [_mean(value[sel & (kind == k) & (level == lv)]) for k, lv in labels]
    return labels[int(np.argmax(np.nan_to_num(means, nan=-np.inf)))]


def summary(cfg: Config, r: runner.Result) -> str:
    """Per recipe and family, the means over seeds (and their ranges) of the accuracy, the block's gain, the
    markers' share, the strongest intervention's flip rate and the strongest perturbation's shift; then the
    study's findings (O3, O4a, O4b, O5) judged on its table, each with its verdict and what it rests on
    (``tokdyn reproduce`` reports each with its rule and its table)."""
    t = r.data["table"]
    if not t["recipe"]:
        return "(no organism diagnosed)"
    recipe, family, measure = (np.asarray(t[k], object).astype(str) for k in ("recipe", "family", "measure"))
    kind, value = np.asarray(t["kind"], object).astype(str), np.asarray(t["value"], np.float64)
    level = np.asarray(t["level"], object).astype(str)
    seed = np.asarray(t["seed"], int)
    lines = [
        "| recipe | family | seeds | accuracy | block gain | markers' share | strongest flip | strongest shift | "
        "DMLR change (with injection) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(sel):
        v = value[sel]
        v = v[np.isfinite(v)]
        if not v.size:
            return "–"
        return f"{v.mean():.3f}" + (f" ({v.min():.2f} to {v.max():.2f})" if v.size > 1 else "")  # signed values

    for name in dict.fromkeys(recipe.tolist()):
        for fam in dict.fromkeys(family[recipe == name].tolist()):
            base = (recipe == name) & (family == fam)
            cells = [cell(base & (measure == m)) for m in ("accuracy", "block_gain", "markers_share")]
            for m in ("flip", "shift"):
                sel = base & (measure == m)
                best = strongest(value, kind, level, sel)
                if best is None:
                    cells.append("–")
                    continue
                label = best[0] + (f" {best[1]}" if best[1] else "")
                cells.append(f"{label}: {cell(sel & (kind == best[0]) & (level == best[1]))}")
            cells.append(cell(base & (measure == "dmlr") & (kind == "injection")))
            lines.append(f"| {name} | {fam} | {len(set(seed[base].tolist()))} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Means over seeds (min to max). Block gain: the accuracy with the latent block minus with none; markers' share:"
        " the markers alone's part of that gain (where it is positive); flip: the share of answers an intervention "
        "on the latents changes; shift: the latents' cosine distance from the clean run's under a perturbed image; "
        "DMLR change: the accuracy after the confidence-driven optimisation of the latents (with its visual "
        "injection) minus before.",
    ]
    arrays = {k: np.asarray(v) for k, v in t.items()}
    found = experiment_findings.gate(verdicts(arrays), r.data["out"], arrays, preset=cfg.preset)
    lines += experiment_findings.summary_lines(found)
    return "\n".join(lines)


FIGURE = "organisms.png"
PANELS = (
    ("accuracy", "accuracy"),
    ("block_gain", "block's gain"),
    ("markers_share", "markers' share of it"),
    ("flip", "answers changed (strongest intervention)"),
    ("shift", "latents moved (strongest perturbation)"),
    ("dmlr", "DMLR's change in accuracy (strongest)"),
)


def draw(session: runner.Session, cfg: Config, r: runner.Result) -> list:
    """``organisms.png``: per measure a panel, per recipe each seed's value on every instance (family ``all``;
    flip and shift: the recipe's strongest kind)."""
    from tokdyn.stats import figures

    t = r.data["table"]
    if not t["recipe"]:
        return []
    cols = {k: np.asarray(t[k], object).astype(str) for k in ("recipe", "family", "measure", "kind", "level")}
    value, seed = np.asarray(t["value"], np.float64), np.asarray(t["seed"], int)
    names = list(dict.fromkeys(cols["recipe"].tolist()))
    fig = figures.figure((3.2 * len(PANELS), 3.2))
    for p, (measure, title) in enumerate(PANELS):
        ax = fig.add_subplot(1, len(PANELS), p + 1)
        for x, name in enumerate(names):
            sel = (cols["recipe"] == name) & (cols["family"] == "all") & (cols["measure"] == measure)
            best = strongest(value, cols["kind"], cols["level"], sel)
            if best is not None:
                sel &= (cols["kind"] == best[0]) & (cols["level"] == best[1])
            ax.plot(np.full(sel.sum(), x), value[sel], "o", alpha=0.7)
            for s_, v in zip(seed[sel], value[sel]):
                ax.annotate(str(s_), (x, v), fontsize=6, xytext=(3, 0), textcoords="offset points")
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return [figures.save(fig, session.path(FIGURE))]


SPEC = runner.Spec(
    name=STUDY,
    config=Config,
    run=run,
    check=check,
    prepare=prepare,
    summary=summary,
    figures=draw,
    findings=lambda out: judge(out, TABLE, STUDY, verdicts),
    outputs=(TABLE,),
    figure_files=(FIGURE,),
    selection=SELECTION,
    sources={"source": SOURCE},
)

main = runner.entry(SPEC, __name__, returns="True when it finished.", about="Its source is checked first.")
