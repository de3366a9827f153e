"""Files that are not tokdyn's, and the messages a user reads: a sweep never moves or replaces a
user's file in its directory, a study of one's own never writes outside its directory, and what goes
wrong is said in words that name the cause and the way out."""

from __future__ import annotations

import os
import sys
import textwrap

import jax
import numpy as np
import pytest

from tokdyn import cli, io
from tokdyn.engine import sweep
from tokdyn.engine.sweep import Grid
from tokdyn.experiment import registry

KEY = jax.random.key(0)
GRID = Grid(2, a=[1.0, 2.0])


def twice(key, a):
    return {"y": a * 2.0}


def tokdyn(args, capsys) -> tuple[int, str, str]:
    """``tokdyn ARGS`` in this process: (exit code, stdout, stderr)."""
    code = cli.main([*map(str, args), "--no-cache"])
    got = capsys.readouterr()
    return code, got.out, got.err


@pytest.fixture
def own_studies(monkeypatch):
    """This process's studies of one's own start empty and are forgotten after the test."""
    monkeypatch.setattr(registry, "_ADDED", {})
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if not name.startswith(("tokdyn", "jax", "numpy", "scipy", "matplotlib")):
            sys.modules.pop(name, None)


TINY = '''
"""A tiny study of one's own."""
import dataclasses

from tokdyn.experiment import runner
from tokdyn.experiment.study import Estimate


@dataclasses.dataclass(frozen=True)
class Config:
    """Tiny.

    Attributes:
      values: numbers.
      axis: an axis, as text.
    """

    values: tuple = (1.0, 2.0)
    axis: str = "0.003,0.03"

    def validate(self):
        return self

    def estimate(self):
        return Estimate(models=1, work={{}})


def run(session, cfg):
{run}
    session.part("axis", lambda: {{"axis": [float(v) for v in cfg.axis.split(",")]}})
    return runner.Result({{"t.csv": {{"v": list(cfg.values)}}}})


SPEC = runner.Spec(name="tiny", config=Config, run=run, outputs=("t.csv",))
'''


def tiny(tmp_path, run="    pass", text=TINY, name="tiny.py") -> str:
    """A study of one's own in ``tmp_path``, whose ``run`` first does ``run``; its ``--study-module``."""
    path = tmp_path / name
    path.write_text(text.format(run=textwrap.indent(textwrap.dedent(run), "    ")))
    return f"{path}:SPEC"


# ------------------------------------------------------------------------------------ item 9


@pytest.mark.parametrize("layout", ["manifest-and-empty-chunks", "foreign-chunk"])
def test_a_sweep_never_moves_or_replaces_a_users_files(layout, tmp_path):
    """A user's ``manifest.json`` beside an empty ``chunks/``, or a ``chunks/mine.npz`` of theirs,
    is refused before any work, and nothing in the directory changes (the manifest was once set
    aside to ``corrupt/`` and replaced; the foreign chunk accepted silently)."""
    d = tmp_path / "mine"
    (d / "chunks").mkdir(parents=True)
    if layout == "manifest-and-empty-chunks":
        (d / "manifest.json").write_text('{"mine": true}')
        words = "not a sweep's manifest"
    else:
        (d / "chunks" / "mine.npz").write_bytes(b"mine")
        words = "chunks/mine.npz"
    before = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
    with pytest.raises(io.OutputConflict, match=words):
        sweep.run(twice, GRID, key=KEY, out=str(d), progress=False)
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == before


def test_a_damaged_manifest_beside_its_chunks_is_still_the_sweeps(tmp_path):
    """The rule above keeps a sweep's own damaged manifest recoverable: beside a chunk the sweep
    wrote, it is set aside and written anew, and the result is the same."""
    d = str(tmp_path / "s")
    ref = sweep.run(twice, GRID, key=KEY, out=d, chunk_size=2, progress=False)
    with open(os.path.join(d, "manifest.json"), "w") as f:
        f.write("{")
    with pytest.warns(RuntimeWarning, match="written anew"):
        again = sweep.run(twice, GRID, key=KEY, out=d, chunk_size=2, progress=False)
    assert list(again["y"]) == list(ref["y"])


# ------------------------------------------------------------------------------------ item 10


@pytest.mark.parametrize("names", [("..", "escape.txt"), ("sub", "..", "..", "escape.txt"), ("/tmp", "x.txt")])
def test_a_study_path_never_leads_outside_its_directory(names, tmp_path, capsys, own_studies):
    """``session.path(...)`` is "a path inside the study directory": one leading out of it is
    refused with the names, and nothing is written outside ``--out``."""
    module = tiny(tmp_path, run=f"open(session.path{names!r}, 'w').close()")
    code, _, err = tokdyn(["--study-module", module, "study", "tiny", "--out", tmp_path / "o"], capsys)
    assert code == 1 and "not a path inside the study directory" in err and repr(names[0]) in err, err
    assert not (tmp_path / "escape.txt").exists() and sorted(os.listdir(tmp_path)) == ["o", "tiny.py"]


# ------------------------------------------------------------------------------------ item 13


def test_a_value_spelled_otherwise_is_the_same_configuration(tmp_path, capsys, own_studies):
    """``--axis 3e-3,3e-2`` into the directory of ``--axis 0.003,0.03`` resumes it (its parts
    reused, nothing removed) instead of refusing it as another configuration and advising
    ``--fresh``; another value is still refused, naming it."""
    module, out = tiny(tmp_path), tmp_path / "o"
    args = ["--study-module", module, "study", "tiny", "--out", out]
    assert tokdyn([*args, "--axis", "0.003,0.03"], capsys)[0] == 0
    part = out / "parts" / "axis.npz"
    kept = part.stat().st_mtime_ns
    code, _, err = tokdyn([*args, "--axis", " 3e-3, 3E-2"], capsys)
    assert code == 0, err
    assert part.stat().st_mtime_ns == kept  # reused: the same configuration
    code, _, err = tokdyn([*args, "--axis", "3e-3,3e-1"], capsys)
    assert code == 2 and "axis: 0.003,0.03 there, 3e-3,3e-1 now" in err, err


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("0.003,0.03", "3e-3,3e-2", True),
        ("linspace:0:1:3", "linspace:0.0:1.0:3", True),
        ("step_size=0.5,1;beta=2", "step_size = 5e-1, 1.0; beta=2", True),
        ("0.003,0.03", "0.03,0.003", False),  # another order: another grid
        ("0.003,0.03", "0.003,0.031", False),
        ("rules01.py:R", "rules1.py:R", False),  # not numbers: as written
        ("1e400", "inf", False),  # overflows are compared as written
        (["1", {"a": "2.0"}], ["1.0", {"a": "2"}], True),
        (1, 1.0, True),
    ],
)
def test_same_value(a, b, same):
    from tokdyn.experiment.study import same_value

    assert same_value(a, b) is same and same_value(b, a) is same


# ------------------------------------------------------------------------------------ item 12


def test_an_incomplete_study_is_named_when_loaded(tmp_path, capsys, own_studies):
    """A study of one's own whose Config lacks ``estimate()`` (once an AttributeError traceback at
    run time) is refused when loaded, exit 2, naming everything missing at once; nothing is
    written."""
    text = TINY.replace("    def estimate(self):\n        return Estimate(models=1, work={{}})\n", "")
    text = text.replace("      axis: an axis, as text.\n", "").replace(
        'outputs=("t.csv",))', 'outputs=("t.csv", "../t.csv"), selection=("nope",))'
    )
    module = tiny(tmp_path, text=text)
    code, _, err = tokdyn(["--study-module", module, "study", "tiny", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "Traceback" not in err, err
    for words in ("has no estimate() method", "does not document axis", "'nope'", "'../t.csv'"):
        assert words in err, (words, err)
    assert not (tmp_path / "o").exists()


def test_ragged_rows_are_named():
    """``io.to_columns`` of rows that lack a column names the row and the column (once a KeyError)."""
    rows = [{"a": 1, "b": 2}, {"a": 3, "c": 4}]
    with pytest.raises(ValueError, match=r"row 1 lacks 'b' .*it holds 'c'"):
        io.to_columns(rows)
    with pytest.raises(ValueError, match=r"row 0 lacks 'c'"):
        io.to_columns(rows, ["a", "c"])
    assert io.to_columns(rows, ["a"]) == {"a": [1, 3]}


# ------------------------------------------------------------------------------------ item 19


def test_a_repeated_value_exits_2_before_any_work_for_a_study_of_ones_own(tmp_path, capsys, own_studies):
    """``--values 1,1`` of a study of one's own whose checks do not look for repeats (its run
    refuses them, as sweep.Grid does: once exit 1 with a traceback, after the directory was
    stamped) exits 2 before any work, as tokdyn's own studies do."""
    module = tiny(tmp_path, run="from tokdyn import checks\nchecks.distinct('values', cfg.values)")
    code, _, err = tokdyn(
        ["--study-module", module, "study", "tiny", "--values", "1,2,1", "--out", tmp_path / "o"], capsys
    )
    assert code == 2 and "values lists 1.0 more than once" in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_sequence_may_repeat_a_value():
    """The rule leaves sequences alone: a (low, high) range a config names in ``SEQUENCES``, and a
    field whose default repeats a value (layer widths)."""
    _, scenes = cli.config_class(("study", "scenes"))
    _, slots = cli.config_class(("sweep", "slots"))
    cli.check_repeats(scenes, {("scale",): (0.3, 0.3)})
    cli.check_repeats(slots, {("model", "encoder_channels"): (64, 64)})
    with pytest.raises(ValueError, match="methods lists 'baseline' more than once"):
        cli.check_repeats(scenes, {("methods",): ("baseline", "baseline")})


# ------------------------------------------------------------------------------------ item 15


def test_a_rerun_says_what_it_reused(tmp_path, capsys, own_studies):
    """A rerun that finds every part kept says so (it was silent), and one that computes says
    nothing of the kind."""
    module, out = tiny(tmp_path), tmp_path / "o"
    args = ["--study-module", module, "study", "tiny", "--out", out]
    code, said, _ = tokdyn(args, capsys)
    assert code == 0 and "read back" not in said, said
    code, said, _ = tokdyn(args, capsys)
    assert code == 0 and f"1 of 1 parts read back from an earlier run of this configuration in {out}" in said, said
    assert "nothing recomputed" in said


def test_a_sweep_counts_the_runs_it_read_back(tmp_path):
    """``sweep.runs_kept_before``: the runs a sweep read back instead of computing (the sweeps'
    last line, ``runner.work_line``, says them, where it once read like new work)."""
    import time

    from tokdyn.experiment import runner

    d = str(tmp_path / "s")
    since = time.time()
    sweep.run(twice, GRID, key=KEY, out=d, chunk_size=2, progress=False)
    assert sweep.runs_kept_before(d, since) == 0
    os.remove(os.path.join(d, "chunks", sorted(os.listdir(os.path.join(d, "chunks")))[0]))
    since = time.time()
    sweep.run(twice, GRID, key=KEY, out=d, chunk_size=2, progress=False)
    assert sweep.runs_kept_before(d, since) == len(GRID) - 2
    assert runner.work_line(16, "models", 1.04, 0) == "16 models in 1.0 s"
    assert runner.work_line(16, "models", 1.04, 16).startswith("16 models, all read back from an earlier run")
    assert runner.work_line(16, "models", 1.04, 4) == "16 models: 4 read back from an earlier run, 12 computed in 1.0 s"


# ------------------------------------------------------------------------------------ item 16


class Diverged:
    """A stand-in run of a learned sweep's grid (no training): at the higher learning rate every
    model diverges (NaN metrics) after skipping ``seed + 1`` non-finite steps."""

    def __call__(self, key, learning_rate):
        u = jax.random.uniform(key, (3,))
        bad = learning_rate > 5e-3
        nan = jax.numpy.where(bad, jax.numpy.nan, 0.0)
        return {
            "grammatical_sentences": u[0] + nan,
            "grammatical_bigrams": u[1] + nan,
            "valid": u[2] + nan,
            "nll": 10 * u[0] + nan,
            "skipped": jax.numpy.where(bad, 1.0 + jax.numpy.floor(10 * u[0]), 0.0),
        }


def test_a_diverged_condition_shows_its_skipped_steps(tmp_path):
    """report.md's skipped steps of a condition whose every model diverged are their counts over
    every model (they were the mean over the finite models: ``nan``)."""
    from tokdyn.models import sequence
    from tokdyn.studies.learned_sweep import grid_diffusion, report
    from tokdyn.train import optim

    model = sequence.Config(
        model="grid_d3pm_uniform", elements="grids", T=4, width=8, depth=1, heads=2, batch_size=8,
        train=optim.Config(steps=4, steps_per_call=2, warmup=0, decay="constant"),
    )  # fmt: skip
    cfg = grid_diffusion.Config(seeds=3, learning_rate="1e-3,1e-2", lam="", n_resamples=20, model=model)
    out = str(tmp_path)
    sweep.run(Diverged(), cfg.grid(), key=KEY, common_random_numbers=True, out=out, progress=False)
    result = report.analysis(out, cfg)
    cols = sweep.load(out).columns
    want = np.asarray(cols["skipped"])[np.asarray(cols["learning_rate"]) > 5e-3]  # the diverged models' counts
    table = result.tables["conditions.csv"]
    assert list(table["skipped_total"]) == [0, want.sum()] and list(table["skipped_models"]) == [0, 3]
    line = next(x for x in result.data["report"].splitlines() if x.startswith("| learning_rate=0.01"))
    assert line.endswith(f"| {int(want.sum())} in 3 of 3 models (at most {int(want.max())}) |"), line
    assert "nan" not in line.split("|")[-2], line


# ------------------------------------------------------------------------------------ item 17


def test_a_rule_file_imports_the_helper_beside_it(tmp_path, monkeypatch):
    """``--rule-module path/rule.py:RULES`` whose file does ``import helper`` (a module beside it)
    loads without ``PYTHONPATH``, as ``python path/rule.py`` would (it failed: No module named)."""
    from tokdyn.studies.token_dynamics_sweep.rule_module import load_rules

    monkeypatch.setattr(sys, "path", list(sys.path))  # the folder added is forgotten after the test
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "besidehelper.py").write_text("def move(tokens, means, s):\n    return tokens + s * (means - tokens)\n")
    (folder / "besiderule.py").write_text(
        "import besidehelper\nfrom tokdyn import dynamics\n\n"
        "def step(tokens, points, hp, s, key):\n    return besidehelper.move(tokens, tokens, 1.0)\n\n"
        "RULES = {'mine': dynamics.Rule(lambda points, tokens, hp: tokens, step, name='mine')}\n"
    )
    monkeypatch.chdir(tmp_path)
    try:
        rules = load_rules("mine/besiderule.py:RULES")
        assert list(rules) == ["mine"] and sys.path[-1] == str(folder)
    finally:
        for name in ("besiderule", "besidehelper"):
            sys.modules.pop(name, None)


# ------------------------------------------------------------------------------------ item 18


def test_a_study_module_given_wins_over_the_installed_one(tmp_path, capsys, monkeypatch, own_studies):
    """``--study-module file.py:SPEC`` of a study that an installed package also declares (an entry
    point of the same name) runs the file given, with a note (it was refused: choose another name)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "installedtiny.py").write_text(TINY.format(run="    raise RuntimeError('the installed one ran')"))
    info = site / "tinydemo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinydemo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tokdyn.studies]\ntiny = installedtiny:SPEC\n")
    monkeypatch.syspath_prepend(str(site))
    registry.entry_point_entries.cache_clear()
    try:
        assert registry.entry("tiny").origin == "entry point of tinydemo"
        module = tiny(tmp_path)
        code, _, err = tokdyn(["--study-module", module, "study", "tiny", "--out", tmp_path / "o"], capsys)
        assert code == 0, err
        assert "the study 'tiny' is also installed (entry point of tinydemo)" in err and module in err, err
        assert (tmp_path / "o" / "t.csv").exists()
    finally:
        registry.entry_point_entries.cache_clear()


# ------------------------------------------------------------------------------------ item 14


def test_a_code_change_is_named_by_its_module(tmp_path, capsys, own_studies):
    """A rerun after the study's own module changed is refused naming the module and its file,
    with the ways out that fit (--fresh, another --out, the code restored), never the digests nor
    "rerun with those settings"."""
    module, out = tiny(tmp_path), tmp_path / "o"
    args = ["--study-module", module, "study", "tiny", "--out", out]
    assert tokdyn(args, capsys)[0] == 0
    with open(tmp_path / "tiny.py", "a") as f:
        f.write("# changed\n")
    sys.modules.pop("tiny", None)
    code, _, err = tokdyn(args, capsys)
    assert code == 2 and f"module 'tiny' ({tmp_path / 'tiny.py'}) changed since these results" in err, err
    assert "--fresh" in err and "those settings" not in err and "extra.code" not in err, err


# ------------------------------------------------------------------------------------ item 11


def _stored_model(out: str, name: str, stamp: str, steps: int = 40) -> dict:
    """The four files of a finished model ``name`` in the store ``out``, its checkpoint stamped ``stamp``."""
    from tokdyn.train import store

    p = store.paths(out, name)
    for key in ("curve", "answers", "checkpoint"):
        os.makedirs(os.path.dirname(p[key]), exist_ok=True)
    curve = b"step,seed,val_all\n40,0,0.5\n"
    answers = np.arange(3, dtype=np.int32).reshape(1, 3) + len(name)
    with open(p["curve"], "wb") as f:
        f.write(curve)
    io.save_npz(p["answers"], answers=answers, curve_csv=np.frombuffer(curve, np.uint8), steps=steps)
    io.save_npz(p["checkpoint"], meta_step=np.asarray(steps), meta_stamp=np.asarray(stamp))
    record = {"variant": name, "steps": steps, "answers_sha256": store.answers_digest(answers)}
    store.write_result(p["result"], {**record, **store.checkpoint_record(p["checkpoint"])})
    return p


def test_a_checkpoint_swapped_for_another_models_is_named(tmp_path):
    """A store's checkpoint replaced by another variant's with the same step count: the owner sets
    it aside and trains the model again (it was finished, exit 0, the swap unnoticed), a reader is
    refused naming the file in a line (it got a ValueError with both multi-kilobyte stamps)."""
    from tokdyn.train import store

    out = str(tmp_path)
    big = {"lr": 0.1, "blob": "x" * 4000}
    a = _stored_model(out, "a", json_stamp("a", big))
    b = _stored_model(out, "b", json_stamp("b", big))
    os.replace(b["checkpoint"], a["checkpoint"])  # a's checkpoint is now b's
    with pytest.raises(io.CorruptFile, match="holds the checkpoint of another model") as refused:
        store.verify(out, "a")  # a reader: refused, nothing moved
    assert len(str(refused.value)) < 400 and os.path.exists(a["checkpoint"])
    with pytest.raises(io.CorruptFile, match=r"another model or configuration than 'a' \(variant: b there, a asked\)"):
        store.load(out, "a", None, json_stamp("a", big))
    with pytest.warns(RuntimeWarning, match="holds the checkpoint of another model"):
        assert not store.finished(out, "a")  # the owner: set aside, trained again
    assert not os.path.exists(a["checkpoint"]) and store.missing(out, ["a"]) == ["a"]


def json_stamp(name: str, config: dict) -> str:
    """A stamp shaped as a model's (the latent reasoner's: its variant and configuration)."""
    import json

    return json.dumps({"variant": name, "config": config}, sort_keys=True)


def test_stamp_difference_names_fields_not_stamps():
    from tokdyn.train.checkpoints import stamp_difference

    a = json_stamp("a", {"train": {"steps": 3000}, "blob": "x" * 4000})
    b = json_stamp("a", {"train": {"steps": 500}, "blob": "x" * 4000})
    assert stamp_difference(a, b) == "config.train.steps: 3000 there, 500 asked"
    assert "character 4" in stamp_difference("abcdX" + "y" * 5000, "abcdZ" + "y" * 5000)


# ------------------------------------------------------------------------------------ item 20


def test_help_says_each_thing_once(tmp_path, capsys, own_studies):
    """A study of one's own's ``--help`` prints its docstring's first paragraph once (it was twice,
    the first with a stray ``?.``); ``--no-plots`` only where figures are drawn; ``plot heatmap``'s
    required options are required, without "(default: empty)"."""
    text = TINY.replace('"""A tiny study of one\'s own."""', '"""Does a tiny study\nof one\'s own run?"""')
    module = tiny(tmp_path, text=text)
    code, said, _ = tokdyn(["--study-module", module, "study", "tiny", "--help"], capsys)
    flat = " ".join(said.split())
    assert code == 0 and flat.count("Does a tiny study of one's own run?") == 1 and "?." not in flat, said
    assert "--no-plots" not in said  # it draws no figures
    for command, offered in ((["study", "collapse"], True), (["sweep", "vtae"], True), (["reproduce"], True)):
        code, said, _ = tokdyn([*command, "--help"], capsys)
        assert code == 0 and ("--no-plots" in said) is offered, (command, said)
    code, said, _ = tokdyn(["plot", "heatmap", "--help"], capsys)
    assert "(required) (default" not in said and "axis on the horizontal (required)" in said, said
    code, _, err = tokdyn(["plot", "heatmap", str(tmp_path)], capsys)
    assert code == 2 and "the following arguments are required: --x, --y" in err, err
