"""A study of one's own is stamped with every module of the user's it reaches: a helper its file
imports at the top (a module, or a value from it), and one its run imports inside a function (stamped as it is reached, before a
part is kept). Editing either makes a rerun into the same directory a refusal naming it, never the
old results reported as new."""

import importlib
import sys
import textwrap

import pytest

from tokdyn import io, studies
from tokdyn.experiment import runner

PLUGIN = '''
"""A study whose numbers come from two helper modules."""

import dataclasses

import numpy as np

import topplug_reads
from tokdyn import io
from valplug_reads import OFFSET
from tokdyn.experiment import runner
from tokdyn.experiment.study import Estimate


@dataclasses.dataclass(frozen=True)
class Config:
    """Its configuration.

    Attributes:
      seeds: seeds.
    """

    seeds: int = 3

    def validate(self) -> "Config":
        """Nothing to check."""
        return self

    def estimate(self) -> Estimate:
        """Nothing to speak of."""
        return Estimate(models=1, work={"dynamics": 0.0})


def run(session, cfg):
    """The rates, kept as a part."""

    def compute():
        import lazyplug_reads

        return {"rate": np.arange(1, cfg.seeds + 1) * topplug_reads.RATE * lazyplug_reads.FACTOR + OFFSET}

    rates = session.part("rates", compute)["rate"]
    return runner.Result({"rates.csv": {"rate": rates}}, data=list(rates))


SPEC = runner.Spec(name="plugin-reads", config=Config, run=run, outputs=("rates.csv",))
'''

HELPERS = ("topplug_reads", "lazyplug_reads", "valplug_reads", "plugin_reads")


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "topplug_reads.py").write_text("RATE = 0.1\n")
    (tmp_path / "lazyplug_reads.py").write_text("FACTOR = 1.0\n")
    (tmp_path / "valplug_reads.py").write_text("OFFSET = 0.0\n")
    (tmp_path / "plugin_reads.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield studies.load_file(str(tmp_path / "plugin_reads.py"))
    for name in HELPERS:
        sys.modules.pop(name, None)


def _run(module, out):
    return runner.run_study(module.SPEC, module.Config(), out, quiet=True, plots=False)


@pytest.mark.parametrize(
    "helper, edit",
    [("topplug_reads", "RATE = 0.2\n"), ("valplug_reads", "OFFSET = 1.0\n"), ("lazyplug_reads", "FACTOR = 2.0\n")],
)
def test_an_edited_helper_module_is_refused(plugin, tmp_path, helper, edit):
    out = str(tmp_path / "out")
    first = _run(plugin, out)
    assert _run(plugin, out) == first  # unchanged code: the kept part is reused
    (tmp_path / f"{helper}.py").write_text(edit)
    for name in HELPERS[:3]:  # as a new process would import them
        sys.modules.pop(name, None)
    with pytest.raises(io.OutputConflict, match=f"module '{helper}' changed"):
        _run(plugin, out)
