"""``import tokdyn`` and the modules the README's first example imports (``data``, ``dynamics``,
``metrics``) with the engine that runs every sweep load no heavy package beyond JAX: no plotting,
statistics, terminal, network or model library (matplotlib, SciPy, rich, Flax, optax, ...), which
load where they are used. ``benchmarks/bench_import.py`` times the same imports; this checks, in a
fresh interpreter, what they load (a time would depend on the machine's load)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import child_env

HEAVY = ("matplotlib", "scipy", "rich", "flax", "optax", "chex", "pandas", "sklearn", "orbax", "PIL", "tensorboardX")
CHILD = f"""
import json, sys
import jax
before = set(sys.modules)
import tokdyn
from tokdyn import data, dynamics, metrics
import tokdyn.engine.execute, tokdyn.engine.sweep, tokdyn.engine.runs
print(json.dumps(sorted({{m.split(".")[0] for m in set(sys.modules) - before}} & set({HEAVY!r}))))
"""


def test_the_first_example_s_modules_and_the_engine_load_no_heavy_package():
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=child_env(), capture_output=True, text=True, timeout=300, check=True
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing the core loaded {loaded}: import them where they are used"
