"""The latent-reasoning organisms as Qwen2.5-VL: every recipe x seeds trained to convergence on the task
families, per-family accuracy against chance, paired tests against ``direct`` and ``text``, and every trained
organism saved as a Hugging Face checkpoint that transformers opens and ``tokdyn study vlm-diagnostics --model``
runs.

``tokdyn study latent-reasoning --out DIR`` (:func:`main`, :class:`Config`) trains (or resumes) every recipe of
:data:`tokdyn.models.organism.training.VARIANTS` (all seeds of one recipe in one program,
:func:`tokdyn.models.organism.training.train_models`) until its held-out accuracy has stopped improving
(:class:`tokdyn.train.Patience`) or its budget is spent, and writes ``accuracy.csv``, ``convergence.csv``,
``tests.csv``, ``curves/``, ``checkpoints/`` (the training states), ``results/``, ``organisms/RECIPE/seed_S/``
(each seed's tested organism as a checkpoint directory, with ``latent_mode.json`` where its recipe writes
latents), ``summary.md``, ``learning_curves.png`` and ``config.json``. A rerun resumes; ``max_minutes`` stops a
run cleanly. The tables and the stop rule are :mod:`tokdyn.experiment.variants`', the files of a recipe
:mod:`tokdyn.train.store`'s. The page: :doc:`/studies/latent-reasoning`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

import jax
import numpy as np

from tokdyn import _checks, extras, io, train
from tokdyn.experiment import runner, variants
from tokdyn.experiment.findings import gate, judge, summary_lines
from tokdyn.experiment import study as study_dir
from tokdyn.data import grid_tasks
from tokdyn.models.organism import evaluation
from tokdyn.models.organism import tasks as organism_tasks
from tokdyn.models.organism import training as organism
from tokdyn.train import optim, store
from tokdyn.train.store import TESTED
from tokdyn.studies.latent_reasoning.findings import (  # noqa: F401
    ACCURACY_MARGIN,
    READ_LEVEL,
    latents_short,
    reads_image,
    text_helps,
    verdicts,
)

STUDY = "latent-reasoning"
SELECTION = ("variants", "train", "max_minutes", "preset")  # fields that choose what runs or how it is labelled
REFERENCES = ("direct", "text")  # every recipe is tested against these
FAMILIES = ("read", "gravity", "path")  # the control and two that imagination helps
BASELINE_LABELS = {"chance": "chance (each family's most frequent letter)"}
# The time estimate: a `direct` step's training FLOPs at FLOPS, times the recipe's RECIPE_COST, plus STEP_SECONDS a
# step for what does not grow with the model (dispatch, checkpoints) and COMPILE_SECONDS a recipe, on the reference
# CPU (a 2-core x86_64), scaled by this machine's training and host rates (tokdyn.experiment.rates). FLOPS is an
# effective rate (the FLOP count is a rough upper bound), set from the default run's `direct` (3 seeds in turn,
# batches of 96, 4,000 steps in 4,543 s on one core of the 2-core VM while the other trained `text`, evaluations
# included: benchmarks/runs/cpu-2026-11-29-latent-organisms-default-5e5dd2b/) at the training rate the probe
# cached there read (2.21x the reference). RECIPE_COST is each recipe's training step over `direct`'s at the
# default organism (benchmarks/runs/cpu-2026-11-29-organism-recipes-965ead2/: bench_organism_recipes.py, 10 steps,
# medians of 3): a caption or a block of fed-back latents makes the step longer, pads read in one chunk hardly do.
# With these the default run's `text` and `latent` are projected 3% and 9% under their times there (5,940 and
# 5,490 s against 6,123 and about 6,020; `pause` was trained before its block was read in one chunk). COMPILE_SECONDS: a recipe's training program took 39-49 s to
# compile there (its first call less its steady time; 73-92 s at the reference's host rate), its evaluation more.
FLOPS = 1.34e10
STEP_SECONDS = 0.02
COMPILE_SECONDS = 90.0
RECIPE_COST = {
    "direct": 1.00,
    "no_image": 0.91,
    "text": 1.30,
    "latent": 1.20,
    "latent_mirage": 1.19,
    "latent_lvr": 1.24,
    "latent_monet": 1.19,
    "pause": 1.01,
    "coconut": 1.36,
}


def default_training() -> organism.Config:
    """The organisms the study trains by default: a 4 x 4 grid of 4 colours, the :data:`FAMILIES`, the 5 answers
    of each family in their own order (``order="fixed"``: a letter names one value), a decoder of 4 layers x 64
    (with 2, one seed of ``direct`` never learns to read a cell: ``benchmarks/runs/cpu-2026-11-28-latent-organisms-
    L4-889cbeb/``), the vision tower 2 x 32, 4 latents a block, 4,000 steps of 96 instances from a pool of 16,384,
    3 seeds (the fewest from which a finding is decided: :data:`tokdyn.experiment.findings.MIN_SEEDS`).

    The pool is small enough that an organism sees each instance about 23 times, and one seed of ``direct`` in the
    default run learned the pool's answers instead of the image (held-out ``read`` 0.77 at step 1,600, 0.56 at
    4,000: ``benchmarks/runs/cpu-2026-11-29-latent-organisms-default-5e5dd2b/``); but from a pool of 131,072 (3
    draws an instance) no seed of ``direct`` learns to read in the same 4,000 steps (test ``read`` 0.725, 0.480,
    0.754: ``benchmarks/runs/cpu-2026-11-29-latent-organisms-pool131k-a5c51c1/``), so the default keeps the smaller
    pool, where two of three seeds read.

    Batches of 96 hold about 32 instances of each family, as the single-family runs that learned ``read`` had: in
    batches of 32 the three-family organisms stay on a plateau where they answer from the families' priors, even
    with four times the steps (``...-latent-organisms-direct-12k-73eb1dd/``); in batches of 96 ``direct`` reads
    every held-out ``read`` instance from step 2,500 and memorises past 4,000 (``...-direct-b96-73eb1dd/``)."""
    return organism.Config(
        tasks=organism_tasks.Config(
            task=grid_tasks.Config(grid_size=4, n_colours=4, families=FAMILIES), n_options=5, order="fixed"
        ),
        train=optim.Config(steps=4000, steps_per_call=100, warmup=100, decay="cosine", clip_norm=1.0),
        layers=4,
        batch_size=96,
        n_train=16384,
        n_val=256,
        n_test=512,
        seeds=3,
    )


DEFAULT_TRAINING = default_training()


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study (stamped into its directory, recorded in ``config.json``).

    Attributes:
      variants: the recipes to train, in order, names from tokdyn.models.organism.training.VARIANTS.
      train: train (or resume) the recipes; with --no-train only collect and report what is on disk.
      max_minutes: stop cleanly after this many minutes (finished work is kept; rerun to resume); empty: no
        limit.
      patience: a recipe has converged (and stops) when its held-out accuracy has not improved by more than
        min_delta over its best level for this share of its step budget, for every seed.
      min_fraction: no recipe stops before this share of its step budget.
      min_delta: the smallest rise of the held-out accuracy that counts as an improvement.
      loss_delta: a recipe whose training loss still falls by more than this share between the two halves of the
        patience window (while its accuracy holds) goes on; 0: the loss is not consulted.
      tested: which state of each seed answers the test questions and is saved as its organism: 'best' (its
        best held-out accuracy, judged every steps_per_call steps) or 'final' (the last step trained).
      save_organisms: write each seed's tested organism as a Hugging Face checkpoint under organisms/.
      preset: 'quick' for the quick preset (its summary then says so in its first line), else empty.
      training: the organisms' training configuration (tasks, model size, step budget, pools, seeds).
      hparams: the hyper-parameters every recipe is trained with.
    """

    variants: tuple = tuple(organism.VARIANTS)
    train: bool = True
    max_minutes: Optional[float] = None
    patience: float = 0.25
    min_fraction: float = 0.5
    min_delta: float = 0.01
    loss_delta: float = 0.05
    tested: str = "best"
    save_organisms: bool = True
    preset: str = ""
    training: organism.Config = DEFAULT_TRAINING
    hparams: organism.Hparams = organism.Hparams(learning_rate=3e-3)

    def validate(self) -> "Config":
        """Check every field; a ``ValueError``/``TypeError`` naming it. Returns ``self``."""
        if isinstance(self.variants, str) or not self.variants:
            raise ValueError(f"variants must name at least one of {sorted(organism.VARIANTS)}, got {self.variants!r}")
        for name in self.variants:
            if not isinstance(name, str):
                raise TypeError(f"variants must be names of {sorted(organism.VARIANTS)}, got {name!r}")
            organism.variant(name)
        _checks.distinct("variants", self.variants)
        _checks.choice("preset", self.preset, ("", "quick"))
        for f in ("train", "save_organisms"):
            if not isinstance(getattr(self, f), bool):
                raise TypeError(f"{f} must be a bool, got {getattr(self, f)!r}")
        if self.max_minutes is not None:
            _checks.real("max_minutes", self.max_minutes, low=0.0, low_open=True)
        _checks.real("loss_delta", self.loss_delta, low=0.0)
        self.stop_rule()  # checks patience, min_fraction and min_delta
        if not isinstance(self.training, organism.Config):
            raise TypeError(
                f"training must be a tokdyn.models.organism.training.Config, got {type(self.training).__name__}"
            )
        self.training.validate()
        tr = self.training.train
        if any(organism.variant(n).curriculum for n in self.variants) and self.training.curriculum_stages >= tr.calls:
            raise ValueError(
                f"curriculum_stages must be less than the {tr.calls} calls of steps_per_call={tr.steps_per_call} "
                f"steps in the budget of steps={tr.steps} (each stage trains for one call at least), got "
                f"{self.training.curriculum_stages}"
            )
        if not isinstance(self.tested, str):
            raise TypeError(f"tested must be a str, one of {list(TESTED)}, got {self.tested!r}")
        _checks.choice("tested", self.tested, TESTED)
        if not isinstance(self.hparams, organism.Hparams):
            raise TypeError(f"hparams must be a tokdyn.models.organism.training.Hparams, got {self.hparams!r}")
        self.hparams.validate()
        if train.settings(self.hparams) != 1:
            raise ValueError("hparams must hold one setting (scalars) in the study")
        return self

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version: a smaller organism (decoder 2 x 32, vision tower 1 x 16), 200 steps, 2 seeds,
        ``direct``, ``text``, ``latent`` and ``pause``."""
        base = DEFAULT_TRAINING
        return cls(
            variants=("direct", "text", "latent", "pause"),
            preset="quick",
            training=dataclasses.replace(
                base,
                hidden_size=32,
                layers=2,
                heads=2,
                kv_heads=1,
                intermediate_size=48,
                vision_depth=1,
                vision_width=16,
                n_latents=2,
                train=optim.Config(steps=200, steps_per_call=50, warmup=20, decay="cosine", clip_norm=1.0),
                batch_size=16,
                n_train=512,
                n_val=64,
                n_test=128,
                seeds=2,
            ),
        )

    def stop_rule(self) -> train.Patience:
        """The rule that decides when a recipe has converged (see the attributes)."""
        return train.Patience(
            patience=self.patience,
            min_fraction=self.min_fraction,
            min_delta=self.min_delta,
            loss_delta=self.loss_delta or None,
        )

    def estimate(self) -> study_dir.Estimate:
        """What training asks of the machine, from the sizes alone: the pools (prompts and grids), the
        models' training states, one step's activations; the time at :data:`FLOPS`, each recipe's
        :data:`RECIPE_COST`, :data:`STEP_SECONDS` and :data:`COMPILE_SECONDS` (rough: set from the default
        run's ``direct`` and a benchmark of one step per recipe)."""
        tc = self.training
        prompt = tc.tasks.image_tokens + 80  # a prompt's tokens, about
        cells = tc.tasks.task.grid_size**2
        instance = 17 * prompt + 4 * organism.CAPTION_TOKENS + 2 * cells + 24  # a pool's bytes an instance
        tokens = prompt + tc.n_latents + organism.CAPTION_TOKENS  # a sequence, about
        d, layers = tc.hidden_size, tc.layers
        for name, n in (("n_train", tc.n_train), ("n_val", tc.n_val), ("n_test", tc.n_test)):
            study_dir.elements_fit(name, n, 3, prompt)
        study_dir.elements_fit("batch_size", tc.seeds, tc.batch_size, tc.heads, tokens, tokens)
        params = (
            layers * (4 * d * d + 3 * d * tc.intermediate_size) + 512 * d + tc.vision_depth * 12 * tc.vision_width**2
        )
        sizes = {
            "n_train": (tc.n_train + tc.n_val + tc.n_test) * instance,
            "seeds, hidden_size or layers": tc.seeds * params * 4 * 8,
            "batch_size": tc.seeds * tc.batch_size * layers * 4 * (tokens * d * 14 + 2 * tc.heads * tokens**2),
        }
        option = max(sizes, key=sizes.get)
        steps = tc.train.steps * len(self.variants)
        direct = 6.0 * params * tc.batch_size * (prompt + 2) * tc.seeds * tc.train.steps  # prompt, letter, end
        flops = direct * sum(RECIPE_COST[n] for n in self.variants)
        return study_dir.Estimate(
            memory=sizes[option],
            option=option,
            models=len(self.variants) * tc.seeds,
            work={"training": flops / FLOPS, "host": STEP_SECONDS * steps + COMPILE_SECONDS * len(self.variants)},
        )


# ---------------------------------------------------------------------------------------------- training


def stamp(tc: organism.Config, name: str) -> str:
    """What a training checkpoint of recipe ``name`` under ``tc`` is keyed on."""
    return json.dumps({"variant": name, "config": io.jsonable(dataclasses.asdict(tc))}, sort_keys=True)


def organism_dir(out: str, name: str, seed: int) -> str:
    """Where seed ``seed`` of recipe ``name`` is saved as a checkpoint: ``out/organisms/NAME/seed_SEED``."""
    return os.path.join(out, "organisms", name, f"seed_{seed}")


def convergence(cfg: Config, name: str, curve: dict) -> dict:
    """Per seed, from the recorded curve: the best held-out accuracy, its step and whether the stop rule says it
    has converged (:func:`tokdyn.experiment.variants.converged`; a curriculum's patience window in its last
    stage)."""
    tc = cfg.training
    last_stage = sum(n for *_, n in organism.stages(tc, name)[:-1])
    return variants.converged(cfg.stop_rule(), tc.train.steps, tc.seeds, curve, after=last_stage)


def write_tested(cfg: Config, name: str, out: str, res: train.Result, rows: dict, data: organism.Splits) -> None:
    """Test the finished training ``res`` of recipe ``name`` at its tested state on the test set, save each seed
    as a checkpoint (``save_organisms``) and write its curve, answers and result (the result last: it commits
    the others)."""
    tc = cfg.training
    state, _ = variants.tested(res, cfg.tested, tc.seeds)
    answers = organism.answers(tc, name, state.params, data.test)
    acc = evaluation.accuracy(answers, data.test)
    digests = []
    if cfg.save_organisms:
        for s in range(tc.seeds):
            where = organism_dir(out, name, s)
            organism.save(where, tc, name, jax.tree_util.tree_map(lambda x: x[s], state.params))
            digests.append(organism_digests(where))
    conv = convergence(cfg, name, rows)
    variants.write_tested(
        out,
        name,
        res,
        rows,
        conv,
        answers,
        acc,
        which=cfg.tested,
        budget=tc.train.steps,
        extra={"organisms_sha256": digests},
    )


def organism_digests(directory: str) -> dict:
    """``{file: SHA-256}`` of every file of the organism checkpoint ``directory``."""
    return {f: io.file_sha256(os.path.join(directory, f)) for f in sorted(os.listdir(directory))}


def verify_organisms(source: str, recipes) -> None:
    """Check every saved organism of ``recipes`` in the latent-reasoning directory ``source`` against the
    SHA-256 of its files recorded when it was saved (in ``results/RECIPE.json``, whose own checksum commits
    them): :class:`~tokdyn.experiment.study.Refused` naming the organism and the file that is missing, added or
    changed. A directory written before the digests were recorded (no ``organisms_sha256``) is read as it is."""
    for name in recipes:
        path = store.paths(source, name)["result"]
        try:
            recorded = store.read_result(path).get("organisms_sha256")
        except (OSError, io.CorruptFile) as e:
            raise study_dir.Refused(f"source={source!r}: the result of {name!r} cannot be read ({e})") from None
        for seed, files in enumerate(recorded or ()):
            where = organism_dir(source, name, seed)
            have = organism_digests(where) if os.path.isdir(where) else {}
            changed = sorted(f for f in set(files) | set(have) if files.get(f) != have.get(f))
            if changed:
                raise study_dir.Refused(
                    f"source={source!r}: the organism {name!r} seed {seed} ({where}) differs from what was saved "
                    f"(files missing, added or changed: {', '.join(changed)}): restore it, or remove "
                    f"results/{name}.json and the study (`tokdyn study {STUDY} --out {source}`) tests and saves "
                    "it again from its training checkpoint"
                )


def run_variant(cfg: Config, name: str, out: str, data: organism.Splits, *, deadline=None, progress=None) -> bool:
    """Train (or resume) recipe ``name`` until it has converged or spent its budget, then test and save it. A
    host function; True when its results are on disk, False when training stopped before it finished."""
    if store.finished(out, name):
        return True
    p, tc = store.paths(out, name), cfg.training
    rows = store.resume_rows(p, tc.seeds, tc.train.steps_per_call)

    def evaluate(step, state):
        # the weights as host arrays, as the tested state's are: the validation and the test answers are
        # one compiled program (the training's weights carry the runs' sharding, another input type)
        params = jax.device_get(state.params)
        return {f"val_{k}": v for k, v in evaluation.evaluate(tc, name, params, data.val).items()}

    stop = variants.curve_logger(
        p["curve"], rows, tc.seeds, tc.train.steps_per_call, lambda r: convergence(cfg, name, r)
    )
    res = organism.train_models(
        tc,
        name,
        cfg.hparams,
        execution=execution(),
        checkpointing=train.Checkpointing(p["checkpoint"], stamp(tc, name)),
        evaluation=train.Evaluation(evaluate, keep_best="val_all", stop=stop),
        deadline=deadline,
        progress=progress,
    )
    if not res.finished:
        return False
    write_tested(cfg, name, out, res, rows, data)
    return True


def execution() -> train.Execution:
    """How the seeds share the one program: on a CPU each device trains its seeds in turn inside it
    (``batch_size=1``), elsewhere vmapped as many at once as fit. On the CPU a vmap over the organisms' seeds buys
    nothing: at 3 seeds of the default organism it trained at 0.77x (``latent``) and 0.92x (``direct``) the
    rate of the same program with the seeds in turn (``benchmarks/runs/cpu-2026-11-28-organisms-seq-a69b9ae/``)."""
    return train.Execution(batch_size=1 if jax.default_backend() == "cpu" else "auto")


def splits(cfg: Config) -> organism.Splits:
    """The training pool, validation and test sets (:func:`tokdyn.models.organism.training.splits`)."""
    return organism.splits(cfg.training)


# ---------------------------------------------------------------------------------------------- its readers


def open_source(source: str, recipes=(), *, latent_only: bool = True) -> dict:
    """The record (the verified ``config.json``) of the latent-reasoning directory ``source`` for a study that
    reads its organisms: :class:`~tokdyn.experiment.study.Refused` naming what is missing when it holds no
    finished study of this one, or when one of ``recipes`` has no saved organisms (without ``recipes``: when no
    saved recipe feeds latents back, with ``latent_only``)."""
    try:
        record = study_dir.read_record(source)
    except FileNotFoundError:
        raise study_dir.Refused(
            f"source={source!r} holds no finished study (no config.json): run `tokdyn study {STUDY} --out "
            f"{source}` first"
        ) from None
    except (io.CorruptFile, ValueError) as e:
        raise study_dir.Refused(f"source={source!r}: {e}") from None
    if record.get("study") != STUDY:
        raise study_dir.Refused(f"source={source!r} holds the study {record.get('study')!r}, not {STUDY!r}")
    saved = record.get("organisms") or {}
    for name in recipes:
        if name not in saved:
            raise study_dir.Refused(
                f"recipes: {name!r} has no saved organisms in source={source!r} (finished with organisms: "
                f"{sorted(saved) or 'none'})"
            )
    if not recipes and latent_only and not saved_recipes(record, latent_only=True):
        raise study_dir.Refused(
            f"source={source!r} holds no finished recipe that feeds latents back (finished with organisms: "
            f"{sorted(saved) or 'none'}): name the recipes"
        )
    return record


def saved_recipes(record: dict, *, latent_only: bool = False) -> dict:
    """``{recipe: seeds}`` of the organisms the record says were saved (with ``latent_only``, the recipes that
    feed latents back, ``block="feedback"``)."""
    saved = record.get("organisms") or {}
    return {
        n: len(dirs)
        for n, dirs in saved.items()
        if not latent_only or (n in organism.VARIANTS and organism.VARIANTS[n].block == "feedback")
    }


def recorded_training(record: dict) -> organism.Config:
    """The organisms' training configuration as the record holds it: its tasks (the grid, the families, the
    options) and its root seed; the rest at its defaults."""
    raw = record["config"]["training"]
    tasks = dict(raw["tasks"])
    task = dict(tasks.pop("task"))
    task["families"] = tuple(task["families"])
    return organism.Config(
        tasks=organism_tasks.Config(task=grid_tasks.Config(**task), **tasks), root_seed=int(raw["root_seed"])
    )


@dataclasses.dataclass(frozen=True)
class Organisms:
    """The trained organisms of a latent-reasoning directory as the studies that read it see them: the study's
    ``SPEC.store`` (:data:`STORE`), reached by name (:func:`tokdyn.experiment.analysis.source_store`), so that no
    study imports another.

    Attributes:
      open_source: :func:`open_source`.
      verify: :func:`verify_organisms`.
      saved: :func:`saved_recipes`.
      training: :func:`recorded_training`.
      path: :func:`organism_dir` (where each seed is saved, under the directory as it lies now).
    """

    open_source: object = open_source
    verify: object = verify_organisms
    saved: object = saved_recipes
    training: object = recorded_training
    path: object = organism_dir


STORE = Organisms()


# ---------------------------------------------------------------------------------------------- the study


def check(session: runner.Session, cfg: Config) -> None:
    """The ``models`` extra's packages, the configuration's checks, and (``--no-train``) that ``out`` holds a
    study to report on."""
    extras.require("models", "tokdyn study latent-reasoning (the organisms' tokenizer, chat template and checkpoints)")
    cfg.validate()
    out = session.out
    if not cfg.train and (session.fresh or not os.path.isdir(out) or study_dir.read_stamp(out) is None):
        raise study_dir.Refused(
            f"out={out!r} holds no latent-reasoning study{' (and --fresh would empty it)' if session.fresh else ''}: "
            "nothing to report without training (drop --no-train)"
        )


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """Train (or resume) every recipe, then the tables of those finished; the value is whether every recipe is
    finished."""
    out = session.out
    deadline = None if cfg.max_minutes is None else time.time() + 60 * cfg.max_minutes
    data = splits(cfg)
    families = cfg.training.tasks.task.families
    base = {"chance": evaluation.majority_baseline(data.train, data.test)}
    names = list(cfg.variants)
    if cfg.train:
        budget = cfg.training.train.steps
        done_steps = sum(store.steps_recorded(out, n, budget) for n in names)
        with io.Progress(
            budget * len(names), desc=STUDY, unit="steps", done=done_steps, quiet=session.quiet
        ) as progress:
            for name in names:
                progress.note(f"recipe {name}")
                if not run_variant(cfg, name, out, data, deadline=deadline, progress=progress):
                    break
    finished = [n for n in names if store.finished(out, n)]
    done = len(finished) == len(names)
    acc, conv = variants.collect(out, finished, base)
    tests = variants.paired_tests(
        out, finished, data.test.letter, data.test.family, families, REFERENCES, organism_tasks.FAMILIES
    )
    saved = {n: [organism_dir(out, n, s) for s in range(cfg.training.seeds)] for n in finished}
    return runner.Result(
        {"accuracy.csv": acc, "convergence.csv": conv, "tests.csv": tests},
        data=dict(acc=acc, conv=conv, families=families, out=out, done=done),
        record=dict(
            variants=finished,
            selection={k: getattr(cfg, k) for k in SELECTION},
            organisms=saved if cfg.save_organisms else {},
            finished=done,
        ),
        value=done,
    )


def summary(cfg: Config, r: runner.Result) -> str:
    """The accuracy table (mean and range over seeds per recipe and family) with the chance level below, then the
    study's findings (O1, O2a, O2b) judged on it, each with its verdict and what it rests on (``tokdyn reproduce``
    reports each with its rule and its table)."""
    if not len(r.data["acc"]["variant"]):
        return "(no recipe has finished yet)"
    text = variants.summary_table(r.data["acc"], r.data["conv"], r.data["families"], BASELINE_LABELS)
    acc = {k: np.asarray(v) for k, v in r.data["acc"].items()}
    found = gate(verdicts(acc), r.data["out"], acc, preset=cfg.preset)
    return text + "\n" + "\n".join(summary_lines(found))


SPEC = runner.Spec(
    name=STUDY,
    config=Config,
    run=run,
    check=check,
    figures=lambda session, cfg, r: [variants.plot_curves(session.out, cfg.variants, r.data["families"])],
    summary=summary,
    findings=lambda out: judge(out, "accuracy.csv", STUDY, verdicts),
    printed=lambda cfg, r, text: (
        text + ("" if r.data["done"] else f"\nnot finished: run the same command again to resume ({r.data['out']})")
    ),
    outputs=("accuracy.csv", "convergence.csv", "tests.csv"),
    figure_files=("learning_curves.png",),
    selection=SELECTION,
    store=STORE,
)


main = runner.entry(SPEC, __name__, returns="True when every recipe is finished.")
