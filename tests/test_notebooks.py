"""The notebooks run top to bottom against the current package (executed with nbclient in a
scratch copy; the saved outputs are refreshed with ``python tests/test_notebooks.py --update``)."""

import os
import sys

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
