"""The code passes the linter and the formatter configured in pyproject.toml (``[tool.ruff]``):
pyflakes, pycodestyle's errors and bugbear, and ``ruff format``'s layout, over the package, the
tests, the benchmarks, the docs' code and the notebooks. Running them here makes the README's test
command enforce both on every machine."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff(*args):
    exe = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    assert exe, "ruff is missing: it is in the test extra (pip install -e '.[test]')"
    return subprocess.run([exe, *args, "--no-cache", ROOT], capture_output=True, text=True, cwd=ROOT)


def test_ruff_finds_nothing():
    done = _ruff("check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_code_is_formatted():
    done = _ruff("format", "--check")
    assert done.returncode == 0, "run `ruff format .`\n" + done.stdout + done.stderr
