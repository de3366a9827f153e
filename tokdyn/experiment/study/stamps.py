"""A study directory's stamp (``study.json``): what it holds (the study, the configuration, the
tokdyn version and the digests of tokdyn's code, :func:`package_code`, the stamps of its sources),
how two are compared (:func:`conflicts`,
:func:`differences`), read back (:func:`read_stamp`, :func:`source_stamp`), written once
(:func:`stamp_once`) and rewritten (:func:`write_stamp`).

The stamp is plain JSON (``json.load`` reads it) with a field ``"checksum"``, the SHA-256 of its
other fields (:func:`tokdyn.io.write_checked_json`), checked on every read; a stamp of the older
format (a first line ``TOKDYN-VERIFIED-1 SHA256 LENGTH`` before the JSON,
:func:`tokdyn.io.write_verified`) is still read, verified the same way."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
from typing import Any, Mapping, Optional, Sequence

from tokdyn import io
from tokdyn.experiment.study.paths import STAMP, shorten
from tokdyn.experiment.study.precision import DEFAULT_MATMUL_PRECISION, precision_in_force


def version() -> str:
    """The installed tokdyn's version (part of every stamp)."""
    return __import__("tokdyn").__version__


PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The directory of the tokdyn package whose code :func:`package_code` stamps (the one running)."""

_DIGESTS: dict = {}  # path -> ((st_mtime_ns, st_size, st_ino), digest): a file read once per change


def package_code(root: Optional[str] = None) -> dict:
    """``{module: digest}`` of every module of the tokdyn package (every ``.py`` file under
    ``root``, default :data:`PACKAGE`, ``tokdyn.experiment.runner`` for
    ``tokdyn/experiment/runner.py``): the first 16 hex digits of the SHA-256 of its bytes, so that
    any edit counts (comments included). Part of every stamp (``"code"``): a directory made by
    other code of tokdyn (an edited module, a ``git pull`` under an editable install) is refused on
    resume, naming the modules that changed.

    The code a study runs is taken to be the whole package, not the modules it imports: a study
    reaches modules by name too (a model family, a rule of :data:`tokdyn.dynamics.METHODS`, a
    package's lazy attributes), which no reading of its imports finds, and hashing the package's
    ~300 files takes about 10 ms (a file is read again only when its size, time or inode changed).
    The price is that an edit of a module a study never runs refuses its directories too
    (``--fresh`` recomputes; restoring the code resumes)."""
    root = PACKAGE if root is None else root
    code = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            code[".".join(["tokdyn", *rel])] = _file_digest(path)
    return dict(sorted(code.items()))


def _file_digest(path: str) -> str:
    """The first 16 hex digits of the SHA-256 of ``path``'s bytes (``"absent"``: unreadable)."""
    try:
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        held = _DIGESTS.get(path)
        if held is not None and held[0] == key:
            return held[1]
        value = io.file_sha256(path)[:16]
    except OSError:
        return "absent"
    _DIGESTS[path] = (key, value)
    return value


def package_file(name: str) -> str:
    """The file of the tokdyn module ``name`` under :data:`PACKAGE` (``tokdyn.io`` ->
    ``.../tokdyn/io/__init__.py``), whether or not it exists."""
    parts = name.split(".")[1:]
    base = os.path.join(PACKAGE, *parts)
    return os.path.join(base, "__init__.py") if os.path.isdir(base) else base + ".py"


def config_dict(cfg) -> dict:
    """A configuration (a dataclass, or a mapping) as plain JSON values."""
    value = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return json.loads(json.dumps(io.jsonable(value)))


def digest(obj) -> str:
    """A short, stable hash of a JSON-able value (its canonical JSON)."""
    text = json.dumps(io.jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_stamp(
    study: str,
    cfg,
    *,
    selection: Sequence[str] = (),
    sources: Optional[Mapping[str, dict]] = None,
    extra: Optional[Mapping] = None,
    outputs: Sequence[str] = (),
) -> dict:
    """The stamp of ``study`` for ``cfg``: the study, the tokdyn :func:`version`, the digests of
    tokdyn's code (:func:`package_code`), the configuration (:func:`config_dict`, the ``selection``
    fields left out), the :func:`digest` of each source's stamp, ``extra`` (when given), the precision of matrix products in force (only when it is not
    the default) and the declared ``outputs`` (when any; relative paths, sorted)."""
    config = {k: v for k, v in config_dict(cfg).items() if k not in selection}
    stamp = {
        "study": study,
        "tokdyn": version(),
        "code": package_code(),
        "config": config,
        "sources": {k: digest(v) for k, v in (sources or {}).items()},
    }
    if extra:
        stamp["extra"] = json.loads(json.dumps(io.jsonable(dict(extra))))
    precision = precision_in_force()
    if precision != DEFAULT_MATMUL_PRECISION:  # absent: the default
        stamp["matmul_precision"] = precision
    if outputs:
        stamp["outputs"] = list(outputs)
    return stamp


_SEPARATORS = re.compile(r"\s*([,;:=])\s*")  # between the values of an option's text (0.3,0.6; a=1;b=2)


def _number(text: str) -> Optional[float]:
    """``text`` as a number when it spells one (``3e-3``, ``0.003``), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def same_value(a, b) -> bool:
    """Whether two JSON values of a configuration are the same value, however they are spelled:
    texts are compared item by item between their separators (``,`` ``;`` ``:`` ``=``), items that
    spell numbers by their values (``0.003,0.03`` is ``3e-3,3e-2``; ``linspace:0:1:3`` is
    ``linspace:0.0:1:3``), other items as written; lists item by item, mappings key by key."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(same_value, a, b))
    if isinstance(a, str) and isinstance(b, str) and a != b:
        x, y = _SEPARATORS.split(a.strip()), _SEPARATORS.split(b.strip())
        return len(x) == len(y) and all(
            p == q or (_number(p) is not None and _number(p) == _number(q)) for p, q in zip(x, y)
        )
    return a == b


def differences(old: Mapping, new: Mapping, prefix: str = "", *, exact: bool = False) -> list[tuple[str, Any, Any]]:
    """``(field, old value, new value)`` of every field that differs (by :func:`same_value`: a
    value spelled otherwise is the same; ``exact``: as written), nested fields as dotted names
    (``training.steps``); a field one side lacks shows as ``<absent>``."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{k}.", exact=exact)
        elif a != b if exact else not same_value(a, b):
            out.append((f"{prefix}{k}", a, b))
    return out


def describe(diffs: Sequence[tuple[str, Any, Any]], limit: int = 8) -> str:
    """:func:`differences` as one line of text (the first ``limit`` of them)."""
    shown = [f"{k}: {shorten(a)} there, {shorten(b)} now" for k, a, b in diffs[:limit]]
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(shown) + more


def write_stamp(path: str, stamp: Mapping) -> str:
    """Write the stamp ``stamp`` to ``path`` atomically, as JSON with its ``"checksum"``
    (:func:`tokdyn.io.write_checked_json`)."""
    if "checksum" in stamp:
        raise ValueError("a stamp has no field 'checksum' of its own (the file's checksum takes that name)")
    return io.write_checked_json(path, stamp)


def read_stamp_file(path: str) -> dict:
    """The stamp in the file ``path``: plain JSON with its checksum (:func:`write_stamp`), or the
    older format behind a verification line (:func:`tokdyn.io.write_verified`); each verified.
    :class:`tokdyn.io.CorruptFile` naming the file when it cannot be read or fails its check."""
    if io.is_verified(path):
        return json.loads(io.read_verified(path))
    return io.read_checked_json(path)


def read_stamp(out: str) -> Optional[dict]:
    """The stamp of the study directory ``out`` (None when it has none); ``OutputConflict`` when the
    stamp cannot be read, fails its checksum or lacks the study's keys: then the directory is not
    known to be tokdyn's, and nothing in it is trusted, written or removed."""
    path = os.path.join(out, STAMP)
    if not os.path.lexists(path):
        return None
    try:
        if io.not_a_file(path):
            raise io.CorruptFile(path, io.not_a_file(path))
        stamp = read_stamp_file(path)
    except (io.CorruptFile, ValueError, OSError) as e:
        raise io.OutputConflict(
            f"{path} cannot be read ({e}): {out!r} is not known to be a tokdyn study's directory "
            "and nothing in it can be trusted; choose an empty or new directory"
        ) from None
    if (
        not isinstance(stamp, dict)
        or not {"study", "tokdyn", "config"} <= set(stamp)
        or not isinstance(stamp["config"], dict)
    ):
        raise io.OutputConflict(
            f"{path} is not a study's stamp: {out!r} is not known to be a tokdyn study's "
            "directory; choose an empty or new directory"
        )
    return stamp


def source_stamp(source: str, study: str, expected=None, *, selection: Sequence[str] = (), option: str = "source"):
    """The stamp of the directory ``source`` of the study ``study`` that an analysis reads.

    Args:
      source: the directory the analysis reads.
      study: the name of the study that must have written it.
      expected: optional configuration the analysis expects its source to have; a stamp of
        another configuration (or another tokdyn version, or made by other code of tokdyn:
        :func:`package_code`) is refused, naming the fields (or the modules) that differ.
      selection: fields of ``expected`` left out of the comparison (they only choose parts).
      option: the option's name used in messages.

    Returns:
      The stamp (a dict). Raises ``OutputConflict`` when ``source`` holds no such study or one of
      another configuration.
    """
    stamp = read_stamp(source)
    if stamp is None:
        raise io.OutputConflict(f"{option}={source!r} holds no {study} study (no {STAMP})")
    if stamp["study"] != study:
        raise io.OutputConflict(f"{option}={source!r} holds the study {stamp['study']!r}, not {study!r}")
    if expected is not None:
        want = {k: v for k, v in config_dict(expected).items() if k not in selection}
        diffs = differences(stamp["config"], want)
        if stamp.get("tokdyn") != version():
            diffs.append(("tokdyn version", stamp.get("tokdyn"), version()))
        code = code_changes(stamp, {"code": package_code()})
        if code and not diffs:
            made = "other code of tokdyn than this study runs: " if isinstance(stamp.get("code"), Mapping) else ""
            raise io.OutputConflict(
                f"{option}={source!r} was made by {made}{code}; recompute "
                f"it with the code as it is now (--fresh there), or choose another {option} for this study to fill"
            )
        if diffs:
            raise io.OutputConflict(
                f"{option}={source!r} was made with another configuration than this study expects "
                f"({describe(diffs)}): choose the source made with these settings, or another "
                f"{option} for this study to fill"
            )
    return stamp


def stamp_once(out: str, stamp: dict) -> bool:
    """Write ``out``'s stamp unless it has one: a complete file under a temporary name, then a
    hard link to the final name, which fails if another process linked its stamp first (several
    processes of one sweep may open a new directory at once). True when this process wrote it."""
    path = os.path.join(out, STAMP)
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        write_stamp(tmp, stamp)
    except io.DiskFull as e:  # named by the file it was for
        raise io.DiskFull(path, e.needed, e.free, e.errno) from None
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)


def conflicts(old: dict, new: dict) -> bool:
    """Whether the stamps ``old`` and ``new`` are of different studies or configurations: the
    study, the tokdyn version, tokdyn's code (:func:`package_code`; a stamp without it, made before
    code was stamped, conflicts with one that has it), the configuration, the sources' stamps,
    ``extra`` or the precision of matrix products (absent:
    :data:`~tokdyn.experiment.study.DEFAULT_MATMUL_PRECISION`) differ. The declared outputs do not
    count, nor how a value of the configuration is spelled (:func:`same_value`)."""
    if not same_value(old.get("config"), new.get("config")):
        return True
    return any(old.get(k) != new.get(k) for k in ("study", "tokdyn", "code", "sources", "extra")) or old.get(
        "matmul_precision", DEFAULT_MATMUL_PRECISION
    ) != new.get("matmul_precision", DEFAULT_MATMUL_PRECISION)


def conflict_message(out: str, old: dict, new: dict) -> str:
    """Why the directory ``out``, stamped ``old``, is refused to the study stamped ``new``
    (:func:`conflicts`), in one line naming what differs and the ways out."""
    if old.get("study") != new["study"]:
        return (
            f"out={out!r} holds the {old.get('study')!r} study, not {new['study']!r}: choose another directory "
            f"(--fresh would remove the {old.get('study')} results)"
        )
    diffs = differences(old.get("config", {}), new["config"])
    if old.get("tokdyn") != new["tokdyn"] and not (new.get("code") and old.get("code") != new.get("code")):
        diffs.append(("tokdyn version", old.get("tokdyn"), new["tokdyn"]))  # (a version's code: named below)
    for k, a in sorted(old.get("sources", {}).items()):
        b = new["sources"].get(k)
        if a != b:
            diffs.append((f"source {k}", f"stamp {a}", f"stamp {b}" if b else "<absent>"))
    for k in sorted(set(new["sources"]) - set(old.get("sources", {}))):
        diffs.append((f"source {k}", "<absent>", f"stamp {new['sources'][k]}"))
    diffs += differences(old.get("extra", {}), new.get("extra", {}), "extra.", exact=True)
    precisions = [d.get("matmul_precision", DEFAULT_MATMUL_PRECISION) for d in (old, new)]
    if precisions[0] != precisions[1]:
        diffs.append(("matmul_precision", *precisions))
    code = [(k[len(_CODE) :], a, b) for k, a, b in diffs if k.startswith(_CODE)]
    diffs = [d for d in diffs if not d[0].startswith(_CODE)]
    package = code_changes(old, new)
    if package:  # tokdyn's code changed (an edit, a git pull): name the modules, never resume
        also = f"; its configuration differs too ({describe(diffs)})" if diffs else ""
        user = "; " + "; ".join(_changed_code(name, a, b) for name, a, b in code) if code else ""
        made = "made by other code of tokdyn: " if isinstance(old.get("code"), Mapping) else "made by "
        return (
            f"out={out!r} holds results of the {new['study']} study {made}{package}{user}{also}. Pass --fresh "
            "to remove them and recompute with the code as it is now, or choose another --out"
        )
    if code:  # the study's own code changed: name the modules, not their digests
        changed = "; ".join(_changed_code(name, a, b) for name, a, b in code)
        also = f", and its configuration differs ({describe(diffs)})" if diffs else ""
        return (
            f"out={out!r} holds results of the {new['study']} study made by other code: {changed}{also}. "
            "Pass --fresh to remove them and recompute with the code as it is now, choose another --out, "
            "or restore the code as it was to resume"
        )
    return (
        f"out={out!r} holds a {new['study']} study of another configuration ({describe(diffs)}): rerun with "
        "those settings to resume it, choose another --out, or pass --fresh to remove its results and start "
        "afresh"
    )


_CODE = "extra.code."  # the digests of a study's own modules in its stamp (tokdyn.experiment.runner.code_stamp)


def code_changes(old: Mapping, new: Mapping, limit: int = 3) -> str:
    """What differs between the code of tokdyn that made the stamp ``old`` and that of ``new``
    (their ``"code"``, :func:`package_code`), in words naming the first ``limit`` modules and their
    files: ``""`` when they agree (or ``new`` holds none). A stamp without ``"code"`` was made
    before tokdyn's code was stamped: said as such (which code made it cannot be told)."""
    now = new.get("code")
    if not now or old.get("code") == now:
        return ""
    was = old.get("code")
    if not isinstance(was, Mapping):
        return (
            f'tokdyn {old.get("tokdyn", "?")} before a stamp recorded tokdyn\'s code ({STAMP} has no "code"): '
            "which code made them cannot be told, so they are not resumed"
        )
    diffs = [(k, a, b) for k, a, b in differences(was, now, exact=True)]
    shown = [_changed_code(name, a, b, package_file(name)) for name, a, b in diffs[:limit]]
    more = f"; and {len(diffs) - limit} more modules" if len(diffs) > limit else ""
    return "; ".join(shown) + more


def _changed_code(name: str, old, new, path: Optional[str] = None) -> str:
    """Words for the module ``name`` of a study's code whose digest differs (``old`` there,
    ``new`` now; ``<absent>`` on the side that lacks it): its name and file (``path``, default the
    loaded module's), never the digests."""
    path = path or getattr(sys.modules.get(name), "__file__", None) or (name if os.path.sep in name else None)
    where = f" ({path})" if path and path != name else ""
    shown = name if path != name else path
    if old == "<absent>":
        return f"{shown!r}{where} is used now, not by the code of these results"
    if new == "<absent>":
        return f"{shown!r} was used by the code of these results, not now"
    return f"module {shown!r}{where} changed since these results were computed"
