"""Training the latent reasoner: one pure ``train_step``, scanned in chunks, vmapped over seeds x
hyper-parameter settings and sharded over the local devices.

- :class:`Config` (static: sizes, steps, schedule, curriculum, pools, seeds) and :class:`Hparams`
  (traced, sweepable: learning rate, weight decay, loss weights).
- :class:`TrainState`: one model's params, optimiser state, hyper-parameters, step and
  ``nan_step``; :func:`init_state` builds it.
- :func:`make_train_step` gives the pure ``train_step(state, batch, key) -> (state, logs)`` of a
  variant's curriculum stage; :func:`train_chunk` scans ``steps_per_call`` of them, each on a batch
  drawn from the training pool (:func:`draw_batch`).
- :func:`train_many`: every seed x setting of one variant in one compiled function per curriculum
  stage (:func:`tokdyn.execute.sharded_map`), a Python loop over chunks that only checkpoints
  (atomically, after every chunk; a rerun resumes), logs and shows progress.

Every seed's run has key ``fold_in(fold_in(key(root_seed), 1), seed)``: it draws the initial
parameters (``fold_in(run key, 0)``) and the batch of step t (``fold_in(run key, t)``, with
replacement from a training pool shared by every model; the test set never shares an instance
with it, see :func:`tokdyn.latent.tasks.splits`). All settings of a sweep share their seeds'
initial parameters and batches. The optimiser is optax: gradients clipped to global norm 1, then
AdamW with a linear warm-up to the (traced) peak learning rate and a cosine decay to 5% of it.
The first step whose loss or gradient is not finite is recorded per model (:func:`nan_report`);
the models are independent under ``vmap``, so one diverging model never stops the others. (The
update itself is left as it is: skipping it, e.g. with ``optax.apply_if_finite``, changes how XLA
fuses the AdamW update and with it the last bits of every model's trajectory.)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from tokdyn import _checks, execute, io
from tokdyn.latent import losses, tasks, variants
from tokdyn.latent import model as M

FINAL_FRACTION = 0.05  # the cosine decay ends at this fraction of the peak learning rate
CLIP_NORM = 1.0


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of training, shared by every variant (model size, schedule, pools, seeds).

    Attributes:
      task: the tasks (grid size, colours, density).
      width: transformer width D.
      depth: transformer blocks.
      heads: attention heads (dividing width).
      n_latents: latent positions L of the latent variants (the last curriculum stage's count).
      projection: latent feedback projection, none | layernorm | linear.
      steps: the step budget: the most optimiser steps per model (a multiple of steps_per_call; the
        learning-rate schedule decays over it).
      batch_size: training instances per step, drawn with replacement from the pool.
      warmup: steps of linear learning-rate warm-up before the cosine decay.
      curriculum_stages: stages S of the coconut curriculum after the first (text) stage.
      steps_per_call: optimiser steps per compiled call (the checkpoint interval).
      n_train: instances in the training pool.
      n_test: test instances (none of them in the training pool or the validation set).
      n_val: validation instances for held-out accuracy during training (none in the other sets).
      seeds: seeds per hyper-parameter setting (0..N-1).
      root_seed: root PRNG seed of the data and of every seed's run.
    """

    task: tasks.Config = tasks.Config(grid_size=4, n_colours=4)
    width: int = 64
    depth: int = 2
    heads: int = 4
    n_latents: int = 4
    projection: str = "layernorm"
    steps: int = 3000
    batch_size: int = 64
    warmup: int = 200
    curriculum_stages: int = 2
    steps_per_call: int = 100
    n_train: int = 100000
    n_test: int = 2000
    n_val: int = 500
    seeds: int = 3
    root_seed: int = 0

    def validate(self) -> "Config":
        if not isinstance(self.task, tasks.Config):
            raise TypeError(f"task must be a tokdyn.latent.tasks.Config, got {type(self.task).__name__}")
        self.task.validate()
        for name in ("width", "depth", "heads", "n_latents", "steps", "batch_size", "curriculum_stages",
                     "steps_per_call", "n_train", "n_test", "seeds"):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive_int("warmup", self.warmup, minimum=0)
        _checks.positive_int("n_val", self.n_val, minimum=0)
        _checks.positive_int("root_seed", self.root_seed, minimum=0)
        _checks.choice("projection", self.projection, M.PROJECTIONS)
        if self.width % self.heads:
            raise ValueError(f"width must be a multiple of heads, got width={self.width}, heads={self.heads}")
        if self.steps % self.steps_per_call:
            raise ValueError(f"steps must be a multiple of steps_per_call={self.steps_per_call}, got {self.steps}")
        return self

    @property
    def warmup_steps(self) -> int:
        """The warm-up length the schedule uses (at least 1, less than ``steps``)."""
        return min(self.warmup, self.steps - 1) or 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced, sweepable hyper-parameters: each field a float, or an array with one value per
    setting (vmapped over by :func:`train_many`).

    Attributes:
      learning_rate: peak AdamW learning rate (after warm-up; decays to 5% of it).
      weight_decay: AdamW decoupled weight decay.
      align_weight: weight of the latent alignment loss (latent_mirage, latent_monet, latent_lvr).
      caption_weight: weight of the caption cross-entropy (text, coconut).
    """

    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    align_weight: float = 1.0
    caption_weight: float = 1.0

    def validate(self) -> "Hparams":
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        for name in ("weight_decay", "align_weight", "caption_weight"):
            _checks.real(name, getattr(self, name), low=0.0)
        return self

    def astype(self, dtype=jnp.float32) -> "Hparams":
        return jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), self)

    def settings(self) -> int:
        """The number of settings H: 1 when every field is a scalar, else the common length of the
        (H,) fields (scalars are shared by every setting). ValueError for other shapes."""
        shapes = {k: np.shape(v) for k, v in dataclasses.asdict(self).items()}
        lengths = {s[0] for s in shapes.values() if s != ()}
        if any(len(s) > 1 for s in shapes.values()) or len(lengths) > 1:
            raise ValueError(f"every Hparams field must be a scalar or a (H,) array of one common length H, got "
                             f"shapes {shapes}")
        return lengths.pop() if lengths else 1

    def broadcast(self, n: int) -> "Hparams":
        """Every field as a float32 (n,) array (scalars repeated)."""
        return jax.tree_util.tree_map(lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n,)), self)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """One model in training (a leading (M,) axis on every leaf when stacked over models).

    Attributes:
      params: the network weights (Flax ``{"params": ...}``).
      opt_state: the optax state of :func:`optimizer`.
      hparams: the model's :class:`Hparams` (float32 scalars: traced).
      step: () int32 optimiser steps done.
      nan_step: () int32 first step whose loss or gradient was not finite, -1 if none.
    """

    params: dict
    opt_state: tuple
    hparams: Hparams
    step: jax.Array
    nan_step: jax.Array


# ---------------------------------------------------------------------------------------------- optimiser


def schedule(cfg: Config, peak) -> optax.Schedule:
    """Linear warm-up from 0 to ``peak`` (may be traced) over ``cfg.warmup_steps``, then a cosine
    decay to ``FINAL_FRACTION * peak`` at ``cfg.steps`` (optax's warm-up cosine schedule, built so
    that the peak may be a tracer)."""
    warm = cfg.warmup_steps
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warm),
                                 optax.cosine_decay_schedule(peak, cfg.steps - warm, alpha=FINAL_FRACTION)], [warm])


def optimizer(cfg: Config, hparams: Hparams) -> optax.GradientTransformation:
    """Clip to global norm 1, then AdamW with :func:`schedule` and the (traced) weight decay. The
    state's structure does not depend on ``hparams``."""
    return optax.chain(optax.clip_by_global_norm(CLIP_NORM),
                       optax.adamw(schedule(cfg, hparams.learning_rate), weight_decay=hparams.weight_decay))


# ---------------------------------------------------------------------------------------------- one model


def init_state(key, cfg: Config, name: str, hparams: Hparams) -> TrainState:
    """The state of one model before its first step: parameters from ``fold_in(key, 0)`` (``key``
    is the seed's run key, :func:`seed_keys`), a fresh optimiser state. Traceable (vmap it over
    keys and settings)."""
    model = M.Model(variants.model_config(cfg, name, 0))
    hp = hparams.astype()
    params = model.init(jax.random.fold_in(key, 0))
    return TrainState(params, optimizer(cfg, hp).init(params), hp, jnp.int32(0), jnp.int32(-1))


def make_train_step(cfg: Config, name: str, stage: int = 0) -> Callable:
    """The pure ``train_step(state, batch, key) -> (state, logs)`` of variant ``name`` at curriculum
    ``stage``: one optax update of ``state.params`` on ``batch`` (an :class:`~tokdyn.latent.tasks.Instance`
    batch, caption tokens the stage has replaced are masked here) with the hyper-parameters held in
    ``state``. ``logs``: the loss parts of :func:`tokdyn.latent.losses.objective`. ``key`` is the
    step's key (the batch was drawn with it; no current variant needs more randomness)."""
    v = variants.variant(name)
    model = M.Model(variants.model_config(cfg, name, stage))
    dropped = variants.dropped_captions(cfg, name, stage)
    cap_mask = (jnp.arange(model.cfg.caption_len) >= dropped).astype(jnp.float32)  # (K,)
    pad = cfg.task.vocab.pad

    def train_step(state: TrainState, batch, key):
        del key
        batch = variants.stage_batch(batch, dropped, pad)
        hp = state.hparams

        def loss(params):
            return losses.objective(model, params, batch, align=v.align, caption_mask=cap_mask,
                                    align_weight=hp.align_weight, caption_weight=hp.caption_weight)

        (total, logs), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        updates, opt_state = optimizer(cfg, hp).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(total) & jnp.isfinite(optax.tree.norm(grads))
        nan_step = jnp.where((state.nan_step < 0) & ~finite, state.step, state.nan_step)
        return TrainState(params, opt_state, hp, state.step + 1, nan_step), logs

    return train_step


def draw_batch(key, pool, batch_size: int):
    """``batch_size`` instances drawn uniformly with replacement from ``pool`` (leading axis N)."""
    idx = jax.random.randint(key, (batch_size,), 0, pool.answer.shape[0])
    return jax.tree.map(lambda a: a[idx], pool)


def train_chunk(train_step: Callable, state: TrainState, key, pool, *, steps: int, batch_size: int):
    """``steps`` calls of ``train_step`` under ``lax.scan``; step t (``state.step`` before it) draws
    its batch from ``pool`` with ``fold_in(key, t)``. Returns the state and the mean of every
    log over the chunk."""
    def body(state, _):
        k = jax.random.fold_in(key, state.step)
        return train_step(state, draw_batch(k, pool, batch_size), k)

    state, logs = jax.lax.scan(body, state, None, length=steps)
    return state, jax.tree.map(lambda a: a.mean(0), logs)


@functools.lru_cache(maxsize=64)
def chunk_fn(cfg: Config, name: str, stage: int) -> Callable:
    """The per-model function ``fn(pool, (state, key)) -> (state, logs)`` of one chunk of
    ``cfg.steps_per_call`` steps at ``stage``, for :func:`tokdyn.execute.sharded_map` (one object
    per (config, variant, stage), so its compilation is reused)."""
    step = make_train_step(cfg, name, stage)

    def fn(pool, args):
        state, key = args
        return train_chunk(step, state, key, pool, steps=cfg.steps_per_call, batch_size=cfg.batch_size)

    return fn


# ---------------------------------------------------------------------------------------------- many models


def seed_keys(cfg: Config):
    """(seeds,) run keys ``fold_in(fold_in(key(root_seed), 1), seed)``."""
    root = jax.random.key(cfg.root_seed)
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(root, 1), s) for s in range(cfg.seeds)])


@functools.lru_cache(maxsize=4)  # drawn once per configuration in a process (the arrays are immutable)
def data(cfg: Config) -> tasks.Splits:
    """The training pool, validation and test sets (:class:`tokdyn.latent.tasks.Splits` of device
    arrays), drawn from ``fold_in(key(root_seed), 0)``."""
    sp = tasks.splits(jax.random.fold_in(jax.random.key(cfg.root_seed), 0), cfg.n_train, cfg.n_test, cfg.task,
                      n_val=cfg.n_val)
    return tasks.Splits(*(jax.tree.map(jnp.asarray, part) for part in sp))


@functools.lru_cache(maxsize=32)
def _init_fn(cfg: Config, name: str):
    return jax.jit(jax.vmap(lambda k, hp: init_state(k, cfg, name, hp)))


def init_states(cfg: Config, name: str, hparams: Hparams) -> TrainState:
    """The initial states of every model of :func:`train_many`, stacked: model ``h * seeds + s``
    is setting h of ``hparams`` with seed s."""
    h = hparams.settings()
    keys = jnp.tile(seed_keys(cfg), h)  # (H*S,) model m has seed m % S
    hp = jax.tree_util.tree_map(lambda v: jnp.repeat(v, cfg.seeds), hparams.broadcast(h))
    return _init_fn(cfg, name)(keys, hp)


def load_checkpoint(path: str, like: TrainState, name: Optional[str] = None, *, with_stopped: bool = False):
    """The state saved at ``path`` by :func:`train_many` (``like``: a state of the same models,
    e.g. :func:`init_states`), and with ``with_stopped`` whether training had stopped early there.
    ValueError for a checkpoint of other models, settings or (when ``name`` is given) of another
    variant."""
    state, meta = io.load_pytree(path, like)
    if name is not None and str(meta.get("variant")) != name:
        raise ValueError(f"{path} holds variant {str(meta.get('variant'))!r}, not {name!r}: use another checkpoint")
    if not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree_util.tree_leaves(state.hparams), jax.tree_util.tree_leaves(like.hparams))):
        raise ValueError(f"{path} holds models with other hyper-parameters than asked for: use another checkpoint")
    state = jax.tree_util.tree_map(jnp.asarray, state)
    return (state, bool(meta.get("stopped", False))) if with_stopped else state


def train_many(cfg: Config, name: str, pool, hparams: Optional[Hparams] = None, *, checkpoint: Optional[str] = None,
               deadline: Optional[float] = None, max_calls: Optional[int] = None,
               on_log: Optional[Callable] = None, stop: Optional[Callable] = None,
               progress: Optional[io.Progress] = None, quiet: bool = True,
               devices=None, batch_size: Optional[int] = None) -> tuple[TrainState, bool]:
    """Train variant ``name`` for every seed x setting of ``hparams`` (each field a scalar or an (H,)
    array; default :class:`Hparams`): M = H x seeds models, model ``h * seeds + s``. Returns the
    stacked final :class:`TrainState` (leaves (M, ...)) and whether training finished.

    One compiled function per curriculum stage runs ``steps_per_call`` steps of every model,
    vmapped and split over ``devices`` (default: the local devices, at most M of them; M need not
    divide evenly: the last device's share is padded with copies of the last model, dropped
    again); ``batch_size``: models vmapped at once per device (None: all). How the models are
    split and batched changes XLA's kernels and so the last bits of the results: a run is
    reproduced bit for bit with the same devices and ``batch_size``. ``pool`` (the training set,
    an argument of the compiled function) is shared. After each call the Python loop saves
    ``checkpoint`` (atomically; training resumes from it when it exists), calls
    ``on_log(step, logs)`` (each log (M,), the mean over the call) and updates ``progress`` (an
    :class:`tokdyn.io.Progress` counting steps; without one, a bar of its own unless ``quiet``),
    noting models that turned non-finite. ``stop(step, state) -> bool``, called after ``on_log``
    and before the checkpoint, ends training early (finished: ``True`` is returned, and a resumed
    run whose checkpoint says so does not train on); it must decide from what it has recorded (so
    that a resumed run decides the same). It returns early (``False``) once ``time.time() >
    deadline`` or after ``max_calls`` calls."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.latent.training.Config, got {type(cfg).__name__}")
    cfg.validate()
    variants.variant(name)
    hparams = Hparams() if hparams is None else hparams
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.latent.training.Hparams, got {type(hparams).__name__}")
    hparams.validate()
    if max_calls is not None:
        _checks.positive_int("max_calls", max_calls, minimum=0)
    if batch_size is not None:
        _checks.positive_int("batch_size", batch_size)
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device, got an empty sequence")
    state = init_states(cfg, name, hparams)
    m = state.step.shape[0]
    devices = devices[:m]  # no device holds only padding
    keys = jnp.tile(seed_keys(cfg), m // cfg.seeds)
    stopped = False
    if checkpoint is not None and os.path.exists(checkpoint):
        state, stopped = load_checkpoint(checkpoint, state, name, with_stopped=True)
    if stopped:
        return state, True
    done = int(np.asarray(state.step)[0])
    own = progress is None and not quiet
    if own:
        progress = io.Progress(cfg.steps, desc=name, unit="steps", done=done)
    try:
        return _loop(cfg, name, pool, state, keys, done, m, devices, batch_size, checkpoint, deadline, max_calls,
                     on_log, stop, progress)
    finally:
        if own:
            progress.close()


def _loop(cfg, name, pool, state, keys, done, m, devices, batch_size, checkpoint, deadline, max_calls, on_log,
          stop, progress):
    pad = (-m) % len(devices)
    state, keys = _pad(state, pad), _pad(keys, pad)
    reported = {i for i, _ in nan_report(state)}
    calls, stage_end = 0, 0
    for stage, (_, _, n) in enumerate(variants.stages(cfg, name)):
        stage_end += n
        if done >= stage_end:
            continue
        fn, sharding = execute.sharded_map(chunk_fn(cfg, name, stage), devices, batch_size, True)
        shared = jax.device_put(pool, NamedSharding(sharding.mesh, PartitionSpec()))
        state, keys = jax.device_put((state, keys), sharding)
        while done < stage_end:
            if (deadline is not None and time.time() > deadline) or (max_calls is not None and calls >= max_calls):
                return _first(state, m), False
            state, logs = fn(shared, (state, keys))
            calls += 1
            done += cfg.steps_per_call
            logs = _host(logs, m)
            if on_log is not None:
                on_log(done, logs)
            stopping = bool(stop(done, _first(state, m))) if stop is not None else False
            if checkpoint is not None:
                io.save_pytree(checkpoint, _host(state, m), step=done, variant=name, stopped=stopping)
            if progress is not None:
                for i, t in nan_report(_first(state, m)):
                    if i not in reported:
                        reported.add(i)
                        progress.note(f"{name}: model {i} turned non-finite at step {t}")
                finite = np.isfinite(logs["loss"])
                progress.update(cfg.steps_per_call, variant=name,
                                loss=float(np.mean(logs["loss"][finite])) if finite.any() else float("nan"),
                                acc=float(np.mean(logs["answer_acc"])))
            if stopping:
                if progress is not None:
                    progress.update(cfg.steps - done)  # the budget not needed
                return _first(state, m), True
    return _first(state, m), True


def _pad(tree, n: int):
    if not n:
        return tree
    return jax.tree_util.tree_map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], n, 0)]), tree)


def _first(tree, m: int):
    return jax.tree_util.tree_map(lambda a: a[:m], tree)


def _host(tree, m: int):
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[:m], tree)


def nan_report(state: TrainState) -> list[tuple[int, int]]:
    """``[(model index, first non-finite step), ...]`` for every model whose loss or gradient went
    non-finite."""
    steps = np.atleast_1d(np.asarray(state.nan_step))
    return [(int(i), int(steps[i])) for i in np.flatnonzero(steps >= 0)]
