"""Layout of the HTML site's tables, with docs/_static/tokdyn.css.

The stylesheet keeps every table cell on one line (a number such as ``0.665 ± 0.008`` never
breaks; a wide table scrolls sideways). A cell of prose cannot stay on one line, so this extension
marks every cell whose text is longer than :data:`PROSE` characters with the class
``tokdyn-prose`` (the stylesheet lets those wrap), and joins ``±`` to the numbers either side of it
with non-breaking spaces in every cell, so that even a wrapping cell keeps ``0.665 ± 0.008``
whole.
"""

from __future__ import annotations

PROSE = 60  # characters: a longer cell is prose and wraps
NBSP = "\u00a0"


def _join_plus_minus(entry) -> None:
    from docutils import nodes

    for text in list(entry.findall(nodes.Text)):
        if " ± " in text:
            text.parent.replace(text, nodes.Text(str(text).replace(" ± ", f"{NBSP}±{NBSP}")))


def mark_cells(app, doctree, docname) -> None:
    """Mark the prose cells of every table of a page and keep ``±`` with its numbers."""
    from docutils import nodes

    for entry in doctree.findall(nodes.entry):
        if len(entry.astext()) > PROSE:
            entry["classes"].append("tokdyn-prose")
        _join_plus_minus(entry)


def setup(app):
    app.connect("doctree-resolved", mark_cells)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
