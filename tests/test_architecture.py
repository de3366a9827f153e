"""The architecture as ARCHITECTURE.md draws it. Every ``import`` and ``from ... import`` of every module of
tokdyn (at its top or inside a function: a deferred import is still a dependency), read from the source, gives
an arrow to the tokdyn module it names; no arrow runs up the layers and the graph has no circle (Tarjan's
strongly connected components, each of one module), the walk checked on a hand-made package too. The
generated module inventory (docs/modules.md) is current, and ARCHITECTURE.md stays a page a maintainer reads
in ten minutes."""

from __future__ import annotations

import ast
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ARCHITECTURE.md's layers, bottom (0) to top; a module takes the rank of its longest matching prefix
LAYERS = {
    "tokdyn._checks": 0,
    "tokdyn._deprecations": 0,
    "tokdyn.checks": 0,
    "tokdyn.extras": 0,
    "tokdyn.io": 1,
    "tokdyn.datasets": 1,
    "tokdyn.engine.execute": 1,
    "tokdyn.stats.inference": 1,
    "tokdyn.stats.figures": 1,
    "tokdyn.stats.text": 1,
    "tokdyn.data": 2,
    "tokdyn.dynamics": 2,
    "tokdyn.refinement": 2,
    "tokdyn.fused": 2,
    "tokdyn.tracking": 2,
    "tokdyn.metrics": 2,
    "tokdyn.diffusion": 2,
    "tokdyn.es": 2,
    "tokdyn.assignment": 2,
    "tokdyn.geometry": 2,
    "tokdyn.probes": 2,
    "tokdyn.analysis": 2,
    "tokdyn.engine": 3,
    "tokdyn.stats": 3,
    "tokdyn.train": 4,
    "tokdyn.models": 5,
    "tokdyn.diagnostics": 6,
    "tokdyn.experiment": 7,
    "tokdyn.studies": 8,
    "tokdyn.reproduce": 9,
    "tokdyn.cli": 9,
}
IMPORT_NOTHING = ("tokdyn.datasets", "tokdyn.engine.execute", "tokdyn.extras")  # import nothing of tokdyn's
KERNELS = 2  # the kernel layer's rank: its families are LAYERS' entries of that rank


def modules(root: str, package: str) -> dict:
    """``{module name: (path, is a package)}`` of every ``.py`` file under ``root/package``."""
    out = {}
    for folder, _, files in os.walk(os.path.join(root, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                is_package = dotted.endswith(".__init__")
                out[dotted[: -len(".__init__")] if is_package else dotted] = (path, is_package)
    return out


def _known(name: str, mods: dict):
    """``name`` or its nearest enclosing module among ``mods`` (None outside them)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports(mods: dict) -> dict:
    """``{module: set of modules it imports}``: ``import a.b`` and ``from a import b`` (``a.b``
    when it is a module, else ``a``), relative imports resolved, anywhere in the module."""
    graph = {m: set() for m in mods}
    for m, (path, is_package) in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = m if is_package else m.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        here = here.rpartition(".")[0]
                    base = f"{here}.{base}" if base else here
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                k = _known(t, mods)
                if k is not None and k != m:
                    graph[m].add(k)
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (each an import circle)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def rank(name: str):
    keys = [k for k in LAYERS if name == k or name.startswith(k + ".")]
    return LAYERS[max(keys, key=len)] if keys else None


def test_the_walk_finds_a_circle_deferred_or_relative(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from pkg.c import g  # deferred\n",
        "c.py": "from . import a\ndef g(): pass\n",
        "sub/__init__.py": "from .x import y\n",
        "sub/x.py": "import pkg.d\ny = 1\n",
        "d.py": "import os\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = imports(modules(str(tmp_path), "pkg"))
    assert graph["pkg.sub"] == {"pkg.sub.x"} and graph["pkg.sub.x"] == {"pkg.d"}
    assert cycles(graph) == [frozenset({"pkg.a", "pkg.b", "pkg.c"})]


@pytest.fixture(scope="module")
def graph():
    return imports(modules(ROOT, "tokdyn"))


def test_every_module_has_a_layer(graph):
    assert not [m for m in graph if m != "tokdyn" and rank(m) is None]


def test_no_import_runs_up_the_layers(graph):
    up = sorted(
        (m, t)
        for m, targets in graph.items()
        for t in targets
        if "tokdyn" not in (m, t) and rank(t) > rank(m)  # the top package re-exports all: above every layer
    )
    assert not up, "imports that run up the layers (ARCHITECTURE.md): " + ", ".join(f"{m} -> {t}" for m, t in up)
    for m, targets in graph.items():
        if m.startswith(IMPORT_NOTHING):
            outside = [t for t in targets if not t.startswith(IMPORT_NOTHING)]
            assert not outside, f"{m} imports {outside}: it imports nothing of tokdyn's"


def test_tokdyn_has_no_import_circle(graph):
    assert not cycles(graph), f"import circles: {[sorted(c) for c in cycles(graph)]}"
    # the dynamics loop and its rules: the loop imports the rule, never the other way round
    assert "tokdyn.dynamics.loop" not in graph["tokdyn.dynamics.rule"]
    assert "tokdyn.dynamics.rule" in graph["tokdyn.dynamics.loop"]


def test_the_module_inventory_is_generated_from_the_docstrings():
    sys.path.insert(0, os.path.join(ROOT, "docs"))
    try:
        import inventory
    finally:
        sys.path.remove(os.path.join(ROOT, "docs"))
    with open(os.path.join(ROOT, "docs", "modules.md"), encoding="utf-8") as f:
        committed = f.read()
    assert committed == inventory.page(), "docs/modules.md is stale: run python docs/inventory.py --write"


def test_architecture_is_one_page():
    with open(os.path.join(ROOT, "ARCHITECTURE.md"), encoding="utf-8") as f:
        text = f.read()
    assert len(text.encode()) <= 24_000
    assert max(len(line) for line in text.splitlines()) <= 200


def test_ci_runs_every_kernel_family_with_optimisations_on():
    """``.ci/run`` runs a list of test files with XLA's optimisations on (``TOKDYN_TEST_OPTIMIZED=1``, as users
    compile; the default suite compiles with most of them off), and every family of the kernel layer is
    imported by one of them: a new family needs a test file there."""
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    listed = re.search(r"^optimised=\(([^)]*)\)", ci, re.M)
    assert listed, ".ci/run names no optimised=(...) test files"
    assert re.search(r'^TOKDYN_TEST_OPTIMIZED=1 python -m pytest .*"\$\{optimised\[@\]\}"$', ci, re.M)
    imported = set()
    for rel in listed.group(1).split():
        path = os.path.join(ROOT, rel)
        assert os.path.isfile(path), f".ci/run's optimised list names {rel}, which is not a file"
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    from tokdyn._deprecations import TABLE  # a deprecated module (tokdyn.fused) re-exports another's kernels

    families = [name for name, layer in LAYERS.items() if layer == KERNELS and name not in TABLE]
    missing = [f for f in families if not any(i == f or i.startswith(f + ".") for i in imported)]
    assert not missing, f"no test file of .ci/run's optimised list imports {missing}"
