"""Kill a command at random moments, as a hostile user (or an out-of-memory killer) would.

:func:`run_cli` runs ``python -m tokdyn.cli ARGS`` in a child process; :func:`kill_at_random_moments`
starts it again and again, each time sending SIGKILL after a random share of the time an
uninterrupted run took, until a run ends by itself. The caller then compares the directory with
one an uninterrupted run wrote (the same program on the same machine: byte for byte).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np


def env(cache_dir) -> dict:
    """The child's environment: 2 host devices (as the suite's), a compilation cache of its own, and
    the suite's compiler settings (its XLA flags, most optimisations off unless
    TOKDYN_TEST_OPTIMIZED=1: see conftest.py), so that every child compiles alike and their files
    compare byte for byte."""
    e = dict(os.environ)
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count=2 {os.environ.get('TOKDYN_TEST_XLA_FLAGS', '')}".strip()
    e["TOKDYN_CACHE_DIR"] = str(cache_dir)
    e.setdefault("JAX_PLATFORMS", "cpu")
    return e


def run_cli(args, cache_dir, *, timeout: float = 600) -> tuple[int, float, str]:
    """``(exit code, seconds, stderr)`` of ``tokdyn ARGS`` run to its end in a child process."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "tokdyn.cli", *map(str, args)],
        env=env(cache_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return p.returncode, time.perf_counter() - t0, p.stderr


def kill_at_random_moments(
    args,
    cache_dir,
    seconds: float,
    *,
    kills: int = 3,
    seed: int = 0,
    low: float = 0.15,
    high: float = 0.95,
    timeout: float = 600,
) -> list[float]:
    """Run ``tokdyn ARGS`` and SIGKILL it after ``uniform(low, high) * seconds`` (``seconds``: an
    uninterrupted run's time), ``kills`` times, then run it to its end; returns the moments of
    the kills that hit a running process. ``AssertionError`` when the last run fails."""
    rng = np.random.default_rng(seed)
    hit = []
    for _ in range(kills):
        wait = float(rng.uniform(low, high) * seconds)
        p = subprocess.Popen(
            [sys.executable, "-m", "tokdyn.cli", *map(str, args)],
            env=env(cache_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            hit.append(round(wait, 2))
    code, _, err = run_cli(args, cache_dir, timeout=timeout)
    assert code == 0, err[-3000:]
    return hit


def same_files(a, b, names) -> None:
    """``AssertionError`` naming the first of ``names`` whose bytes differ between directories ``a`` and ``b``."""
    for name in names:
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            assert fa.read() == fb.read(), f"{name} differs after the kills"


def resumes_after_kills(args, cache_dir, seconds: float, reference, names, *, seed: int, low: float) -> None:
    """Kill ``tokdyn ARGS --out OUT`` (``args`` ending with ``OUT``'s option and value) twice at
    random moments drawn from ``seconds`` (an uninterrupted run's time), run it to its end, then
    compare the files ``names`` of ``OUT`` with those of the directory ``reference`` (an
    uninterrupted run's) byte for byte. When no kill hit a
    running process (the children, with a warm compilation cache, can outrun the reference's time),
    the kills come again within a third, a ninth and a 27th of ``seconds``."""
    hit = kill_at_random_moments(args, cache_dir, seconds, kills=2, seed=seed, low=low)
    for shrink in (3, 9, 27):  # the machine got faster than when the reference was timed: kill sooner
        if hit:
            break
        hit = kill_at_random_moments(args, cache_dir, seconds / shrink, kills=2, seed=seed)
    assert hit, "no kill hit a running process"
    out = args[list(map(str, args)).index("--out") + 1]
    same_files(reference, out, names)


def resumes_after_timed_kills(args, tmp_path, reference, names, *, seed: int, low: float) -> None:
    """:func:`resumes_after_kills` of ``tokdyn ARGS --no-plots --quiet`` into ``tmp_path/C``, its
    moments drawn from the time of an uninterrupted run on a warm compilation cache (a first run
    fills the cache under ``tmp_path``, a second is timed)."""
    cache, args = tmp_path / "cache", [*args, "--no-plots", "--quiet"]
    code, _, err = run_cli([*args, "--out", tmp_path / "compiles"], cache)
    assert code == 0, err[-3000:]
    code, seconds, err = run_cli([*args, "--out", tmp_path / "timed"], cache)
    assert code == 0, err[-3000:]  # timed on a warm compilation cache: the kills are drawn from its time
    resumes_after_kills([*args, "--out", tmp_path / "C"], cache, seconds, reference, names, seed=seed, low=low)


def kill_when_written(args, cache_dir, path, *, timeout: float = 600) -> bool:
    """Run ``tokdyn ARGS`` and SIGKILL it as soon as ``path`` exists (a part, a chunk: a moment
    inside the run, whatever the machine's speed); ``True`` when the kill hit a running process
    (``False``: it ended before ``path`` appeared)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "tokdyn.cli", *map(str, args)],
        env=env(cache_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    t0 = time.perf_counter()
    while p.poll() is None and not os.path.exists(path):
        if time.perf_counter() - t0 > timeout:
            break
        time.sleep(0.002)
    running = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait()
    return running


def resumes_after_a_kill_at(args, cache_dir, reference, names, when) -> None:
    """Kill ``tokdyn ARGS --out OUT`` (``args`` holding ``--out OUT``) once, as soon as ``OUT/when``
    exists (a file it writes midway), run it to its end, then compare the files ``names`` of ``OUT``
    with those of the directory ``reference`` (an uninterrupted run's) byte for byte: the cheap,
    deterministic instance of :func:`resumes_after_kills`."""
    out = args[list(map(str, args)).index("--out") + 1]
    assert kill_when_written(args, cache_dir, os.path.join(out, when)), f"the run ended before {when} was written"
    code, _, err = run_cli(args, cache_dir)
    assert code == 0, err[-3000:]
    same_files(reference, out, names)
