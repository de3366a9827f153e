"""What the user's code reads while it runs or is traced: the modules it imports (also inside a
function, ``def step(...): import helper``) and the files it opens (``np.load("data.npy")`` in a
rule's step), recorded by :func:`recording`, so that a sweep's results and a study's directory are
keyed by them as by the code itself (:func:`tokdyn.engine.sweep.run`,
:func:`tokdyn.experiment.runner.run_study`).

Imports are seen by a wrapper of ``builtins.__import__`` installed for the block (every ``import``
statement, of a module imported before too) and by the modules that appear in ``sys.modules``;
files by an audit hook on ``open`` (:func:`sys.addaudithook`: Python's ``open``, ``io.open`` and
``os.open``, which NumPy's and the standard library's readers use). A file read by compiled code
that bypasses them (a C library opening it itself) is not seen: give its digest to the sweep
(``code=``)."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hashlib
import importlib.util
import itertools
import os
import sys
import threading

from tokdyn.engine.sweep.digest import installed, user_module_file

_ACTIVE: list = []  # the Reads being recorded, innermost last
_LOCK = threading.Lock()
_HOOKED = False  # sys.addaudithook cannot be undone: installed once, idle while _ACTIVE is empty
_ORIGINAL_IMPORT = None
_RETRACES = itertools.count()
_TOKDYN = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # the package's folder
_NOT_DATA = (".py", ".pyc", ".pyi", ".so", ".pyd", ".pth")
_SYSTEM = ("/proc/", "/sys/", "/dev/")


@dataclasses.dataclass(eq=False)
class Reads:
    """What a block read (:func:`recording`).

    Attributes:
      modules: the names of the modules it imported (every ``import`` statement run, and every
        module that appeared in ``sys.modules``), the user's and others'.
      files: the real paths of the files it opened for reading.
    """

    modules: set = dataclasses.field(default_factory=set)
    files: set = dataclasses.field(default_factory=set)
    thread: int = dataclasses.field(default_factory=threading.get_ident, repr=False)

    def user_modules(self) -> list:
        """The namespaces of the modules of the user's it imported
        (:func:`tokdyn.engine.sweep.digest.user_module_file`), by name."""
        found = {}
        for name in sorted(self.modules):
            module = sys.modules.get(name)
            ns = vars(module) if module is not None and hasattr(module, "__dict__") else None
            if ns is not None and user_module_file(ns):
                found[name] = ns
        return list(found.values())

    def compiled_modules(self) -> list:
        """The names of the modules it imported that are the user's compiled code (an extension
        module, ``.so`` / ``.pyd``, outside tokdyn, the standard library and installed packages):
        code that no digest of source can key; sorted."""
        out = []
        for name in sorted(self.modules):
            path = getattr(sys.modules.get(name), "__file__", None)
            if not isinstance(path, str) or not path.endswith((".so", ".pyd")):
                continue
            real = os.path.realpath(path)
            if not (installed(real) or real.startswith(_TOKDYN + os.sep)):
                out.append(name)
        return out

    def data_files(self) -> list:
        """The files it read that are the user's data: regular files that are no Python module
        (imports are :meth:`user_modules`), not under tokdyn, the standard library or an installed
        package, nor the system's (``/proc``, ``/sys``, ``/dev``); sorted."""
        out = []
        for path in sorted(self.files):
            if path.endswith(_NOT_DATA) or path.startswith(_SYSTEM) or not os.path.isfile(path):
                continue
            if installed(path) or path.startswith(_TOKDYN + os.sep) or "__pycache__" in path.split(os.sep):
                continue
            out.append(path)
        return out


def _audit(event, args):
    if event != "open" or not _ACTIVE:
        return
    try:
        path, mode, flags = args
        if isinstance(path, int):
            return
        if isinstance(mode, str):
            reading = "r" in mode or "+" in mode
        else:
            reading = (int(flags or 0) & 3) != os.O_WRONLY
        if not reading:
            return
        real = os.path.realpath(os.fsdecode(path))
        me = threading.get_ident()
        for r in list(_ACTIVE):
            if r.thread == me:
                r.files.add(real)
    except Exception:  # noqa: BLE001 (an audit hook must never break the code it watches)
        return


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    module = _ORIGINAL_IMPORT(name, globals, locals, fromlist, level)
    if _ACTIVE:
        try:
            full = name
            if level:
                package = (globals or {}).get("__package__") or ""
                full = importlib.util.resolve_name("." * level + name, package)
            names = {full}
            names.update(f"{full}.{f}" for f in fromlist or () if isinstance(f, str) and f"{full}.{f}" in sys.modules)
            me = threading.get_ident()
            for r in list(_ACTIVE):
                if r.thread == me:
                    r.modules.update(names)
        except Exception:  # noqa: BLE001 (recording must never break an import)
            pass
    return module


@contextlib.contextmanager
def recording(*, retrace: bool = False):
    """Record what the block reads in this thread: yields a :class:`Reads`, filled as it runs.

    Args:
      retrace: trace every JAX function anew inside the block (a cached trace would not run the
        Python code whose imports and reads are recorded): the block runs under a trace context of
        its own (a JAX option that only names source files in compiled programs' metadata), so
        nothing traced outside it is reused, and nothing traced inside it is reused outside.
    """
    global _HOOKED, _ORIGINAL_IMPORT
    reads = Reads()
    before = set(sys.modules)
    with _LOCK:
        if not _HOOKED:
            sys.addaudithook(_audit)
            _HOOKED = True
        if not _ACTIVE:
            _ORIGINAL_IMPORT = builtins.__import__
            builtins.__import__ = _import
        _ACTIVE.append(reads)
    try:
        with _fresh_traces() if retrace else contextlib.nullcontext():
            yield reads
    finally:
        with _LOCK:
            _ACTIVE.remove(reads)
            if not _ACTIVE and builtins.__import__ is _import:
                builtins.__import__ = _ORIGINAL_IMPORT
        reads.modules.update(set(sys.modules) - before)


def _fresh_traces():
    """A JAX trace context no trace outside it shares: a unique value of the option that
    canonicalises source-file names in compiled programs' metadata (part of every trace's cache
    key; it changes no number)."""
    value = f"(?!)tokdyn-reads-{next(_RETRACES)}"  # a pattern that matches nothing
    try:
        from jax._src import config as jax_config

        return jax_config.hlo_source_file_canonicalization_regex(value)
    except (ImportError, AttributeError):  # another JAX: traces may be reused (the digests then miss lazy reads)
        return contextlib.nullcontext()


_FILES: dict = {}  # path -> (its stat, its digest): a file is hashed again only once it changed


def file_digest(path: str) -> str:
    """The SHA-256 (hex) of the bytes of the file ``path``; ``"absent"`` when it cannot be read."""
    try:
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if path in _FILES and _FILES[path][0] == key:
            return _FILES[path][1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return "absent"
    _FILES[path] = (key, h.hexdigest())
    return _FILES[path][1]
