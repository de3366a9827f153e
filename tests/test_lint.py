"""The code passes the linter configured in pyproject.toml (``[tool.ruff]``): pyflakes,
pycodestyle's errors and bugbear over the package, the tests, the benchmarks, the docs' code and
the notebooks. Running it here makes the README's test command enforce it on every machine."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    exe = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    assert exe, "ruff is missing: it is in the test extra (pip install -e '.[test]')"
    done = subprocess.run([exe, "check", "--no-cache", ROOT], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
