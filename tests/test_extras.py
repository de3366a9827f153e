"""The test extras are sized to the tiers that use them: ``test`` holds every package the default suite
imports (``python -m pytest`` after ``pip install -e ".[test]"``, the README's command, skips nothing for a
missing package of its own), ``test-full`` adds what only the ``full`` and ``slow`` tests import; and CI
installs each where it runs those tests, after naming the machine. Read from the sources (the tests' imports
and ``pytest.importorskip`` calls, by AST), so no package is installed or imported here."""

from __future__ import annotations

import ast
import glob
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tomllib = pytest.importorskip("tomllib")

# a test's top-level module -> the distribution that provides it
DISTRIBUTIONS = {
    "PIL": "pillow",
    "av": "av",
    "chex": "chex",
    "coverage": "coverage",
    "evosax": "evosax",
    "flax": "flax",
    "google": "protobuf",  # google.protobuf
    "google_crc32c": "google-crc32c",
    "hypothesis": "hypothesis",
    "jax": "jax",
    "jinja2": "jinja2",
    "matplotlib": "matplotlib",
    "mpmath": "mpmath",
    "nbclient": "nbclient",
    "nbformat": "nbformat",
    "numpy": "numpy",
    "optax": "optax",
    "orbax": "orbax-checkpoint",
    "pyarrow": "pyarrow",
    "pytest": "pytest",
    "rich": "rich",
    "safetensors": "safetensors",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "statsmodels": "statsmodels",
    "tensorboard": "tensorboard",
    "tensorboardX": "tensorboardx",
    "tokenizers": "tokenizers",
    "wandb": "wandb",
}
# installed with a direct dependency (jax requires ml_dtypes)
TRANSITIVE = {"ml_dtypes": "jax"}
# compared with where installed, never by an extra of the tests: their tests skip without them (the docs
# extra's Sphinx and docutils; torch and transformers, whose fixtures are committed; numba, a benchmark peer)
NO_EXTRA = {"torch", "transformers", "sphinx", "docutils", "numba"}
TIERS = ("full", "slow")


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _local_modules() -> set[str]:
    """Modules the tests load from the checkout (tests/, benchmarks/, docs/, the package)."""
    out = {"tokdyn", "tests"}
    for path in glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True):
        out.add(os.path.splitext(os.path.basename(path))[0])
    for where in ("tests", "benchmarks", "docs", os.path.join("docs", "_ext")):
        for path in glob.glob(os.path.join(ROOT, where, "*")):
            out.add(os.path.splitext(os.path.basename(path))[0])
    return out


def _marks(decorators) -> set[str]:
    """The tiers among ``@pytest.mark.full`` / ``@pytest.mark.slow`` decorators."""
    out = set()
    for d in decorators:
        text = ast.unparse(d)
        out |= {t for t in TIERS if re.search(rf"\bmark\.{t}\b", text)}
    return out


def _module_marks(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            return _marks([node.value])
    return set()


DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _imports(node, nested: bool) -> list[str]:
    """Top-level modules that ``node`` imports or ``pytest.importorskip``s: in its nested functions and
    classes too where ``nested``, else in its own statements only."""
    out = []

    def visit(n):
        if isinstance(n, ast.Import):
            out.extend(a.name.split(".")[0] for a in n.names)
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            out.append(n.module.split(".")[0])
        elif (
            isinstance(n, ast.Call)
            and ast.unparse(n.func).endswith("importorskip")
            and n.args
            and isinstance(n.args[0], ast.Constant)
            and isinstance(n.args[0].value, str)
        ):
            out.append(n.args[0].value.split(".")[0])
        for child in ast.iter_child_nodes(n):
            if nested or not isinstance(child, DEFS):
                visit(child)

    visit(node)
    return out


def _references(node) -> set[str]:
    """The names a statement, function or class refers to, its arguments (fixtures) included."""
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            names.add(n.id)
        elif isinstance(n, ast.Attribute):
            names.add(n.attr)
        elif isinstance(n, ast.arguments):
            names |= {a.arg for a in n.args}
    return names


def _is_main_block(node) -> bool:
    """``if __name__ == "__main__":``, which a test run never executes."""
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)


def uses(source: str) -> list[tuple[str, bool]]:
    """(top-level module, in a default-tier context) for every import and ``pytest.importorskip`` of a
    test file's source. The module's own statements are default unless ``pytestmark`` marks the module
    full or slow; a test function or class is default unless marked full or slow; a helper function
    (or fixture) takes the tier of what refers to it: default when the module's statements or a default
    test (or a helper so reached) name it."""
    tree = ast.parse(source)
    module_tiered = bool(_module_marks(tree))
    defs = {n.name: n for n in tree.body if isinstance(n, DEFS)}
    is_test = {k: k.startswith(("test_", "Test")) for k in defs}
    tiered = {k: module_tiered or bool(_marks(n.decorator_list)) for k, n in defs.items()}
    frontier = set()
    if not module_tiered:
        for n in tree.body:
            if not isinstance(n, DEFS) and not _is_main_block(n):
                frontier |= _references(n)
    for k, n in defs.items():
        if is_test[k] and not tiered[k]:
            frontier |= _references(n)
    reached = set()  # the helpers a default context refers to, directly or through other helpers
    while frontier:
        name = frontier.pop()
        if name in defs and not is_test[name] and name not in reached:
            reached.add(name)
            frontier |= _references(defs[name])
    body = ast.Module(body=[n for n in tree.body if not _is_main_block(n)], type_ignores=[])
    out = [(m, not module_tiered) for m in _imports(body, nested=False)]
    for k, n in defs.items():
        default = (not tiered[k]) if is_test[k] else (k in reached)
        out.extend((m, default) for m in _imports(n, nested=True))
    return out


_MODULE = re.compile(r"^\s*(?:import|from)\s+(\w+)|importorskip\(\s*[\"'](\w+)", re.M)


def _third_party(local: set[str], core: set[str]):
    """{module: (files using it in the default tier, files using it only in full or slow tests)}; a file
    whose imports are all of the standard library, the checkout or the core dependencies (most of them: a
    regular expression tells) is not parsed."""
    out = {}
    plain = set(sys.stdlib_module_names) | local | {"__future__", "pytest"}  # pytest: every test file
    plain |= {m for m, d in DISTRIBUTIONS.items() if _name(d) in core} | set(TRANSITIVE)
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            source = f.read()
        if {a or b for a, b in _MODULE.findall(source)} <= plain:
            continue
        found = uses(source)
        rel = os.path.relpath(path, ROOT)
        for module, default in found:
            if module in plain:
                continue
            entry = out.setdefault(module, (set(), set()))
            entry[0 if default else 1].add(rel)
    for default, tiered in out.values():
        tiered -= default
    return out


def test_the_default_suite_needs_no_package_outside_the_test_extra():
    project = _project()
    extras = project["optional-dependencies"]
    core = {_name(r) for r in project["dependencies"]}
    test = {_name(r) for r in extras["test"]}
    full_only = {_name(r) for r in extras["test-full"]} - {"tokdyn"}
    assert "tokdyn[test]" in extras["test-full"], "test-full builds on the test extra"
    assert all(_name(d) in core for d in TRANSITIVE.values())
    problems = []
    for module, (default, tiered) in _third_party(_local_modules(), core).items():
        if module in NO_EXTRA:
            continue
        if module not in DISTRIBUTIONS:
            problems.append(f"{module} (in {sorted(default | tiered)}): add it to DISTRIBUTIONS and to an extra")
            continue
        dist = _name(DISTRIBUTIONS[module])
        if default and dist not in core | test:
            problems.append(f"{dist}: imported by default-tier tests {sorted(default)}, not in the test extra")
        if not default and dist not in core | test | full_only:
            problems.append(f"{dist}: imported by full or slow tests {sorted(tiered)}, not in test-full")
        if not default and dist in test:
            problems.append(f"{dist}: only full or slow tests {sorted(tiered)} import it; it belongs in test-full")
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_default_test_s_import_and_passes_a_marked_one():
    source = """
import numpy
import pytest
pytestmark = []

@pytest.mark.full
def test_a():
    wandb = pytest.importorskip("wandb")

class TestB:
    def test_b(self):
        nbclient = pytest.importorskip("nbclient.client")
"""
    assert ("wandb", False) in uses(source) and ("nbclient", True) in uses(source) and ("numpy", True) in uses(source)
    assert ("statsmodels", False) in uses("import pytest\npytestmark = pytest.mark.slow\nimport statsmodels\n")


def test_ci_names_the_machine_first_and_installs_each_extra_where_it_runs_its_tests():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        script = f.read()
    first_test = script.index("python -m pytest")
    assert script.index("lscpu") < first_test and script.index("Flags") < first_test
    assert script.index('".[test]"') < first_test
    assert script.index('".[test-full]"') < script.index("python -m pytest -m full")


# ---------------------------------------------------------------------------------- the extras users install

REPOSITORY_EXTRAS = {"test", "test-full", "docs", "bench"}  # the repository's tests, docs and benchmarks


def test_tokdyn_extras_lists_the_packages_of_pyproject_s_extras():
    from tokdyn import extras as tokdyn_extras

    declared = _project()["optional-dependencies"]
    assert set(tokdyn_extras.EXTRAS) == set(declared) - REPOSITORY_EXTRAS
    for extra, packages in tokdyn_extras.EXTRAS.items():
        assert {_name(p) for p in packages} == {_name(r) for r in declared[extra]}, extra
    for package, module in tokdyn_extras.MODULES.items():  # the module each installs, as the tests know it
        assert _name(DISTRIBUTIONS[module.partition(".")[0]]) == _name(package)


def test_the_getting_started_table_lists_every_extra():
    with open(os.path.join(ROOT, "docs", "getting-started.md"), encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("| extra | for |") :].split("\n\n")[0]
    rows = re.findall(r"^\| `([\w-]+)` \|", table, flags=re.M)
    assert sorted(rows) == sorted(_project()["optional-dependencies"]) and len(rows) == len(set(rows))


def test_every_study_page_says_which_extra_it_needs():
    from tokdyn.experiment import registry

    declared = set(_project()["optional-dependencies"])
    for entry in registry.STUDIES:
        with open(os.path.join(ROOT, "docs", "studies", f"{entry.name}.md"), encoding="utf-8") as f:
            install = [line for line in f.read().splitlines() if line.startswith("**Install:**")]
        assert len(install) == 1, f"docs/studies/{entry.name}.md has no **Install:** line"
        named = set(re.findall(r"\.\[([\w-]+)\]", install[0])) | set(re.findall(r"the `([\w-]+)` extra", install[0]))
        assert named <= declared, (entry.name, named - declared)
        assert named or "no extra" in install[0], entry.name


def test_a_missing_package_of_an_extra_is_named_with_its_install_command(monkeypatch):
    from tokdyn import extras as tokdyn_extras

    monkeypatch.setitem(sys.modules, "jinja2", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "google_crc32c", None)
    assert tokdyn_extras.missing("models") == ["jinja2"] and tokdyn_extras.missing("data")[0] == "google-crc32c"
    with pytest.raises(tokdyn_extras.MissingExtra) as e:
        tokdyn_extras.require("models", "--model")
    assert str(e.value) == (
        "--model needs the package 'jinja2' of the 'models' extra, not installed here: "
        f'pip install -e ".[models]" (in {ROOT})'
    )
    with pytest.raises(ImportError, match=r"'google-crc32c' of the 'data' extra"):
        tokdyn_extras.load("google_crc32c", "reading a TFRecord")
    with pytest.raises(ValueError, match="extra='model' is not one of tokdyn's extras"):
        tokdyn_extras.missing("model")


@pytest.mark.parametrize("study", ["latent-reasoning", "latent-diagnostics"])
def test_a_study_that_needs_an_extra_exits_2_naming_it_before_any_work(tmp_path, capsys, monkeypatch, study):
    """The organisms' studies need the ``models`` extra whatever their flags (their pages say so): without it,
    one line naming the package and its install command, exit 2, nothing written."""
    from tokdyn import cli

    with open(os.path.join(ROOT, "docs", "studies", f"{study}.md"), encoding="utf-8") as f:
        assert "**Install:** the `models` extra" in f.read()
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if the extra were not installed
    code = cli.main(["study", study, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert f"tokdyn study {study}" in line and "needs the package 'tokenizers' of the 'models' extra" in line, line
    assert 'pip install -e ".[models]"' in line and not (tmp_path / "out").exists()
