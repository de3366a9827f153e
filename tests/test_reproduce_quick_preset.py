"""``tokdyn reproduce --quick`` runs only studies with a quick preset: a study of one's own without
one (or whose preset does not say ``quick``, which keeps a smoke run's verdicts open) is refused
with exit 2 before any work, naming it and the ways out."""

import sys
import textwrap

import pytest

from tokdyn import reproduce, studies
from tokdyn.cli import main
from tokdyn.experiment import registry

PLUGIN = '''
"""A study of one's own{title}."""

import dataclasses

from tokdyn.experiment import runner
from tokdyn.experiment.study import Estimate


@dataclasses.dataclass(frozen=True)
class Config:
    """Its configuration.

    Attributes:
      seeds: seeds.
    """

    seeds: int = 30
{quick}
    def validate(self) -> "Config":
        """Nothing to check."""
        return self

    def estimate(self) -> Estimate:
        """Nothing to run."""
        return Estimate(models=1, work={{"dynamics": 0.0}})


def run(session, cfg):
    """Never reached by these tests."""
    raise AssertionError("the study ran")


SPEC = runner.Spec(name="{name}", config=Config, run=run, outputs=())
'''

QUICK_WITHOUT_PRESET = '''
    @classmethod
    def quick(cls) -> "Config":
        """Fewer seeds, but no preset field."""
        return cls(seeds=2)
'''


@pytest.fixture
def own_studies(monkeypatch):
    monkeypatch.setattr(registry, "_ADDED", {})
    yield
    for name in ("noquick_study", "unlabelled_study"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    "name, quick, words",
    [("noquick_study", "", "has no quick preset"), ("unlabelled_study", QUICK_WITHOUT_PRESET, "whose preset is None")],
)
def test_quick_reproduction_refuses_a_study_without_a_quick_preset(tmp_path, capsys, own_studies, name, quick, words):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(PLUGIN.format(title="", quick=quick, name=name.replace("_", "-"))))
    studies.add_study_module(f"{path}:SPEC")
    study = name.replace("_", "-")
    with pytest.raises(ValueError, match=words):
        reproduce.Config(quick=True, studies=(study,)).validate()
    reproduce.Config(quick=False, studies=(study,)).validate()  # its default is fine without --quick
    out = tmp_path / "out"
    code = main(["--study-module", f"{path}:SPEC", "reproduce", "--quick", "--studies", study, "--out", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert study in err and "without --quick" in err and "preset='quick'" in err
