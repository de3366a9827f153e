"""Study presets: a study's ``Config.quick()`` (the command's ``--quick``) is a smoke-sized preset;
it sets the config's ``preset`` field to ``"quick"`` (:data:`PRESETS`; ``""``: no preset), and the
study's summary then opens with :func:`preset_line`, so that a quick run's numbers are never read
as the study's findings. ``preset`` only labels the run: each study leaves it out of its
directory's stamp (a selection field), so a directory's stamp is the same with it or without it.
"""

PRESETS = ("", "quick")  # values of a study config's ``preset`` field
QUICK_NOTE = "Quick preset (a smoke-sized run; not the study's findings)"


def preset_line(cfg, detail: str = "") -> str:
    """The first line of a study's summary when ``cfg.preset == "quick"`` (else ``""``):
    :data:`QUICK_NOTE`, then ``detail`` (the preset's sizes) and how to get the study's results."""
    if getattr(cfg, "preset", "") != "quick":
        return ""
    return f"{QUICK_NOTE}: {detail + '; ' if detail else ''}run without --quick for the study's results."


def with_preset_line(cfg, text: str, detail: str = "") -> str:
    """``text`` (a summary) with :func:`preset_line` as its first line when ``cfg`` is the quick
    preset (a blank line between them in Markdown); ``text`` unchanged otherwise."""
    line = preset_line(cfg, detail)
    return f"{line}\n\n{text}" if line else text
