"""The package's shape: every public module is an attribute of ``tokdyn`` (``tokdyn.reproduce``,
``tokdyn.models.savi``, ``tokdyn.studies.video``, ...), reached from a bare ``import tokdyn``, which
stays light (it imports neither JAX nor any submodule: the command line sets XLA flags first).

The modules are listed from the source tree by ``pkgutil.iter_modules`` (nothing imported), and
the attribute walk runs in a fresh interpreter, so that no import made by this test session (which
binds a submodule to its parent as a side effect) can stand in for the package's own ``__getattr__``.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import tokdyn
from conftest import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def public_modules(path: str = os.path.dirname(tokdyn.__file__), prefix: str = "tokdyn.") -> list[str]:
    """Every module and package under ``path`` whose dotted name has no part with a leading
    underscore, found in the source tree without importing anything."""
    out = []
    for info in sorted(pkgutil.iter_modules([path]), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        out.append(prefix + info.name)
        if info.ispkg:
            out += public_modules(os.path.join(path, info.name), f"{prefix}{info.name}.")
    return out


WALK = """
import json, sys
import tokdyn
light = sorted(m for m in ("jax", "numpy", "tokdyn.dynamics", "tokdyn.engine") if m in sys.modules)
out = {"loaded by import tokdyn": light, "unreachable": {}}
for name in json.loads(sys.argv[1]):
    obj = tokdyn
    try:
        for part in name.split(".")[1:]:
            obj = getattr(obj, part)
    except AttributeError as e:
        out["unreachable"][name] = str(e)
        continue
    if getattr(obj, "__name__", None) != name:
        out["unreachable"][name] = f"tokdyn.{name.split('.', 1)[1]} is {obj!r}, not the module"
print(json.dumps(out))
"""


def test_the_walk_finds_the_modules():
    names = public_modules()
    for name in (
        "tokdyn.dynamics",
        "tokdyn.dynamics.loop",
        "tokdyn.metrics.partition",
        "tokdyn.reproduce",
        "tokdyn.fused",
        "tokdyn.models.savi",
        "tokdyn.models.organism.training",
        "tokdyn.studies.video",
    ):
        assert name in names
    assert not [n for n in names if any(part.startswith("_") for part in n.split("."))]
    assert "tokdyn.dynamics._common" not in names and "tokdyn.cli" in names


def test_every_public_module_is_an_attribute_of_tokdyn():
    names = public_modules()
    proc = subprocess.run(
        [sys.executable, "-c", WALK, json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=child_env(PYTHONPATH=ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["unreachable"], "modules not reachable by attribute from tokdyn:\n" + "\n".join(
        f"  {k}: {v}" for k, v in out["unreachable"].items()
    )
    assert out["loaded by import tokdyn"] == [], f"import tokdyn loaded {out['loaded by import tokdyn']}"


def test_top_level_names_are_the_top_level_modules():
    """``tokdyn.__all__`` (what ``dir(tokdyn)`` and the API index list) names every top-level module."""
    top = {n.split(".")[1] for n in public_modules()}
    assert set(tokdyn.__all__) == top, (sorted(top - set(tokdyn.__all__)), sorted(set(tokdyn.__all__) - top))
