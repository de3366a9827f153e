"""The one list of studies (tokdyn.experiment.registry) is what the command line, tokdyn reproduce
and the docs' study index all show: a study added there appears everywhere, and nowhere else."""

import ast
import dataclasses
import importlib
import inspect
import os
import re
import textwrap

import pytest

from tokdyn import cli, reproduce, studies
from tokdyn.experiment import registry, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_command_line_and_reproduce_read_the_registry():
    assert reproduce.STUDIES == registry.NAMES
    assert reproduce.MODULES == {e.name: e.module for e in registry.STUDIES}
    study_commands = {k for k in cli.COMMANDS if k[0] in ("study", "sweep")}
    assert study_commands == {e.command for e in registry.STUDIES}
    for e in registry.STUDIES:
        assert cli.COMMANDS[e.command] == (e.module, "main", e.help, e.out)
    assert len(set(registry.NAMES)) == len(registry.NAMES)


def test_reproduce_runs_by_default_all_but_the_studies_sized_for_an_accelerator(tmp_path):
    """The sweeps of Slot Attention, IODINE, SAVi and the grid-diffusion models, and the Qwen2.5-VL
    organisms' studies (hours on two CPU cores) run only when named;
    the report covers one once its directory is there."""
    assert reproduce.DEFAULT_STUDIES == tuple(e.name for e in registry.STUDIES if e.by_default)
    assert reproduce.Config().studies == reproduce.DEFAULT_STUDIES
    assert "slots-sweep" in registry.NAMES and "slots-sweep" not in reproduce.DEFAULT_STUDIES
    assert set(registry.NAMES) - set(reproduce.DEFAULT_STUDIES) == {
        "slots-sweep",
        "iodine-sweep",
        "savi-sweep",
        "grid-diffusion-sweep",
        "vlm-diagnostics",  # a checkpoint's study: without --model its numbers are a random model's
        "latent-reasoning",  # Qwen2.5-VL organisms: projected hours at its defaults on two CPU cores
        "latent-diagnostics",  # it reads the organisms of a latent-reasoning directory
    }
    reproduce.Config(studies=("slots-sweep",)).validate()  # named: runs
    assert reproduce.reported(str(tmp_path)) == ()  # a report covers the studies run, none else
    assert reproduce.reported(str(tmp_path), ran=reproduce.DEFAULT_STUDIES[::-1]) == reproduce.DEFAULT_STUDIES
    (tmp_path / "slots-sweep").mkdir()
    (tmp_path / "collapse").mkdir()
    assert reproduce.reported(str(tmp_path)) == ("collapse", "slots-sweep")


@pytest.mark.parametrize("entry", registry.STUDIES, ids=lambda e: e.name)
def test_every_study_has_its_config_main_and_page(entry):
    module = importlib.import_module(entry.module)
    assert callable(module.main) and callable(module.Config)
    page = os.path.join(ROOT, "docs", "studies", f"{entry.name}.md")
    assert os.path.exists(page), page
    with open(os.path.join(ROOT, "docs", "studies", "index.md")) as f:
        index = f.read()
    assert re.search(r"\{doc\}`" + re.escape(entry.name) + "`", index), entry.name
    assert f"tokdyn {' '.join(entry.command)}" in index


def test_an_unknown_study_is_named_with_the_choices():
    with pytest.raises(ValueError, match="unknown study 'nope'; choose from token-dynamics, "):
        registry.entry("nope")
    assert registry.entry("scenes").module == "tokdyn.studies.object_discovery"


@pytest.mark.parametrize("entry", registry.STUDIES, ids=lambda e: e.name)
def test_every_study_is_a_value_whose_main_is_one_call_of_the_runner(entry):
    module = importlib.import_module(entry.module)
    spec = studies.spec(entry.name)
    assert isinstance(spec, runner.Spec) and spec is module.SPEC
    assert spec.name == entry.name and spec.config is module.Config and callable(spec.run)
    fields = {f.name for f in dataclasses.fields(module.Config)}
    assert set(spec.selection) <= fields and set(spec.sources) <= fields
    assert set(spec.sources.values()) <= set(registry.NAMES) - {entry.name}
    assert spec.link, "a reader's first file"
    if getattr(module.main, "spec", None) is not None:  # runner.entry's main: run_study of the spec
        assert module.main.spec is spec and module.main.__module__ == entry.module
        return
    body = ast.parse(textwrap.dedent(inspect.getsource(module.main))).body[0].body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):  # the docstring
        body = body[1:]
    assert len(body) == 1 and isinstance(body[0], ast.Return), "main is one statement: return the runner's call"
    call = body[0].value
    assert (
        isinstance(call, ast.Call)
        and ast.unparse(call.func) == "runner.run_study"
        and ast.unparse(call.args[0]) == "SPEC"
    )


def test_a_study_that_reads_another_declares_it_and_reproduce_runs_it_after():
    names = list(registry.NAMES)
    for e in registry.STUDIES:
        spec = studies.spec(e.name)
        assert set(spec.sources.values()) <= set(e.reads), f"{e.name}: a source must be declared in reads"
        for read in e.reads:
            assert names.index(read) < names.index(e.name), f"{e.name} is listed before {read}, which it reads"
            assert studies.spec(read).store is not None, f"{read} offers its readers nothing (SPEC.store)"
    assert registry.entry("latent-diagnostics").reads == ("latent-reasoning",)
    # reproduce's order: a study after what it reads, the rest as given
    assert registry.in_order(["video", "latent-diagnostics", "collapse", "latent-reasoning"]) == (
        "video",
        "latent-reasoning",
        "latent-diagnostics",
        "collapse",
    )
    assert registry.in_order(["latent-diagnostics", "collapse"]) == ("latent-diagnostics", "collapse")


def test_studies_that_read_each_other_in_a_circle_are_named(monkeypatch):
    monkeypatch.setattr(registry, "_ADDED", {})
    for name, reads in (("mine-a", ("mine-b",)), ("mine-b", ("mine-a",))):
        registry.add(registry.Entry(name, ("study", name), "m", "h", f"results/{name}", reads=reads))
    with pytest.raises(ValueError, match="mine-a -> mine-b -> mine-a read each other's output in a circle"):
        registry.in_order(["mine-a", "mine-b"])


def _imported_modules(path: str) -> set:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


@pytest.mark.parametrize("entry", registry.STUDIES, ids=lambda e: e.name)
def test_no_study_imports_another(entry):
    """What a study reads of another comes through the registry (Entry.reads, the other's SPEC),
    never by importing it."""
    others = {e.module for e in registry.STUDIES if e.module != entry.module}
    spec = importlib.util.find_spec(entry.module)
    files = (
        [os.path.join(d, f) for d, _, fs in os.walk(os.path.dirname(spec.origin)) for f in fs if f.endswith(".py")]
        if spec.submodule_search_locations
        else [spec.origin]
    )
    for path in files:
        reached = {m for m in _imported_modules(path) for o in others if m == o or m.startswith(o + ".")}
        assert not reached, f"{path} imports {sorted(reached)}"


def test_the_analyses_reach_their_source_by_name():
    from tokdyn.experiment import analysis
    from tokdyn.studies import latent_reasoning

    assert analysis.source_spec("latent-reasoning") is latent_reasoning.SPEC
    assert analysis.source_store("latent-reasoning") is latent_reasoning.STORE
    with pytest.raises(ValueError, match="'collapse' keeps no trained models"):
        analysis.source_store("collapse")


def test_every_deprecation_is_dated_and_none_has_outlived_its_removal_version():
    """The one table of deprecated names (tokdyn._deprecations.TABLE): each entry names what replaces
    it, was deprecated in a released version before the one that removes it, and the package's
    version is below every removal version (a name past it must be deleted, with its entry)."""
    import datetime

    import tokdyn
    from tokdyn import _deprecations

    def version(text):
        return tuple(int(p) for p in text.split("."))

    assert set(_deprecations.TABLE) == {
        "tokdyn.fused",
        "train_many flat keywords",
        "tokdyn.models.qwen2_5_vl_apply",
        "tokdyn.models.qwen2_5_vl_probes",
        "tokdyn.models.qwen2_5_vl_analyses",
        "tokdyn.models.qwen2_5_vl generation names",
        "tokdyn.models.latent.tasks",
    }
    for name, d in _deprecations.TABLE.items():
        assert d.what and d.replacement, name
        assert version(d.since) <= version(tokdyn.__version__) < version(d.removal), name
        datetime.date.fromisoformat(d.date)
        assert _deprecations.notice(name) == f" (deprecated in tokdyn {d.since}, {d.date}; removed in {d.removal})"
