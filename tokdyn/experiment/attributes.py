"""A class docstring's Attributes section, read as a mapping from each field to its text.

Every configuration and knob class documents its fields there (Google style: ``name: text``,
continuation lines indented deeper). The command line takes each option's help text from it
(:func:`tokdyn.cli.config_help`), and the token-dynamics sweep the help text of its knob axes from
:class:`tokdyn.dynamics.Hparams`' own (:mod:`tokdyn.studies.token_dynamics_sweep`), so a knob is
documented once. Imports nothing: the command line reads it before JAX is imported.
"""

from __future__ import annotations

import re


def documented(cls) -> dict[str, str]:
    """Field name -> its text, from the ``Attributes:`` sections of the docstrings of ``cls`` and
    its bases (a class's own text wins over its bases'). An entry is a line ``name: text`` (or
    ``name (type): text``) at the section's indentation; deeper-indented lines continue it (joined
    with single spaces); the section ends at a blank line followed by a shallower line, or at the
    end of the docstring."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = klass.__dict__.get("__doc__") or ""
        lines = doc.expandtabs().splitlines()
        try:
            start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
        except StopIteration:
            continue
        indent, name = None, None
        for line in lines[start + 1 :]:
            if not line.strip():
                if name is not None and indent is not None:
                    continue
                break
            width = len(line) - len(line.lstrip())
            if indent is None:
                indent = width
            if width < indent:
                break
            m = re.match(r"(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line.strip())
            if width == indent and m:
                name = m.group(1)
                out[name] = m.group(2).strip()
            elif name is not None:
                out[name] += " " + line.strip()
    return out
