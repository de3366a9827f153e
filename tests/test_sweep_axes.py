"""The axes of ``tokdyn sweep token-dynamics`` are derived from ``dynamics.Hparams``: every knob of the
built-in rule is an axis and an option named as the knob, with help text from ``Hparams``' own
docstring, in a grid order that every earlier sweep's chunks keep; a knob added to ``Hparams`` is an
axis and an option with nothing else to edit."""

import argparse
import dataclasses
import re

import jax
import pytest

from tokdyn import cli, dynamics
from tokdyn.engine.runs import RunStructure
from tokdyn.experiment import attributes
from tokdyn.studies import token_dynamics_sweep as tds

# the grid order of every sweep written so far: the order of a chunk's runs, so it may never change
GRID_ORDER = (
    "temperature",
    "repulsion",
    "momentum",
    "noise",
    "n_clusters",
    "method",
    "damping",
    "langevin",
    "sinkhorn_iters",
    "slot_norm",
    "anneal_ratio",
    "anneal_steps",
)


def _help(cls) -> str:
    parser = argparse.ArgumentParser()
    cli.add_config_args(parser, cls)
    return " ".join(parser.format_help().split())


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text)[0].rstrip(".")


def test_every_knob_of_hparams_is_an_axis_and_an_option_documented_by_hparams():
    assert tds.KNOB_AXES == dynamics.FIELDS == tuple(f.name for f in dataclasses.fields(dynamics.Hparams))
    assert tds.AXES == GRID_ORDER and set(dynamics.FIELDS) <= set(tds.AXES)
    fields = {f.name: f for f in dataclasses.fields(tds.Config)}
    own = attributes.documented(dynamics.Hparams)
    helps = cli.config_help(tds.Config)
    text = _help(tds.Config)
    for knob in dynamics.FIELDS:
        assert fields[knob].default == tds.DEFAULT_AXES.get(knob, ""), knob
        assert f"--{knob.replace('_', '-')} STR" in text, knob
        plain = re.sub(r":\w+:`~?([^`]+)`", lambda m: f"``{m.group(1)}``", _first_sentence(own[knob]))
        words = re.findall(r"[A-Za-z_]{4,}", plain)
        assert words and all(w in helps[knob] for w in words), (knob, helps[knob])
        assert f"tokdyn.dynamics.Hparams.{knob}" in helps[knob]
        default = getattr(dynamics.Hparams(), knob)
        assert f"else {default:g})" in helps[knob], helps[knob]
        # no cross-reference: Hparams' are relative to its module, and would not resolve from the sweep's
        assert not re.search(r":\w+:`", helps[knob]), helps[knob]
    # the options keep their order: the structure's fields, then the axes in grid order, then the rest
    names = [f.name for f in dataclasses.fields(tds.Config)]
    structure = [f.name for f in dataclasses.fields(RunStructure)]
    assert names[: len(structure)] == structure and tuple(names[len(structure) : len(structure) + 12]) == GRID_ORDER


def test_a_knob_added_to_hparams_is_an_axis_and_an_option_with_nothing_else_to_edit():
    @jax.tree_util.register_dataclass
    @dataclasses.dataclass(frozen=True)
    class Extended(dynamics.Hparams):
        """The built-in rule's knobs and one more.

        Attributes:
          jitter: a new knob >= 0, switched off at 0 (see :func:`update`). More on it in a second sentence.
        """

        jitter: float = 0.0

    assert tds.axis_names(Extended) == GRID_ORDER + ("jitter",)  # the last axis: earlier sweeps keep their layout
    helps = tds.axis_help(Extended)
    assert helps["jitter"] == (
        "jitter axis, a knob of the built-in rule (test_sweep_axes.Extended.jitter: a new knob "
        ">= 0, switched off at 0 (see ``test_sweep_axes.update``)); empty: not an axis (each "
        "method's value, else 0)."
    )
    doc = "A sweep.\n\n    Attributes:\n" + "".join(f"      {k}: {v}\n" for k, v in helps.items())
    cls = dataclasses.make_dataclass(
        "Sweep", tds.axis_fields(Extended), bases=(RunStructure,), frozen=True, namespace={"__doc__": doc}
    )
    text = _help(cls)
    assert "--jitter STR jitter axis, a knob of the built-in rule" in text and "(default: empty)" in text
    assert "second sentence" not in text
    parser = argparse.ArgumentParser()
    cli.add_config_args(parser, cls)
    assert cli.config_from_args(cls, parser.parse_args(["--jitter", "0,0.1"])).jitter == "0,0.1"


def test_the_documented_attributes_are_read_as_the_command_line_reads_them():
    class Knobs:
        """Knobs.

        Attributes:
          a: the first, over
            two lines.
          b (float): the second.

        Not an attribute: a later paragraph.
        """

    assert attributes.documented(Knobs) == {"a": "the first, over two lines.", "b": "the second."}
    assert cli.config_help(Knobs) == attributes.documented(Knobs)


@pytest.mark.parametrize("knob", dynamics.FIELDS)
def test_each_knob_axis_is_checked_by_hparams(knob, tmp_path, capsys):
    bad = {
        "temperature": "-1",
        "momentum": "1",
        "repulsion": "-1",
        "damping": "0",
        "langevin": "-1",
        "sinkhorn_iters": "101",
        "slot_norm": "2",
        "anneal_ratio": "0.5",
        "anneal_steps": "1.5",
    }[knob]
    argv = [
        "sweep",
        "token-dynamics",
        "--out",
        str(tmp_path / "never"),
        "--no-cache",
        f"--{knob.replace('_', '-')}",
        bad,
    ]
    assert cli.main(argv) == 2
    assert knob in capsys.readouterr().err
