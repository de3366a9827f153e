"""The documentation: its first examples run, its pages and links resolve, every public name has a
docstring, and (when a site has been built) every internal link of the built site resolves and
pages render in headless Chromium.

Nothing here builds the site (that takes minutes: ``sphinx-build -W --keep-going -n -b html docs
docs/_build/html``); the checks of a built site are skipped when Sphinx is not installed (the
``docs`` extra) or no site has been built, and the browser check when Chromium is absent.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import os
import re
import shutil
import sys

import pytest

import included

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
SITE = os.path.join(DOCS, "_build", "html")
MARK = "<!-- tests/test_docs.py runs this block -->"
GENERATED = ("api/",)  # pages written at build time by docs/_ext/tokdyn_api.py
BUILD = "sphinx-build -W --keep-going -n -b html docs docs/_build/html"


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _markdown_files() -> list[str]:
    """README.md and every hand-written page of docs/ (not the build, the generated API pages or
    the copied notebooks)."""
    out = [os.path.join(ROOT, "README.md")]
    for path in sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True)):
        rel = os.path.relpath(path, DOCS)
        if not rel.startswith(("_build", "api", "notebooks" + os.sep)):
            out.append(path)
    return out


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# --------------------------------------------------------------------------- examples


def _example_blocks(text: str) -> list[str]:
    return re.findall(re.escape(MARK) + r"\n```python\n(.*?)```", text, re.S)


def test_first_example_runs(capsys):
    (block,) = _example_blocks(_read(os.path.join(ROOT, "README.md")))[:1]
    exec(compile(block, "README.md", "exec"), {"__name__": "__example__"})  # noqa: S102
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("path", ["docs/getting-started.md", "docs/index.md"])
def test_the_docs_include_the_readme_first_example_and_run_what_follows(path, capsys):
    """One first example, the README's: the getting-started page and the home page include it
    (between its markers) instead of restating it; the getting-started page's next block, which
    goes on from it, runs after it."""
    readme = _read(os.path.join(ROOT, "README.md"))
    first = _example_blocks(readme)[0]
    page = _read(os.path.join(ROOT, path))
    assert first not in page, f"{path} restates the README's first example: include it"
    assert any(
        target == os.path.join(ROOT, "README.md") and start and "first example" in start
        for target, start, _ in included.includes(os.path.join(ROOT, path))
    ), f"{path} does not include the README's first example"
    blocks = _example_blocks(included.expand(os.path.join(ROOT, path)))
    assert blocks[0] == first
    if len(blocks) > 1:
        exec(compile("\n".join(blocks), path, "exec"), {"__name__": "__example__"})  # noqa: S102
        assert capsys.readouterr().out.strip()


# --------------------------------------------------------------------------- pages and links

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_DOC = re.compile(r"\{doc\}`(?:[^`<]*<)?([^`<>]+)>?`")
_FENCE = re.compile(r"^```\{toctree\}\n(.*?)^```", re.S | re.M)


def _slug(heading: str) -> str:
    """The anchor MyST gives a heading (GitHub's rule): lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _page_exists(target: str) -> bool:
    """A Sphinx document name (relative to docs/, no suffix) that exists or is generated."""
    if target.startswith(GENERATED):
        return os.path.isfile(os.path.join(DOCS, "_ext", "tokdyn_api.py"))
    if target.startswith("notebooks/"):
        return os.path.isfile(os.path.join(ROOT, target + ".ipynb"))
    return any(os.path.isfile(os.path.join(DOCS, target + suffix)) for suffix in (".md", ".rst", ".ipynb"))


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(path):
    text = re.sub(r"```.*?```", "", _read(path), flags=re.S)  # links inside code blocks are code
    broken = []
    for link in _LINK.findall(text):
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue
        target, _, anchor = link.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if not os.path.exists(full):
            broken.append(f"{link}: no {os.path.relpath(full, ROOT)}")
        elif anchor and full.endswith(".md"):
            slugs = {_slug(h) for h in re.findall(r"^#{1,6} (.*)$", _read(full), re.M)}
            if anchor not in slugs:
                broken.append(f"{link}: no heading #{anchor} in {os.path.relpath(full, ROOT)}")
    if path.startswith(DOCS):
        here = os.path.relpath(os.path.dirname(path), DOCS)
        for target in _DOC.findall(text):
            name = target.lstrip("/") if target.startswith("/") else os.path.normpath(os.path.join(here, target))
            if not _page_exists(name.replace(os.sep, "/")):
                broken.append(f"{{doc}}`{target}`: no page {name}")
    assert not broken, "\n".join(broken)


def _toctrees() -> dict[str, list[tuple[str, bool]]]:
    """``{page: [(entry, glob?), ...]}`` of every toctree in docs/ (entries as document names)."""
    out = {}
    for path in _markdown_files()[1:]:
        here = os.path.relpath(os.path.dirname(path), DOCS)
        entries = []
        for block in _FENCE.findall(_read(path)):
            lines = [line.strip() for line in block.splitlines() if line.strip()]
            is_glob = ":glob:" in lines
            for line in lines:
                if not line.startswith(":"):
                    entries.append((os.path.normpath(os.path.join(here, line)).replace(os.sep, "/"), is_glob))
        out[os.path.relpath(path, DOCS)] = entries
    return out


def test_toctrees_list_existing_pages_and_every_page_is_listed():
    trees = _toctrees()
    missing, listed = [], {"index"}
    for page, entries in trees.items():
        for entry, is_glob in entries:
            if is_glob:
                matches = (
                    glob.glob(os.path.join(ROOT, entry + ".ipynb"))
                    if entry.startswith("notebooks/")
                    else glob.glob(os.path.join(DOCS, entry + ".md"))
                )
                if not matches:
                    missing.append(f"{page}: the pattern {entry} matches no page")
            elif not _page_exists(entry):
                missing.append(f"{page}: {entry} does not exist")
            listed.add(entry)
    pages = {os.path.splitext(p)[0].replace(os.sep, "/") for p in trees}
    orphans = sorted(pages - listed)
    assert not missing, "\n".join(missing)
    assert not orphans, f"pages in no toctree: {orphans}"


# --------------------------------------------------------------------------- docstrings


def _config_list(name: str) -> list:
    """A list assigned in docs/conf.py, read without executing it."""
    tree = ast.parse(_read(os.path.join(DOCS, "conf.py")))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"docs/conf.py assigns no {name}")


def test_every_public_name_has_a_docstring():
    """What the docs build checks (docs/_ext/tokdyn_api.py), without Sphinx: every public module,
    function, class, method and property of tokdyn has a docstring of its own, but for the names
    docs/conf.py lists as known gaps."""
    api = _load("tokdyn_docs_api", os.path.join(DOCS, "_ext", "tokdyn_api.py"))
    allowed = set(_config_list("tokdyn_undocumented_allowed"))
    missing = [name for name in api.undocumented() if name not in allowed]
    assert not missing, "public names without a docstring (write one):\n  " + "\n  ".join(missing)


# --------------------------------------------------------------------------- the built site


def _needs_built_site():
    pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e '.[docs]')")
    if not os.path.isfile(os.path.join(SITE, "index.html")):
        pytest.skip(f"no built site in docs/_build/html (build it with: {BUILD})")
    return _load("tokdyn_check_site", os.path.join(DOCS, "check_site.py"))


def test_built_site_links_resolve():
    check = _needs_built_site()
    failures, checked = check.check_links(SITE)
    assert checked > 0
    assert not failures, "\n".join(failures[:50])


def test_built_site_renders_in_a_browser(tmp_path):
    check = _needs_built_site()
    browser = check.find_browser()
    if browser is None or shutil.which(browser) is None and not os.path.isfile(browser):
        pytest.skip("Chromium is not installed (apt-get install chromium): the link check ran without it")
    failures = check.check_browser(SITE, str(tmp_path), browser)
    assert not failures, "\n".join(failures)
