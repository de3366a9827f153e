"""The one list of studies (tokdyn.experiment.registry) is what the command line, tokdyn reproduce
and the docs' study index all show: a study added there appears everywhere, and nowhere else."""

import importlib
import os
import re

import pytest

from tokdyn import cli, reproduce
from tokdyn.experiment import registry

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
