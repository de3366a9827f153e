"""The time estimates rows (section ``estimates``): before a run the ``tokdyn`` command says how long it
will take; each row runs one study command in a fresh process, in the command's setup (one host
device per core), with its own empty compilation cache (compiles count as on a first run), and sets
beside its wall time:

  reference   the estimate from the studies' constants alone, at the reference CPU's rates (what the
              command says without probing; ``TOKDYN_PROBE=off``)
  measured    the estimate at the rates measured here just before the run (``tokdyn.experiment.rates``)
  said        what the command itself recorded (config.json ``estimate``: it probes only for an
              estimate of ``rates.PROBE_MIN_SECONDS`` or more on the reference CPU)

Cases: the quick presets of collapse, scenes, visual-tokens and grid-diffusion, and the default video
study (``--smoke``: a three-seed token-dynamics study). The machine's load average before and after
each run is in its row: on a shared machine the rates, and so the measured estimate, follow it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from rows.base import Suite

CASES = ("collapse --quick", "scenes --quick", "visual-tokens --quick", "grid-diffusion --quick", "video")
SMOKE_CASES = ("token-dynamics --seeds 3",)


def config_of(argv):
    """The configuration the command builds from ``argv`` (``[study, options...]``)."""
    from tokdyn import cli

    key = next(k for k in cli.COMMANDS if k[0] == "study" and k[1] == argv[0])
    _, klass = cli.config_class(key)
    options = [a for a in argv[1:] if a != "--quick"]
    parser = argparse.ArgumentParser()
    cli.add_config_args(parser, klass)
    return cli.config_from_args(klass, parser.parse_args(options), base=klass.quick() if "--quick" in argv else None)


def one_case(case: str) -> dict:
    """The row of one study command (module docstring)."""
    from tokdyn.experiment import rates
    from tokdyn.experiment import study as study_dir

    words = case.split()
    est = config_of(words).estimate()
    load_before = os.getloadavg()[0]
    measured = rates.measure(list(est.work) or list(rates.KINDS))
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(
            os.environ,
            TOKDYN_CACHE_DIR=os.path.join(tmp, "jax"),
            XDG_CACHE_HOME=os.path.join(tmp, "cache"),
            TOKDYN_PROBE="process",
        )
        command = [sys.executable, "-m", "tokdyn.cli", "study", *words, "--out", os.path.join(tmp, "out")]
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        taken = time.perf_counter() - t0
        if done.returncode:
            raise RuntimeError(f"tokdyn study {case}: exit {done.returncode}: {done.stderr[-500:]}")
        record = study_dir.read_record(os.path.join(tmp, "out"))
    said = record.get("estimate", {}).get("seconds")
    here = study_dir.time_here(est, measured)[0]
    load = (load_before, os.getloadavg()[0])
    return dict(
        size=f"tokdyn study {case}",
        reference_s=est.seconds,
        measured_s=here,
        taken_s=taken,
        said_s=said,
        total_s=record["timings"]["total_s"],
        speeds={k: measured.speed(k) for k in measured.rates},
        probe_s=measured.probe_seconds,
        load=load,
        agreement=(
            f"estimate {est.seconds:.1f} s (constants), {here:.1f} s (rates measured here), "
            + (f"{said:.1f} s said; " if said is not None else "none said; ")
            + f"taken {taken:.1f} s; load {load[0]:.1f} -> {load[1]:.1f}"
        ),
    )


def run(s: Suite):
    """Every time-estimate row (module docstring)."""
    for case in SMOKE_CASES if s.args.smoke else CASES:
        s.row("estimates", case, lambda case=case: one_case(case))
