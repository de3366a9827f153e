"""The notebooks against the current package: in the default run, every code cell parses and
every name the notebook takes from an imported module (``tokdyn.dynamics.run``,
``from tokdyn.models import savi``, ``savi.trainer``) exists, in about a second each; under
``slow``, each runs top to bottom (executed with nbclient in a scratch copy, 25-35 s each on a
2-core machine; the saved outputs are refreshed with ``python tests/test_notebooks.py --update``)."""

import ast
import importlib
import os
import sys
import types

import pytest

NOTEBOOKS = sorted(
    os.path.join(os.path.dirname(__file__), "..", "notebooks", f)
    for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "notebooks"))
    if f.endswith(".ipynb")
)


def execute(path: str):
    """The notebook at ``path`` executed top to bottom (a new object; the file is not touched)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["MPLBACKEND"] = "Agg"  # the kernel inherits it: figures without a display
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}}
    ).execute()
    return nb


def code_cells(path: str) -> list:
    """The source of each code cell of the notebook at ``path``, IPython's magics and shell lines
    (``%matplotlib inline``, ``!pip``) left out."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return [
        "\n".join(line for line in c.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for c in nb.cells
        if c.cell_type == "code"
    ]


def module_names(tree: ast.AST) -> dict:
    """Run the imports of ``tree`` (a parsed cell) and return the names they bind to modules."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                importlib.import_module(a.name)
                bound[a.asname or a.name.split(".")[0]] = sys.modules[a.name if a.asname else a.name.split(".")[0]]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.import_module(node.module)
            for a in node.names:
                if not hasattr(base, a.name):  # a submodule not imported by its package
                    importlib.import_module(f"{node.module}.{a.name}")
                value = getattr(base, a.name)  # AttributeError: the name is gone from the package
                if isinstance(value, types.ModuleType):
                    bound[a.asname or a.name] = value
    return bound


def missing_names(cells: list, namespace: dict | None = None) -> list:
    """Every ``module.name`` chain of ``cells`` (rooted at a name an import bound to a module, or a
    module of ``namespace``: the globals the cells run in) that does not resolve:
    ``tokdyn.dynamics.runn`` after ``import tokdyn``. The chain is followed while it names modules;
    the first name looked up on something else (a class, a dict) is checked too."""
    trees = [ast.parse(c) for c in cells]  # SyntaxError: a cell that no longer parses
    bound = {k: v for k, v in (namespace or {}).items() if isinstance(v, types.ModuleType)}
    for tree in trees:
        bound.update(module_names(tree))
    missing = []
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            chain, root = [], node
            while isinstance(root, ast.Attribute):
                chain.append(root.attr)
                root = root.value
            if not isinstance(root, ast.Name) or root.id not in bound:
                continue
            obj, path = bound[root.id], root.id
            for attr in reversed(chain):
                if not isinstance(obj, types.ModuleType):
                    break
                path += "." + attr
                if not hasattr(obj, attr):
                    try:  # a submodule the notebook reaches by its package (tokdyn.data.scenes)
                        importlib.import_module(f"{obj.__name__}.{attr}")
                    except ImportError:
                        missing.append(path)
                        break
                obj = getattr(obj, attr)
    return sorted(set(missing))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_parses_and_its_names_exist(path):
    """The default run's check of each notebook (its full execution is ``slow``): every code cell
    parses, every import resolves and every module attribute it uses exists."""
    pytest.importorskip("nbformat")
    cells = code_cells(path)
    assert cells
    assert missing_names(cells) == []


def test_the_names_check_finds_a_renamed_function():
    """The check above can fail: a name a notebook would take from a module that lacks it."""
    cells = ["import tokdyn\nfrom tokdyn import dynamics", "dynamics.run\ntokdyn.dynamics.no_such_run(1)"]
    assert missing_names(cells) == ["tokdyn.dynamics.no_such_run"]
    with pytest.raises(ImportError):
        missing_names(["from tokdyn import no_such_module"])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_top_to_bottom(path):
    pytest.importorskip("nbclient")
    nb = execute(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    import nbformat

    for path in NOTEBOOKS:
        nbformat.write(execute(path), path)
        print("executed and saved", path)
