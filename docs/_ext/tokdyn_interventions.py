"""The documentation's one table of interventions on a latent block, written from the table the code runs
(:data:`tokdyn.models.vlm.interventions.TABLE`) into ``docs/concepts/latent-generation.md``, between the
markers :data:`BEGIN` and :data:`END`.

At every build (``builder-inited``) the table is rendered from ``TABLE`` and written into the page when it
differs, so the site never shows a stale row; ``python docs/_ext/tokdyn_interventions.py`` prints the table and
``--write`` writes it into the page (the page is committed, so it reads on the repository's site too), and
``tests/test_docs_vlm.py`` checks that the committed page holds what :func:`render` gives.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PAGE = os.path.join(ROOT, "docs", "concepts", "latent-generation.md")
BEGIN = (
    "<!-- the table of interventions: written from tokdyn.models.vlm.interventions.TABLE by "
    "docs/_ext/tokdyn_interventions.py; do not edit by hand -->"
)
END = "<!-- end of the table of interventions -->"
PARTS = {(True, False): "its latent slots", (False, True): "its two markers", (True, True): "its slots and markers"}


def cell(text: str) -> str:
    """A table cell: ``–`` for an empty field, ``|`` escaped."""
    return text.replace("|", "\\|") if text else "–"


def render(table=None) -> str:
    """The Markdown table of ``table`` (default :data:`tokdyn.models.vlm.interventions.TABLE`): one row a kind,
    what it replaces, its value (for a drop kind, what it hides), its scale and its source."""
    if table is None:
        sys.path.insert(0, ROOT)
        from tokdyn.models.vlm.interventions import TABLE as table
    lines = ["| kind | replaces | value | scale | source |", "|---|---|---|---|---|"]
    for k in table:
        value = k.value or f"the latent as computed; {PARTS[tuple(k.drops)]} hidden"
        lines.append(f"| `{k.name}` | {cell(k.replaces)} | {cell(value)} | {cell(k.scale)} | {cell(k.source)} |")
    return "\n".join(lines) + "\n"


def section(text: str) -> tuple[int, int]:
    """Where the table sits in the page's ``text``: the offsets just after :data:`BEGIN`'s line and at
    :data:`END`; a ValueError when the page lacks either marker or holds one twice."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{PAGE} must hold the line {BEGIN!r} once, then the line {END!r} once")
    return text.index(BEGIN) + len(BEGIN) + 1, text.index(END)


def page(text: str) -> str:
    """The page's ``text`` with the table between its markers rendered afresh."""
    start, stop = section(text)
    return text[:start] + render() + text[stop:]


def write(path: str = PAGE) -> bool:
    """Write the table into the page at ``path`` when it differs from :func:`render`; returns whether it was
    written."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = page(text)
    if new == text:
        return False
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    return True


def setup(app):
    app.connect("builder-inited", lambda app: write(os.path.join(app.srcdir, "concepts", "latent-generation.md")))
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        print(PAGE if write() else f"{PAGE} (unchanged)")
    else:
        sys.stdout.write(render())
