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


def check_quick(name: str, config: type) -> None:
    """Refuse ``--quick`` for the study ``name`` (its ``Config`` class ``config``) when it has no
    quick preset: a ``quick()`` classmethod whose configuration has ``preset == "quick"`` (what keeps
    a smoke run's verdicts open, :func:`tokdyn.experiment.findings.gate`). Without one, ``tokdyn
    reproduce --quick`` would run the study's whole default and let it decide findings in a report
    that says a quick preset never decides. ``ValueError`` naming the study and the ways out."""
    quick = getattr(config, "quick", None)
    preset = getattr(quick(), "preset", None) if callable(quick) else None
    if preset == "quick":
        return
    if callable(quick):
        what = f"has a Config.quick() whose preset is {preset!r}, not 'quick' (a smoke run must say so, or it decides)"
    else:
        what = "has no quick preset (its Config has no quick())"
    raise ValueError(
        f"studies: {name!r} {what}: reproduce --quick runs only studies with a quick preset. Run it without "
        "--quick, leave it out of --studies, or give its Config a field preset: str = '' and a classmethod "
        "quick() returning a smoke-sized configuration with preset='quick'"
    )
