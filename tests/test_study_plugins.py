"""A study of one's own, outside the package (docs/studies/writing-a-study.md's example): installed
as a package of studies (an entry point of the group ``tokdyn.studies``), or given to the command
with ``--study-module path.py:SPEC``, it runs from the command line and from ``tokdyn reproduce``
with the runner's treatment (stamp, resume, another configuration refused, its own code stamped)
and is listed by ``tokdyn --help``; nothing of tokdyn is edited."""

import os
import re
import subprocess
import sys

import pytest

from conftest import child_env, jax_compilations
from tokdyn import cli, io, reproduce, studies
from tokdyn.experiment import registry, runner
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.findings import VERDICTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "collapse-vs-temperature"
MODULE = "collapse_vs_temperature"
DIST = "tokdyn-cvt-demo"


def _page_module() -> str:
    with open(os.path.join(ROOT, "docs", "studies", "writing-a-study.md")) as f:
        found = re.search(r"runs this block -->\n```python\n(.*?)```", f.read(), re.S)
    return found.group(1)


def _install(site) -> str:
    """The page's study as an installed package of studies: its module and a ``*.dist-info`` whose
    ``entry_points.txt`` declares it, in ``site`` (a directory for ``sys.path``), as ``pip install``
    leaves them; returns the module's path."""
    site.mkdir()
    path = site / f"{MODULE}.py"
    path.write_text(_page_module())
    info = site / "tokdyn_cvt_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tokdyn.studies]\n{NAME} = {MODULE}:SPEC\n")
    return str(path)


def _tokdyn(args, site, cwd):
    """``tokdyn ARGS`` in a new process whose path holds ``site``."""
    env = child_env(PYTHONPATH=os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    code = "import sys; from tokdyn.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


@pytest.fixture
def own_studies(monkeypatch):
    """This process's studies of one's own start empty and are forgotten after the test."""
    monkeypatch.setattr(registry, "_ADDED", {})
    registry.entry_point_entries.cache_clear()
    yield
    registry.entry_point_entries.cache_clear()
    sys.modules.pop(MODULE, None)


def test_a_package_of_studies_runs_resumes_refuses_and_reproduces(tmp_path, monkeypatch, capsys, own_studies):
    site = tmp_path / "site"
    path = _install(site)
    out = str(tmp_path / "cvt")
    # listed by tokdyn --help, as an installed package's study (a new process, as a user runs it)
    proc = _tokdyn(["--help"], site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if f"tokdyn study {NAME}" in x)
    assert "Collapse against temperature" in line and f"[entry point of {DIST}]" in line

    # the same package seen from this process: it runs as tokdyn's studies run
    monkeypatch.syspath_prepend(str(site))
    registry.entry_point_entries.cache_clear()
    assert NAME in registry.names() and registry.entry(NAME).origin == f"entry point of {DIST}"
    assert studies.spec(NAME).name == NAME and studies.main_of(NAME) is studies.module(NAME).main
    # (--no-cache: this process's compilation cache stays the test session's)
    args = [
        "study",
        NAME,
        "--seeds",
        "3",
        "--temperatures",
        "0.3,256",
        "--out",
        out,
        "--no-plots",
        "--quiet",
        "--no-cache",
    ]
    assert cli.main(args) == 0
    rates = io.read_csv(os.path.join(out, "rates.csv"))  # 0.3 is not its float32 rounding: each row has its seeds
    assert list(rates["seeds"]) == [3, 3] and list(rates["temperature"]) == pytest.approx([0.3, 256.0])
    stamp = study_dir.read_stamp(out)
    assert stamp["study"] == NAME and set(stamp["extra"]["code"]) == {MODULE}  # its code, in its stamp
    before = {f: open(os.path.join(out, f), "rb").read() for f in ("rates.csv", "runs.csv")}
    with jax_compilations() as events:  # resumed: its kept part is read back, nothing simulated or compiled
        assert cli.main(args) == 0
    assert events == [] and before == {f: open(os.path.join(out, f), "rb").read() for f in before}
    capsys.readouterr()
    assert cli.main([*args[:3], "4", *args[4:]]) == 2  # another configuration: refused, naming the field
    assert "seeds: 3 there, 4 now" in capsys.readouterr().err
    with open(path, "a") as f:
        f.write("# a changed module\n")
    assert cli.main(args) == 2  # the study's code changed since: refused, naming its module
    assert f"module {MODULE!r} ({path}) changed" in capsys.readouterr().err

    # tokdyn reproduce runs it beside tokdyn's studies and reports its finding
    rep = str(tmp_path / "reproduce")
    configs = {NAME: studies.spec(NAME).config(seeds=3, temperatures=(0.3, 256.0))}
    verdicts = reproduce.main(reproduce.Config(studies=(NAME,)), rep, quiet=True, plots=False, configs=configs)
    assert verdicts["T1"] in VERDICTS
    text = open(os.path.join(rep, "report.md")).read()
    assert f"## T1. Collapse rises with the temperature: {verdicts['T1']}" in text and f"| {NAME} | done |" in text
    assert "## 1a." not in text  # a study that was not run lists no findings (they were listed open, missing)


def test_a_study_module_given_to_the_command_runs_and_joins_reproduce(tmp_path, capsys, own_studies):
    path = tmp_path / f"{MODULE}.py"
    path.write_text(_page_module())
    given = ["--study-module", f"{path}:SPEC"]
    out = str(tmp_path / "reproduce")
    args = ["reproduce", "--studies", NAME, "--out", out, "--no-plots", "--quiet", "--no-cache"]
    assert cli.main(args) == 2  # without it, an unknown study
    assert f"unknown study {NAME!r}" in capsys.readouterr().err
    assert cli.main([*given, "--help"]) == 0
    assert f"tokdyn study {NAME}" in capsys.readouterr().out
    assert cli.main([*args[:3], *given, *args[3:]]) == 0  # anywhere on the line
    assert f"| {NAME} | done |" in open(os.path.join(out, "report.md")).read()
    assert registry.entry(NAME).origin == f"--study-module {path}:SPEC"
    assert set(study_dir.read_stamp(os.path.join(out, NAME))["extra"]["code"]) == {MODULE}


def test_a_study_of_ones_own_is_checked_by_name(tmp_path, own_studies):
    with pytest.raises(ValueError, match="study_module 'x.py': give path/to/file.py:SPEC or module:SPEC"):
        studies.add_study_module("x.py")
    with pytest.raises(ValueError, match="cannot import .*no file"):
        studies.add_study_module(f"{tmp_path / 'missing.py'}:SPEC")
    path = tmp_path / "not_a_study.py"
    path.write_text("SPEC = 3\n")
    with pytest.raises(ValueError, match="SPEC must be a tokdyn.experiment.runner.Spec, got int"):
        studies.add_study_module(f"{path}:SPEC")
    path = tmp_path / "shadow.py"
    path.write_text(_page_module().replace(f'name="{NAME}"', 'name="collapse"'))
    with pytest.raises(ValueError, match="'collapse' is the name of one of tokdyn's studies"):
        studies.add_study_module(f"{path}:SPEC")
    sys.modules.pop("shadow", None)
    assert cli.main(["--study-module"]) == 2
    assert runner.code_stamp(studies.spec("collapse")) == {}  # tokdyn's own: stamped by its version


def test_a_broken_entry_point_is_left_out_with_a_warning(tmp_path, monkeypatch, own_studies):
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tokdyn.studies]\ncollapse = some_module:SPEC\n-bad = x:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning, match="left out"):
        assert registry.entry_point_entries() == ()
    assert registry.names() == registry.NAMES
