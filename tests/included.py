"""A Markdown page as Sphinx shows it: its MyST ``{include}`` directives replaced by the text they
include (``:start-after:`` / ``:end-before:`` markers), so that tests read the page a reader sees."""

import os
import re

_INCLUDE = re.compile(r"^```\{include\} (?P<path>\S+)\n(?P<options>(?::[\w-]+:.*\n)*)```\n", re.M)


def _option(options: str, name: str):
    found = re.search(rf"^:{name}:\s*(.*)$", options, re.M)
    return found.group(1).strip().strip('"') if found else None


def includes(path: str) -> list[tuple[str, str, str]]:
    """``(included file, start-after marker, end-before marker)`` of every ``{include}`` of ``path``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [
        (
            os.path.normpath(os.path.join(os.path.dirname(path), m["path"])),
            _option(m["options"], "start-after"),
            _option(m["options"], "end-before"),
        )
        for m in _INCLUDE.finditer(text)
    ]


def expand(path: str) -> str:
    """The text of ``path`` with every ``{include}`` replaced by what it includes; ``AssertionError``
    for a marker the included file lacks."""
    with open(path, encoding="utf-8") as f:
        text = f.read()

    def replace(m):
        target = os.path.normpath(os.path.join(os.path.dirname(path), m["path"]))
        with open(target, encoding="utf-8") as f:
            body = f.read()
        start, end = _option(m["options"], "start-after"), _option(m["options"], "end-before")
        if start is not None:
            assert start in body, f"{target} lacks the marker {start!r} that {path} includes from"
            body = body.split(start, 1)[1]
        if end is not None:
            assert end in body, f"{target} lacks the marker {end!r} that {path} includes up to"
            body = body.split(end, 1)[0]
        return body

    return _INCLUDE.sub(replace, text)
