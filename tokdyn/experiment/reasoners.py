"""The store of trained latent reasoners: the latent-reasoning study's configuration, and a study
directory as the place where its variants are trained to convergence and read back.

A directory (``tokdyn study latent-reasoning --out DIR``, or one :func:`ensure_trained` fills) is a
study directory of :mod:`tokdyn.experiment.study`, stamped with the whole configuration but the
fields of :data:`SELECTION`, holding per variant V ``checkpoints/V.npz``, ``curves/V.csv``,
``results/V.json`` and ``results/V.npz``. A variant is finished when all four are whole and agree
(:func:`finished`); a damaged one of its own files is set aside and recomputed.

:func:`open_study` opens (and stamps) a directory, :func:`train_variants` trains (or resumes)
variants there and :func:`record` writes its ``config.json``; :func:`open_source` /
:func:`ensure_trained` check a directory an analysis reads (its *source*) against the
configuration it expects and train what it lacks; :func:`load_variant` and :func:`load_midway`
read a trained variant back. A source is read strictly (:func:`verify_source`): a file that fails
its verification is refused naming it, never retrained. The tables and figures of the study are
in :mod:`tokdyn.studies.latent_reasoning`; each file and how a damaged one is recomputed:
:doc:`/studies/latent-reasoning`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from tokdyn import _checks, io, train
from tokdyn.experiment import study as study_dir
from tokdyn.models.latent import evaluation, tasks
from tokdyn.models.latent import model as latent_model
from tokdyn.models.latent import training as T
from tokdyn.models.latent.variants import VARIANTS, stages, variant
from tokdyn.models.latent import variants as V
from tokdyn.train import optim

STUDY = "latent-reasoning"  # the name a latent-reasoning directory is stamped with
SELECTION = ("variants", "train", "max_minutes", "preset")  # fields that choose what runs or how it is labelled
REFERENCES = ("direct", "text")  # every variant is tested against these
FAMILIES = ("read", "gravity", "path")  # the default families: the control and two that imagination helps
MAX_ROOT_SEED = 2**32 - 1  # jax.random.key keeps the low 32 bits of a larger seed: two seeds would alias
TESTED = ("best", "final")  # which state of a trained variant answers its test (Config.tested)
# The time estimate said up front: the model's training FLOPs at FLOPS, plus STEP_SECONDS per step for
# what does not grow with the model (dispatch, evaluation, checkpoints, compiles), on the reference CPU;
# the first scaled by the machine's measured training rate, the second by its host rate
# (tokdyn.experiment.rates). Fitted to default and --quick runs on the reference CPU, a 2-core x86_64
# (about 35 and 3 min; --quick took as long on an H200, compiles setting its time); the FLOP count is a
# rough upper bound, so FLOPS is an effective rate, not the machine's.
FLOPS = 9e10
STEP_SECONDS = 0.03


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study (stamped into its directory, recorded in ``config.json``).

    Attributes:
      variants: training variants to run, in order, names from tokdyn.models.latent.variants.VARIANTS.
      train: train (or resume) the variants; with --no-train only collect and report what is on disk.
      max_minutes: stop cleanly after this many minutes (finished work is kept; rerun to resume);
        empty: no limit.
      devices: local devices the seeds are split over (0: all of them, at most one per seed). How
        the seeds are split changes the last bits of every result.
      patience: a variant has converged (and stops) when its held-out accuracy has not improved by
        more than min_delta over its best level for this share of its step budget, for every seed
        (tokdyn.train.Patience: a plateau shorter than this never stops a run).
      min_fraction: no variant stops before this share of its step budget.
      min_delta: the smallest rise of the held-out accuracy that counts as an improvement.
      loss_delta: a variant whose training loss still falls by more than this share between the
        two halves of the patience window (while its accuracy holds) goes on; 0: the loss is not
        consulted.
      reference_steps: the step budget of the reference variants (direct, text), against which
        every variant is tested; 0: the same budget as every other variant (steps).
      tested: which state of each seed answers the test questions and is read back by the studies
        that analyse the variants: 'best' (its best held-out accuracy, judged after every
        steps_per_call steps) or 'final' (the last step trained).
      preset: 'quick' for the quick preset (its summary then says so in its first line), else empty.
      training: the static training configuration (tasks, model size, step budget, pools, seeds).
      hparams: the hyper-parameters every variant is trained with.
    """

    variants: tuple = tuple(VARIANTS)
    train: bool = True
    max_minutes: Optional[float] = None
    devices: int = 1
    patience: float = 0.25
    min_fraction: float = 0.5
    min_delta: float = 0.01
    loss_delta: float = 0.05
    reference_steps: int = 5000
    tested: str = "best"
    preset: str = ""
    training: T.Config = T.Config(task=tasks.Config(grid_size=4, n_colours=4, families=FAMILIES), n_latents=2)
    hparams: T.Hparams = T.Hparams()

    def validate(self) -> "Config":
        """Check every field (the variants, the stop rule, the training configuration, whose root seed
        must fit in 32 bits, and the hyper-parameters, one setting); raise ``ValueError``/``TypeError``
        naming the field. Returns ``self``."""
        if isinstance(self.variants, str) or not self.variants:
            raise ValueError(f"variants must name at least one of {sorted(VARIANTS)}, got {self.variants!r}")
        for name in self.variants:
            variant(name)
        _checks.distinct("variants", self.variants)  # each variant once: a repeat would train it twice
        _checks.choice("preset", self.preset, ("", "quick"))
        if not isinstance(self.train, bool):
            raise TypeError(f"train must be a bool, got {self.train!r}")
        if self.max_minutes is not None:
            _checks.real("max_minutes", self.max_minutes, low=0.0, low_open=True)
        _checks.positive_int("devices", self.devices, minimum=0)
        _checks.real("loss_delta", self.loss_delta, low=0.0)
        self.stop_rule()  # checks patience, min_fraction and min_delta
        self.training.validate()
        tr = self.training.train
        if any(variant(n).curriculum for n in self.variants) and self.training.curriculum_stages >= tr.calls:
            raise ValueError(
                f"curriculum_stages must be less than the {tr.calls} calls of steps_per_call="
                f"{tr.steps_per_call} steps in the budget of steps={tr.steps} (each "
                f"of its stages, and the first, trains for one call at least), got "
                f"{self.training.curriculum_stages}"
            )
        if self.training.root_seed > MAX_ROOT_SEED:
            raise ValueError(
                f"root_seed must be at most {MAX_ROOT_SEED} (a PRNG key keeps 32 bits of it: a larger "
                f"seed would repeat a smaller one's draws), got {self.training.root_seed}"
            )
        _checks.positive_int("reference_steps", self.reference_steps, minimum=0)
        if not isinstance(self.tested, str):
            raise TypeError(f"tested must be a str, one of {list(TESTED)}, got {self.tested!r}")
        _checks.choice("tested", self.tested, TESTED)
        if self.reference_steps % tr.steps_per_call:
            raise ValueError(
                f"reference_steps must be a multiple of steps_per_call={tr.steps_per_call}, got {self.reference_steps}"
            )
        self.hparams.validate()
        if train.settings(self.hparams) != 1:
            raise ValueError("hparams must hold one setting (scalars) in the study")
        if self.training.n_val < 1:
            raise ValueError("training.n_val must be >= 1: convergence is judged on the validation set")
        return self

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version: a small model, a 600-step budget, 2 seeds."""
        return cls(
            reference_steps=0,
            preset="quick",
            training=T.Config(
                task=tasks.Config(grid_size=4, n_colours=4, families=FAMILIES),
                width=32,
                depth=2,
                heads=2,
                n_latents=2,
                batch_size=32,
                train=optim.Config(steps=600, steps_per_call=50, warmup=50),
                n_train=5000,
                n_val=250,
                n_test=500,
                seeds=2,
            ),
            hparams=T.Hparams(learning_rate=3e-3),
        )

    def stop_rule(self) -> train.Patience:
        """The rule that decides when a variant has converged (see the attributes)."""
        return train.Patience(
            patience=self.patience,
            min_fraction=self.min_fraction,
            min_delta=self.min_delta,
            loss_delta=self.loss_delta or None,
        )

    def estimate(self) -> study_dir.Estimate:
        """What training asks of the machine, from the sizes alone (nothing is built): the largest
        of the training pool (``n_train``), the held-out sets (``n_test``, ``n_val``), the models'
        training states (``seeds``, ``width``), one step's activations (``batch_size``) and the
        recorded curves (``steps``), with the option that sets it; every variant x seed a model; the
        time at :data:`FLOPS` and :data:`STEP_SECONDS` on the reference CPU, scaled by this machine's
        ``training`` and ``host`` rates. :class:`~tokdyn.experiment.study.Refused`, naming the option, for an
        array too large for XLA's 32-bit indexing (the process would abort)."""
        tc, task = self.training, self.training.task
        length = max(V.model_config(tc, n).layout.length for n in self.variants)  # T, the longest sequence
        vocab, d, g2 = task.vocab.size, tc.width, task.n_patches
        per_instance = 2 * g2 + tasks.QUESTION_LEN + task.caption_len + 2  # int32 entries of one instance
        budget = max(tc.train.steps, self.reference_steps)
        study_dir.elements_fit("width", 4 * d, d)  # one model's largest leaf, then every seed's
        study_dir.elements_fit("depth", tc.depth, 4 * d, d)
        study_dir.elements_fit(
            "n_latents", length, d
        )  # the sequence (its length grows with n_latents) and its attention
        study_dir.elements_fit("n_latents", tc.heads, length, length)
        study_dir.elements_fit("seeds", tc.seeds, max(vocab, length, 4 * d) * d)
        study_dir.elements_fit("seeds", tc.seeds, tc.depth, 4 * d, d)
        study_dir.elements_fit("n_train", tc.n_train, per_instance)
        study_dir.elements_fit("n_test", tc.n_test, per_instance)
        study_dir.elements_fit("n_val", tc.n_val, per_instance)
        study_dir.elements_fit("batch_size", tc.seeds, tc.batch_size, tc.heads, length, length)
        study_dir.elements_fit("batch_size", tc.seeds, tc.batch_size, length, 4 * d)
        study_dir.elements_fit(
            "reference_steps" if self.reference_steps > tc.train.steps else "steps",
            tc.seeds,
            budget // tc.train.steps_per_call,
        )
        params = tc.depth * 12 * d * d + (vocab + length + g2) * d + d * vocab  # blocks, embeddings, head
        sizes = {
            "n_train": tc.n_train * (per_instance * 4 + 120),  # the pool and its fingerprints on the host
            "n_test": (tc.n_test + tc.n_val) * (per_instance * 4 + 120) * 2,
            "seeds, width or depth": tc.seeds * params * 4 * 8,  # params, Adam's moments, gradients, host copies
            "batch_size": tc.seeds * tc.batch_size * tc.depth * 4 * (length * d * 14 + 2 * tc.heads * length**2),
            "reference_steps" if self.reference_steps > tc.train.steps else "steps": tc.seeds
            * (budget // tc.train.steps_per_call)
            * 4
            * 32,  # the curves, ~32 columns
        }
        option = max(sizes, key=sizes.get)
        steps = sum(training(self, n).train.steps for n in self.variants)
        flops = 6.0 * params * tc.batch_size * length * tc.seeds * steps
        return study_dir.Estimate(
            memory=sizes[option],
            option=option,
            models=len(self.variants) * tc.seeds,
            work={"training": flops / FLOPS, "host": STEP_SECONDS * steps},
        )


# ---------------------------------------------------------------------------------------------- one variant


def paths(out: str, name: str) -> dict:
    """The files of variant ``name`` in the study directory ``out``: ``result``, ``answers``,
    ``checkpoint``, ``curve``."""
    return {
        "result": os.path.join(out, "results", f"{name}.json"),
        "answers": os.path.join(out, "results", f"{name}.npz"),
        "checkpoint": os.path.join(out, "checkpoints", f"{name}.npz"),
        "curve": os.path.join(out, "curves", f"{name}.csv"),
    }


def read_curve(path: str) -> dict:
    """The learning curve at ``path`` (columns; empty when there is none yet)."""
    return io.read_csv(path) if os.path.exists(path) else {}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(io.jsonable(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def answers_digest(answers) -> str:
    """The SHA-256 of an answers array (its shape, dtype and bytes), as ``results/V.json`` records it."""
    a = np.ascontiguousarray(answers)
    return hashlib.sha256(f"{a.shape}{a.dtype.str}".encode() + a.tobytes()).hexdigest()


def write_result(path: str, record: dict) -> str:
    """``record`` as plain JSON at ``path`` (atomically), with ``sha256``: the SHA-256 of the rest,
    which :func:`read_result` checks."""
    record = io.jsonable({k: v for k, v in record.items() if k != "sha256"})
    return io.write_json(path, {**record, "sha256": _digest(record)})


def read_result(path: str) -> dict:
    """The record :func:`write_result` wrote at ``path``; :class:`tokdyn.io.CorruptFile` naming the
    file when it is not whole JSON or its content differs from its checksum."""
    try:
        record = io.read_json(path)
    except ValueError as e:
        raise io.CorruptFile(path, f"not whole JSON: {e}") from None
    if not isinstance(record, dict) or "sha256" not in record:
        raise io.CorruptFile(path, "no sha256: not a result this version wrote")
    sha = record.pop("sha256")
    if _digest(record) != sha:
        raise io.CorruptFile(path, "its content differs from the SHA-256 recorded when it was written")
    return record


def read_answers(out: str, name: str) -> np.ndarray:
    """(seeds, n_test) the test answers of the finished variant ``name`` in ``out``, verified
    (:class:`tokdyn.io.CorruptFile` naming the file when damaged)."""
    return io.load_npz(paths(out, name)["answers"])["answers"]


def _checkpoint(path: str) -> Optional[dict]:
    """The arrays of the checkpoint at ``path`` (verified), None when there is none; a damaged one
    is set aside (a warning naming it) and None returned: its training starts again."""
    if not os.path.exists(path):
        return None
    try:
        return io.load_npz(path)
    except io.CorruptFile as e:
        io.set_aside(path, e.reason)
        return None


def finished(cfg: Config, out: str, name: str) -> bool:
    """Whether variant ``name`` is finished in ``out``: its result, answers, final checkpoint and
    curve all whole and in agreement. What cannot be read back is set aside (a warning naming it)
    and the run recomputes it (:func:`run_variant`): the result and answers from the final
    checkpoint, the checkpoint by training again; a damaged curve is restored at once from its
    copy in the answers file."""
    p = paths(out, name)
    if not os.path.exists(p["result"]) and not os.path.exists(p["answers"]):
        return False
    kept = None
    if os.path.exists(p["answers"]):
        try:
            kept = io.load_npz(p["answers"])
            missing = [k for k in ("answers", "curve_csv", "steps") if k not in kept]
            if missing:
                raise io.CorruptFile(p["answers"], f"it lacks {missing}")
        except io.CorruptFile as e:
            io.set_aside(p["answers"], e.reason)
            kept = None
    ck = _checkpoint(p["checkpoint"])
    final = ck is not None and kept is not None and int(ck.get("meta_step", -1)) == int(kept["steps"])
    if final:
        _restore_curve(p, kept["curve_csv"].tobytes(), name)
    if not os.path.exists(p["result"]):
        return False
    try:
        res = read_result(p["result"])
    except io.CorruptFile as e:
        io.set_aside(p["result"], e.reason)
        return False
    if kept is None:
        return False
    if answers_digest(kept["answers"]) != res.get("answers_sha256") or int(res["steps"]) != int(kept["steps"]):
        io.set_aside(p["answers"], f"its answers are not those {p['result']} records")
        return False
    return final


def _restore_curve(p: dict, curve: bytes, name: str) -> None:
    """Write the finished curve ``curve`` of variant ``name`` back when its file differs (a warning
    naming it; the damaged file set aside)."""
    try:
        with open(p["curve"], "rb") as f:
            if f.read() == curve:
                return
    except FileNotFoundError:
        pass
    else:
        warnings.warn(
            f"{p['curve']} is not the curve the finished variant {name} recorded (truncated or altered): "
            f"set aside and restored from {p['answers']}",
            RuntimeWarning,
            stacklevel=3,
        )
        io.set_aside(p["curve"], warn=False)
    os.makedirs(os.path.dirname(p["curve"]), exist_ok=True)
    with io.atomic_write(p["curve"], "wb") as f:
        f.write(curve)


def _curve_problem(rows: dict, ck: dict, tc: T.Config, steps: int) -> Optional[str]:
    """What is wrong with the curve rows of a checkpoint at ``steps`` (None: they are complete and
    their training logs are the checkpoint's)."""
    if not rows or "step" not in rows or "seed" not in rows:
        return "no rows"
    upto = np.asarray(rows["step"], float) <= steps
    per = tc.train.steps_per_call
    want = [(k, s) for k in range(per, steps + 1, per) for s in range(tc.seeds)]
    have = [(int(a), int(b)) for a, b in zip(np.asarray(rows["step"])[upto], np.asarray(rows["seed"])[upto])]
    if have != want:
        return f"{len(have)} rows up to step {steps} where {len(want)} were written"
    prefix = io.LEAF_PREFIX + "['curves']"
    for key in ck:
        col = key[len(prefix) + 2 : -2] if key.startswith(prefix) else None
        if col is None or col not in rows:
            continue
        ours = np.asarray(rows[col], float)[upto].astype(np.float32)
        theirs = np.asarray(ck[key])[[s for _, s in want], [k // per - 1 for k, _ in want]]
        recorded = np.isfinite(theirs)  # a column the checkpoint records only at some calls is NaN at the others
        if not np.array_equal(ours[recorded], theirs[recorded]):
            return f"its column {col!r} differs from the checkpoint's"
    return None


def _resume_rows(p: dict, tc: T.Config) -> dict:
    """The curve rows a resumed training continues from: those of the steps its checkpoint has
    done (none without a checkpoint). A checkpoint that cannot be read, or whose rows are damaged
    or missing, is set aside with them (a warning naming both): the variant trains from the start."""
    ck = _checkpoint(p["checkpoint"])
    steps = 0 if ck is None else int(ck.get("meta_step", 0))
    if steps <= 0:
        return {}
    if not any(k.startswith(io.LEAF_PREFIX + "['best']") for k in ck):
        io.set_aside(p["checkpoint"], "it keeps no best state (written by an earlier tokdyn)")
        return {}
    try:
        with open(p["curve"], "rb") as f:
            whole = f.read().endswith(b"\n")
        rows = read_curve(p["curve"]) if whole else {}
        problem = None if whole else "its last line is cut"
    except FileNotFoundError:
        rows, problem = {}, "it is missing"
    except (ValueError, IndexError) as e:
        rows, problem = {}, f"it cannot be read ({e})"
    problem = problem or _curve_problem(rows, ck, tc, steps)
    if problem is not None:
        moved = [io.set_aside(f, problem, warn=False) for f in (p["curve"], p["checkpoint"]) if os.path.exists(f)]
        warnings.warn(
            f"{p['curve']} does not hold the learning curve of {p['checkpoint']} ({problem}): both are set "
            f"aside ({', '.join(moved)}) and the variant is trained from the start",
            RuntimeWarning,
            stacklevel=3,
        )
        return {}
    upto = np.asarray(rows["step"], float) <= steps
    return {k: [int(x) if k in ("step", "seed") else float(x) for x in np.asarray(v)[upto]] for k, v in rows.items()}


def _steps_recorded(cfg: Config, out: str, name: str) -> int:
    """Steps of ``name`` already done, as far as the files on disk tell (for the progress bar)."""
    if os.path.exists(paths(out, name)["result"]):
        return training(cfg, name).train.steps
    try:
        c = read_curve(paths(out, name)["curve"])
        return int(np.max(c["step"])) if len(c.get("step", [])) else 0
    except (ValueError, IndexError, KeyError):
        return 0


def _devices(cfg: Config):
    devices = jax.local_devices()
    if cfg.devices > len(devices):
        raise study_dir.Refused(f"devices must be at most the {len(devices)} local devices, got {cfg.devices}")
    return devices[: cfg.devices] if cfg.devices else None


def check_devices(cfg: Config) -> None:
    """:class:`~tokdyn.experiment.study.Refused` when ``cfg.devices`` asks for more devices than
    this machine has."""
    _devices(cfg)


def training(cfg: Config, name: str) -> T.Config:
    """The training configuration of variant ``name``: ``cfg.training``, with the budget
    ``reference_steps`` for the :data:`REFERENCES` (when it is not 0)."""
    if name in REFERENCES and cfg.reference_steps:
        budget = dataclasses.replace(cfg.training.train, steps=cfg.reference_steps)
        return dataclasses.replace(cfg.training, train=budget)
    return cfg.training


def convergence(cfg: Config, name: str, curve: dict) -> dict:
    """Per seed, from the recorded curve: the step and value of the best held-out overall accuracy
    (``best_step``, ``best``) and whether the stop rule (:meth:`Config.stop_rule`, a
    :class:`tokdyn.train.Patience`) says it has converged: no improvement by more than
    ``min_delta`` for ``patience`` of the budget (seen at two evaluations at least), at least
    ``min_fraction`` of the budget done, the training loss flat while the accuracy
    holds. For a curriculum variant the patience window must lie in its last stage."""
    tc = training(cfg, name)
    rule = cfg.stop_rule()
    wait, _ = rule.windows(tc.train.steps)
    last_stage = sum(n for *_, n in stages(tc, name)[:-1])
    seeds = np.asarray(curve.get("seed", []), int)
    out = {
        "best_step": np.full(tc.seeds, -1),
        "best": np.full(tc.seeds, np.nan),
        "converged": np.zeros(tc.seeds, bool),
        "steps": 0,
    }
    for s in range(tc.seeds):
        sel = seeds == s
        steps, val = np.asarray(curve["step"], np.int64)[sel], np.asarray(curve["val_all"], np.float64)[sel]
        if steps.size == 0:
            continue
        loss = np.asarray(curve["loss"], np.float64)[sel] if "loss" in curve else None
        d = rule.decide(steps, val, tc.train.steps, loss)
        now = int(steps[-1])
        out["steps"] = now
        out["best_step"][s], out["best"][s] = int(d.best_step), float(d.best)
        after = int(np.sum(steps > int(d.improved_step)))  # evaluations since the last improvement
        out["converged"][s] = bool(d.stop and after >= 2 and now - wait >= last_stage)
    return out


def run_variant(cfg: Config, name: str, out: str, data: tasks.Splits, *, deadline=None, progress=None) -> bool:
    """Train (or resume) variant ``name`` until it has converged or spent its budget, then test
    it. A host function: writes the variant's curve, answers, checkpoint and result under ``out``
    (damaged files are set aside and recomputed, see :func:`finished`).

    Args:
      cfg: the study's :class:`Config`.
      name: the variant's name.
      out: the study directory.
      data: the training, validation and test sets (:func:`splits`).
      deadline: optional ``time.time()`` at which training stops (finished work is kept).
      progress: optional :class:`tokdyn.io.Progress` to advance by the steps trained.

    Returns:
      True when the variant's results are on disk; False when training stopped before it finished.
    """
    p = paths(out, name)
    if finished(cfg, out, name):
        return True
    tc = training(cfg, name)
    rows = _resume_rows(p, tc)

    def evaluate(step, state):
        return {f"val_{k}": v for k, v in evaluation.evaluate(tc, name, state.params, data.val).items()}

    def stop(step, state, curves) -> bool:
        logs = {k: v[:, step // tc.train.steps_per_call - 1] for k, v in curves.items()}  # this call's logs and scores
        keep = [i for i, s in enumerate(rows.get("step", [])) if s < step]  # drop rows a resume redoes
        for k in rows:
            rows[k] = [rows[k][i] for i in keep]
        for s in range(tc.seeds):
            cols = [("step", step), ("seed", s)]
            cols += [(k, float(v[s])) for k, v in sorted(logs.items()) if not k.startswith("val_")]
            cols += [(k, float(v[s])) for k, v in logs.items() if k.startswith("val_")]
            for k, v in cols:
                rows.setdefault(k, []).append(v)
        io.write_csv(p["curve"], rows)
        return bool(np.all(convergence(cfg, name, rows)["converged"]))

    res = train.train_many(
        T.trainer(tc, name),
        data.train,
        *T.models(tc, cfg.hparams),
        checkpointing=train.Checkpointing(p["checkpoint"], T.stamp(tc, name)),
        evaluation=train.Evaluation(evaluate, keep_best="val_all", stop=stop),
        execution=train.Execution(devices=_devices(cfg)),
        deadline=deadline,
        progress=progress,
    )
    if not res.finished:
        return False
    state = res.state
    tested = res.best_state if cfg.tested == "best" else state
    tested_step = res.best_step if cfg.tested == "best" else np.full(tc.seeds, int(np.asarray(state.step)[0]))
    answers, captions = evaluation.answers(tc, name, tested.params, data.test)
    acc = evaluation.accuracy(tc, name, answers, captions, data.test)
    conv = convergence(cfg, name, rows)
    io.write_csv(p["curve"], rows)  # the rows of exactly the steps trained (a resume may have dropped some)
    with open(p["curve"], "rb") as f:
        curve = np.frombuffer(f.read(), np.uint8)
    io.save_npz(p["answers"], answers=answers, curve_csv=curve, steps=conv["steps"])  # the result, written
    # last, commits both
    write_result(
        p["result"],
        {
            "variant": name,
            "steps": conv["steps"],
            "budget": tc.train.steps,
            "accuracy": acc,
            "best_step": conv["best_step"],
            "best_val": conv["best"],
            "tested": cfg.tested,
            "tested_step": tested_step,
            "converged": conv["converged"],
            "nan_step": np.asarray(state.nan_step),
            "skipped_steps": np.asarray(state.skipped),
            "answers_sha256": answers_digest(answers),
        },
    )
    return True


# ---------------------------------------------------------------------------------------------- a study directory


def open_study(cfg: Config, out: str, *, fresh: bool = False, quiet: bool = False) -> study_dir.Study:
    """The latent-reasoning study directory ``out`` for ``cfg``, checked and stamped
    (:meth:`tokdyn.experiment.study.Study.open`).

    Args:
      cfg: the study's :class:`Config`.
      out: the study directory.
      fresh: remove what another configuration wrote in ``out`` (only files tokdyn wrote) and
        start afresh, instead of refusing the directory.
      quiet: no messages.

    Returns:
      The opened :class:`tokdyn.experiment.study.Study`.

    Raises:
      tokdyn.io.OutputConflict: a directory of another configuration without ``fresh`` (naming the
        fields that differ).
    """
    return study_dir.Study.open(out, STUDY, cfg, fresh=fresh, selection=SELECTION, estimate=cfg.estimate(), quiet=quiet)


def splits(cfg: Config) -> tasks.Splits:
    """The training pool, validation and test sets of the study (:func:`tokdyn.models.latent.training.data`);
    :class:`~tokdyn.experiment.study.Refused` when the task has fewer distinct instances than the sets ask for."""
    try:
        return T.data(cfg.training)
    except ValueError as e:
        raise study_dir.Refused(str(e)) from None


def train_variants(
    cfg: Config, out: str, names: Sequence[str], *, quiet: bool, deadline=None, data: Optional[tasks.Splits] = None
) -> bool:
    """Train (or resume) variants, in order, each until it has converged or spent its budget
    (:func:`run_variant`), with one progress bar over their steps. A host function.

    Args:
      cfg: the study's :class:`Config`.
      out: the study directory, opened for ``cfg`` with :func:`open_study`.
      names: the variants' names.
      quiet: no progress bar.
      deadline: optional ``time.time()`` at which training stops (finished work is kept).
      data: the training, validation and test sets (:func:`splits`; drawn when not given).

    Returns:
      True when every variant is finished (it stops at the first that is not).
    """
    names = list(names)
    data = splits(cfg) if data is None else data
    done = True
    budgets = {name: training(cfg, name).train.steps for name in names}
    recorded = sum(_steps_recorded(cfg, out, name) for name in names)
    with io.Progress(
        sum(budgets.values()), desc="latent-reasoning", unit="steps", done=recorded, quiet=quiet
    ) as progress:
        for name in names:
            progress.note(f"variant {name}")
            done = run_variant(cfg, name, out, data, deadline=deadline, progress=progress) and done
            if not done:
                break
    return done


def record_fields(out: str, cfg: Config) -> dict:
    """What ``config.json`` of the study directory ``out`` records beside the stamp: the variants
    finished there (whoever trained them) and this run's selection."""
    names = [v for v in VARIANTS if os.path.exists(paths(out, v)["result"])]
    return {"variants": names, "selection": {k: getattr(cfg, k) for k in SELECTION}}


def record(study: study_dir.Study, cfg: Config, **extra) -> str:
    """``config.json`` of the study directory: the stamp, :func:`record_fields` and ``extra``."""
    return study.finish(**record_fields(study.out, cfg), **extra)


# ---------------------------------------------------------------------------------------------- analyses of a source

SOURCE_PRESETS = ("default", "quick")  # an analysis's preset: the configuration its source has (Analysis.preset)
SOURCE_SELECTION = ("source", "train")  # an analysis's fields that only choose where and whether (its selection)
# an analysis's own runner.Spec fields: the directory it reads (its source field) and what its quick preset is
SOURCE_SPEC = {"sources": {"source": STUDY}, "preset": "the latent-reasoning study's quick models"}


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The fields of a study that analyses the trained reasoners of a latent-reasoning directory, its
    *source*: the analyses' ``Config`` classes derive from it (these fields come first), so that
    each field is declared, documented (the command line's help) and checked once.

    Attributes:
      source: the latent-reasoning study directory holding (or to hold) the trained variants.
      preset: that study's configuration, "default" or "quick" (its --quick); "quick" (set by
        --quick) also opens summary.md with a line saying the run is smoke-sized.
      train: train the variants the source lacks (otherwise a missing variant is an error).
    """

    source: str = "results/latent-reasoning"
    preset: str = "default"
    train: bool = True

    def validate(self) -> "Analysis":
        """Check the fields above (``source`` a non-empty path, ``preset`` one of
        :data:`SOURCE_PRESETS`, ``train`` a bool); raise ``ValueError``/``TypeError`` naming the
        field. An analysis's own ``validate`` calls it first. Returns ``self``."""
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"source must be the path of a latent-reasoning study directory, got {self.source!r}")
        _checks.choice("preset", self.preset, SOURCE_PRESETS)
        if not isinstance(self.train, bool):
            raise TypeError(f"train must be a bool, got {self.train!r}")
        return self

    def reasoning(self) -> Config:
        """The latent-reasoning study whose trained models the analysis reads: :meth:`Config.quick`
        for the preset ``"quick"``, else :class:`Config`."""
        return Config.quick() if self.preset == "quick" else Config()


def forward_elements(cfg: Config, names: Sequence[str]) -> int:
    """Elements of one instance's forward pass through the longest of the variants ``names`` (of
    the latent-reasoning configuration ``cfg``): ``T * (V + (depth + 1) * width + depth * heads *
    T)``, the logits, the hidden states of every layer and the attention weights, for ``T`` the
    longest sequence and ``V`` the vocabulary: what an analysis's memory estimate counts per
    instance and seed."""
    tc = cfg.training
    length = max(V.model_config(training(cfg, n), n).layout.length for n in names)
    return length * (tc.task.vocab.size + (tc.depth + 1) * tc.width + tc.depth * tc.heads * length)


def check_apart(out: str, source: str) -> None:
    """:class:`~tokdyn.experiment.study.Refused` when an analysis's ``out`` and its ``source`` are
    the same directory or one lies inside the other (``--fresh`` would remove the source)."""
    o, src = (os.path.realpath(p) for p in (out, source))
    if o == src or o.startswith(src + os.sep) or src.startswith(o + os.sep):
        raise study_dir.Refused(
            f"out={out!r} and source={source!r} must be separate directories (neither inside the other): "
            "the source holds the trained reasoners the study reads"
        )


def _source_error(source: str, problem, option: str = "source") -> io.OutputConflict:
    """The refusal of a source whose file fails its verification (``problem``: a
    :class:`tokdyn.io.CorruptFile` naming it): a usage error, the command exits 2."""
    return io.OutputConflict(
        f"{option}={source!r}: {problem}. An analysis reads its source as it is: it never sets "
        f"aside, retrains or reads past a damaged source file. Run `tokdyn study latent-reasoning "
        f"--out {source}` with the source's settings (it sets the file aside and recomputes it), "
        f"or choose another {option}"
    )


def _verified_npz(path: str) -> dict:
    """The arrays of the ``.npz`` at ``path``, which must carry tokdyn's verification header and
    match it (:class:`tokdyn.io.CorruptFile` naming it otherwise: a file rewritten by plain
    ``np.savez`` has no header)."""
    if not io.is_verified(path):
        raise io.CorruptFile(path, "no verification header: not a file tokdyn wrote, or rewritten since")
    return io.load_npz(path)


def verify_source(cfg: Config, source: str, names: Sequence[str], *, option: str = "source") -> None:
    """Check, strictly and without changing anything, the files of variants in a
    latent-reasoning directory that an analysis reads: each variant's result (its own SHA-256),
    answers and checkpoint (verification header and checksum) where present, their agreement (the
    answers the result records, the final checkpoint, the curve the answers keep), and, where the
    source's record (``config.json``) lists a result or curve, its SHA-256 there. A variant with no
    file at all is not checked (it is still to be trained). Unlike the source's own study
    (:func:`finished`), an analysis never sets a damaged file aside to retrain it, nor reads past it.

    Args:
      cfg: the study's :class:`Config`.
      source: the latent-reasoning directory.
      names: the variants to check.
      option: the command-line option that named ``source``, for the messages.

    Raises:
      tokdyn.io.OutputConflict: naming the first file that fails (the command exits 2).
    """
    try:
        listed = (
            study_dir.read_record(source).get("outputs")
            if os.path.exists(os.path.join(source, study_dir.RECORD))
            else None
        )
    except io.CorruptFile as e:
        raise _source_error(source, e, option) from None
    for name in dict.fromkeys(names):
        p = paths(source, name)
        try:
            for key in ("result", "curve"):
                rel = os.path.relpath(p[key], source).replace(os.sep, "/")
                if isinstance(listed, dict) and rel in listed and os.path.exists(p[key]):
                    study_dir.verify_output(source, rel)
            res = read_result(p["result"]) if os.path.exists(p["result"]) else None
            kept = _verified_npz(p["answers"]) if os.path.exists(p["answers"]) else None
            ck = _verified_npz(p["checkpoint"]) if os.path.exists(p["checkpoint"]) else None
            if kept is not None:
                lacking = [k for k in ("answers", "curve_csv", "steps") if k not in kept]
                if lacking:
                    raise io.CorruptFile(p["answers"], f"it lacks {lacking}")
            if res is None:
                continue  # not finished: its checkpoint (verified above) is resumed
            if kept is None:
                raise io.CorruptFile(p["answers"], f"missing, though {p['result']} records the finished variant")
            if answers_digest(kept["answers"]) != res.get("answers_sha256") or int(res["steps"]) != int(kept["steps"]):
                raise io.CorruptFile(p["answers"], f"its answers are not those {p['result']} records")
            if ck is None:
                raise io.CorruptFile(p["checkpoint"], f"missing, though {p['result']} records the finished variant")
            if int(ck.get("meta_step", -1)) != int(kept["steps"]):
                raise io.CorruptFile(
                    p["checkpoint"],
                    f"it holds step {int(ck.get('meta_step', -1))}, not the "
                    f"{int(kept['steps'])} steps {p['result']} records",
                )
            if os.path.exists(p["curve"]):
                with open(p["curve"], "rb") as f:
                    if f.read() != kept["curve_csv"].tobytes():
                        raise io.CorruptFile(
                            p["curve"], f"not the curve the finished variant recorded in {p['answers']}"
                        )
        except io.CorruptFile as e:
            raise _source_error(source, e, option) from None


def open_source(
    cfg: Config,
    source: str,
    need: Sequence[str] = (),
    *,
    train: bool = True,
    quiet: bool = False,
    option: str = "source",
) -> tuple[Config, dict]:
    """Open the latent-reasoning directory that an analysis reads, checked before any work. Only
    ``devices``, how the source split its seeds, is taken from the source's stamp.

    Args:
      cfg: the study's :class:`Config`.
      source: the latent-reasoning directory.
      need: the variants the analysis reads (verified by :func:`verify_source`).
      train: a directory that holds no such study is stamped for ``cfg`` (its variants are then
        trained by :func:`ensure_trained`); False refuses it, and a source lacking a variant of
        ``need``.
      quiet: no messages.
      option: the command-line option that named ``source``, for the messages.

    Returns:
      ``(cfg, stamp)``: ``cfg`` with the source's ``devices``, and the source's stamp.

    Raises:
      tokdyn.io.OutputConflict: a directory stamped with another configuration than ``cfg``
        (naming the fields that differ), or files of ``need`` that fail their verification.
      tokdyn.experiment.study.Refused: without ``train``, no study there or a variant of ``need``
        missing.
    """
    old = study_dir.read_stamp(source) if os.path.isdir(source) else None
    if old is None:
        if not train:
            raise study_dir.Refused(
                f"{option}={source!r} holds no latent-reasoning study (no {study_dir.STAMP}): train its variants "
                f"with `tokdyn study latent-reasoning --out {source}`, or drop --no-train"
            )
        return cfg, open_study(cfg, source, quiet=quiet).stamp
    if old.get("study") == STUDY and isinstance(old.get("config"), dict):
        devices = old["config"].get("devices")
        if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 0:
            cfg = dataclasses.replace(cfg, devices=devices)
    stamp = study_dir.source_stamp(source, STUDY, expected=cfg, selection=SELECTION, option=option)
    verify_source(cfg, source, need, option=option)  # before anything reads, sets aside or trains there
    if not train:
        missing = [v for v in dict.fromkeys(need) if not finished(cfg, source, v)]
        if missing:
            raise study_dir.Refused(
                f"{option}={source!r} lacks the trained variants {missing}: train them with `tokdyn "
                f"study latent-reasoning --variants {','.join(missing)} --out {source}` (with the "
                "source's settings), or drop --no-train"
            )
    return cfg, stamp


def source_prepare(needed: Callable[[Any], Sequence[str]]):
    """The ``prepare`` of an analysis's study spec (:class:`tokdyn.experiment.runner.Spec`): its
    source ``cfg.source``, apart from the study's ``out`` (:func:`check_apart`), opened for the
    configuration ``cfg.reasoning()`` expects and the variants ``needed(cfg)``, its files verified,
    before the study's directory is opened (:func:`open_source`). The source's configuration goes
    into ``session.context["reasoning"]``; returns ``{"reasoning": its stamp}``."""

    def prepare(session, cfg) -> dict:
        check_apart(session.out, cfg.source)  # all checked before the source is opened (and, if new, stamped)
        session.context["reasoning"], stamp = open_source(
            cfg.reasoning(), cfg.source, needed(cfg), train=cfg.train, quiet=session.quiet
        )
        return {"reasoning": stamp}

    return prepare


def ensure_trained(cfg: Config, source: str, need: Sequence[str], *, train: bool = True, quiet: bool = False) -> Config:
    """Make sure a latent-reasoning directory holds finished variants, training the missing ones
    there (the variants it already has are kept). Used by the studies that analyse trained
    reasoners.

    Args:
      cfg: the study's :class:`Config`.
      source: the latent-reasoning directory (checked against ``cfg`` by :func:`open_source`).
      need: the variants that must be finished.
      train: train the missing variants; False refuses a source that lacks one.
      quiet: no messages or progress bar.

    Returns:
      The source's configuration (``cfg`` with the source's ``devices``).

    Raises:
      RuntimeError: training did not finish (``cfg.max_minutes`` ran out).
    """
    cfg, _ = open_source(cfg, source, need, train=train, quiet=quiet)
    missing = [v for v in dict.fromkeys(need) if not finished(cfg, source, v)]
    if not missing:
        return cfg
    check_devices(cfg)
    study = open_study(cfg, source, quiet=quiet)
    deadline = None if cfg.max_minutes is None else time.time() + 60 * cfg.max_minutes
    if not train_variants(cfg, source, missing, quiet=quiet, deadline=deadline):
        raise RuntimeError(f"training the source variants in {source} did not finish")
    record(study, cfg)
    return cfg


def load_variant(cfg: Config, source: str, name: str):
    """(model, params stacked over seeds, training config) of the trained variant ``name`` in the
    study directory ``source``: the state that answered its test (:attr:`Config.tested`, by
    default each seed's best held-out accuracy). A checkpoint without its verification header, or
    that fails it, is refused (:class:`tokdyn.io.OutputConflict` naming it; left where it is: an
    analysis never retrains its source's variants from a damaged file)."""
    tc = training(cfg, name)
    path = paths(source, name)["checkpoint"]
    try:
        if not io.is_verified(path):
            raise io.CorruptFile(path, "no verification header: not a file tokdyn wrote, or rewritten since")
        if cfg.tested == "best":
            state = T.load_best(path, tc, name, cfg.hparams).state
        else:
            state = T.load(path, tc, name, cfg.hparams)
    except io.CorruptFile as e:
        raise _source_error(source, e) from None
    return latent_model.Model(V.model_config(tc, name)), state.params, tc


def midway(cfg: Config, source: str, name: str) -> tuple[int, int]:
    """(step, curriculum stage) half-way through the training of ``name`` that ``source`` records
    (rounded down to ``steps_per_call``)."""
    tc = training(cfg, name)
    final = int(read_result(paths(source, name)["result"])["steps"])
    step = max(final // 2 // tc.train.steps_per_call, 1) * tc.train.steps_per_call
    ends = np.cumsum([n for *_, n in stages(tc, name)])
    return step, int(np.searchsorted(ends, step, side="left"))


def load_midway(cfg: Config, source: str, name: str, *, quiet: bool = True, pool=None):
    """Variant ``name`` half-way through the training its final checkpoint records (rounded down
    to ``steps_per_call``, :func:`midway`): read from ``checkpoints/V@STEP.npz`` when there,
    otherwise trained there from scratch to that step. The training is deterministic on the same
    devices, so this is the state the full run passed through; a curriculum variant gets the model
    of the stage it was then in. A damaged file is set aside (a warning naming it) and trained again.

    Args:
      cfg: the study's :class:`Config`.
      source: the latent-reasoning directory holding the finished variant.
      name: the variant's name.
      quiet: no progress bar while training.
      pool: the training set (``T.data(...).train``); drawn again when not given.

    Returns:
      ``(model, params, step, stage)``: the stage's :class:`tokdyn.models.latent.model.Model`, its
      parameters as NumPy arrays (a leading axis over seeds), the step and the curriculum stage.
    """
    tc = training(cfg, name)
    step, stage = midway(cfg, source, name)
    path = os.path.join(source, "checkpoints", f"{name}@{step}.npz")
    partial = os.path.join(source, "checkpoints", f"{name}@{step}.partial.npz")
    state = None
    if os.path.exists(path):
        try:
            state = T.load(path, tc, name, cfg.hparams)
        except io.CorruptFile as e:
            io.set_aside(path, e.reason)
    if state is None:
        if _checkpoint(partial) is not None:
            done = int(np.asarray(T.load(partial, tc, name, cfg.hparams).step)[0])
        else:
            done = 0
        pool = T.data(tc).train if pool is None else pool
        state = train.train_many(
            T.trainer(tc, name),
            pool,
            *T.models(tc, cfg.hparams),
            checkpointing=train.Checkpointing(partial, T.stamp(tc, name)),
            execution=train.Execution(devices=_devices(cfg)),
            max_calls=(step - done) // tc.train.steps_per_call,
            quiet=quiet,
        ).state
        os.replace(partial, path)
    return (
        latent_model.Model(V.model_config(tc, name, stage)),
        jax.tree_util.tree_map(np.asarray, state.params),
        step,
        stage,
    )
