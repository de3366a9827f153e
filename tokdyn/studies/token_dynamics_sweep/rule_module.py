"""Update rules of one's own for the sweep (``--rule-module module:NAME`` or
``path/to/file.py:NAME``): :func:`load_rules` imports them (anew when their file, or a module of
the user's they import, changed); :func:`rule_module_digest` is the SHA-256 of the file's bytes, by
which a loaded module is known to be the file as it is. The sweep's results are keyed, group by
group, by the syntax trees of every module of the user's that the group's rule reaches
(:func:`tokdyn.engine.sweep.digest.module_digests`)."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys

from tokdyn import dynamics
from tokdyn.engine.sweep.digest import changed_since_import, user_modules
from tokdyn.studies import file_sha256, is_file_target, load_file


def rule_module_file(spec: str) -> str | None:
    """The file the module of ``spec`` (``module:NAME`` or ``path/to/file.py:NAME``) is loaded
    from, or None when it has none (or cannot be found: :func:`load_rules` names the problem)."""
    target = spec.rpartition(":")[0]
    if not target:
        return None
    if is_file_target(target):
        path = os.path.abspath(target)
        return path if os.path.isfile(path) else None
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError, AttributeError):
        return None
    origin = getattr(found, "origin", None) if found is not None and found.has_location else None
    return origin if origin and os.path.isfile(origin) else None


def rule_module_digest(spec: str) -> str:
    """The SHA-256 (hex) of the bytes of the file of ``spec``'s module (:func:`rule_module_file`;
    "" when it has none): stamped into the sweep's manifest, so that results of another version of
    the file are never resumed."""
    path = rule_module_file(spec)
    return "" if path is None else file_sha256(path)


_LOADED_SHA = "__tokdyn_rule_module_sha256__"  # a module attribute: the digest of the file it was run from


def load_rules(spec: str) -> dict:
    """``{name: tokdyn.dynamics.Rule}`` named by ``spec``, ``module:NAME`` (an importable module) or
    ``path/to/file.py:NAME`` (a file, imported as the module named by its stem): ``NAME`` a
    :class:`tokdyn.dynamics.Rule` (named by its ``name``) or a dict of them (named by their keys;
    not the names of built-in methods). A file is imported once per process and content (its rules
    stay equal, so they share their compilation); when it, or any module of the user's the rules
    reach (a helper module beside it that it imports:
    :func:`tokdyn.engine.sweep.digest.changed_since_import`), changed since, they are all imported
    anew, so the rules are always those of the files as they are. The digests of those modules
    are taken here, of the code as imported (:func:`tokdyn.engine.sweep.digest.module_digest`),
    and key the sweep's results group by group. ``ValueError`` naming
    ``rule_module`` for anything that does not resolve."""
    rules = _load_rules(spec, rule_module_digest(spec))
    stale = changed_since_import(rules)
    if stale:  # a module of the user's the rules reach was edited since it was imported: import them all anew
        for name in [ns["__name__"] for ns in user_modules(rules)]:
            sys.modules.pop(name, None)
        _load_rules.cache_clear()
        rules = _load_rules(spec, rule_module_digest(spec))
    return dict(rules)


@functools.lru_cache(maxsize=None)
def _load_rules(spec: str, sha: str) -> dict:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ValueError(f"rule_module must be module:NAME or path/to/file.py:NAME, got {spec!r}")
    try:
        module = _import_target(target, sha)
    except Exception as e:  # noqa: BLE001 (the user's module: any failure to import it is a bad rule_module)
        raise ValueError(f"rule_module {spec!r}: cannot import {target!r}: {type(e).__name__}: {e}") from e
    if not hasattr(module, attr):
        raise ValueError(f"rule_module {spec!r}: {target!r} has no attribute {attr!r}")
    return _named_rules(spec, attr, getattr(module, attr))


def _import_target(target: str, sha: str):
    """The module of ``target``: a file (:func:`tokdyn.studies.load_file`, run anew when it
    changed) or an importable module (reloaded when its file's digest is no longer ``sha``)."""
    if is_file_target(target):
        return load_file(target)
    module = importlib.import_module(target)
    if getattr(module, _LOADED_SHA, sha) != sha:  # its file changed since it was imported here
        module = importlib.reload(module)
    setattr(module, _LOADED_SHA, sha)
    return module


def _named_rules(spec: str, attr: str, value) -> dict:
    """``{name: rule}`` of the attribute ``attr`` of ``spec``'s module: a named rule or a
    non-empty dict of rules, their names neither built-in methods nor anything a method list
    cannot hold; ``ValueError`` naming ``rule_module`` otherwise."""
    if isinstance(value, dynamics.Rule):
        if not value.name:
            raise ValueError(
                f"rule_module {spec!r}: the rule has no name (Rule(..., name=...)), by which method "
                "names it; or give a dict {name: rule}"
            )
        value = {value.name: value}
    if not isinstance(value, dict) or not value:
        raise ValueError(
            f"rule_module {spec!r}: {attr} must be a tokdyn.dynamics.Rule or a non-empty dict of them, "
            f"got {type(value).__name__}"
        )
    for name, rule in value.items():
        if not isinstance(name, str) or not name.strip() or "," in name or name != name.strip():
            raise ValueError(
                f"rule_module {spec!r}: rule names must be non-empty str without commas or outer spaces, got {name!r}"
            )
        if name in dynamics.METHODS:
            raise ValueError(
                f"rule_module {spec!r}: {name!r} is the name of a built-in method (tokdyn.dynamics."
                "METHODS): choose another"
            )
        if not isinstance(rule, dynamics.Rule):
            raise ValueError(
                f"rule_module {spec!r}: {attr}[{name!r}] must be a tokdyn.dynamics.Rule, got {type(rule).__name__}"
            )
    return dict(value)
