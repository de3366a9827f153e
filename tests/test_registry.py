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
