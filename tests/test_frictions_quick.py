"""Every study command has a ``--quick`` preset, recorded in its config as ``preset == "quick"``,
and a quick run's summary says so in its first line (a smoke run's numbers are never read as the
study's findings); the label stays out of the directory's stamp."""

import dataclasses
import importlib

import pytest

from tokdyn import cli
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.presets import QUICK_NOTE, preset_line, with_preset_line

STUDY_COMMANDS = [key for key in cli.COMMANDS if key[0] == "study"]


def _config_class(key):
    return getattr(importlib.import_module(cli.COMMANDS[key][0]), cli.CONFIG_CLASSES.get(key, "Config"))


@pytest.mark.parametrize("key", STUDY_COMMANDS, ids=" ".join)
def test_every_study_command_has_quick(key, capsys):
    assert cli.main([*key, "--help"]) == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.parametrize("key", STUDY_COMMANDS, ids=" ".join)
def test_quick_presets_validate_and_say_so(key):
    cls = _config_class(key)
    cfg = cls.quick().validate()
    assert cfg.preset == "quick"
    assert cls().preset == ""  # the default configuration: no label
    assert "preset" in cli.config_help(cls)  # documented in the Attributes section
    with pytest.raises(ValueError, match="preset"):
        dataclasses.replace(cfg, preset="fast").validate()


def test_the_line_opens_a_quick_summary_only():
    quick = type("Q", (), {"preset": "quick"})()
    assert with_preset_line(quick, "table").startswith(QUICK_NOTE) and with_preset_line(quick, "table").endswith(
        "\n\ntable"
    )
    for other in (type("D", (), {"preset": ""})(), type("A", (), {"preset": "default"})(), object()):
        assert preset_line(other) == "" and with_preset_line(other, "table") == "table"


def test_token_dynamics_quick_end_to_end(tmp_path, capsys):
    """``tokdyn study token-dynamics --quick`` (one seed less, no plots): the printed summary opens
    with the quick line; the stamp is that of the same sizes without the label."""
    out = tmp_path / "td"
    assert (
        cli.main(["study", "token-dynamics", "--quick", "--seeds", "3", "--no-plots", "--no-cache", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out.lstrip().splitlines()
    assert printed[0].startswith(QUICK_NOTE), printed[:3]
    stamp = study_dir.read_stamp(str(out))
    assert "preset" not in stamp["config"] and stamp["config"]["seeds"] == 3
