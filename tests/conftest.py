import contextlib
import os
import sys

import jax

# Tests import the float64 NumPy reference as a plain module.
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "fast_compile: the test's time is XLA compiling many small programs once "
                            "each, not running them: compile with the backend's optimisation passes off")


@pytest.fixture(autouse=True, scope="module")
def _fast_compile(request):
    """Modules marked ``fast_compile`` (``pytestmark``) compile with ``jax_disable_most_optimizations``
    (the same programs, less tuned machine code; about a third less time for these modules). JAX's
    caches are cleared when such a module ends, so that no later test runs its executables: any
    other module, and every module under TOKDYN_TEST_OPTIMIZED=1, compiles as a user's code does."""
    if request.node.get_closest_marker("fast_compile") is None or os.environ.get("TOKDYN_TEST_OPTIMIZED") == "1":
        yield
        return
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
        jax.clear_caches()


def child_env(**extra) -> dict:
    """The environment of a child Python process that compiles as this test does."""
    return dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS=str(int(jax.config.values["jax_disable_most_optimizations"])),
                **extra)


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


@pytest.fixture(scope="session")
def tiny_reasoner(tmp_path_factory):
    """(latent-reasoning Config, directory) of a tiny study with the trained ``latent`` variant,
    shared by the studies that analyse trained reasoners (copy it before writing to it)."""
    from test_latent_train import TINY
    from tokdyn.studies import latent_reasoning as LR

    cfg = LR.Config(reference_steps=0, training=TINY, variants=("latent",))
    path = str(tmp_path_factory.mktemp("reasoner"))
    before = jax.config.values["jax_disable_most_optimizations"]
    if os.environ.get("TOKDYN_TEST_OPTIMIZED") != "1":  # compiled as the fast_compile modules do
        jax.config.update("jax_disable_most_optimizations", True)
    try:
        assert LR.main(cfg, path, quiet=True, plots=False)
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
        jax.clear_caches()
    return cfg, path
