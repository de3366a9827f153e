"""A hostile user's raw errors, aborts and swallowed Ctrl-Cs: each case refused with a clear error
naming the argument, the value and what is allowed, before anything is traced; NaN in, NaN out for
labellings of runs that blew up; Ctrl-C exits 130 with one line; a failed sub-study of ``tokdyn
reproduce`` is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import hostile, killing
from tests.conftest import jax_compilations
from tokdyn import cli, data, dynamics, es, io, metrics, reproduce
from tokdyn.diagnostics import mediation
from tokdyn.studies import token_dynamics

KEY = jax.random.key(0)


class Knobs(NamedTuple):
    """A rule's knobs (none used)."""

    unused: float = 0.0


def _refused(exc, words, fn):
    """``fn()`` raises ``exc`` with every one of ``words`` in its message, and compiles nothing."""
    with jax_compilations() as compiled, pytest.raises(exc) as e:
        fn()
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert compiled == []


# ------------------------------------------------------------------ NaN in, NaN out


def test_ari_nmi_of_a_blown_up_run_are_nan_not_zero():
    """Every predicted label -1 (a run whose tokens became non-finite) scored by hand: NaN, on both
    paths, for ARI, NMI and FG-ARI; the same labelling from host data is refused by name."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(40, 2)), jnp.float32)
    truth = jnp.asarray(np.arange(40) % 4, jnp.int32)
    mask = jnp.ones(40, bool)
    still = dynamics.Rule(lambda points, tokens, hp: tokens, lambda s, points, hp, step, key: s, hparams=Knobs())
    r = dynamics.run(x, jnp.full((4, 2), jnp.nan, jnp.float32), rule=still, mask=mask)  # a run that blew up
    assert (np.asarray(r.labels) == -1).all()
    assert np.isnan(float(metrics.ari(truth, r.labels, mask)))  # the sort path, as a user calls it
    assert np.isnan(float(metrics.nmi(truth, r.labels, mask)))
    assert np.isnan(float(metrics.ari(truth, r.labels, mask, n_true=4, n_pred=4)))  # the table path
    _refused(
        ValueError,
        ["labels_pred", ">= 0", "-1", "index 0"],
        lambda: metrics.ari(np.asarray(truth), np.asarray(r.labels)),
    )


def test_kmeans_with_one_nan_point_is_not_converged():
    """One NaN point in 50 (traced: not inspected) gives all-NaN centres: converged is False."""
    x = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
    x[7] = np.nan
    init = np.array([[0, 0], [1, 1], [-1, -1]], np.float32)
    r = dynamics.kmeans(jnp.asarray(x), init)
    assert not bool(r.converged) and np.isnan(float(r.inertia))
    x[7] = 0.0
    assert bool(dynamics.kmeans(jnp.asarray(x), init).converged)  # the finite data still converges


# ------------------------------------------------------------------ sizes that abort XLA, negative counts


def test_init_tokens_of_2_to_the_40_tokens_is_refused_not_an_abort():
    _refused(
        ValueError,
        ["n_tokens=1099511627776", "dim=2", "2,147,483,647"],
        lambda: dynamics.init_tokens(KEY, 2**40, 2, method="normal"),
    )


def test_gaussian_clusters_of_2_to_the_40_points_is_refused_not_an_abort():
    _refused(
        ValueError,
        ["points_per_cluster=1099511627776", "n_clusters=4", "2,147,483,647"],
        lambda: data.gaussian_clusters(KEY, 4, points_per_cluster=2**40, dim=2),
    )


def test_es_noise_with_negative_pairs_is_refused_not_an_mlir_error():
    _refused(ValueError, ["n_pairs", ">= 1", "-1"], lambda: es.noise(KEY, 3, -1))
    _refused(TypeError, ["dims", "3.0"], lambda: es.noise(KEY, 3.0, 2))
    assert es.noise(KEY, 3, 2).shape == (4, 3)


def test_swap_permutation_of_negative_size_is_refused_not_a_broadcast_error():
    _refused(ValueError, ["n must be an int >= 1", "-3"], lambda: mediation.swap_permutation(KEY, -3))
    perm = np.asarray(mediation.swap_permutation(KEY, 5))
    assert sorted(perm) == list(range(5)) and (perm != np.arange(5)).all()


# ------------------------------------------------------------------ dynamics.run's inputs


def test_run_with_100000_tokens_is_refused_before_compiling():
    """100,000 tokens: the built-in rule's (T, T, D) repulsion and the (T, N) scores are named, with
    their size and the limit, before anything compiles; a valid big problem still runs."""
    x = np.zeros((1000, 2), np.float32)
    _refused(ValueError, ["T)=100000", "2,147,483,647"], lambda: dynamics.run(x, np.zeros((100_000, 2), np.float32)))
    huge_n = np.zeros((3_000_000, 2), np.float32)
    _refused(ValueError, ["N)=3000000", "T)=1000"], lambda: dynamics.run(huge_n, np.zeros((1000, 2), np.float32)))


def test_run_memory_check_names_the_bytes_and_the_limit(monkeypatch):
    """Within one array's elements but past the memory available: the bytes needed and the limit."""
    from tokdyn import _checks

    monkeypatch.setattr(_checks, "available_memory", lambda: (2**29, "available on the host (MemAvailable)"))
    x, t = np.zeros((200_000, 2), np.float32), np.zeros((1000, 2), np.float32)
    _refused(ValueError, ["T=1000", "N=200000", "2.3 GiB", "0.5 GiB available on the host"], lambda: dynamics.run(x, t))
    r = dynamics.run(x[:2000], t[:20], n_steps=2)  # a small problem asks nothing
    assert r.tokens.shape == (20, 2)


def test_run_with_bool_data_is_refused():
    x = np.random.default_rng(2).normal(size=(30, 2)) > 0
    _refused(TypeError, ["x must hold floating-point", "bool"], lambda: dynamics.run(x, x[:3].astype(np.float32)))
    _refused(TypeError, ["tokens must hold floating-point", "bool"], lambda: dynamics.run(x.astype(np.float32), x[:3]))


def test_run_with_zero_valid_points_is_refused():
    """An all-False host mask (and no rows at all) is refused, for run and kmeans alike; a traced
    all-False mask (an empty frame of a padded batch) keeps its documented meaning: tokens unmoved,
    every label -1."""
    x = np.random.default_rng(3).normal(size=(30, 2)).astype(np.float32)
    none = np.zeros(30, bool)
    _refused(
        ValueError,
        ["mask must select at least one valid point", "30 entries"],
        lambda: dynamics.run(x, x[:3], mask=none),
    )
    _refused(ValueError, ["mask must select at least one valid point"], lambda: dynamics.kmeans(x, x[:3], none))
    _refused(ValueError, ["x must hold at least one point", "(0, 2)"], lambda: dynamics.run(x[:0], x[:3]))
    r = dynamics.run(x, x[:3], mask=jnp.asarray(none))
    np.testing.assert_array_equal(np.asarray(r.tokens), x[:3])
    assert (np.asarray(r.labels) == -1).all()


# ------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_swallowed_inside_a_library_still_exits_130(tmp_path, monkeypatch, capsys):
    """A Ctrl-C whose KeyboardInterrupt a library catches on its way (as code run inside JAX may):
    the next unit of work stops, and the command exits 130 with the one line, never 0."""
    units = []

    def study(cfg, out, *, quiet, plots):
        try:
            io.on_interrupt()  # the handler the command installs, as a Ctrl-C calls it
        except BaseException:  # noqa: BLE001 -- what the library does
            pass
        for i in range(3):
            io.kept(os.path.join(out, f"unit{i}.npz"), "s", lambda: units.append(i) or {"v": 1})

    monkeypatch.setattr(token_dynamics, "main", study)
    code, err = hostile.run(["study", "token-dynamics", "--out", tmp_path / "a"], capsys)
    assert code == 130 and err.strip().splitlines()[-1] == cli.INTERRUPTED and "Traceback" not in err, err
    assert units == []  # nothing ran on after the Ctrl-C
    monkeypatch.setattr(token_dynamics, "main", lambda cfg, out, *, quiet, plots: None)
    code, err = hostile.run(["study", "token-dynamics", "--out", tmp_path / "b"], capsys)
    assert code == 0, err  # the next command in this process starts afresh


def test_ctrl_c_during_import_exits_130_with_one_line(tmp_path):
    """SIGINT while the command imports JAX: exit 130, the one line, no traceback."""
    script = textwrap.dedent(
        f"""
        import builtins, os, signal, sys
        real = builtins.__import__
        def hook(name, *a, **k):
            if name == "jax" and not getattr(hook, "sent", False):
                hook.sent = True
                os.kill(os.getpid(), signal.SIGINT)
            return real(name, *a, **k)
        builtins.__import__ = hook
        from tokdyn import cli
        sys.exit(cli.main(["study", "token-dynamics", "--out", {str(tmp_path / "out")!r}, "--no-cache"]))
        """
    )
    p = subprocess.run(
        [sys.executable, "-c", script], env=killing.env(tmp_path / "cache"), capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip() == cli.INTERRUPTED and "Traceback" not in p.stderr


def test_a_ctrl_c_python_cannot_raise_is_remembered_not_printed():
    """A Ctrl-C landing in a garbage-collector callback (JAX has one): Python cannot raise it there
    and would print "Exception ignored ... Traceback"; the command's hook keeps it quiet and
    remembered, so the run still ends with the one line. Other unraisable errors still print."""
    import gc

    reported = []
    hook = io.unraisable_hook(reported.append)

    def callback(phase, info):
        if phase == "start":
            io.on_interrupt()

    io.reset_interrupt()
    before = sys.unraisablehook
    sys.unraisablehook = hook
    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
        sys.unraisablehook = before
    try:
        assert io.interrupted() and reported == []  # remembered, not printed
        with pytest.raises(KeyboardInterrupt):
            io.check_interrupt()  # raised again at the next unit of work

        class Other:
            exc_value = ValueError("a finaliser's own error")

        hook(Other)
        assert reported == [Other]  # anything else goes to the previous hook
    finally:
        io.reset_interrupt()
    hook(type("Late", (), {"exc_value": KeyboardInterrupt()}))
    assert len(reported) == 2  # with no Ctrl-C seen, a KeyboardInterrupt is not hidden either


def test_ctrl_c_during_a_study_exits_130_with_one_line(tmp_path):
    """SIGINT to a running study (a child process, sent once the study has stamped its directory):
    exit 130, the one line last, no traceback; a rerun resumes and finishes."""
    out = tmp_path / "out"
    args = ["study", "token-dynamics", "--seeds", "3", "--noise", "0.3", "--n-clusters", "3,4", "--out", out]
    p = subprocess.Popen(
        [sys.executable, "-m", "tokdyn.cli", *map(str, args)],
        env=killing.env(tmp_path / "cache"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.time()
    while not (out / "study.json").exists() and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=300)[1]
    if p.returncode == 0:  # finished before the signal landed: nothing to judge
        pytest.skip("the study finished before SIGINT arrived")
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == cli.INTERRUPTED and "Traceback" not in err, err


# ------------------------------------------------------------------ reproduce


def test_reproduce_with_failing_sub_studies_prints_one_line_each(tmp_path, monkeypatch, capsys):
    """Two sub-studies that fail: one line each (study, error, its log), both attempted, exit 1 at
    the end, no traceback; the traceback is in the log, and on the terminal with --verbose."""
    calls = []

    def boom(cfg, out, *, quiet, plots):
        calls.append(out)
        raise RuntimeError("the study broke\nsecond line")

    monkeypatch.setattr(reproduce, "study_config", lambda name, quick, out: token_dynamics.Config(seeds=3))
    monkeypatch.setattr(token_dynamics, "main", boom)
    out = str(tmp_path / "repro")
    argv = ["reproduce", "--studies", "token-dynamics", "--out", out, "--quiet", "--no-plots"]
    code, err = hostile.run(argv, capsys)
    assert code == 1 and "Traceback" not in err, err
    log = reproduce.failure_log(out, "token-dynamics")
    line = [s for s in err.splitlines() if "token-dynamics failed" in s]
    assert len(line) == 1 and "RuntimeError: the study broke" in line[0] and log in line[0], err
    assert "second line" not in err and "failed (token-dynamics)" in err
    assert "Traceback" in open(log).read() and "the study broke" in open(log).read()
    code, err = hostile.run([*argv, "--verbose"], capsys)
    assert code == 1 and "Traceback" in err and "the study broke" in err
    assert len(calls) == 2
