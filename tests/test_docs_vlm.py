"""The documentation of the vision-language models' layer says what the code does: the one table of
interventions on its page is the one the code runs (``tokdyn.models.vlm.interventions.TABLE``), the
decomposition's settings are the code's, the study page's options are the study's ``Config``'s, every name the
pages' code (and the example they show) reaches through tokdyn exists and is not a deprecated alias, the parts
of the example the pages include are there, and (full tier) the latent-generation page's code runs as written
on the tests' tiny latent checkpoint."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import os
import re
import sys
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
EXAMPLE = os.path.join(ROOT, "examples", "vlm_analyses.py")
PAGES = [
    os.path.join(DOCS, "concepts", name + ".md")
    for name in (
        "latent-generation",
        "organism-training",
        "qwen2-5-vl",
        "vlm-decomposition",
        "vlm-mediation",
        "vlm-dmlr",
        "diagnostics",
    )
] + [os.path.join(DOCS, "studies", "vlm-diagnostics.md")]


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _generator():
    path = os.path.join(DOCS, "_ext", "tokdyn_interventions.py")
    spec = importlib.util.spec_from_file_location("tokdyn_interventions_page", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


# --------------------------------------------------------------------------- the one table of interventions


def test_the_table_of_interventions_is_the_code_s():
    from tokdyn.models.vlm import interventions

    gen = _generator()
    text = _read(gen.PAGE)
    start, stop = gen.section(text)
    assert text[start:stop] == gen.render(), "the table is stale: run python docs/_ext/tokdyn_interventions.py --write"
    rows = re.findall(r"^\| `(\w+)` \|", text[start:stop], re.M)
    assert rows == list(interventions.KINDS)
    changed = (dataclasses.replace(interventions.TABLE[2], scale="another scale"),) + interventions.TABLE[3:]
    assert "another scale" in gen.render(interventions.TABLE[:2] + changed)  # the table, not a copy, is read
    with pytest.raises(ValueError, match="must hold the line"):
        gen.section(text.replace(gen.END, ""))


def test_the_decomposition_s_settings_are_the_code_s():
    from tokdyn.diagnostics import vlm

    text = _read(os.path.join(DOCS, "concepts", "vlm-decomposition.md"))
    got = dict(re.findall(r"^\| `(\w+)` \| `(\w+)` \|", text, re.M))
    assert got == vlm.SETTINGS


# --------------------------------------------------------------------------- the study's options


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_the_study_page_s_options_are_the_config_s():
    from tokdyn.studies import vlm_diagnostics as vd

    text = _read(os.path.join(DOCS, "studies", "vlm-diagnostics.md"))
    block = re.search(r"^```\ntokdyn study vlm-diagnostics --out DIR (.*?)^```", text, re.S | re.M).group(1)
    flags = dict(re.findall(r"--([a-z][a-z-]*)(?: ([^\s\]]+))?", block))
    fields = {f.name: f.default for f in dataclasses.fields(vd.Config)}
    missing = sorted(name for name in fields if name != "preset" and name.replace("_", "-") not in flags)
    assert not missing, f"the options block lacks {missing}"
    for flag, value in flags.items():
        name = flag.replace("-", "_")
        if name not in fields or not value or value.isupper() or "..." in value or value.startswith("FILE"):
            continue  # --quick, --fresh; a placeholder (DIR, TOKEN) or a shortened list
        assert value == _shown(fields[name]), f"--{flag} {value}: the default is {_shown(fields[name])}"


# --------------------------------------------------------------------------- the pages' code


def _aliases(tree) -> dict:
    """``{local name: dotted tokdyn path}`` of a block's imports of tokdyn."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tokdyn"):
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tokdyn"):
                    out[a.asname or a.name.split(".")[0]] = a.asname and a.name or a.name.split(".")[0]
    return out


def _resolve(dotted: str):
    """The object at ``dotted`` (a module, or an attribute of one), a DeprecationWarning raised as an error."""
    parts = dotted.split(".")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for name in parts[i:]:
                obj = getattr(obj, name)
            return obj
    raise ImportError(dotted)


def _chains(tree, aliases: dict) -> set:
    """Every dotted name a block reaches through its tokdyn imports (``an.Mode``, ``vlm.LatentMode.read``)."""
    found = set()
    for node in ast.walk(tree):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in aliases:
            found.add(".".join([aliases[node.id], *reversed(chain)]))
    return found


@pytest.mark.parametrize("path", PAGES + [EXAMPLE], ids=os.path.basename)
def test_the_pages_code_names_what_exists(path):
    """Every block of a page (the example whole), a block's names resolved with the imports of the blocks
    before it, as a reader runs them in order."""
    blocks = [_read(path)] if path == EXAMPLE else _python_blocks(_read(path))
    aliases, bad = {}, []
    for block in blocks:
        tree = ast.parse(block)
        aliases.update(_aliases(tree))
        for dotted in sorted(set(aliases.values()) | _chains(tree, aliases)):
            try:
                _resolve(dotted)
            except (ImportError, AttributeError, DeprecationWarning) as e:
                bad.append(f"{dotted} ({type(e).__name__}: {e})")
    where = os.path.relpath(path, ROOT)
    assert not bad, f"{where} names what tokdyn does not hold (or holds only as a deprecated alias): {bad}"


def test_the_checks_catch_a_removed_or_deprecated_name():
    tree = ast.parse("from tokdyn.diagnostics import vlm as an\nfrom tokdyn.models import qwen2_5_vl\nan.imagine\n")
    aliases = _aliases(tree)
    assert "tokdyn.diagnostics.vlm.imagine" in _chains(tree, aliases)
    with pytest.raises(AttributeError):
        _resolve("tokdyn.diagnostics.vlm.imagine")
    with pytest.raises(DeprecationWarning):
        _resolve("tokdyn.models.qwen2_5_vl.Chat")
    assert _resolve("tokdyn.models.vlm.LatentMode.read")


def test_the_parts_of_the_example_the_pages_include_are_there():
    example = _read(EXAMPLE)
    for path in PAGES:
        for directive in re.findall(r"^```\{literalinclude\} (.*?)^```", _read(path), re.S | re.M):
            target = os.path.normpath(os.path.join(os.path.dirname(path), directive.split("\n", 1)[0].strip()))
            assert target == EXAMPLE, f"{path} includes {target}"
            for marker in re.findall(r'^:(?:start-after|end-before): "(.*)"$', directive, re.M):
                assert example.count(marker) == 1, f"{os.path.relpath(path, ROOT)}: {marker!r} not once in the example"


# a generation on the tiny latent checkpoint compiles three programs (about 45 s on a loaded 2-core machine):
# the default run has test_the_pages_code_names_what_exists over the same blocks, and the loop itself in
# test_qwen2_5_vl_generation
@pytest.mark.full
def test_the_latent_generation_page_runs_as_written(monkeypatch, capsys):
    pytest.importorskip("safetensors")
    monkeypatch.chdir(ROOT)  # the page's paths are the repository's
    code = "\n".join(_python_blocks(_read(os.path.join(DOCS, "concepts", "latent-generation.md"))))
    exec(compile(code, "latent-generation.md", "exec"), {"__name__": "__page__"})  # noqa: S102
    out = capsys.readouterr().out
    assert "LatentMode(start=" in out and out.rstrip().splitlines()[-1] == "[0 0 0]"


# trains two tiny organisms for four steps under a recipe of the page's own (one compile of the training step,
# about 40 s on two cores): the default run has test_the_pages_code_names_what_exists over the same blocks, and
# the recipe-as-a-value checks in test_organism_training
@pytest.mark.full
def test_the_organism_training_page_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tokenizers")
    monkeypatch.chdir(tmp_path)  # the page saves a checkpoint in the working directory
    blocks = _python_blocks(_read(os.path.join(DOCS, "concepts", "organism-training.md")))
    # the block that opens the checkpoint in transformers runs where transformers (its processor: torchvision) is
    opens = all(importlib.util.find_spec(m) for m in ("transformers", "torch", "torchvision"))
    code = "\n".join(b for b in blocks if "transformers" not in b or opens)
    exec(compile(code, "organism-training.md", "exec"), {"__name__": "__page__"})  # noqa: S102
    out = capsys.readouterr().out
    assert "(2, 2) ['align', 'answer_acc', 'answer_ce', 'grad_norm', 'loss', 'start_ce']" in out
    assert "latent_mode.json" in out and "model.safetensors" in out
