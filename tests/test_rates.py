"""tokdyn.experiment.rates: the probes measure positive, finite rates in their units; a study's
time here is its work over the measured speed (closed forms); small estimates never probe; rates
are kept per process and on disk, keyed by the machine; the message names the backend."""

import json
import math
import os
import time

import jax
import numpy as np
import pytest

from tokdyn.engine import execute, sweep
from tokdyn.experiment import rates as backend_rates
from tokdyn.experiment import study as study_dir

REF = backend_rates.REFERENCE_RATES


@pytest.fixture
def probing(monkeypatch, tmp_path):
    """Probes allowed (conftest turns them off), the disk cache in a temporary directory, fake
    probes that count their calls and measure twice the reference's dynamics rate, a quarter of
    its training rate and half its host rate."""
    monkeypatch.setenv(backend_rates.ENV, "disk")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setitem(backend_rates.PROBES, "dynamics", lambda s: calls.append("dynamics") or 2.0 * REF["dynamics"])
    monkeypatch.setitem(backend_rates.PROBES, "training", lambda s: calls.append("training") or 0.25 * REF["training"])
    monkeypatch.setitem(backend_rates.PROBES, "host", lambda s: calls.append("host") or 0.5 * REF["host"])
    backend_rates.forget()
    yield calls
    backend_rates.forget()


# ---------------------------------------------------------------------------------------------- the real probes


@pytest.mark.full
def test_the_probes_measure_positive_finite_rates_in_their_units(monkeypatch):
    """The real probes, the dynamics probe on a short call (one chunk of 18 runs, not the
    study-sized four of 128: its compile, not its runs, is what the check needs; a slip of units,
    runs a chunk or a call for runs a second, is still 18-fold)."""
    monkeypatch.setenv(backend_rates.ENV, "process")
    monkeypatch.setattr(backend_rates, "DYNAMICS_CHUNK", 18)
    monkeypatch.setattr(backend_rates, "DYNAMICS_CHUNKS", 1)
    t0 = time.perf_counter()
    r = backend_rates.measure(min_seconds=0.05)
    wall = time.perf_counter() - t0
    assert set(r.rates) == set(backend_rates.KINDS) and r.sources == {k: "measured" for k in backend_rates.KINDS}
    assert all(math.isfinite(v) and v > 0 for v in r.rates.values())
    assert 0 < r.probe_seconds <= wall and r.backend == jax.default_backend()
    # runs a second, on a clock that moves one second a sweep call (a real clock beside another process's
    # work moved the check by more than its margin): the probe's real sweep, its runs a call over its seconds
    chunk = backend_rates.DYNAMICS_CHUNK * jax.local_device_count()
    runs_a_call = 9 * max(1, backend_rates.DYNAMICS_CHUNKS * chunk // 9)  # 3 cluster counts x 3 noises x seeds

    class OneSecondASweep:
        now = 0.0

        def perf_counter(self):
            return self.now

    clock, real_run = OneSecondASweep(), sweep.run

    def timed_run(*args, **kwargs):
        out = real_run(*args, **kwargs)
        clock.now += 1.0
        return out

    monkeypatch.setattr(sweep, "run", timed_run)
    monkeypatch.setattr(backend_rates, "time", clock)
    assert backend_rates.probe_dynamics(min_seconds=0.05) == runs_a_call  # not a chunk's or a call's count
    assert 1e7 < r.rates["training"] < 1e12  # FLOP a second of 2 cores: a unit slip would be 1e3 off
    assert 0.01 < r.rates["host"] < 100  # compiles a second of a small program (about one a second)
    assert execute.default_batch_size() == 1  # (the CPU's sequential map, which the probe's chunk assumes)


def test_the_training_probes_flop_count_is_xlas():
    """training_flops, the probe's unit, against XLA's own count of the compiled step (forward,
    backward, Adam) of the same block."""
    import jax.numpy as jnp
    import optax

    B, L, W = 4, 32, 48
    p = {
        n: jnp.ones(s) * 0.01
        for n, s in dict(wq=(W, W), wk=(W, W), wv=(W, W), wo=(W, W), w1=(W, 4 * W), w2=(4 * W, W)).items()
    }
    x = jnp.ones((B, L, W))

    def loss(p, x):
        h = x - x.mean(-1, keepdims=True)
        a = jax.nn.softmax((h @ p["wq"]) @ jnp.swapaxes(h @ p["wk"], -1, -2), axis=-1)
        x = x + (a @ (h @ p["wv"])) @ p["wo"]
        return jnp.mean((x + jax.nn.gelu(x @ p["w1"]) @ p["w2"]) ** 2)

    opt = optax.adam(1e-3)

    def step(p, s, x):
        g = jax.grad(loss)(p, x)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    cost = jax.jit(step).lower(p, opt.init(p), x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    assert backend_rates.training_flops(B, L, W) == pytest.approx(cost["flops"], rel=0.1)


# ---------------------------------------------------------------------------------------------- time = work / speed


def test_time_here_is_the_work_over_the_speed():
    r = backend_rates.Rates(
        {"dynamics": 2.0 * REF["dynamics"], "training": 0.25 * REF["training"]},
        "cpu",
        "x",
        {"dynamics": "measured", "training": "measured", "host": "reference"},
    )
    assert r.speed("dynamics") == pytest.approx(2.0) and r.speed("training") == pytest.approx(0.25)
    assert r.speed("host") == 1.0  # not measured: the reference's
    assert r.seconds({"dynamics": 10.0, "training": 40.0, "host": 5.0}) == pytest.approx(10 / 2 + 40 / 0.25 + 5)
    n = 10.0 * REF["dynamics"]  # 10 s on the reference CPU is n runs: n / rate seconds here
    assert r.seconds({"dynamics": 10.0}) == pytest.approx(n / r.rates["dynamics"])
    est = study_dir.Estimate(models=3, work={"dynamics": 10.0, "host": 5.0})
    for factor in (0.5, 1.0, 4.0, 100.0):  # inversely with the rate (the host's part fixed)
        fast = backend_rates.Rates({"dynamics": factor * REF["dynamics"]}, "gpu", "x", {"dynamics": "measured"})
        assert study_dir.time_here(est, fast)[0] == pytest.approx(10.0 / factor + 5.0)
    with pytest.raises(ValueError, match="kind"):
        r.speed("sampling")


def test_durations_in_words():
    assert [study_dir.duration(x) for x in (0.4, 40, 89, 90, 720, 3599, 3600, 3 * 3600 + 1800)] == [
        "0 s",
        "40 s",
        "89 s",
        "2 min",
        "12 min",
        "60 min",
        "1.0 hours",
        "3.5 hours",
    ]


def test_an_estimate_splits_its_seconds_by_kind():
    est = study_dir.Estimate(work={"dynamics": 3.0, "training": np.float32(4.0), "host": 1})
    assert est.seconds == pytest.approx(8.0) and est.work == {"dynamics": 3.0, "training": 4.0, "host": 1.0}
    assert study_dir.Estimate(seconds=5.0).work == {} and study_dir.time_here(study_dir.Estimate(seconds=5.0))[0] == 5.0
    with pytest.raises(ValueError, match="kinds must be among dynamics, training, host, got \\['gpu'\\]"):
        study_dir.Estimate(work={"gpu": 1.0})
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        study_dir.Estimate(work={"dynamics": -1.0})
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        study_dir.Estimate(work={"dynamics": float("nan")})
    with pytest.raises(ValueError, match="not the sum of work"):
        study_dir.Estimate(seconds=9.0, work={"dynamics": 3.0})


# ---------------------------------------------------------------------------------------------- when it probes


def test_small_estimates_never_probe(probing, monkeypatch):
    def refuse(s):
        raise AssertionError("probed")

    for kind in backend_rates.KINDS:
        monkeypatch.setitem(backend_rates.PROBES, kind, refuse)
    small = study_dir.Estimate(
        work={
            "dynamics": 0.5 * backend_rates.PROBE_MIN_SECONDS,
            "training": 0.4 * backend_rates.PROBE_MIN_SECONDS,
            "host": 5.0,
        }
    )
    lines = []
    study_dir.check_resources("demo", small, note=lines.append, say_from=0.0)
    assert "not this cpu backend's" in lines[0] and "not measured for a run this short" in lines[0]
    assert study_dir.time_here(small)[0] == pytest.approx(small.seconds)  # the reference's rates
    from tokdyn.studies import object_discovery, token_dynamics, video

    for cfg in (token_dynamics.Config(), video.Config.quick(), object_discovery.Config.quick()):
        est = cfg.estimate()  # the tests' configurations: under the threshold, nothing measured
        assert est.seconds < backend_rates.PROBE_MIN_SECONDS and study_dir.time_here(est)[0] == pytest.approx(
            est.seconds
        )
    assert not os.path.exists(backend_rates.cache_file())


def test_a_long_estimate_probes_once_and_the_message_names_the_backend(probing):
    est = study_dir.Estimate(models=7, work={"dynamics": 2 * 3600.0, "training": 3600.0, "host": 60.0})
    lines = []
    study_dir.check_resources("demo", est, note=lines.append)
    assert probing == ["dynamics", "training", "host"]
    seconds = 2 * 3600.0 / 2.0 + 3600.0 / 0.25 + 60.0 / 0.5
    assert f"(7 models or runs) will take about {seconds / 3600:.1f} hours" in lines[0]
    assert f"at the rates measured on this cpu backend ({backend_rates.current([]).device}; " in lines[0]
    assert "dynamics 2x, training 0.25x, host 0.5x the reference CPU's; probed in" in lines[0]
    assert "2-core" not in lines[0]
    assert "finished work is kept, and the same command resumes it" in lines[0]
    study_dir.check_resources("demo", est, note=lines.append)  # once per process
    assert probing == ["dynamics", "training", "host"]
    only = study_dir.Estimate(work={"dynamics": 3 * 3600.0})  # a kind measured: the other is not needed
    assert study_dir.time_here(only)[0] == pytest.approx(3 * 3600.0 / 2.0)
    record = study_dir.time_record(est)
    assert record["seconds"] == pytest.approx(seconds) and record["reference_seconds"] == pytest.approx(3 * 3600 + 60)
    assert record["speeds"] == {"dynamics": pytest.approx(2.0), "training": pytest.approx(0.25), "host": 0.5}


def test_the_message_names_an_accelerator(probing, monkeypatch):
    class FakeGPU:
        platform, id, device_kind = "gpu", 0, "Fake H100"

        def memory_stats(self):
            return {"bytes_limit": 2**34, "bytes_in_use": 0}

    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [FakeGPU()])
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setitem(
        backend_rates.PROBES, "training", lambda s: probing.append("training") or 300.0 * REF["training"]
    )
    lines = []
    study_dir.check_resources(
        "demo",
        study_dir.Estimate(models=2, work={"training": 30 * 3600.0}),
        note=lines.append,
        say_from=study_dir.SAY_SECONDS,
    )
    assert lines == [
        "demo: this configuration (2 models or runs) will take about 6 min at the rates measured on "
        "this gpu backend (1 Fake H100; training 300x the reference CPU's; probed in " + lines[0].split("probed in ")[1]
    ]
    assert backend_rates.current(["training"], probe=False).backend == "gpu"


def test_quiet_says_only_what_is_long(probing):
    est = study_dir.Estimate(models=1, work={"host": 600.0})
    lines = []
    study_dir.check_resources("demo", est, note=lines.append)  # quiet: over an hour only
    assert lines == []
    study_dir.check_resources("demo", est, note=lines.append, say_from=study_dir.SAY_SECONDS)
    device = backend_rates.current([]).device
    assert lines == [
        f"demo: this configuration (1 models or runs) will take about 20 min at the rates measured "
        f"on this cpu backend ({device}; host 0.5x the reference CPU's; probed in 0.0 s)"
    ]
    assert probing == ["host"]


# ---------------------------------------------------------------------------------------------- where they are kept


def test_rates_are_kept_on_disk_per_machine_and_read_back(probing, monkeypatch):
    first = backend_rates.current(["dynamics"])
    assert probing == ["dynamics"] and first.sources == {"dynamics": "measured"}
    with open(backend_rates.cache_file()) as f:
        (entry,) = json.load(f).values()
    assert entry["rates"] == {"dynamics": 2.0 * REF["dynamics"]} and entry["identity"]["backend"] == "cpu"
    assert entry["identity"]["jax"] == jax.__version__ and entry["units"] == {"dynamics": "runs a second"}
    backend_rates.forget()  # a new process: read back, not measured
    again = backend_rates.current(["dynamics"])
    assert probing == ["dynamics"] and again.sources == {"dynamics": "cached"} and again.rates == first.rates
    assert "measured before, kept in" in again.words()
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_fast_math=false")
    backend_rates.forget()  # another machine's setup: measured again, kept beside the first
    backend_rates.current(["dynamics"])
    assert probing == ["dynamics", "dynamics"]
    with open(backend_rates.cache_file()) as f:
        entries = json.load(f)
    assert len(entries) == 2
    for e in entries.values():  # measured long ago: measured again
        e["measured_at"]["dynamics"] -= (backend_rates.MAX_AGE_DAYS + 1) * 86400
    with open(backend_rates.cache_file(), "w") as f:
        json.dump(entries, f)
    backend_rates.forget()
    backend_rates.current(["dynamics"])
    assert probing == ["dynamics"] * 3
    with open(backend_rates.cache_file(), "w") as f:
        f.write("{not json")
    backend_rates.forget()  # a damaged file: measured again, and written anew
    assert backend_rates.current(["dynamics"]).sources == {"dynamics": "measured"} and probing == ["dynamics"] * 4
    with open(backend_rates.cache_file()) as f:
        assert len(json.load(f)) == 1


def test_the_switch(probing, monkeypatch):
    monkeypatch.setenv(backend_rates.ENV, "process")  # measured once per process, nothing on disk
    assert backend_rates.current(["training"]).sources == {"training": "measured"}
    assert backend_rates.current(["training"]).sources == {"training": "measured"} and probing == ["training"]
    assert not os.path.exists(backend_rates.cache_file())
    monkeypatch.setenv(backend_rates.ENV, "off")  # never measured: the reference's rates, and the message says so
    off = backend_rates.current(["training"])
    assert off.sources == {"training": "reference"} and off.speed("training") == 1.0 and probing == ["training"]
    assert "TOKDYN_PROBE=off" in off.words()
    monkeypatch.setenv(backend_rates.ENV, "sometimes")
    with pytest.raises(ValueError, match="TOKDYN_PROBE must be one of disk, process, off, got 'sometimes'"):
        backend_rates.current(["training"])
    monkeypatch.setenv(backend_rates.ENV, "process")
    with pytest.raises(ValueError, match="kinds must be among"):
        backend_rates.current(["sampling"])
    monkeypatch.setitem(backend_rates.PROBES, "dynamics", lambda s: float("nan"))
    with pytest.raises(RuntimeError, match="dynamics probe measured nan"):
        backend_rates.measure(["dynamics"])


def test_a_failed_probe_never_stops_a_run(probing, monkeypatch):
    def broken(s):
        probing.append("broken")
        raise MemoryError("out of device memory")

    monkeypatch.setitem(backend_rates.PROBES, "dynamics", broken)
    est = study_dir.Estimate(models=1, work={"dynamics": 2 * 3600.0, "training": 3600.0})
    lines = []
    with pytest.warns(RuntimeWarning, match="probe of dynamics failed \\(MemoryError: out of device memory\\)"):
        study_dir.check_resources("demo", est, note=lines.append)
    assert "training 0.25x the reference CPU's" in lines[0] and "dynamics at the reference CPU's rates" in lines[0]
    assert study_dir.time_here(est)[0] == pytest.approx(2 * 3600.0 + 3600.0 / 0.25)  # training measured, dynamics not
    assert probing == ["broken", "training"]  # the failed probe is not tried again in this process
    assert backend_rates.current(["dynamics"]).sources == {"dynamics": "failed"} and probing == ["broken", "training"]
    assert "its probe failed" in backend_rates.current(["dynamics"]).words()
