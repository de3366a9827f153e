import contextlib
import os
import sys

import jax

# Tests import the float64 NumPy reference as a plain module.
sys.path.insert(0, os.path.dirname(__file__))

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
