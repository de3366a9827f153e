"""Training the latent reasoner four ways (optax), vmapped over seeds; evaluation; checkpoints.

Variants (:data:`VARIANTS`, a registry of :class:`Variant`):

``direct``         answer right after the question (no latents, no caption)
``no_image``       ``direct`` with an all-empty image: what the question alone gives away
``text``           text-space imagination: generate the caption (teacher-forced in training,
                   greedy at test time), then answer
``latent_mirage``  latent feedback + answer CE + Mirage-style alignment: 1 - cos between the mean
                   latent hidden state and the mean patch embedding of the helper image
``latent_monet``   ... + Monet-style alignment: mean over latents of 1 - cos between latent i and
                   the teacher's last-layer hidden states over the i-th group of helper patches (the
                   teacher is the model itself reading the helper image, gradient stopped)
``latent_lvr``     ... + LVR-style alignment: MSE (mean over latents and features) between the
                   fed-back latent embeddings and the mean patch embedding of the i-th group of
                   helper patches
``latent``         latent feedback with the answer CE only (unsupervised latents)
``pause``          L learned <pause> positions (no feedback), answer CE only
``coconut``        curriculum: stage 0 trains ``text``; stage s replaces the first s/S of the caption
                   by round(L s / S) latents; the last stage has no caption, L latents

Alignment targets are computed from the model's own patch embeddings (or hidden states) with the
gradient stopped, so the alignment loss moves the latents, never the targets. The helper patches
(G*G, row-major) are split into L contiguous groups, one per latent.

Every seed's run has key ``fold_in(key(root_seed), seed)``: initial parameters and its stream of
training batches (drawn with replacement from a shared training pool; the test set never shares
an instance with it, see :func:`tokdyn.latent.tasks.splits`). Seeds are trained together under
``vmap``; ``steps_per_call`` optimiser steps run inside one ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokdyn import _checks
from tokdyn.latent import model as M
from tokdyn.latent import tasks

ALIGNMENTS = (None, "mirage", "monet", "lvr")


@dataclasses.dataclass(frozen=True)
class Variant:
    latent_mode: str = "none"
    caption: bool = False
    align: Optional[str] = None
    use_image: bool = True
    curriculum: bool = False


VARIANTS = {
    "direct": Variant(),
    "no_image": Variant(use_image=False),
    "text": Variant(caption=True),
    "latent_mirage": Variant(latent_mode="feedback", align="mirage"),
    "latent_monet": Variant(latent_mode="feedback", align="monet"),
    "latent_lvr": Variant(latent_mode="feedback", align="lvr"),
    "latent": Variant(latent_mode="feedback"),
    "pause": Variant(latent_mode="pause"),
    "coconut": Variant(latent_mode="feedback", caption=True, curriculum=True),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Model size, optimiser and schedule shared by every variant."""

    task: tasks.TaskConfig = tasks.TaskConfig()
    width: int = 64
    depth: int = 2
    heads: int = 4
    n_latents: int = 4
    projection: str = "layernorm"
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 200
    align_weight: float = 1.0
    caption_weight: float = 1.0
    curriculum_stages: int = 2
    steps_per_call: int = 100
    n_train: int = 100000
    n_test: int = 1000
    seeds: int = 3
    root_seed: int = 0

    def validate(self) -> "TrainConfig":
        self.task.validate()
        for name in ("width", "depth", "heads", "n_latents", "steps", "batch_size", "curriculum_stages",
                     "steps_per_call", "n_train", "n_test", "seeds"):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive_int("warmup", self.warmup, minimum=0)
        _checks.positive_int("root_seed", self.root_seed, minimum=0)
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        for name in ("weight_decay", "align_weight", "caption_weight"):
            _checks.real(name, getattr(self, name), low=0.0)
        _checks.choice("projection", self.projection, M.PROJECTIONS)
        if self.steps % self.steps_per_call:
            raise ValueError(f"steps must be a multiple of steps_per_call={self.steps_per_call}, got {self.steps}")
        return self


def _variant(name: str) -> Variant:
    _checks.choice("variant", name, VARIANTS)
    return VARIANTS[name]


def stages(cfg: TrainConfig, name: str) -> list[tuple[int, int, int]]:
    """(n_latents, caption tokens dropped, steps) per curriculum stage (one stage without curriculum)."""
    v = _variant(name)
    if not v.curriculum:
        return [(cfg.n_latents if v.latent_mode != "none" else 0, 0, cfg.steps)]
    s, k = cfg.curriculum_stages, cfg.task.caption_len
    per = cfg.steps // cfg.steps_per_call
    cuts = [round(per * i / (s + 1)) * cfg.steps_per_call for i in range(s + 2)]
    return [(round(cfg.n_latents * i / s), round(k * i / s), cuts[i + 1] - cuts[i]) for i in range(s + 1)]


def model_config(cfg: TrainConfig, name: str, stage: int = -1) -> M.ModelConfig:
    v = _variant(name)
    n_lat = stages(cfg, name)[stage][0]
    mode = v.latent_mode if n_lat else "none"
    text = tasks.QUESTION_LEN + cfg.n_latents + 2 + cfg.task.caption_len + 1 if v.curriculum else 0
    return M.ModelConfig(task=cfg.task, width=cfg.width, depth=cfg.depth, heads=cfg.heads, latent_mode=mode,
                         n_latents=n_lat, caption_len=cfg.task.caption_len if v.caption else 0,
                         projection=cfg.projection, use_image=v.use_image, text_positions=text).validate()


def optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, min(cfg.warmup, cfg.steps - 1) or 1,
                                               cfg.steps, cfg.learning_rate * 0.05)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=cfg.weight_decay))


# --- losses -----------------------------------------------------------------------------------------

def _groups(x, n):  # (B, P, D) -> (B, n, D): means over n contiguous groups of the P positions
    p = x.shape[1]
    edges = [round(p * i / n) for i in range(n + 1)]
    return jnp.stack([x[:, a:max(b, a + 1)].mean(1) for a, b in zip(edges[:-1], edges[1:])], 1)


def _cos(a, b):
    a = a / jnp.sqrt(jnp.sum(a * a, -1, keepdims=True) + 1e-8)
    b = b / jnp.sqrt(jnp.sum(b * b, -1, keepdims=True) + 1e-8)
    return jnp.sum(a * b, -1)


def alignment_loss(model: M.Model, params, batch, out: M.Outputs, kind: str):
    """The alignment term (a loss to minimise) of the latent states to the helper image."""
    net, lay = model.net, model.layout
    helper = jnp.asarray(batch.helper, jnp.int32)
    sg = jax.lax.stop_gradient
    target = sg(net.apply(params, helper, method=M.Network.embed_patches))  # (B, P, D)
    n = out.latents.shape[1]
    if kind == "mirage":
        return jnp.mean(1.0 - _cos(out.latents.mean(1), target.mean(1)))
    if kind == "monet":
        teacher = sg(net.apply(params, target, method=M.Network.backbone)[0])  # (B, P, D), causal prefix
        return jnp.mean(1.0 - _cos(out.latents, _groups(teacher, n)))
    if kind == "lvr":
        fed = out.hidden[:, 0, lay.latents]  # (B, L, D) the embeddings actually fed back
        return jnp.mean((fed - _groups(target, n)) ** 2)  # mean over elements, as torch's MSELoss
    raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {kind!r}")


def _ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def losses(model: M.Model, params, batch, v: Variant, cfg: TrainConfig, cap_mask):
    """Total loss and its parts for one batch (cap_mask (K,) marks caption tokens still trained)."""
    out = model.apply(params, batch)
    lay = model.layout
    ans_logits = out.logits[:, lay.answer]
    ce = _ce(ans_logits, batch.answer).mean()
    parts = {"answer_ce": ce, "answer_acc": (ans_logits.argmax(-1) == batch.answer).mean()}
    total = ce
    if model.cfg.caption_len:
        k = lay.caption
        pred = out.logits[:, k.start - 1: k.stop - 1]  # (B, K, V) each position predicts the next token
        cap = _ce(pred, batch.caption)
        cap = jnp.sum(cap * cap_mask) / jnp.maximum(cap_mask.sum() * cap.shape[0], 1.0)
        parts["caption_ce"] = cap
        total = total + cfg.caption_weight * cap
    if v.align is not None:
        al = alignment_loss(model, params, batch, out, v.align)
        parts["align"] = al
        total = total + cfg.align_weight * al
    parts["loss"] = total
    return total, parts


# --- training ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class RunState:
    params: object  # stacked over seeds
    opt_state: object
    step: int = 0


def _stage_batch(batch, dropped: int, pad: int):
    if dropped and batch.caption.shape[-1]:
        cap = batch.caption.at[:, :dropped].set(pad)
        return batch.replace(caption=cap)
    return batch


def make_step(cfg: TrainConfig, name: str, stage: int):
    """A jitted ``(params, opt_state, keys, step0, pool) -> (params, opt_state, logs)`` that runs
    ``steps_per_call`` optimiser steps for every seed (vmapped) with lax.scan, each on a batch
    drawn with replacement from ``pool`` (an argument, not a compile-time constant, so a large
    training pool costs neither compile time nor a copy inside the executable)."""
    v = _variant(name)
    mcfg = model_config(cfg, name, stage)
    model = M.Model(mcfg)
    dropped = stages(cfg, name)[stage][1]
    k = mcfg.caption_len
    cap_mask = (jnp.arange(k) >= dropped).astype(jnp.float32)
    opt = optimizer(cfg)
    pad = cfg.task.vocab.pad

    def one(params, opt_state, key, step, pool):
        idx = jax.random.randint(jax.random.fold_in(key, step), (cfg.batch_size,), 0, pool.answer.shape[0])
        batch = _stage_batch(jax.tree.map(lambda a: a[idx], pool), dropped, pad)
        (_, parts), grads = jax.value_and_grad(lambda p: losses(model, p, batch, v, cfg, cap_mask),
                                               has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, parts

    def chunk(params, opt_state, keys, step0, pool):
        def body(carry, i):
            p, o = carry
            p, o, parts = jax.vmap(one, in_axes=(0, 0, 0, None, None))(p, o, keys, step0 + i, pool)
            return (p, o), parts
        (params, opt_state), logs = jax.lax.scan(body, (params, opt_state), jnp.arange(cfg.steps_per_call))
        return params, opt_state, jax.tree.map(lambda a: a.mean(0), logs)  # (S,) per log entry

    return jax.jit(chunk, donate_argnums=(0, 1))


def seed_keys(cfg: TrainConfig):
    root = jax.random.key(cfg.root_seed)
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(root, 1), s) for s in range(cfg.seeds)])


def init_state(cfg: TrainConfig, name: str) -> RunState:
    model = M.Model(model_config(cfg, name, 0))
    keys = seed_keys(cfg)
    params = jax.vmap(lambda k: model.init(jax.random.fold_in(k, 0)))(keys)
    return RunState(params, jax.vmap(optimizer(cfg).init)(params), 0)


def data(cfg: TrainConfig):
    """(train pool, test set) as device arrays, from the root seed."""
    train, test = tasks.splits(jax.random.fold_in(jax.random.key(cfg.root_seed), 0), cfg.n_train, cfg.n_test,
                               cfg.task)
    return jax.tree.map(jnp.asarray, train), jax.tree.map(jnp.asarray, test)


def save_checkpoint(path: str, state: RunState) -> None:
    """Flattened params + optimiser state (all seeds) and the step, written atomically."""
    leaves = jax.tree.leaves((state.params, state.opt_state))
    tmp = path + ".tmp.npz"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(tmp, step=np.int64(state.step), **{f"leaf{i:04d}": np.asarray(x) for i, x in enumerate(leaves)})
    os.replace(tmp, path)


def load_checkpoint(path: str, like: RunState) -> RunState:
    treedef = jax.tree.structure((like.params, like.opt_state))
    with np.load(path) as z:
        leaves = [jnp.asarray(z[f"leaf{i:04d}"]) for i in range(treedef.num_leaves)]
        step = int(z["step"])
    params, opt_state = jax.tree.unflatten(treedef, leaves)
    return RunState(params, opt_state, step)


def train(cfg: TrainConfig, name: str, pool, *, checkpoint: Optional[str] = None, deadline: Optional[float] = None,
          on_log=None, max_calls: Optional[int] = None) -> tuple[RunState, bool]:
    """Train variant ``name`` for every seed; resumes from ``checkpoint`` when it exists and saves
    it after every call. Stops early (returning ``done=False``) once ``time.time() > deadline`` or
    after ``max_calls`` calls of ``steps_per_call`` steps in this session.
    ``on_log(step, logs)`` receives the mean of each logged quantity, one value per seed."""
    cfg.validate()
    state = init_state(cfg, name)
    if checkpoint and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint, state)
    keys = seed_keys(cfg)
    start, calls = 0, 0
    for stage, (_, _, n) in enumerate(stages(cfg, name)):
        stop = start + n
        if state.step < stop:
            fn = make_step(cfg, name, stage)
            while state.step < stop:
                if (deadline is not None and time.time() > deadline) or (max_calls is not None and calls >= max_calls):
                    return state, False
                calls += 1
                p, o, logs = fn(state.params, state.opt_state, keys, jnp.int32(state.step), pool)
                state = RunState(p, o, state.step + cfg.steps_per_call)
                if on_log is not None:
                    on_log(state.step, jax.tree.map(np.asarray, logs))
                if checkpoint:
                    save_checkpoint(checkpoint, state)
        start = stop
    return state, True


# --- evaluation -------------------------------------------------------------------------------------

def predict(model: M.Model, params, batch):
    """Greedy answers (B,) (and generated captions (B, K), if any) for one seed's params."""
    lay, k = model.layout, model.cfg.caption_len
    if k:
        cap = jnp.zeros((batch.question.shape[0], k), jnp.int32)
        for i in range(k):
            logits = model.apply(params, batch.replace(caption=cap)).logits
            cap = cap.at[:, i].set(logits[:, lay.caption.start - 1 + i].argmax(-1))
        batch = batch.replace(caption=cap)
    else:
        cap = jnp.zeros((batch.question.shape[0], 0), jnp.int32)
    return model.apply(params, batch).logits[:, lay.answer].argmax(-1), cap


def evaluate(cfg: TrainConfig, name: str, params, test, *, chunk: int = 250) -> dict:
    """Per-seed accuracy (S,) per family, and caption exact-match where captions are generated."""
    model = M.Model(model_config(cfg, name, -1))
    dropped = stages(cfg, name)[-1][1]
    pad = cfg.task.vocab.pad
    f = jax.jit(jax.vmap(lambda p, b: predict(model, p, b), in_axes=(0, None)))
    preds, caps = [], []
    n = test.answer.shape[0]
    for a in range(0, n, chunk):
        b = _stage_batch(jax.tree.map(lambda x: x[a:a + chunk], test), dropped, pad)
        pr, cp = f(params, b)
        preds.append(np.asarray(pr))
        caps.append(np.asarray(cp))
    pred = np.concatenate(preds, 1)  # (S, N)
    correct = pred == np.asarray(test.answer)[None]
    fam = np.asarray(test.family)
    out = {fname: correct[:, fam == i].mean(1) for i, fname in enumerate(tasks.FAMILIES) if np.any(fam == i)}
    out["all"] = correct.mean(1)
    if model.cfg.caption_len and dropped == 0:
        cap = np.concatenate(caps, 1)
        out["caption_exact"] = (cap == np.asarray(test.caption)[None]).all(-1).mean(1)
    return out


def majority_baseline(train, test) -> dict:
    """Accuracy of answering each family's most frequent training answer (the chance level)."""
    out = {}
    for i, fname in enumerate(tasks.FAMILIES):
        tr = np.asarray(train.answer)[np.asarray(train.family) == i]
        te = np.asarray(test.answer)[np.asarray(test.family) == i]
        if len(tr) and len(te):
            out[fname] = float((te == np.bincount(tr).argmax()).mean())
    return out
