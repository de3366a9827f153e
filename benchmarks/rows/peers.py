"""The PyTorch peers: where benchmarks/ has a PyTorch peer of a learned model (Slot Attention as the
paper has it, ``torch_slots.py``), one model's training
step: tokdyn's jitted step against the same model and step in PyTorch on the same device (CUDA when
there is one), eager and through ``torch.compile`` (its forward and loss compiled; on a CPU with
``--smoke`` the "eager" backend of ``torch.compile``, which checks the path without a C++ build),
all at full float32 (no TF32), the two losses on the same weights and batch compared first;
skipped when PyTorch is not installed."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from rows.base import Suite, compiled_of, steady


def _torch():
    try:
        import torch
    except ImportError:
        return None, None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32, as tokdyn's "highest"
    torch.backends.cudnn.allow_tf32 = False
    if dev == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    return torch, dev


def _torch_timed(torch, dev, run, steps, repeats):
    def sync_run():
        run(steps)
        if dev == "cuda":
            torch.cuda.synchronize()

    run(3)
    best, med, _ = steady(sync_run, repeats)
    return best / steps, med / steps


def _jax_step_timed(step, state, data, run_key, steps, repeats):
    box = [state]

    def run():
        st = box[0]
        for _ in range(steps):
            st, _ = step(st, data, run_key)
        box[0] = jax.block_until_ready(st)

    best, med, _ = steady(run, repeats)
    return best / steps, med / steps


def compile_backend(s: Suite, dev: str) -> str:
    """``torch.compile``'s backend: "inductor" (the default), or "eager" for a CPU smoke run."""
    return "eager" if (s.args.smoke and dev == "cpu") else "inductor"


def run(s: Suite):
    """Every peer row (module docstring)."""
    torch, dev = _torch()
    if torch is None:
        s.add("peers", "PyTorch peers", status="skipped (PyTorch not installed)")
        return
    from tokdyn import train
    from tokdyn.models import slots
    from tokdyn.studies import object_discovery
    import torch_slots

    steps = 2 if s.args.smoke else 20
    prec = "highest"

    def slot_peer():
        base = object_discovery.Config.quick() if s.args.smoke else object_discovery.Config()
        cfg = dataclasses.replace(
            base.slot_config("slot_attention"),
            seeds=1,
            slot_init="random",
            masks="decoder",
            encoder_kernel=3,
            encoder_stride=2,
        )
        tr = slots.trainer(cfg)
        pool = object_discovery.split(dataclasses.replace(base, n_train=64 if s.args.smoke else 512), "train").images
        keys, hp = slots.models(cfg)
        with jax.default_matmul_precision(prec):
            state, run_keys = train.init_states(tr, keys, hp, vectorised=False)
            state1 = jax.tree_util.tree_map(lambda a: a[0], state)
            step, comp = compiled_of(jax.jit(train.make_step(tr)), state1, pool, run_keys[0])
            ours = _jax_step_timed(step, state1, pool, run_keys[0], steps, s.args.repeats)
            B = cfg.batch_size
            key = jax.random.key(12345)
            z = slots.slot_noise(key, cfg, B)
            loss_j = float(jax.jit(lambda p: slots.loss_fn(key, p, cfg, pool[:B])[0])(state1.params))
        net = torch_slots.TorchSlots.from_flax(cfg, state1.params).to(dev)
        images = torch.from_numpy(np.array(pool)).permute(0, 3, 1, 2).contiguous().to(dev)
        loss_t = float(net.loss(images[:B], torch.from_numpy(np.array(z)).to(dev))[0].detach().cpu())
        opt, sched = torch_slots.optimizer(
            net, learning_rate=4e-4, warmup=tr.config.warmup_steps, steps=tr.config.steps
        )
        gen = torch.Generator(device=dev).manual_seed(0)

        def run(n):
            for _ in range(n):
                idx = torch.randint(0, images.shape[0], (B,), generator=gen, device=dev)
                zz = torch.randn((B, cfg.slots, cfg.slot_size), generator=gen, device=dev)
                torch_slots.train_step(net, opt, sched, images[idx], zz, cfg.train.clip_norm)

        theirs = _torch_timed(torch, dev, run, steps, s.args.repeats)
        loss_c = torch.compile(net.loss, backend=compile_backend(s, dev))

        def run_c(n):
            for _ in range(n):
                idx = torch.randint(0, images.shape[0], (B,), generator=gen, device=dev)
                zz = torch.randn((B, cfg.slots, cfg.slot_size), generator=gen, device=dev)
                loss, _ = loss_c(images[idx], zz)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.clip_norm)
                opt.step()
                sched.step()

        compiled = lambda: _torch_timed(torch, dev, run_c, steps, s.args.repeats)  # noqa: E731
        return ours, theirs, compiled, comp, abs(loss_j - loss_t), B

    for name, fn, what in (("Slot Attention (the paper's pieces)", slot_peer, "|loss diff|"),):
        box = {}

        def ours_row(fn=fn):
            (o_best, o_med), (t_best, t_med), compiled, comp, diff, b = fn()
            box.update(t_best=t_best, t_med=t_med, compiled=compiled, diff=diff, b=b)
            return dict(
                size=f"1 model, batch {b}, one call per step",
                unit="model-steps/s",
                best=1 / o_best,
                median=1 / o_med,
                compile_s=comp,
                precision=prec,
                agreement=f"{what} {diff:.1e}",
            )

        row = s.row("peers", f"{name}: tokdyn jitted step", ours_row)
        if row.get("status") == "ok":
            s.add(
                "peers",
                f"{name}: PyTorch {torch.__version__} on {dev}, eager",
                status="ok",
                size=f"1 model, batch {box['b']}",
                unit="model-steps/s",
                best=1 / box["t_best"],
                median=1 / box["t_med"],
                precision="float32 (TF32 off)",
                agreement=f"{what} {box['diff']:.1e}",
            )

            def compiled_row():  # timed after the eager rows are on disk: its compile may take long
                c_best, c_med = box["compiled"]()
                return dict(
                    size=f"1 model, batch {box['b']}, forward and loss compiled",
                    unit="model-steps/s",
                    best=1 / c_best,
                    median=1 / c_med,
                    precision="float32 (TF32 off)",
                )

            s.row(
                "peers",
                f"{name}: PyTorch {torch.__version__} on {dev}, torch.compile ({compile_backend(s, dev)})",
                compiled_row,
            )
