"""A sweep's results are keyed by everything of the user's its function reaches while traced: a
helper module imported inside a rule's step and a data file the step reads. Editing either after
the results were written makes a rerun into the same directory a refusal naming it, never a mix."""

import importlib
import sys
import textwrap
import types

import jax
import numpy as np
import pytest

from tokdyn import io
from tokdyn.engine import sweep
from tokdyn.engine.runs import ClusterRun

RULE = """
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from tokdyn import dynamics


class Knobs(NamedTuple):
    step_size: float = 1.0


def _towards_mean(tokens, points, scale):
    mean = points.total / points.count
    return tokens + scale * (mean - tokens)


def lazy_step(tokens, points, hp, s, key):
    import {helper}

    return _towards_mean(tokens, points, {helper}.SCALE * hp.step_size)


def file_step(tokens, points, hp, s, key):
    return _towards_mean(tokens, points, float(np.load({data!r})[0]) * hp.step_size)


def ext_step(tokens, points, hp, s, key):
    import fastext_reads  # noqa: F401

    return _towards_mean(tokens, points, hp.step_size)


EXT = dynamics.Rule(lambda p, t, hp: t, ext_step, hparams=Knobs(), name="ext")
LAZY = dynamics.Rule(lambda p, t, hp: t, lazy_step, hparams=Knobs(), name="lazy")
FILE = dynamics.Rule(lambda p, t, hp: t, file_step, hparams=Knobs(), name="file")
"""

SMALL = dict(n_tokens=2, dim=2, points_per_cluster=8, max_clusters=2, n_clusters=2, n_steps=4)


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A rule module and its lazily imported helper in a folder of the user's, importable."""
    helper, rules = "lazyhelper_reads", "rules_reads"
    data = str(tmp_path / "scale.npy")
    np.save(data, np.array([0.5]))
    (tmp_path / f"{helper}.py").write_text("SCALE = 0.5\n")
    (tmp_path / f"{rules}.py").write_text(textwrap.dedent(RULE.format(helper=helper, data=data)))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield importlib.import_module(rules), tmp_path / f"{helper}.py", data
    for name in (helper, rules):
        sys.modules.pop(name, None)


def _anew(module):
    """The rule module and its helper imported anew, as a new process imports them."""
    sys.modules.pop("lazyhelper_reads", None)
    sys.modules.pop(module.__name__, None)
    importlib.invalidate_caches()
    return importlib.import_module(module.__name__)


def _sweep(rule, out):
    return sweep.run(
        ClusterRun(rule=rule, **SMALL), sweep.Grid(seeds=2), key=jax.random.key(0), out=out, progress=False
    )


def test_an_edited_helper_imported_inside_the_step_is_refused(user_code, tmp_path):
    module, helper, _ = user_code
    out = str(tmp_path / "lazy")
    first = _sweep(module.LAZY, out)
    assert np.array_equal(_sweep(module.LAZY, out)["steps"], first["steps"])  # unchanged code: resumed as is
    helper.write_text("SCALE = 1.0\n")
    with pytest.raises(io.OutputConflict, match=f"module '{helper.stem}'"):
        _sweep(_anew(module).LAZY, out)


def test_an_edited_data_file_read_while_tracing_is_refused(user_code, tmp_path):
    module, _, data = user_code
    out = str(tmp_path / "file")
    _sweep(module.FILE, out)
    np.save(data, np.array([1.0]))
    with pytest.raises(io.OutputConflict, match="scale.npy"):
        _sweep(_anew(module).FILE, out)


def test_a_compiled_module_of_the_users_must_be_declared(user_code, tmp_path, monkeypatch):
    """An extension module outside the installed packages has no source to digest: refused before
    anything is compiled unless ``code`` names it."""
    module, _, _ = user_code
    fake = types.ModuleType("fastext_reads")
    fake.__file__ = str(tmp_path / "fastext_reads.cpython-311-x86_64-linux-gnu.so")
    monkeypatch.setitem(sys.modules, "fastext_reads", fake)
    with pytest.raises(ValueError, match="fastext_reads.*code=") as refused:
        _sweep(module.EXT, str(tmp_path / "ext"))
    assert "declare" in str(refused.value)
