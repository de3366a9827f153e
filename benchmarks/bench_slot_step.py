"""One Slot Attention training step: tokdyn (JAX) against the same model and the same step written in
PyTorch (``benchmarks/torch_slots.py``), side by side in one process, on the same CPU.

Workload: the paper's Slot Attention autoencoder at the object-discovery study's sizes
(``tokdyn.studies.object_discovery.Config().slot_config("slot_attention")``: its image size, slots,
iterations, encoder channels, "mlp" decoder, batch size, warm-up and learning rate) with the
paper's pieces that ``torch_slots.py`` implements (:data:`PAPER`: slots drawn from the learned
Gaussian, decoded alpha masks, 3 x 3 convolutions, the encoder's last one strided by 2: the study's
model before its default took farthest-point slots, attention masks and a per-pixel encoder), with
``--stride`` (the stride of the encoder's last convolution), ``--decoder-stride`` (the decoder
paints a (size / stride)^2 grid before the bilinear resize) and ``--batch`` overriding those values. Each step draws
its batch from a pool of the study's training scenes and fresh slot noise.

Rows:
  tokdyn    the training layer's own step (``jax.jit(tokdyn.train.make_step(slots.trainer(cfg)))``,
            what ``train_many`` under ``Execution("loop")``, the CPU default, calls once per model and step;
            compiled ahead with ``lower().compile()``, whose call dispatches as the jit's), one
            call per step: batch drawn on the device, loss, gradient, clipping, Adam with the warm-up/cosine
            schedule, the non-finite check
  PyTorch   a Python loop of ``torch_slots.train_step`` (batch indexing, ``torch.randn`` noise,
            forward, backward, ``clip_grad_norm_``, Adam, the schedule), as a PyTorch user writes it

Before timing, both frameworks start from the same weights and are checked on one batch with the
same slot noise: the loss, the reconstruction and the gradients must agree within 1e-4 (float32;
the gradients relative to the largest one when it exceeds 1); a few full optimiser steps on the
same batches and noise are compared and printed too: the losses, the largest difference of the
parameter updates and the share of weights whose updates agree within 1% of the largest update
(Adam divides each gradient by its own running scale, so a weight whose gradient is float32
rounding noise, e.g. the alpha logit's bias, whose exact gradient is 0, moves by a random fraction
of the step in each framework).

Timing: ``--steps`` steps per timed run, ``--warmup`` steps before the first (excluded), best and
median of ``--repeats`` runs; the state carries on from run to run as in training. JAX's compile
time (``lower().compile()`` of the step) is excluded from the rates and reported apart; every JAX
run ends with ``block_until_ready``. Both use every core (XLA:CPU's thread pool;
``torch.set_num_threads(os.cpu_count())``). GFLOP/s: XLA's cost analysis of the compiled tokdyn
step (``compiled.cost_analysis()["flops"]``) divided by each row's time per step (the same work
counted once, for both rows). Usage:

    python benchmarks/bench_slot_step.py [--steps 20] [--repeats 3] [--stride S] [--decoder-stride S] [--batch B]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from common import timed  # noqa: E402

from tokdyn import train  # noqa: E402
from tokdyn.models import slots  # noqa: E402
from tokdyn.studies import object_discovery as study  # noqa: E402

TOLERANCE = 1e-4  # max |difference| of the loss and of the reconstruction, float32
CHECK_STEPS = 3  # optimiser steps compared on the same batches and noise


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


PAPER = dict(slot_init="random", masks="decoder", encoder_kernel=3, encoder_stride=2)


def model_config(args):
    """The study's model config with the paper's pieces (:data:`PAPER`) and the command line's
    overrides (one seed)."""
    base = study.Config()
    cfg = base.slot_config("slot_attention")
    over = {"seeds": 1, **PAPER}
    if args.stride is not None:
        over["encoder_stride"] = args.stride
    if args.decoder_stride is not None:
        over["decoder_stride"] = args.decoder_stride
    if args.batch is not None:
        over["batch_size"] = args.batch
    return base, dataclasses.replace(cfg, **over).validate()


def flat(tree) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def max_diff(a, b) -> tuple[float, float]:
    """(max |a - b| over every leaf, max |a| over every leaf) of two trees of the same layout."""
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys(), sorted(set(fa) ^ set(fb))
    return (max(float(np.abs(fa[k] - fb[k]).max()) for k in fa), max(float(np.abs(fa[k]).max()) for k in fa))


def compile_step(trainer, state, run_key, pool):
    """(the compiled tokdyn step, compile s, flops per step or None): ``jax.jit`` of
    ``train.make_step(trainer)`` (what ``Execution("loop")`` calls), lowered and compiled
    ahead of time for these arguments (calling it costs the same dispatch as calling the jit)."""
    step = jax.jit(train.make_step(trainer))
    t = time.perf_counter()
    compiled = step.lower(state, pool, run_key).compile()
    compile_s = time.perf_counter() - t
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    flops = float(cost["flops"]) if isinstance(cost, dict) and cost.get("flops", 0) > 0 else None
    return compiled, compile_s, flops


def check(torch, peer, cfg, trainer, step, state, run_key, pool, lr):
    """Agreement of the two implementations on the same weights, batches and noise (``step``: the
    compiled tokdyn step): a dict of figures (asserts the loss and reconstruction within TOLERANCE)."""
    B, params = cfg.batch_size, state.params
    nchw = lambda a: torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    images = pool[:B]
    key = jax.random.key(12345)
    z = slots.slot_noise(key, cfg, B)

    def jloss(p):
        return slots.loss_fn(key, p, cfg, images)

    (loss_j, out_j), grads_j = jax.jit(jax.value_and_grad(jloss, has_aux=True))(params)
    net = peer.TorchSlots.from_flax(cfg, params)
    loss_t, recon_t = net.loss(nchw(images), torch.from_numpy(np.array(z)))
    loss_t.backward()
    res = {
        "loss_jax": float(loss_j),
        "loss_torch": float(loss_t.detach()),
        "loss_diff": abs(float(loss_j) - float(loss_t.detach())),
        "recon_diff": float(np.abs(np.asarray(out_j.recon) - recon_t.detach().permute(0, 2, 3, 1).numpy()).max()),
    }
    res["grad_diff"], res["grad_max"] = max_diff(grads_j, net.flax_tree(grads=True))
    assert res["loss_diff"] < TOLERANCE and res["recon_diff"] < TOLERANCE, res
    assert res["grad_diff"] < TOLERANCE * max(1.0, res["grad_max"]), res

    # CHECK_STEPS full steps, tokdyn's own batches and noise handed to PyTorch
    net = peer.TorchSlots.from_flax(cfg, params)
    opt, sched = peer.optimizer(net, learning_rate=lr, warmup=trainer.config.warmup_steps, steps=trainer.config.steps)
    st, losses = state, []
    for t in range(CHECK_STEPS):
        k = jax.random.fold_in(run_key, t)
        batch = slots.draw_batch(k, pool, B)
        noise = slots.slot_noise(jax.random.split(k)[1], cfg, B)
        st, logs = step(st, pool, run_key)
        lt = peer.train_step(net, opt, sched, nchw(batch), torch.from_numpy(np.array(noise)), cfg.train.clip_norm)
        losses.append(abs(float(logs["loss"]) - float(lt)))
    moved = jax.tree_util.tree_map(lambda a, b: np.asarray(a) - np.asarray(b), st.params, params)
    moved_t = jax.tree_util.tree_map(lambda a, b: a - np.asarray(b), net.flax_tree(), params)
    res["step_loss_diff"] = max(losses)
    res["update_diff"], res["update_max"] = max_diff(moved, moved_t)
    fj, ft = flat(moved), flat(moved_t)
    diffs = np.concatenate([np.abs(fj[k] - ft[k]).ravel() for k in fj])
    res["update_close"] = float(np.mean(diffs <= 0.01 * res["update_max"]))  # share within 1% of the largest update
    return res


def jax_row(step, state, run_key, pool, steps, repeats, warmup):
    """(best s/step, median s/step) of tokdyn's compiled step, one call per step."""
    box = [state]

    def run(n):
        st = box[0]
        for _ in range(n):
            st, _ = step(st, pool, run_key)
        box[0] = jax.block_until_ready(st)

    run(warmup)
    best, med = timed(lambda: run(steps), repeats)
    return best / steps, med / steps


def torch_row(torch, peer, cfg, trainer, params, pool, lr, steps, repeats, warmup):
    """(best s/step, median s/step) of a plain PyTorch training loop."""
    net = peer.TorchSlots.from_flax(cfg, params)
    opt, sched = peer.optimizer(net, learning_rate=lr, warmup=trainer.config.warmup_steps, steps=trainer.config.steps)
    images = torch.from_numpy(np.array(pool)).permute(0, 3, 1, 2).contiguous()  # NCHW, as PyTorch keeps images
    gen = torch.Generator().manual_seed(0)
    B, shape = cfg.batch_size, (cfg.batch_size, cfg.slots, cfg.slot_size)

    def run(n):
        for _ in range(n):
            idx = torch.randint(0, images.shape[0], (B,), generator=gen)
            z = torch.randn(shape, generator=gen)
            loss = peer.train_step(net, opt, sched, images[idx], z, cfg.train.clip_norm)
        return float(loss)

    run(warmup)
    best, med = timed(lambda: run(steps), repeats)
    return best / steps, med / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="optimiser steps per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs (best and median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed runs")
    ap.add_argument(
        "--stride",
        type=int,
        default=None,
        help="stride of the encoder's last convolution (default: 2, as the paper model's rows)",
    )
    ap.add_argument(
        "--decoder-stride", type=int, default=None, help="the decoder paints a (size / S)^2 grid (default: the study's)"
    )
    ap.add_argument("--batch", type=int, default=None, help="images per step (default: the study's)")
    ap.add_argument("--pool", type=int, default=512, help="training scenes the batches are drawn from")
    args = ap.parse_args(argv)
    import torch

    import torch_slots as peer

    torch.set_num_threads(os.cpu_count())
    base, cfg = model_config(args)
    trainer = slots.trainer(cfg)
    pool = jnp.asarray(study.split(dataclasses.replace(base, n_train=args.pool), "train").images, jnp.float32)
    keys, hp = slots.models(cfg, slots.Hparams(learning_rate=base.learning_rate))
    state, run_keys = train.init_states(trainer, keys, hp, vectorised=False)  # as train.Execution("loop") does
    state, run_key = jax.tree_util.tree_map(lambda a: a[0], (state, run_keys))

    step, compile_s, flops = compile_step(trainer, state, run_key, pool)
    agree = check(torch, peer, cfg, trainer, step, state, run_key, pool, base.learning_rate)
    j_best, j_med = jax_row(step, state, run_key, pool, args.steps, args.repeats, args.warmup)
    t_best, t_med = torch_row(
        torch, peer, cfg, trainer, state.params, pool, base.learning_rate, args.steps, args.repeats, args.warmup
    )

    g = cfg.size // cfg.decoder_stride
    n_in = (cfg.size // cfg.encoder_stride) ** 2
    print(
        f"machine: {cpu_name()} ({platform.machine()}), {os.cpu_count()} cores; JAX {jax.__version__}, backend "
        f"{jax.default_backend()}; PyTorch {torch.__version__} ({torch.get_num_threads()} threads); float32; "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"workload: object_discovery's slot_attention model, {cfg.size}x{cfg.size} images, batch {cfg.batch_size}, "
        f"K={cfg.slots} slots of D={cfg.slot_size}, {cfg.iterations} iterations, encoder {cfg.encoder_channels} "
        f"{cfg.encoder_kernel}x{cfg.encoder_kernel} (last stride {cfg.encoder_stride}: {n_in} inputs), "
        f"{cfg.decoder} decoder width {cfg.decoder_hidden} painting {g}x{g}"
        f"{'' if g == cfg.size else f' resized to {cfg.size}x{cfg.size}'}; {args.steps} steps per timed run, "
        f"{args.warmup} warm-up steps, best (median) of {args.repeats}"
    )
    print(
        f"agreement (same weights, batch, noise): |loss diff| {agree['loss_diff']:.1e} (loss {agree['loss_jax']:.6f}), "
        f"max |recon diff| {agree['recon_diff']:.1e} (both < {TOLERANCE:g}); max |grad diff| "
        f"{agree['grad_diff']:.1e} (max |grad| {agree['grad_max']:.1e}); after {CHECK_STEPS} steps: max |loss diff| "
        f"{agree['step_loss_diff']:.1e}, max |param update diff| {agree['update_diff']:.1e} (max |update| "
        f"{agree['update_max']:.1e}; {agree['update_close']:.2%} of the weights within 1% of it)"
    )
    if flops is not None:
        print(f"work: {flops / 1e9:.3f} GFLOP per step (XLA's cost analysis of the compiled tokdyn step)")
    print("| implementation | ms/step | steps/s | GFLOP/s | compile s |")
    print("|---|---:|---:|---:|---:|")
    for name, best, med, comp in (
        ("tokdyn (jit of train.make_step, one call per step)", j_best, j_med, compile_s),
        ("PyTorch (eager loop of train_step)", t_best, t_med, None),
    ):
        gf = "-" if flops is None else f"{flops / best / 1e9:.1f}"
        print(
            f"| {name} | {best * 1e3:.1f} ({med * 1e3:.1f}) | {1 / best:.2f} ({1 / med:.2f}) | {gf} | "
            f"{'-' if comp is None else f'{comp:.1f}'} |"
        )


if __name__ == "__main__":
    main()
