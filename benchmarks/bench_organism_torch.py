"""Training one organism: tokdyn's compiled step against the same training written in PyTorch with
``transformers``, from the same weights on the same batches, in one process.

The organism is the CPU size (:class:`tokdyn.models.organism.training.Config`'s defaults: a Qwen2.5-VL decoder of
2 layers of width 64, a vision tower of 2 blocks of width 32, 16 image tokens a 112 x 112 grid image; batch 32,
float32), recipe ``--recipe`` (``latent``: 4 fed-back latents, or ``direct``), trained ``--steps`` steps with
learning rate 1e-3 and weight decay 0.01 (``Hparams``' defaults) under ``--warmup`` warm-up steps then a cosine
decay to 5% at ``--steps`` (the organism's schedule compressed into the run, so that both of its parts are
compared), clipped to global norm 1.

- tokdyn: the recipe's trainer (:func:`tokdyn.models.organism.training.trainer`), one model, its optimiser step
  (:func:`tokdyn.train.make_step`) jitted, as ``train_many``'s ``"loop"`` strategy runs it; the initial
  parameters and each step's batch indices are the run's (seed 0: ``training.seed_keys``, ``training.draw``
  from ``fold_in(run key, step)``).
- PyTorch: ``Qwen2_5_VLForConditionalGeneration`` opened from the checkpoint ``training.save`` writes of those
  initial parameters, trained as a PyTorch user writes it (:class:`TorchOrganism`): ``direct`` is one forward
  pass of the prompt and the answer, the cross-entropy of the logits that predict the answer's tokens (not
  ``labels=``: the model's own loss casts the logits to float32, which the float64 reference below must not); ``latent`` reads the prompt with its
  image once (the model's forward pass, ``use_cache``), feeds the start token, then ``L`` times the text model's
  last state (its ``last_hidden_state``, the final norm's output) as ``inputs_embeds`` of the next one-token step
  on the same key/value cache, then the end token and the answer's first token in one chunk; the loss is the
  mean cross-entropy of the answer's tokens. Step by step on the cache, not one full pass per latent (Coconut's
  code): each latent costs one token's pass instead of the whole sequence's, and autograd carries the gradient
  through the cache's concatenated keys and values as it does through a full pass. Positions are
  ``get_rope_index``'s for the prompt, then one a token on all three rows from the prompt's next (the
  model's own positions after a cached prompt assume a text-only continuation of ``input_ids`` and are not
  used). Optimiser: ``torch.optim.AdamW`` on every parameter (betas 0.9, 0.999, eps 1e-8 outside the square root,
  bias correction; weight decay on every parameter, as ``optax.adamw`` without a mask decays them all; a
  parameter without a gradient gets a zero one, so it decays as under optax), ``clip_grad_norm_`` before it and
  a ``LambdaLR`` of the schedule written out (checked against ``tokdyn.train.optim.schedule`` at every step
  before any training).

Checked first, before any training: the two sides' positions of the prompts equal, the schedule, and the parameter
count. Then the two sides alternate step by step (tokdyn's step t, PyTorch's step t, ...), each step timed to its
results on the host (``block_until_ready``); the first steps (tokdyn's compile, PyTorch's warm-up) are reported
apart, the per-step time is the median over the rest. The loss curves are compared step by step: the largest
difference relative to the loss. Threads are matched: PyTorch is told ``--threads`` (``set_num_threads``), at
``--threads 1`` XLA too (its flags, set before JAX starts), and the process, with every thread either library
starts, is pinned to ``--threads`` cores (``os.sched_setaffinity``), as ``bench_latent_generation.py`` does.
PyTorch and ``transformers`` must be the versions the Qwen2.5-VL latent fixture's committed reference records
(other versions, or none, are refused in one line, exit 2, before any work). Prints the machine, the versions,
the backend, the dtype and the load average; writes ``table.md``, ``curves.csv`` and ``results.json`` to
``--out``. Usage::

    python benchmarks/bench_organism_torch.py [--recipe latent|direct] [--steps 50] [--warmup 10]
        [--threads 1] [--n-train 1024] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--recipe", default="latent", choices=["latent", "direct"])
parser.add_argument("--steps", type=int, default=50)
parser.add_argument("--warmup", type=int, default=10)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--n-train", type=int, default=1024, help="instances in the training pool")
parser.add_argument(
    "--no-float64", dest="float64", action="store_false", help="skip the float64 PyTorch run (the rounding reference)"
)
parser.add_argument("--out", default=None, help="write table.md, curves.csv and results.json here")
args = parser.parse_args()

for name, value, low in (("--steps", args.steps, 2), ("--warmup", args.warmup, 0), ("--threads", args.threads, 1)):
    if value < low:
        parser.exit(2, f"{parser.prog}: {name} {value}: at least {low}\n")
if args.n_train < 1:
    parser.exit(2, f"{parser.prog}: --n-train {args.n_train}: at least 1\n")

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
sys.path.insert(0, str(FIXTURES))

import make_qwen2_5_vl_latent as loop  # noqa: E402  (the transformers versions it records, its cache's name)


def refuse_versions() -> None:
    """Exit 2 in one line when ``torch`` or ``transformers`` is missing or differs from the versions the latent
    fixture's reference records (:func:`make_qwen2_5_vl_latent.version_refusal`), before any work."""
    try:
        installed = loop.installed_versions()
    except ImportError as e:
        import numpy as np

        with np.load(loop.REFERENCE) as f:
            recorded = json.loads(str(f["versions"]))
        pins = " ".join(f"'{k}=={str(v).split('+')[0]}'" for k, v in sorted(recorded.items()))
        parser.exit(2, f"{parser.prog}: needs torch and transformers ({e.name} is missing): pip install {pins}\n")
    refusal = loop.version_refusal(installed)
    if refusal is not None:
        parser.exit(2, f"{parser.prog}: the PyTorch side runs at the latent fixture's versions: {refusal}\n")


refuse_versions()

if args.threads == 1:  # before JAX is imported: XLA reads its flags once
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
CORES = sorted(os.sched_getaffinity(0))
if args.threads < len(CORES):  # both sides on the same --threads cores, whatever threads they start
    CORES = CORES[: args.threads]
    os.sched_setaffinity(0, CORES)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from tokdyn import train  # noqa: E402
from tokdyn.models.organism import training as organism  # noqa: E402
from tokdyn.train import optim  # noqa: E402

SCHEDULE_TOLERANCE = 1e-6
"""The largest difference allowed between the ``LambdaLR`` factor and ``optim.schedule(cfg, 1.0)`` at any step."""


def lr_factor(cfg: optim.Config, step: int) -> float:
    """The learning rate at ``step`` over the peak, written out: linear from 0 over the warm-up, then a cosine
    from 1 to ``final_fraction`` at ``steps`` (held there after), or constant."""
    w = cfg.warmup_steps
    if w and step < w:
        return step / w
    if cfg.decay == "constant":
        return 1.0
    t = min(step - w, cfg.steps - w) / (cfg.steps - w)
    return (1.0 - cfg.final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t)) + cfg.final_fraction


class TorchOrganism:
    """One organism trained in PyTorch with ``transformers`` (the module docstring): ``step(index)`` makes one
    optimiser step on the training pool's instances ``index`` and returns ``(loss, gradient norm)``.

    Args:
      directory: the checkpoint (``training.save``'s) to start from.
      cfg: the organism's :class:`tokdyn.models.organism.training.Config` (its ``train`` the schedule).
      recipe: ``"latent"`` or ``"direct"``.
      pool: the training :class:`tokdyn.models.organism.training.Pool` (its arrays read once, to the host).
      hparams: the :class:`tokdyn.models.organism.training.Hparams` (learning rate, weight decay, the start
        marker's weight).
      dtype: the weights', the images' and the loss's dtype (``torch.float64``: the reference of float32
        rounding).
    """

    def __init__(self, directory, cfg, recipe: str, pool, hparams, dtype=torch.float32):
        from transformers import Qwen2_5_VLForConditionalGeneration

        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(directory, dtype=dtype)
        self.model.train()
        self.recipe, self.cfg = recipe, cfg
        self.n_latents = cfg.n_latents
        self.start_weight = float(hparams.start_weight)
        mode = organism.latent_mode(cfg)
        self.start, self.end = mode.start, mode.end
        self.image_token = self.model.config.image_token_id
        self.ids = torch.from_numpy(np.array(pool.ids, np.int64))
        self.mask = torch.from_numpy(np.array(pool.mask, np.int64))
        self.pixels = torch.from_numpy(np.array(organism.pixel_rows(organism.images(cfg, pool)), np.float32)).to(
            dtype
        )  # (N, patches, patch_dim)
        self.answer = torch.from_numpy(np.array(pool.answer, np.int64))  # (N, 2)
        g = cfg.tasks.image_size // 14
        self.grid_row = torch.tensor([[1, g, g]])
        self.params = list(self.model.parameters())
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=float(hparams.learning_rate),
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=float(hparams.weight_decay),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(cfg.train, s))
        self.clip = cfg.train.clip_norm
        self.cache_name = loop.cache_argument(self.model.model.language_model)
        self.checked = False

    def batch(self, index):
        """The instances ``index`` (B,) as ``transformers`` takes them."""
        index = torch.from_numpy(np.asarray(index, np.int64))
        ids, mask = self.ids[index], self.mask[index]
        return dict(
            ids=ids,
            mask=mask,
            pixels=self.pixels[index].reshape(-1, self.pixels.shape[-1]),  # the images' patches, one after another
            grid=self.grid_row.repeat(len(index), 1),
            answer=self.answer[index],
        )

    def positions(self, b):
        """``get_rope_index``'s (3, B, T) positions of the prompts and each row's next position (B,)."""
        types = (b["ids"] == self.image_token).to(torch.int32)
        pos, _ = self.model.model.get_rope_index(
            b["ids"], mm_token_type_ids=types, image_grid_thw=b["grid"], attention_mask=b["mask"]
        )
        return pos, pos.amax(dim=(0, 2)) + 1

    def loss(self, b):
        """The mean cross-entropy of the answer's tokens on the batch ``b`` (:meth:`batch`), plus, with latents, the
        start marker's after the prompt (weight ``start_weight``, the organism's ``Hparams.start_weight``)."""
        model = self.model
        ids, mask, answer = b["ids"], b["mask"], b["answer"]
        ce = torch.nn.functional.cross_entropy
        if self.recipe == "direct":  # the prompt and the answer in one pass
            full = torch.cat([ids, answer], 1)
            t, k = ids.shape[1], answer.shape[1]
            logits = model(
                input_ids=full,
                attention_mask=torch.cat([mask, torch.ones_like(answer)], 1),
                pixel_values=b["pixels"],
                image_grid_thw=b["grid"],
                mm_token_type_ids=(full == self.image_token).to(torch.int32),
            ).logits[:, t - 1 : t + k - 1]  # the prompt's last token and the answer's predict the answer
            return ce(logits.reshape(-1, logits.shape[-1]), answer.reshape(-1))
        pos, nxt = self.positions(b)
        out = model.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            pixel_values=b["pixels"],
            image_grid_thw=b["grid"],
            mm_token_type_ids=(ids == self.image_token).to(torch.int32),
            use_cache=True,
        )
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        text = model.model.language_model
        embed = model.get_input_embeddings()
        rows = ids.shape[0]
        keep = mask
        done = 0  # tokens fed after the prompt

        def feed(x):  # x (B, n, D) after what was fed; the text model's final-norm states (B, n, D)
            nonlocal keep, done
            n = x.shape[1]
            p = (nxt[:, None] + done + torch.arange(n)[None]).unsqueeze(0).expand(3, rows, n)
            keep = torch.cat([keep, torch.ones(rows, n, dtype=keep.dtype)], 1)
            h = text(
                inputs_embeds=x, attention_mask=keep, position_ids=p, use_cache=True, **{self.cache_name: cache}
            ).last_hidden_state
            done += n
            return h

        h = feed(embed(torch.full((rows, 1), self.start)))
        for _ in range(self.n_latents):  # each latent: the state the step before computed, with its gradient
            h = feed(h[:, -1:])
        h = feed(embed(torch.cat([torch.full((rows, 1), self.end), answer[:, :-1]], 1)))  # predicts the answer
        if not self.checked:  # once: the cache held the prompt and every step fed
            loop.Reference.check_cache(cache, keep.shape[1])
            self.checked = True
        logits = model.lm_head(h)
        # the prompt's last state predicts the start marker (the recipe trains the model to open its block)
        opening = model.lm_head(out.last_hidden_state[:, -1])
        start = ce(opening, torch.full((rows,), self.start))
        return ce(logits.reshape(-1, logits.shape[-1]), answer.reshape(-1)) + self.start_weight * start

    def step(self, index):
        """One optimiser step on the pool's instances ``index``: ``(loss, global gradient norm before clipping)``."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.batch(index))
        loss.backward()
        for p in self.params:  # optax decays every parameter, with a gradient or not
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip) if self.clip else None
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), float(norm) if norm is not None else float("nan")


def seconds_and(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main():
    torch.set_num_threads(args.threads)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    info = {
        "commit": commit + ("+dirty" if dirty.stdout.strip() else ""),
        "cpu": cpu,
        "machine": platform.machine(),
        "cpus_visible": len(os.sched_getaffinity(0)),
        "cores_pinned": CORES,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": "float32",
        "load_average_before": os.getloadavg(),
        "args": vars(args),
    }
    print(json.dumps(info, indent=1), flush=True)

    tcfg = optim.Config(
        steps=args.steps,
        steps_per_call=1,
        warmup=args.warmup,
        decay="cosine",
        clip_norm=organism.Config().train.clip_norm,
    )
    cfg = organism.Config(train=tcfg, n_train=args.n_train, n_test=8, seeds=1)
    hp = organism.Hparams()
    schedule = optim.schedule(tcfg, 1.0)
    off = max(abs(lr_factor(tcfg, s) - float(schedule(s))) for s in range(args.steps + 1))
    if not off <= SCHEDULE_TOLERANCE:
        raise SystemExit(f"the LambdaLR factor differs from tokdyn's schedule by {off:.1e}: nothing trained")
    t0 = time.perf_counter()
    pool = organism.data(cfg)[0]
    print(f"pool of {args.n_train} instances: {time.perf_counter() - t0:.1f} s", flush=True)
    tr = organism.trainer(cfg, args.recipe)
    (steps, stage), *rest = tr.stages
    assert not rest and steps == args.steps, "one stage"
    key = organism.seed_keys(cfg)[0]
    run_key = stage.keys(key)[1]
    state = train.init_state(tr, key, hp)
    step = jax.jit(train.make_step(stage))
    indices = [
        np.asarray(organism.draw(jax.random.fold_in(run_key, t), pool, cfg.batch_size)) for t in range(args.steps)
    ]
    drawn = stage.batch(jax.random.fold_in(run_key, 0), pool, 0)  # the trainer's own first batch
    if not np.array_equal(np.asarray(drawn.ids), np.asarray(pool.ids)[indices[0]]):
        raise SystemExit("the trainer's first batch is not the pool's instances drawn here: nothing trained")

    with tempfile.TemporaryDirectory() as tmp:
        organism.save(Path(tmp) / "organism", cfg, args.recipe, state.params)
        peer = TorchOrganism(Path(tmp) / "organism", cfg, args.recipe, pool, hp)
        exact = (
            TorchOrganism(Path(tmp) / "organism", cfg, args.recipe, pool, hp, torch.float64) if args.float64 else None
        )
    n_params = sum(p.numel() for p in peer.params)
    n_ours = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(state.params))
    if n_params != n_ours:
        raise SystemExit(f"the PyTorch model holds {n_params} parameters, tokdyn's {n_ours}: nothing trained")
    pos, nxt = peer.positions(peer.batch(np.arange(min(64, args.n_train))))
    ours_pos = np.asarray(pool.positions[:, : pos.shape[1]])
    real = np.asarray(pool.mask[: pos.shape[1]])[None].repeat(3, 0)
    same_next = np.array_equal(nxt.numpy(), np.asarray(pool.next_pos[: len(nxt)]))
    if not (np.array_equal(pos.numpy()[real], ours_pos[real]) and same_next):
        raise SystemExit("get_rope_index's positions differ from the pool's: nothing trained")

    rows = []
    for t in range(args.steps):
        ours_s, (state, logs) = seconds_and(lambda: jax.block_until_ready(step(state, pool, run_key)))
        theirs_s, (loss, norm) = seconds_and(lambda: peer.step(indices[t]))
        rows.append(
            dict(
                step=t,
                lr=float(schedule(t)) * float(hp.learning_rate),
                tokdyn_loss=float(logs["loss"]),
                torch_loss=loss,
                tokdyn_grad_norm=float(logs["grad_norm"]),
                torch_grad_norm=norm,
                tokdyn_s=ours_s,
                torch_s=theirs_s,
            )
        )
        r = rows[-1]
        r["rel_diff"] = abs(r["torch_loss"] - r["tokdyn_loss"]) / abs(r["tokdyn_loss"])
        r["grad_norm_rel_diff"] = abs(r["torch_grad_norm"] - r["tokdyn_grad_norm"]) / abs(r["tokdyn_grad_norm"])
        print(
            f"step {t:3d}  loss tokdyn {r['tokdyn_loss']:.6f} torch {r['torch_loss']:.6f} (rel {r['rel_diff']:.1e})"
            f"  |g| rel {r['grad_norm_rel_diff']:.1e}  s tokdyn {ours_s:.3f} torch {theirs_s:.3f}",
            flush=True,
        )
    skipped = int(state.skipped)
    for t in range(args.steps if exact is not None else 0):  # not timed: how far float32 rounding carries each side
        loss64 = exact.step(indices[t])[0]
        rows[t]["float64_loss"] = loss64
        for side in ("tokdyn", "torch"):
            rows[t][f"{side}_rel_float64"] = abs(rows[t][f"{side}_loss"] - loss64) / abs(loss64)
    warm = rows[1:]
    med = {side: float(np.median([r[f"{side}_s"] for r in warm])) for side in ("tokdyn", "torch")}
    worst = max(rows, key=lambda r: r["rel_diff"])
    result = {
        **info,
        "params": n_params,
        "prompt_tokens": int(pool.ids.shape[1]),
        "batch_size": cfg.batch_size,
        "n_latents": cfg.n_latents if args.recipe == "latent" else 0,
        "skipped_steps": skipped,
        "loss_max_rel_diff": worst["rel_diff"],
        "loss_max_rel_diff_step": worst["step"],
        "loss_rel_diff_step0": rows[0]["rel_diff"],
        "grad_norm_max_rel_diff": max(r["grad_norm_rel_diff"] for r in rows),
        **{
            f"{side}_max_rel_float64": max(r[f"{side}_rel_float64"] for r in rows) if exact is not None else None
            for side in ("tokdyn", "torch")
        },
        "first_step_s": {"tokdyn": rows[0]["tokdyn_s"], "torch": rows[0]["torch_s"]},
        "median_step_s": med,
        "speedup": med["torch"] / med["tokdyn"],
        "load_average_after": os.getloadavg(),
        "rows": rows,
    }
    header = (
        f"machine: {cpu} ({platform.machine()}), {info['cpus_visible']} of {os.cpu_count()} cores visible, pinned to "
        f"{CORES}; {args.threads} thread(s) each; JAX {jax.__version__} ({jax.default_backend()}), torch "
        f"{torch.__version__}, transformers {transformers.__version__}; float32; load average "
        f"{info['load_average_before'][0]:.2f} before, {result['load_average_after'][0]:.2f} after; commit "
        f"{info['commit']}"
    )
    lines = [
        header,
        "",
        f"recipe {args.recipe} (L = {result['n_latents']}), batch {cfg.batch_size}, {args.steps} steps "
        f"(warm-up {args.warmup}, cosine to {tcfg.final_fraction:g}), {n_params:,} parameters, prompts of "
        f"{result['prompt_tokens']} tokens",
        "",
        "| side | median s / model-step (steps 1..) | model-steps/s | first step s |",
        "|---|---:|---:|---:|",
    ]
    for side, name in (("tokdyn", "tokdyn (jitted step)"), ("torch", "PyTorch + transformers")):
        lines.append(f"| {name} | {med[side]:.4f} | {1 / med[side]:.2f} | {result['first_step_s'][side]:.2f} |")
    lines += [
        "",
        f"tokdyn / PyTorch: {result['speedup']:.2f}x",
        f"losses: largest difference relative to the loss {worst['rel_diff']:.2e} (step {worst['step']}); at step 0 "
        f"{rows[0]['rel_diff']:.2e}; gradient norms to {result['grad_norm_max_rel_diff']:.2e}; tokdyn skipped "
        f"{skipped} steps",
    ]
    if exact is not None:
        lines.append(
            f"from PyTorch's float64 run of the same steps: tokdyn's losses to {result['tokdyn_max_rel_float64']:.2e}, "
            f"PyTorch's float32 to {result['torch_max_rel_float64']:.2e} (largest, relative)"
        )
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(text + "\n")
        (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        cols = list(rows[0])
        (out / "curves.csv").write_text(
            ",".join(cols) + "\n" + "".join(",".join(repr(r[c]) for c in cols) + "\n" for r in rows)
        )


if __name__ == "__main__":
    main()
