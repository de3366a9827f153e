"""The device call's plan (``device_session.py --plan``): each step's budget (:data:`BUDGETS`), what it
is expected to take, read from the raw files of earlier calls (no JAX import), and the arithmetic of
the first priority's steps against the call's budget (:func:`arithmetic`, :func:`plan_text`).

  H200 at ca6932f  ``runs/h200-2026-11-27-ca6932f``: ``session.json`` (each step's seconds) and
                   ``session.log`` (its first call's steps' output: every row's clock, ``[ t s]``
                   from its suite process's start), ``call3-slots-1024/suite.log`` (Slot Attention at
                   1,024 seeds, precision highest, then TF32, after the ceilings)
  the CPU at e1efab0  ``runs/cpu-2026-11-27-vlm-compile-e1efab0/rows.jsonl``: every program of the
                   VLM steps compiled on the CPU (``compile_s``, wall)
  the H100 at d41d300  ``runs/h100-2026-11-28-d41d300``: ``session.json`` and ``call2/session.json``, the
                   VLM steps' own seconds on a GPU (:data:`GPU_STEPS`), which replace their CPU-based estimates
  the CPU at d99338c  ``runs/cpu-2026-11-28-vlm-analyses-compile-d99338c/rows.jsonl``: the
                   ``vlm-diagnostics`` study's programs compiled on the CPU, those of the mediation
                   with latent-mode generation at 3B and 7B among them (``analyses`` names them), and
                   the floating-point work of one batch of it

A step's estimate adds the rows it runs, each the span from the row before it to its own line in the
log of the call that ran it, and the suite process's own start and end (the step's seconds less its
last row's clock). Rows that run in a step but have no recorded time are taken as long as the recorded
row they repeat at another precision (the TF32 variants). A VLM step a GPU call ran takes that call's own
seconds for it (:data:`GPU_STEPS`); one no call ran: its programs' compile seconds on the CPU times
:data:`GPU_COMPILE_FACTOR`, plus :data:`VLM_OTHER_S` for everything else, and for the mediation steps their
timed calls too: the row's :data:`MEDIATION_CALLS` batches, each its floating-point work over
:data:`GPU_BF16_RATE`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
H200 = os.path.join(HERE, "runs", "h200-2026-11-27-ca6932f")
VLM_COMPILE = os.path.join(HERE, "runs", "cpu-2026-11-27-vlm-compile-e1efab0", "rows.jsonl")
ANALYSES_COMPILE = os.path.join(HERE, "runs", "cpu-2026-11-28-vlm-analyses-compile-d99338c", "rows.jsonl")
H100 = os.path.join(HERE, "runs", "h100-2026-11-28-d41d300")
GPU_STEPS = (os.path.join(H100, "session.json"), os.path.join(H100, "call2", "session.json"))
"""Device calls whose VLM steps' own seconds replace the CPU-based estimates of those steps (the H100 call at
d41d300: vlm:3b, vlm:7b, both mediation steps; a step that stopped on the table's KeyError after its last row
counts: its rows were all measured)."""
MEDIATION = "mediation"  # rows.vlm_study.MEDIATION: the analysis the mediation steps time
MEDIATION_NAMES = (MEDIATION, "mediation (generated)")  # raw files made before the one VLM layer name it so
GPU_COMPILE_FACTOR = 2.0
"""A program's compile on the GPU over its compile on the CPU (``compile_s`` of the vlm-compile rows,
measured on a loaded 2-core VM): XLA's GPU compile adds what the CPU's has not (the GEMMs' autotuning,
PTX to machine code); an assumption until a GPU call measures it."""
VLM_OTHER_S = 25.0
"""A VLM step's seconds besides compiling: the suite's start (JAX and the device), the weights' draw
(7.5 GB at 3B, 16.6 GB at 7B written once), the cuDNN probe, and the timed calls (each row's four
calls of a few hundred milliseconds at the H200's rates); an assumption, as the factor above."""
GPU_BF16_RATE = 2e14
"""Floating-point operations per second the mediation with generation sustains on an H100 or H200 in
bfloat16: a fifth of their dense bfloat16 peak (about 990 TFLOP/s), its work mostly the prefill of
prompts of 336 tokens and the vision tower over every generated row's image; an assumption until a GPU
call measures the row."""
MEDIATION_CALLS = 4
"""Batches the mediation row runs: the first (its compiles) and the suite's default 3 repeats."""

# each step's budget, seconds: a step starts only when it fits in what is left of the call; the first
# priority's (setup, dynamics, train:autoencoder, train:slots, vlm:3b) add to 505 s of the 540 s call,
# each at least 1.3 times its expected seconds (--plan prints both)
BUDGETS = {
    "setup": 30,
    "dynamics": 65,
    "dynamics:given": 120,
    "train:autoencoder": 30,
    "train:slots": 100,
    "train:slots-tf32": 75,
    "train:slots-4096": 300,  # no compile within 150 s on the H200 at ca6932f
    "training": 340,
    "peers": 60,
    "vlm:3b": 280,
    "vlm:7b": 260,
    "vlm:7b-mediation": 160,
    "vlm:3b-mediation": 170,
    "compile": 60,
    "rest": 300,
}


@dataclasses.dataclass
class Step:
    """One step: its name, the most seconds it may take (it starts only when they still fit), and
    its command (a list of arguments, or a Python callable for the in-process steps)."""

    name: str
    budget: float
    command: object
    what: str = ""


ROW = re.compile(r"^\[\s*([0-9.]+) s\] (.+?) \| (.+?) \| status=")
STEP = re.compile(r"^===== (\S+) \(timeout")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A step's expected ``seconds`` and how they were reached (``basis``: the raw files' figures)."""

    seconds: float
    basis: str


def row_spans(log_text: str) -> dict[str, dict[str, float]]:
    """Per step of a ``session.log`` (or ``""`` for a lone suite's log), each row's seconds: from the
    clock of the row before it (0 for the first) to its own, keyed ``section|name``, and ``@last``,
    the last row's clock."""
    out: dict[str, dict[str, float]] = {}
    step, last = "", 0.0
    for line in log_text.splitlines():
        m = STEP.match(line)
        if m:
            step, last = m.group(1), 0.0
            continue
        m = ROW.match(line)
        if m:
            t = float(m.group(1))
            spans = out.setdefault(step, {})
            spans[f"{m.group(2)}|{m.group(3)}"] = round(t - last, 3)
            spans["@last"] = last = t
    return out


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def recorded() -> dict:
    """The H200's recorded figures at ca6932f: ``steps`` (each step's seconds), ``spans``
    (:func:`row_spans` of its first call's log), ``slots`` (of the Slot Attention call's log)."""
    steps = {s["name"]: s["seconds"] for s in json.loads(_read(os.path.join(H200, "session.json")))["steps"]}
    return dict(
        steps=steps,
        spans=row_spans(_read(os.path.join(H200, "session.log"))),
        slots=row_spans(_read(os.path.join(H200, "call3-slots-1024", "suite.log")))[""],
    )


def vlm_compile_seconds(size: str) -> tuple[float, int]:
    """``(sum of compile_s, programs)`` of the vlm-compile rows of ``size`` (``3b``, ``7b``)."""
    with open(VLM_COMPILE) as f:
        rows = [json.loads(ln) for ln in f if ln.strip()]
    mine = [r for r in rows if r["name"].startswith(f"qwen2.5-vl {size} shapes") and r["status"] == "ok"]
    return sum(r["compile_s"] for r in mine), len(mine)


def mediation_compile(size: str) -> tuple[float, int, float]:
    """``(sum of compile_s, programs, flops of one batch)`` of the mediation with generation at ``size``
    (``3b``, ``7b``) in the analyses' compile rows."""
    with open(ANALYSES_COMPILE) as f:
        rows = [json.loads(ln) for ln in f if ln.strip()]
    label = f"qwen2.5-vl {size} analyses"
    mine = [r for r in rows if r["name"].startswith(label) and r["status"] == "ok"]
    progs = [r for r in mine if set(MEDIATION_NAMES) & set(r.get("analyses", ()))]
    (work,) = [r for r in mine if r.get("unit") == "flops"]
    return sum(r["compile_s"] for r in progs), len(progs), float(work["median"])


def estimates() -> dict[str, Estimate]:
    """The expected seconds of the steps the raw files say something about (module docstring)."""
    rec = recorded()
    steps, dyn, slots = rec["steps"], rec["spans"]["dynamics"], rec["slots"]
    start = steps["dynamics"] - dyn["@last"]  # a suite process's start and end, beyond its rows
    ceilings = sum(v for k, v in dyn.items() if k.startswith("ceilings|"))
    kernel, study = dyn["dynamics|kernel alone"], dyn["dynamics|study path"]
    given = dyn["@last"] - sum(dyn[k] for k in dyn if k.startswith(("ceilings|", "dynamics|kernel alone")))
    given -= study
    slots_highest = slots["training|Slot Attention (scenes study), 1024 seed(s), strategy scan"]
    slots_tf32 = slots["training|Slot Attention (scenes study), 1024 seed(s), TF32, strategy scan"]
    out = {
        "setup": Estimate(steps["setup"], f"setup {steps['setup']} s (the editable install included)"),
        "dynamics": Estimate(
            start + ceilings + 2 * (kernel + study),
            f"start {start:.1f} + ceilings {ceilings:.1f} + (kernel alone {kernel:.1f} + study path with its "
            f"trace {study:.1f}) x 2 (the TF32 variants as long) s",
        ),
        "dynamics:given": Estimate(
            start + given,
            f"start {start:.1f} + the rows after the study path {given:.1f} s (4 rows skipped there at the "
            "step's budget not counted)",
        ),
        "train:autoencoder": Estimate(
            steps["train:autoencoder"], f"train:autoencoder {steps['train:autoencoder']} s (4,096 and 1,024 seeds)"
        ),
        "train:slots": Estimate(
            start + slots_highest, f"start {start:.1f} + Slot Attention at 1,024 seeds, highest {slots_highest:.1f} s"
        ),
        "train:slots-tf32": Estimate(
            start + slots_tf32, f"start {start:.1f} + Slot Attention at 1,024 seeds, TF32 {slots_tf32:.1f} s"
        ),
    }
    for size in ("3b", "7b"):
        compile_s, n = vlm_compile_seconds(size)
        out[f"vlm:{size}"] = Estimate(
            compile_s * GPU_COMPILE_FACTOR + VLM_OTHER_S,
            f"{n} programs' CPU compile {compile_s:.1f} s x {GPU_COMPILE_FACTOR:g} + {VLM_OTHER_S:g} s besides",
        )
        compile_s, n, flops = mediation_compile(size)
        calls = MEDIATION_CALLS * flops / GPU_BF16_RATE
        out[f"vlm:{size}-mediation"] = Estimate(
            compile_s * GPU_COMPILE_FACTOR + calls + VLM_OTHER_S,
            f"{n} programs' CPU compile {compile_s:.1f} s x {GPU_COMPILE_FACTOR:g} + {MEDIATION_CALLS} batches of "
            f"{flops:.3g} flops at {GPU_BF16_RATE:.3g} flop/s ({calls:.1f} s) + {VLM_OTHER_S:g} s besides",
        )
    for name, seconds in gpu_step_seconds().items():
        if name in out:
            out[name] = Estimate(seconds, f"{name} {seconds} s on the H100 at d41d300 (its own step)")
    return out


def gpu_step_seconds() -> dict[str, float]:
    """The VLM steps' seconds in the device calls of :data:`GPU_STEPS` (the longest where a step ran twice)."""
    out: dict[str, float] = {}
    for path in GPU_STEPS:
        with open(path) as f:
            for st in json.load(f)["steps"]:
                if st["name"].startswith("vlm:") and st.get("seconds") is not None and st["status"] in ("ok", "error"):
                    out[st["name"]] = max(out.get(st["name"], 0.0), float(st["seconds"]))
    return out


def arithmetic(steps: list[Step], serves: dict, priority: int = 1) -> dict:
    """The call's arithmetic for the steps still to measure rows of ``priority`` (setup with them):
    ``steps`` (their names, in the call's order), ``budgets`` and ``expected`` (:func:`estimates`;
    None where nothing is recorded), and whether they come first in the call (``first``)."""
    est = estimates()
    mine = [
        st.name
        for st in steps
        if st.name == "setup"
        or (st.name in serves and serves[st.name][0] != "current" and serves[st.name][1] == priority)
    ]
    names = [st.name for st in steps]
    return dict(
        steps=mine,
        budgets={n: next(st.budget for st in steps if st.name == n) for n in mine},
        expected={n: est[n].seconds if n in est else None for n in mine},
        basis={n: est[n].basis if n in est else "nothing recorded" for n in mine},
        first=names[: len(mine)] == mine,
    )


def plan_text(args, steps: list[Step], serves: dict) -> str:
    """``--plan``: the steps in the call's order with their budgets, when each starts at the latest,
    the ledger rows each serves (each row's state, priority and precision, as ``ledger.py`` gives
    them) and its expected seconds; then the first priority's arithmetic against the call's budget."""
    est = estimates()
    out = [
        f"budget {args.budget:.0f} s; device {args.device}; out {args.out}" + ("; SMOKE" if args.smoke else ""),
        "| # | step | budget s | starts by s (every earlier step at its budget) | ledger rows | expected s | what |",
        "|---:|---|---:|---:|---|---:|---|",
    ]
    total = 0.0
    for i, st in enumerate(steps):
        fits = total + st.budget <= args.budget
        starts = f"{total:.0f}" if fits else "only if earlier steps end early"
        state, prio, served = serves.get(st.name, ("", "", []))
        rows = ", ".join(f"{i_} [{s_}, p{p_}, {pr}]" for i_, s_, p_, pr in served)
        rows = f"{state} (priority {prio}): {rows}" if served else ""
        expected = f"{est[st.name].seconds:.1f}" if st.name in est else ""
        out.append(f"| {i} | {st.name} | {st.budget:.0f} | {starts} | {rows} | {expected} | {st.what} |")
        total += st.budget if fits else 0.0
    out.append(f"\nthe steps' budgets add to {sum(st.budget for st in steps):.0f} s; a step starts only when its")
    out.append(f"budget fits in what is left of the call's {args.budget:.0f} s")
    a = arithmetic(steps, serves)
    if len(a["steps"]) > 1:
        budgets, expected = a["budgets"], a["expected"]
        known = [v for v in expected.values() if v is not None]
        out.append(
            "\nthe first priority's steps"
            + (" (first in the call)" if a["first"] else " (NOT first in the call)")
            + f": budgets {' + '.join(f'{n} {budgets[n]:.0f}' for n in a['steps'])} = {sum(budgets.values()):.0f} s"
            f" of {args.budget:.0f} s ({args.budget - sum(budgets.values()):.0f} s spare);"
        )
        out.append(
            f"expected {' + '.join(f'{n} {expected[n]:.1f}' for n in a['steps'] if expected[n] is not None)}"
            f" = {sum(known):.1f} s"
        )
        for n in a["steps"]:
            out.append(f"  {n}: {a['basis'][n]}")
    return "\n".join(out)
