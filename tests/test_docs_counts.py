"""Counts and times the docs state are not written by hand where they can drift: a count of the
studies matches the registry, and the default suite's size and time are stated once (the README's
Tests section, which the getting-started page includes)."""

import glob
import os
import re

import pytest

import included
from tokdyn.experiment import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split()
_NUMBER = r"(\d+|" + "|".join(WORDS) + r")"
_STUDIES = re.compile(
    r"\b(?:the|all|all the|all of the|each of(?: the)?|every one of the)\s+" + _NUMBER + r"\s+studies\b", re.I
)
_SUITE_TIME = re.compile(
    r"\b(?:default|test) suite\b[^.]*?\b\d+(?:[.,]\d+)?\s*(?:min|minutes|s\b|seconds)", re.I | re.S
)


def _pages() -> list[str]:
    out = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "ARCHITECTURE.md")]
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)):
        rel = os.path.relpath(path, os.path.join(ROOT, "docs"))
        if not rel.startswith(("_build", "api" + os.sep)):
            out.append(path)
    return out


def _value(word: str) -> int:
    return int(word) if word.isdigit() else WORDS.index(word.lower()) + 1


@pytest.mark.parametrize("path", _pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_a_count_of_the_studies_is_the_registry_s(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for m in _STUDIES.finditer(text):
        assert _value(m.group(1)) == len(registry.NAMES), (
            f"{os.path.relpath(path, ROOT)} says {m.group(0)!r}; tokdyn.experiment.registry lists "
            f"{len(registry.NAMES)}: say 'the studies', or generate the count"
        )


def test_the_suite_s_time_is_stated_once():
    stated = []
    for path in _pages():
        with open(path, encoding="utf-8") as f:
            if _SUITE_TIME.search(f.read()):
                stated.append(os.path.relpath(path, ROOT))
    assert stated == ["README.md"], f"the default suite's time is stated in {stated}: state it in the README only"
    page = os.path.join(ROOT, "docs", "getting-started.md")
    assert _SUITE_TIME.search(included.expand(page)), "getting started includes the README's statement of it"


def test_the_checks_catch_a_hand_written_count():
    assert _value(_STUDIES.search("each of nine studies reproduces").group(1)) == 9
    assert _STUDIES.search("its first seven studies took 8 min") is None  # a part of them, measured
    assert _SUITE_TIME.search("The default suite takes about 5 minutes on a 2-core machine")
