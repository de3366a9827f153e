import contextlib
import importlib.metadata
import os
import sys

# No test waits for the time estimates' probes (tokdyn.experiment.rates): estimates are timed at the
# reference CPU's rates, and nothing is written to the user's cache. tests/test_rates.py measures.
os.environ["TOKDYN_PROBE"] = "off"

# XLA:CPU's fusion emitters compile this suite's small programs in about twice the time of its
# elemental emitters (the backend compile of the latent-reasoner tests: 163 s -> 83 s), and the
# suite compiles far more than it runs. Nor does the suite's compile gain from XLA:CPU splitting a
# program's code generation into parallel parts: each test process is one of pytest-xdist's workers,
# one a core, and the parts cost their own overhead (six test modules on one core: backend compile
# 68 s -> 54 s, their CPU time 113 s -> 99 s, three runs each). Set before JAX starts its backend;
# TOKDYN_TEST_OPTIMIZED=1, or a choice of the user's in XLA_FLAGS, keeps XLA's default.
# The choice is made once (tests that import this module, and pytest-xdist's workers, read it back).
# XLA knows the flag from jaxlib 0.5.3 on; an older XLA ends the process on a flag it does not know.
_SUITE_XLA_FLAGS = os.environ.get("TOKDYN_TEST_XLA_FLAGS")
if _SUITE_XLA_FLAGS is None:
    _SUITE_XLA_FLAGS = ""
    _jaxlib = tuple(int(p) if p.isdigit() else 0 for p in importlib.metadata.version("jaxlib").split(".")[:3])
    if (
        os.environ.get("TOKDYN_TEST_OPTIMIZED") != "1"
        and "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", "")
        and _jaxlib >= (0, 5, 3)
    ):
        _SUITE_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_SUITE_XLA_FLAGS}".strip()
    os.environ["TOKDYN_TEST_XLA_FLAGS"] = _SUITE_XLA_FLAGS

import jax  # noqa: E402

# Tests import the float64 NumPy reference as a plain module.
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


# Every test compiles with most of XLA's optimisations off (``jax_disable_most_optimizations``):
# the suite compiles far more programs than it runs, and at -O0 they compile in about two thirds of
# the time. It is also a second compiler setting beside the users' default, under which no test may
# hold a program to another's last bits (the rule for other CPUs). TOKDYN_TEST_OPTIMIZED=1 compiles
# with JAX's and XLA's defaults, as a user's code does. Set in the environment too, so that
# pytest-xdist's workers and every child process compile alike.
OPTIMIZED = os.environ.get("TOKDYN_TEST_OPTIMIZED") == "1"
if not OPTIMIZED:
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    jax.config.update("jax_disable_most_optimizations", True)

# Every test runs under the matrix-product precision the ``tokdyn`` command runs its studies under
# (``--matmul-precision``'s default, "highest": full float32, which is what XLA:CPU computes
# anyway). The precision is part of JAX's compilation key, so a study a test runs by its ``main``
# and the same study run by the command in that process share their compiled programs. Tests of the
# precision's handling set it (or unset it) themselves.
MATMUL_PRECISION = "highest"
jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION)


def pytest_configure(config):
    _session_compilation_cache(config)
    if os.environ.get(_CPU_LOG_ENV):
        config.pluginmanager.register(_CpuTimes(os.environ[_CPU_LOG_ENV]), "tokdyn_cpu_times")


_CPU_LOG_ENV = "TOKDYN_TEST_CPU_LOG"  # a directory: each process writes the CPU time of its tests there


class _CpuTimes:
    """Where ``TOKDYN_TEST_CPU_LOG`` names a directory, each test process (pytest-xdist's workers,
    or the one process of ``-n 0``) writes ``<worker>.tsv`` there, a line per test from its setup
    (the module fixtures it is the first to use) to its teardown: the seconds of CPU its process
    spent (all its threads, ``time.process_time``), of CPU of the child processes it waited for, of
    wall time, and of JAX's tracing, lowering and backend compiles (wall time, as JAX reports
    them), and the counts of backend compiles and of those the persistent cache answered. A busy
    machine stretches the wall times, hardly the CPU times: the sums of the CPU columns compare two
    runs of the suite on a shared machine. A last line, ``(process)``, holds
    the CPU of the whole process (its start and the collection included)."""

    EVENTS = {
        "/jax/core/compile/jaxpr_trace_duration": 0,
        "/jax/core/compile/jaxpr_to_mlir_module_duration": 1,
        "/jax/core/compile/backend_compile_duration": 2,
    }

    def __init__(self, directory):
        self.directory = directory
        self.rows = []
        self.jax = [0.0, 0.0, 0.0, 0, 0]
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        jax.monitoring.register_event_listener(self._count)

    def _listen(self, name, duration, **kwargs):
        if name in self.EVENTS:
            self.jax[self.EVENTS[name]] += duration
            self.jax[3] += name == "/jax/core/compile/backend_compile_duration"

    def _count(self, name, **kwargs):
        self.jax[4] += name == "/jax/compilation_cache/cache_hits"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        import time

        cpu, children, wall = time.process_time(), os.times(), time.perf_counter()
        before = list(self.jax)
        yield
        after = os.times()
        self.rows.append(
            (
                item.nodeid,
                time.process_time() - cpu,
                after.children_user + after.children_system - children.children_user - children.children_system,
                time.perf_counter() - wall,
                *(a - b for a, b in zip(self.jax, before)),
            )
        )

    def pytest_unconfigure(self, config):
        if not self.rows:
            return
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, f"{worker}.tsv"), "w") as f:
            f.write("test\tcpu_s\tchildren_cpu_s\twall_s\ttrace_s\tlower_s\tcompile_s\tcompiles\tcache_hits\n")
            f.writelines(
                "\t".join([row[0], *(f"{v:.3f}" for v in row[1:7]), *map(str, row[7:])]) + "\n" for row in self.rows
            )
            t = os.times()  # the whole process: its start, the collection and the tests
            f.write(f"(process)\t{t.user + t.system:.3f}\t{t.children_user + t.children_system:.3f}\t\t\t\t\t\t\n")


def pytest_collection_modifyitems(config, items):
    """A test is in one tier: ``-m full`` (CI's second run) must not pick up a ``slow`` check that
    only a person runs by hand, so a test marked both is refused when the suite is collected."""
    both = [item.nodeid for item in items if item.get_closest_marker("slow") and item.get_closest_marker("full")]
    if both:
        raise pytest.UsageError(f"tests marked both slow and full (mark a test with one tier): {', '.join(both)}")


_CACHE_ENV = "TOKDYN_TEST_COMPILATION_CACHE"  # the session cache's path, for the workers


def _session_compilation_cache(config):
    """A persistent compilation cache for this test session only, in a new temporary directory
    removed at its end, shared by pytest-xdist's workers (they inherit its path from the controller's
    environment): a program that several modules compile (the same model trained by a unit test and
    by a study, in one worker or in another) is compiled once. Its key holds the compiler options,
    so an executable compiled without optimisations is never loaded where optimisations are on. A
    cache directory set by the user is left as it is."""
    if jax.config.values["jax_compilation_cache_dir"]:
        return
    path = os.environ.get(_CACHE_ENV)
    if path is None:  # the controller, or a run without workers: make it, remove it at the end
        import shutil
        import tempfile

        path = tempfile.mkdtemp(prefix="tokdyn_test_xla_")
        os.environ[_CACHE_ENV] = path
        config.add_cleanup(lambda: shutil.rmtree(path, ignore_errors=True))
    jax.config.update("jax_compilation_cache_dir", path)
    # programs compiled without optimisations take well under JAX's default of 1 s
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@pytest.fixture(autouse=True, scope="module")
def _module_caches():
    """JAX's in-memory caches are cleared when a module ends: a worker keeps only the executables of
    the module it runs (a program that a later module compiles again comes from the session's
    persistent cache)."""
    yield
    jax.clear_caches()


def compilation_cache_dir() -> str:
    """The session's persistent compilation cache (for child processes that compile what this one did)."""
    return jax.config.values["jax_compilation_cache_dir"]


EPS32 = 2.0**-23  # float32's machine epsilon (the spacing of float32 numbers in [1, 2))
ATOL32 = 1e-6  # about 8 float32 rounding units (8.4 * EPS32) at magnitude 1


def scale_of(*operands) -> float:
    """The magnitude a float32 result inherits its rounding from: the largest absolute value among
    the arrays (or numbers) it was computed from, and at least 1 (a tolerance is never tighter than
    ``ATOL32``). NaN and infinities are left out (equal_nan and exact infinities are checked apart)."""
    import numpy as np

    biggest = 1.0
    for a in operands:
        a = np.abs(np.asarray(a, np.float64))
        a = a[np.isfinite(a)]
        if a.size:
            biggest = max(biggest, float(a.max()))
    return biggest


def f32_atol(*operands, ulps: float = 8.4) -> float:
    """The absolute tolerance of a float32 quantity computed from ``operands`` by two different
    programs (or compiled two ways): ``ulps`` rounding units at the operands' magnitude,
    ``ulps * EPS32 * scale_of(*operands)``. A difference of two rounded numbers (a displacement, a
    step) carries the rounding of the numbers it is taken from, not of its own size: pass those."""
    return ulps * EPS32 * scale_of(*operands)


def assert_same_floats(actual, desired, err_msg="", *, operands=(), ulps: float = 8.4):
    """Equal up to float32 rounding, under every compiler setting and CPU: for the same quantity
    computed by two different programs, or by two computations inside one program, which XLA may
    fuse differently (a multiply-add fused in one and not in the other), and whose rounding also
    depends on the CPU's instruction set. The tolerance scales with the magnitudes involved:
    rtol = 1e-6 and atol = ``f32_atol(desired, *operands)`` (8.4 rounding units at the largest of
    the compared values and of ``operands``, the numbers the compared quantity was computed from:
    pass them for a difference such as a displacement, whose rounding is theirs). Never
    bit-identity: that is asserted only between runs of the same program (chunk sizes, device
    counts, batch orders, resumes)."""
    import numpy as np

    atol = f32_atol(desired, *operands, ulps=ulps)
    np.testing.assert_allclose(actual, desired, rtol=1e-6, atol=atol, err_msg=err_msg)


def child_env(**extra) -> dict:
    """The environment of a child Python process that compiles as this test does (``XLA_FLAGS``
    given here are added to the suite's own)."""
    env = dict(
        os.environ,
        JAX_DISABLE_MOST_OPTIMIZATIONS=str(int(jax.config.values["jax_disable_most_optimizations"])),
        **extra,
    )
    if "XLA_FLAGS" in extra:
        env["XLA_FLAGS"] = f"{_SUITE_XLA_FLAGS} {extra['XLA_FLAGS']}".strip()
    return env


_HOST_READS = (
    jax.errors.ConcretizationTypeError,  # float(x), int(x), x.item(), a Python if on x
    jax.errors.TracerArrayConversionError,  # np.asarray(x)
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def without_host_reads(fn, *args, **kwargs):
    """Call ``fn(*args, **kwargs)`` with every JAX array among the arguments (at any depth of a
    pytree) replaced by an abstract value of its shape and dtype (``jax.eval_shape``), the other
    arguments (Python numbers, static configurations) as given: the check in front of a kernel and
    the kernel itself see shapes and dtypes only, and a read of a value on the host (``np.asarray``,
    ``float``, ``.item()``, a Python ``if``) fails the test naming ``fn``. Returns the outputs'
    ``jax.ShapeDtypeStruct``.

    This holds on every backend, where ``jax.transfer_guard_device_to_host("disallow")`` never fires
    on the CPU (a CPU array is read without a transfer). What it cannot see is the eager dispatch's
    own branches for device arrays (the host form and the padding of ``_checks.checked_jit``), which
    ``_checks.on_host`` decides and ``tests/test_buckets.py`` checks."""
    leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
    where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.Array)]

    def call(*arrays):
        filled = list(leaves)
        for i, a in zip(where, arrays):
            filled[i] = a
        a, k = jax.tree_util.tree_unflatten(tree, filled)
        return fn(*a, **k)

    abstract = [jax.ShapeDtypeStruct(leaves[i].shape, leaves[i].dtype) for i in where]
    try:
        return jax.eval_shape(call, *abstract)
    except _HOST_READS as e:
        name = getattr(fn, "__qualname__", repr(fn))
        pytest.fail(f"{name} read an array's value on the host: {type(e).__name__}: {str(e).splitlines()[0]}")


_TRACE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")


@contextlib.contextmanager
def jax_compilations():
    """Collect the names of JAX's trace and compile events inside the block (a list, filled as
    they happen): an empty list proves that nothing was traced or compiled."""
    events = []

    def listener(name, duration, **kwargs):
        if name in _TRACE_EVENTS:
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def deterministic_and_key_dependent(draw, key, other_key, reference: dict) -> None:
    """``draw(key)`` (a generator's output as a dict of host arrays) is ``reference`` again,
    exactly (the same program run twice), and ``draw(other_key)`` has other ``masks``."""
    import numpy as np

    again = draw(key)
    for name in reference:
        np.testing.assert_array_equal(again[name], reference[name])
    assert not np.array_equal(draw(other_key)["masks"], reference["masks"])


def segmented_in_chunks(segment, key, params, cfg, images, width: int, *, rtol: float, atol: float):
    """A slot model's ``segment(key, params, cfg, images, chunk=c)`` of n images in chunks of 2 and
    of n: (n, size, size) int32 labels in [0, cfg.slots) and (n, cfg.slots, ``width``) slot states.
    The two chunk sizes are vmaps of two widths (two programs): a pixel on a last-bit tie between
    two slots may go either way (the labels agree on 99% of the pixels), the states agree to
    ``rtol``/``atol``. Returns the labels and states of chunks of 2, as host arrays."""
    import numpy as np

    n = len(images)
    labels2, states2 = segment(key, params, cfg, images, chunk=2)
    labels_n, states_n = segment(key, params, cfg, images, chunk=n)
    assert labels2.shape == (n, cfg.size, cfg.size) and labels2.dtype == np.int32
    assert states2.shape == (n, cfg.slots, width)
    lab = np.asarray(labels2)
    assert lab.min() >= 0 and lab.max() < cfg.slots
    assert np.mean(lab == np.asarray(labels_n)) >= 0.99
    np.testing.assert_allclose(np.asarray(states2), np.asarray(states_n), rtol=rtol, atol=atol)
    return lab, np.asarray(states2)


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (the default options): one worker per core, at most 4 (each worker holds its own
    JAX runtime and compiled programs; the suite's longest module bounds the gain beyond that)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))
