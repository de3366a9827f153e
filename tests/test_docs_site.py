"""The documentation as a reader gets it: the docs extra alone builds it, its figures show every
series, and its site shows numbers, code and the landing page's first steps whole.

Fast checks of the sources (no Sphinx build): the docs extra holds every package the build imports
(the cross-references it resolves by importing them, the modules autodoc imports, the Sphinx
extensions and theme); :func:`tokdyn.stats.figures.line_plot` draws identical series so that both
show; the landing page has the install command and a first example (run by
tests/test_docs.py); the stylesheet and the table extension keep numbers on one line; CI builds the
docs from an environment with the docs extra alone.
"""

from __future__ import annotations

import ast
import functools
import glob
import importlib.metadata
import importlib.util
import os
import re
import sys

import numpy as np
import pytest

import included

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
MARK = "<!-- tests/test_docs.py runs this block -->"
README_DOCS = 'pip install -e ".[docs]" && sphinx-build -W --keep-going -n -b html docs docs/_build/html'
README_TEST = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && python -m pytest'

# import name -> distribution, for packages whose names differ (used when the package is not installed)
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow", "skimage": "scikit-image"}


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


@functools.cache
def _installed() -> dict:
    return importlib.metadata.packages_distributions()  # slow (every installed file): asked only when needed


def _distribution(top: str, provided: frozenset = frozenset()) -> str:
    """The distribution that provides the top-level import name ``top``."""
    if top in DISTRIBUTIONS:
        return DISTRIBUTIONS[top]
    if _norm(top) in provided:
        return _norm(top)
    installed = _installed().get(top)
    return _norm(installed[0]) if installed else _norm(top)


def _local_names(path: str) -> set[str]:
    """The names a module defines or imports at its top level (a reference may start with one)."""
    out = set()
    for node in ast.walk(ast.parse(_read(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
    return out


# --------------------------------------------------------------------------- the docs extra

_ROLE = re.compile(
    r"(?::(?:py:)?|\{(?:py:)?)(?:func|class|mod|data|meth|attr|exc|obj|const)(?::|\})`"
    r"(?:[^`<]*<)?~?\.?([A-Za-z_][\w.]*)>?`"
)


def _sources() -> list[str]:
    """Every file whose text becomes a page: tokdyn's modules (docstrings) and docs/'s pages."""
    out = sorted(glob.glob(os.path.join(ROOT, "tokdyn", "**", "*.py"), recursive=True))
    for path in sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True)):
        if not os.path.relpath(path, DOCS).startswith(("_build", "api", "notebooks")):
            out.append(path)
    return out


def _referenced_packages() -> dict[str, str]:
    """``{top-level package: where}`` of every dotted cross-reference outside tokdyn (the build
    resolves one by importing it: docs/_ext/tokdyn_api.py ``missing_reference``)."""
    out = {}
    for path in _sources():
        local = _local_names(path) if path.endswith(".py") else set()
        for target in _ROLE.findall(_read(path)):
            top = target.split(".")[0]
            if "." in target and top != "tokdyn" and top not in local:  # not relative to the module
                out.setdefault(top, f"{os.path.relpath(path, ROOT)}: {target}")
    return out


def _imported_packages() -> dict[str, str]:
    """``{top-level package: where}`` of every unconditional module-level import of tokdyn (autodoc
    imports every module)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tokdyn", "**", "*.py"), recursive=True)):
        for node in ast.parse(_read(path)).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                out.setdefault(name.split(".")[0], f"{os.path.relpath(path, ROOT)}: import {name}")
    return out


def _conf_packages() -> dict[str, str]:
    """``{module: where}`` of docs/conf.py's extensions and theme (local extensions excepted)."""
    tree = ast.parse(_read(os.path.join(DOCS, "conf.py")))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) in ("extensions", "html_theme"):
            value = ast.literal_eval(node.value)
            for name in [value] if isinstance(value, str) else value:
                if not os.path.isfile(os.path.join(DOCS, "_ext", name + ".py")):
                    out[name.split(".")[0]] = f"docs/conf.py: {name}"
    return out


@pytest.mark.full
def test_docs_extra_holds_every_package_the_build_imports():
    project = _pyproject()["project"]
    provided = {_requirement_name(r) for r in project["dependencies"]}
    provided = frozenset(provided | {_requirement_name(r) for r in project["optional-dependencies"]["docs"]})
    needed = {**_referenced_packages(), **_imported_packages(), **_conf_packages()}
    missing = sorted(
        f"{_distribution(top, provided)} ({where})"
        for top, where in needed.items()
        if top not in sys.stdlib_module_names and top != "tokdyn" and _distribution(top, provided) not in provided
    )
    assert not missing, (
        "a docs-only environment (pip install -e '.[docs]') lacks what the build imports; "
        "add to the docs extra:\n  " + "\n  ".join(missing)
    )


def test_the_reference_scan_finds_outside_references():
    """The scan above is not vacuous: it sees the scikit-learn reference of the VTAE diagnostics."""
    assert "sklearn" in _referenced_packages()
    assert _distribution("sklearn") == "scikit-learn"


def test_ci_builds_the_docs_from_the_docs_extra_alone():
    text = _read(os.path.join(ROOT, ".ci", "run"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "set -euo pipefail" in lines
    commands = [line for line in lines if "pip install" in line]
    assert commands[0] == README_TEST, "the README's test command, verbatim, comes first"
    assert README_TEST in _read(os.path.join(ROOT, "README.md"))
    assert README_DOCS in _read(os.path.join(ROOT, "README.md"))
    docs = [line for line in commands[1:] if line.endswith(README_DOCS)]
    assert docs, "CI runs the README's docs command"
    venv = re.search(r"python3 -m venv (\S+) && \. \1/bin/activate && " + re.escape(README_DOCS), docs[0])
    assert venv and venv.group(1) != ".venv", "the docs build has a virtual environment of its own"
    assert re.search(r"rm -rf [^\n]*" + re.escape(venv.group(1)), text), "... created afresh"


# --------------------------------------------------------------------------- figures


def _capture(monkeypatch, call):
    """The matplotlib Figure a figures function draws (instead of writing it)."""
    from tokdyn.stats import figures

    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, path, dpi=100: drawn.append(fig) or path)
    call(figures)
    (fig,) = drawn
    fig.canvas.draw()
    return fig


def _pixels(fig, colour: str) -> int:
    from matplotlib.colors import to_rgb

    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255
    return int((np.abs(image - np.asarray(to_rgb(colour))).max(-1) < 0.02).sum())


@pytest.mark.parametrize("with_errors", [False, True])
def test_line_plot_shows_identical_series(monkeypatch, with_errors):
    x, y = [0.1, 0.2, 0.3, 0.5, 0.8], [0.9, 0.8, 0.6, 0.5, 0.3]
    errors = {"baseline": [0.02] * 5, "repulsion": [0.02] * 5} if with_errors else None
    fig = _capture(
        monkeypatch, lambda f: f.line_plot("unused.png", x, {"baseline": y, "repulsion": list(y)}, errors=errors)
    )
    (ax,) = fig.axes
    first, second = ax.get_lines()
    assert first.get_marker() != second.get_marker()
    assert first.get_linestyle() != second.get_linestyle()
    assert first.get_color() != second.get_color()
    assert second.get_markersize() < first.get_markersize()  # the later, on top, leaves the earlier's rim
    assert first.get_zorder() <= second.get_zorder()
    a = first.get_transform().transform(first.get_xydata())
    b = second.get_transform().transform(second.get_xydata())
    assert np.all(np.abs(a[:, 0] - b[:, 0]) >= 2.0) and np.allclose(a[:, 1], b[:, 1])  # dodged sideways, in pixels
    # both colours are seen, and not only in the legend: the hidden one has as many pixels as the other
    hidden, top = _pixels(fig, first.get_color()), _pixels(fig, second.get_color())
    assert hidden > 0.5 * top > 0


def test_line_plot_panels_and_many_series(monkeypatch):
    """Every series of every panel has its own marker and line style (up to six), and the dodge
    stays small (within a few points either side) and centred."""
    from tokdyn.stats import figures

    n = 6
    series = {f"s{i}": [1.0, 2.0, 3.0] for i in range(n)}
    fig = _capture(
        monkeypatch, lambda f: f.line_plot("unused.png", [1, 2, 3], {}, panels={"A": series, "B": series}, title="t")
    )
    for ax in fig.axes:
        lines = ax.get_lines()
        assert len({line.get_marker() for line in lines}) == n
        assert len({line.get_linestyle() for line in lines}) == 4  # the named styles; then dash patterns
    assert len({str(figures.series_style(i, n)["linestyle"]) for i in range(n)}) == n
    dodges = [figures.series_style(i, n)["dodge"] for i in range(n)]
    assert abs(sum(dodges)) < 1e-9 and max(map(abs, dodges)) <= 6.0 and len(set(dodges)) == n
    assert figures.series_style(0, 1)["dodge"] == 0.0


def test_line_plot_writes_a_png(tmp_path):
    from tokdyn.stats import figures

    path = figures.line_plot(
        str(tmp_path / "plots" / "a.png"), [1, 2], {"a": [1, 2], "b": [1, 2]}, errors={"a": [0.1, 0.1]}
    )
    assert figures.drawn_by_tokdyn(path)


# --------------------------------------------------------------------------- the landing page and the site


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(r"^```" + lang + r"\n(.*?)^```", text, re.S | re.M)


def test_landing_page_has_the_install_command_and_a_first_example():
    text = included.expand(os.path.join(DOCS, "index.md"))  # the page as shown: the README's example included
    shell = "\n".join(_blocks(text, "bash"))
    assert "python3 -m venv .venv && . .venv/bin/activate && pip install -e ." in shell
    assert "tokdyn study token-dynamics" in shell
    found = re.search(re.escape(MARK) + r"\n```python\n(.*?)```", text, re.S)
    assert found, "docs/index.md has a first example that tests/test_docs.py runs"
    assert "import tokdyn" in found.group(1) or "from tokdyn import" in found.group(1)
    assert text.index("pip install") < text.index(MARK) < text.index("```{toctree}")
    # seen whole on the page: no line of the first steps needs scrolling
    long = [
        line
        for block in _blocks(text, "bash") + _blocks(text, "python")
        for line in block.splitlines()
        if len(line) > 80
    ]
    assert not long, f"lines wider than the page's code blocks: {long}"


def _conf_value(name: str):
    for node in ast.parse(_read(os.path.join(DOCS, "conf.py"))).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"docs/conf.py assigns no {name}")


def _css_rules(css: str) -> list[tuple[str, str]]:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    return [(sel.strip(), body) for sel, body in re.findall(r"([^{}]+)\{([^}]*)\}", css)]


def test_stylesheet_keeps_numbers_on_one_line_and_code_scrolling():
    static = _conf_value("html_static_path")
    sheets = _conf_value("html_css_files")
    assert "tokdyn_site" in _conf_value("extensions")
    css = "".join(
        _read(os.path.join(DOCS, s, f)) for s in static for f in sheets if os.path.isfile(os.path.join(DOCS, s, f))
    )
    rules = _css_rules(css)
    assert rules, f"no stylesheet among {sheets} in {static}"

    def has(selector_part, declaration):
        return any(selector_part in sel and re.search(declaration, body) for sel, body in rules)

    assert has("td", r"white-space:\s*nowrap") and has("th", r"white-space:\s*nowrap")
    assert has("table-wrapper", r"overflow-x:\s*auto")
    assert has("pre", r"overflow-x:\s*auto")
    assert has("highlight-bash pre", r"white-space:\s*pre-wrap")


def test_table_cells_keep_plus_minus_with_their_numbers():
    pytest.importorskip("docutils", reason="docutils comes with the docs extra")
    from docutils.core import publish_doctree

    spec = importlib.util.spec_from_file_location("tokdyn_docs_site", os.path.join(DOCS, "_ext", "tokdyn_site.py"))
    site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site)
    prose = "a long cell of prose that says what the row is, far longer than a number " * 2
    doctree = publish_doctree(
        f"""
+----------------+----------------------------------------------------------------------------------------------------------------------------------------------------------+
| 0.665 ± 0.008  | {prose:<152} |
+----------------+----------------------------------------------------------------------------------------------------------------------------------------------------------+
""",
        settings_overrides={"report_level": 5},
    )
    from docutils import nodes

    site.mark_cells(None, doctree, "page")
    number, text = list(doctree.findall(nodes.entry))
    assert number.astext() == "0.665\u00a0±\u00a00.008"
    assert "tokdyn-prose" not in number["classes"] and "tokdyn-prose" in text["classes"]
