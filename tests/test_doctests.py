"""The Examples sections of the public modules' docstrings run as doctests (in their module's
namespace, as :mod:`doctest` runs them), so an example that no longer holds fails here, not in a
reader's hands. Examples print rounded values, shapes or integer
results, never last bits."""

import doctest
import importlib
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "_ext"))
import tokdyn_api  # noqa: E402  (docs/_ext: the public modules, as the API reference walks them)
from test_notebooks import missing_names  # noqa: E402

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _with_examples() -> list[str]:
    """The public modules whose docstrings hold an example, found from their source (nothing is
    imported to find them)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, "tokdyn")):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(("_", ".")))
        for name in sorted(filenames):
            if not name.endswith(".py") or (name.startswith("_") and name != "__init__.py"):
                continue
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                if ">>> " not in f.read():
                    continue
            rel = os.path.relpath(os.path.join(dirpath, name), root)[: -len(".py")].split(os.sep)
            out.append(".".join(rel[:-1] if rel[-1] == "__init__" else rel))
    return out


MODULES = _with_examples()


def test_the_examples_are_found_in_public_modules():
    assert {"tokdyn.checks", "tokdyn.assignment", "tokdyn.geometry", "tokdyn.stats.inference.paired"} <= set(MODULES)
    public = set(tokdyn_api.modules())
    assert set(MODULES) <= public, set(MODULES) - public


def _doctests(name: str) -> list:
    """The doctests of the module ``name`` that hold an example (``AssertionError`` when none does)."""
    tests = [t for t in doctest.DocTestFinder().find(importlib.import_module(name)) if t.examples]
    assert tests, f"{name} has '>>> ' in its source but no example doctest finds"
    return tests


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_parse_and_their_names_exist(name):
    """The default run's check of each module's examples (running them is ``full``): every example
    parses, and every name it takes from a module (the module's own globals, or one it imports)
    exists, as the notebooks' check has it."""
    for t in _doctests(name):
        assert missing_names([e.source for e in t.examples], t.globs) == [], t.name


def test_the_names_check_reads_the_modules_namespace():
    """The check above can fail: a name a module's example takes from a module it imported."""
    from tokdyn import dynamics

    assert missing_names(["dynamics.run\ndynamics.no_such_run(1)"], {"dynamics": dynamics}) == ["dynamics.no_such_run"]


@pytest.mark.full
@pytest.mark.parametrize("name", MODULES)
def test_the_examples_run(name):
    tests = _doctests(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (printed above)"
