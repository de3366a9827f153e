"""Time estimates against the time taken, on this machine.

For each study command (``--cases``; default: the quick presets of collapse, scenes, visual-tokens
and grid-diffusion, and the default video study), in the ``tokdyn`` command's setup (one host
device per core):

  reference   the estimate from the studies' constants alone, the reference CPU's rates (what
              the command said before the rates were measured; ``TOKDYN_PROBE=off``)
  measured    the estimate at the rates measured on this machine just before the run
              (``tokdyn.experiment.rates.measure``)
  taken       the command's wall time in a fresh process (its own empty compilation cache, so
              compiles count as on a first run), and the ``total_s`` it records in config.json
  said        what the command itself said (its line on stderr, for a minute or more) and
              recorded (config.json ``estimate``): it probes only for an estimate of
              ``rates.PROBE_MIN_SECONDS`` or more on the reference CPU

Usage: ``python benchmarks/bench_estimates.py [--cases "collapse --quick;video"] [--json FILE]``.
The machine's load average is printed beside each row: on a shared machine the rates, and so
the measured estimate, follow it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count() or 1}")  # as the command

DEFAULT_CASES = "collapse --quick;scenes --quick;visual-tokens --quick;grid-diffusion --quick;video"


def config_of(argv):
    """The configuration the command builds from ``argv`` (``[study, options...]``)."""
    from tokdyn import cli

    key = next(k for k in cli.COMMANDS if k[0] == "study" and k[1] == argv[0])
    _, klass = cli.config_class(key)
    options = [a for a in argv[1:] if a != "--quick"]
    parser = argparse.ArgumentParser()
    cli.add_config_args(parser, klass)
    return cli.config_from_args(klass, parser.parse_args(options), base=klass.quick() if "--quick" in argv else None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=DEFAULT_CASES, help="study commands, ';'-separated (after `tokdyn study`)")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    from tokdyn.experiment import rates
    from tokdyn.experiment import study as study_dir

    rows = []
    for case in [c.strip() for c in args.cases.split(";") if c.strip()]:
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
                print(done.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{case}: exit {done.returncode}")
            record = study_dir.read_record(os.path.join(tmp, "out"))
        said = record.get("estimate", {})
        line = next((x for x in done.stderr.splitlines() if "will take about" in x), "")
        row = dict(
            case=case,
            reference_s=est.seconds,
            measured_s=study_dir.time_here(est, measured)[0],
            speeds={k: measured.speed(k) for k in measured.rates},
            probe_s=measured.probe_seconds,
            taken_s=taken,
            total_s=record["timings"]["total_s"],
            said_s=said.get("seconds"),
            said_sources=said.get("sources"),
            said_line=line,
            load=(load_before, os.getloadavg()[0]),
            timings=record["timings"],
        )
        rows.append(row)
        print(
            f"{case:28s} reference {row['reference_s']:7.1f} s  measured {row['measured_s']:7.1f} s "
            f"(speeds {', '.join(f'{k} {v:.2f}' for k, v in row['speeds'].items())})  taken {taken:6.1f} s "
            f"(total_s {row['total_s']:6.1f})  said {row['said_s'] or 0:7.1f} s {row['said_sources']}  "
            f"load {row['load'][0]:.1f}->{row['load'][1]:.1f}" + (f"\n    said: {line}" if line else ""),
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
