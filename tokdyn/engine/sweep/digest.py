"""The code digest: :func:`code_digest`, a SHA-256 of the code a function runs, by which a sweep's
results are keyed."""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import os
import re
import site
import sys
import sysconfig
import textwrap
import types

import jax
import numpy as np


LOADING_IMPORTS = "__tokdyn_imports__"  # a module attribute: the modules its loading imported (load_file)
_ADDRESS = re.compile(r"\s+at\s+0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")  # memory addresses in a repr


def code_digest(obj) -> str:
    """A SHA-256 (hex) of the code ``obj`` runs, so that results can be keyed by the code that made
    them (:func:`~tokdyn.engine.sweep.run` records it in a sweep's manifest and refuses to resume with other code).

    A function is hashed by its source when :func:`inspect.getsource` finds it, as its syntax tree
    written back without comments, layout or docstrings (:func:`ast.unparse`: reformatting the code
    or rewording a docstring keeps a sweep resumable; the source text itself where it does not parse
    alone; a lambda also by its constants and names, since its source line may hold several), else
    by its bytecode (``co_code``, ``co_consts`` with nested code objects, and
    ``co_names``); then its defaults, keyword defaults and closure cells, and the globals its code
    names (functions of its own module by their code, other modules' by their name, data by value).
    Values are hashed recursively: functions by their code digest; NumPy and JAX arrays by dtype,
    shape and bytes; dataclasses and NamedTuples by their fields; ``functools.partial`` by its
    function and arguments; a bound method by its function and instance; a callable instance by its
    class's code (its source, or ``__call__``) and its fields; anything else by its ``repr``
    without memory addresses. Cycles are cut (a value met again inside itself is hashed by its
    type). Not for use inside ``jit``."""
    return hashlib.sha256(_Digester().token(obj).encode()).hexdigest()


@functools.lru_cache(maxsize=4096)
def _source_key(source: str) -> str:
    """The code of ``source`` (a function's or class's, from :func:`inspect.getsource`) as
    :func:`code_digest` hashes it: the syntax tree without docstrings, written back by
    :func:`ast.unparse` (comments and layout gone), or the text itself when it does not parse alone.
    A function of the text alone: kept per text (a sweep digests the same functions many times)."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return "src:" + source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return "ast:" + ast.unparse(tree)


_FUNCTION_KEYS: dict = {}  # (code object, its file's mtime and size) -> _source_key of its source


def _function_source_key(fn: types.FunctionType) -> str:
    """``_source_key(inspect.getsource(fn))``, kept per code object while its file is unchanged (the
    file's modification time and size, which inspect's line cache checks too): a sweep digests the
    same functions many times. Raises what :func:`inspect.getsource` raises."""
    code, key = fn.__code__, None
    if not hasattr(fn, "__wrapped__"):  # getsource reads a wrapped function's source, not this code's
        try:
            st = os.stat(code.co_filename)
            key = (code, st.st_mtime_ns, st.st_size)
        except (OSError, TypeError, ValueError):
            pass
    if key is not None and key in _FUNCTION_KEYS:
        return _FUNCTION_KEYS[key]
    out = _source_key(inspect.getsource(fn))
    if key is not None:
        _FUNCTION_KEYS[key] = out
    return out


class _Digester:
    """The text :func:`code_digest` hashes, built recursively with a guard against cycles."""

    MAX_DEPTH = 200

    def __init__(self):
        self.active: set = set()
        self.depth = 0
        self.modules: dict = {}  # id -> the namespace of every module the code reaches (see user_modules)

    def token(self, obj) -> str:
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            return f"{type(obj).__name__}:{obj!r}"
        key = id(obj)
        if key in self.active or self.depth > self.MAX_DEPTH:
            return f"<cycle {type(obj).__module__}.{type(obj).__qualname__}>"
        self.active.add(key)
        self.depth += 1
        try:
            return self._token(obj)
        finally:
            self.depth -= 1
            self.active.discard(key)

    def _many(self, items) -> str:
        return "[" + ",".join(self.token(v) for v in items) + "]"

    def _token(self, obj) -> str:
        t = type(obj)
        name = f"{t.__module__}.{t.__qualname__}"
        if isinstance(obj, np.generic):
            return f"np:{obj.dtype.str}:{obj!r}"
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind == "O":
                return f"ndarray:O:{obj.shape}:" + self._many(obj.ravel().tolist())
            data = np.ascontiguousarray(obj)
            return f"ndarray:{data.dtype.str}:{data.shape}:{hashlib.sha256(data.tobytes()).hexdigest()}"
        if isinstance(obj, jax.Array) and not isinstance(obj, jax.core.Tracer):
            if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
                return f"key:{jax.random.key_impl(obj)}:" + self.token(np.asarray(jax.random.key_data(obj)))
            return "jax." + self.token(np.asarray(obj))
        if isinstance(obj, types.FunctionType):
            return self._function(obj)
        if isinstance(obj, types.MethodType):
            return f"method:{self.token(obj.__func__)}:{self.token(obj.__self__)}"
        if isinstance(obj, functools.partial):
            return f"partial:{self.token(obj.func)}:{self._many(obj.args)}:{self.token(dict(obj.keywords))}"
        if isinstance(obj, types.CodeType):
            return self._code(obj)
        if isinstance(obj, types.ModuleType):
            return f"module:{obj.__name__}"
        if isinstance(obj, type):
            return f"class:{obj.__module__}.{obj.__qualname__}"
        if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            return f"builtin:{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', obj.__name__)}"
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
            return f"namedtuple:{name}:" + self._many(f"{f}={self.token(v)}" for f, v in zip(obj._fields, obj))
        if isinstance(obj, (list, tuple)):
            return f"{t.__name__}:" + self._many(obj)
        if isinstance(obj, dict):
            return f"dict:{name}:[" + ",".join(f"{self.token(k)}={self.token(v)}" for k, v in obj.items()) + "]"
        if isinstance(obj, (set, frozenset)):
            return f"{t.__name__}:[" + ",".join(sorted(self.token(v) for v in obj)) + "]"
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None and callable(wrapped) and not isinstance(obj, type):  # jax.jit, functools.wraps
            return f"wrapped:{name}:{self.token(wrapped)}"
        fields = self._fields(obj)
        if callable(obj):  # a callable instance: its class's code and its fields
            return f"instance:{name}:{self._class_code(t)}:{fields}"
        if fields is not None:
            return f"object:{name}:{fields}"
        return f"repr:{name}:{_ADDRESS.sub('', repr(obj))}"

    def _fields(self, obj) -> str | None:
        if dataclasses.is_dataclass(obj):
            return self._many(f"{f.name}={self.token(getattr(obj, f.name, None))}" for f in dataclasses.fields(obj))
        if type(obj).__repr__ is object.__repr__ and hasattr(obj, "__dict__"):  # its repr says nothing
            return self._many(f"{k}={self.token(v)}" for k, v in sorted(vars(obj).items()))
        return None

    def _class_code(self, cls) -> str:
        reached = _namespace(cls)
        if reached is not None:
            self.modules[id(reached)] = reached
        try:
            return _source_key(inspect.getsource(cls))
        except (OSError, TypeError):
            call = getattr(cls, "__call__", None)  # noqa: B004 (the method itself, to name its source)
            return self.token(call) if isinstance(call, types.FunctionType) else f"class:{cls.__qualname__}"

    def _code(self, code: types.CodeType) -> str:
        consts = ",".join(self._code(c) if isinstance(c, types.CodeType) else self.token(c) for c in code.co_consts)
        return f"code:{code.co_name}:{code.co_code.hex()}:[{consts}]:{list(code.co_names)}"

    @staticmethod
    def _names(code: types.CodeType) -> set:
        names = set(code.co_names)
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                names |= _Digester._names(c)
        return names

    def _function(self, fn: types.FunctionType) -> str:
        code = fn.__code__
        self.modules[id(fn.__globals__)] = fn.__globals__
        try:
            body = _function_source_key(fn)
            if code.co_name == "<lambda>":  # its source line may hold several lambdas
                body += ":" + self._many(c for c in code.co_consts if not isinstance(c, types.CodeType))
                body += f":{sorted(self._names(code))}"
        except (OSError, TypeError):
            body = self._code(code)
        parts = [
            f"function:{fn.__module__}.{fn.__qualname__}",
            body,
            self.token(fn.__defaults__),
            self.token(fn.__kwdefaults__),
        ]
        cells = []
        for var, cell in zip(code.co_freevars, fn.__closure__ or ()):
            try:
                cells.append(f"{var}={self.token(cell.cell_contents)}")
            except ValueError:  # an empty cell
                cells.append(f"{var}=<empty>")
        parts.append("closure:[" + ",".join(cells) + "]")
        refs = []
        for ref in sorted(self._names(code)):
            if ref not in fn.__globals__:
                continue
            v = fn.__globals__[ref]
            reached = _namespace(v)
            if reached is not None:
                self.modules[id(reached)] = reached
            if isinstance(v, types.FunctionType) and v.__module__ != fn.__module__:
                refs.append(f"{ref}=function:{v.__module__}.{v.__qualname__}")  # another module's: by its name
            elif isinstance(v, (types.ModuleType, type)) or (
                callable(v)
                and not isinstance(v, types.FunctionType)
                and getattr(v, "__module__", None) != fn.__module__
            ):
                refs.append(f"{ref}=name:{getattr(v, '__module__', None)}.{getattr(v, '__qualname__', ref)}")
            else:
                refs.append(f"{ref}={self.token(v)}")
        parts.append("globals:[" + ",".join(refs) + "]")
        for ref in self._names(code):  # a module imported inside the function (import helper): by its name
            module = sys.modules.get(ref)
            if ref not in fn.__globals__ and isinstance(module, types.ModuleType):
                self.modules[id(vars(module))] = vars(module)
        return "|".join(parts)


# ----------------------------------------------------------------------------------------------
# The modules of the user's that a function reaches


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple:
    """The folders of installed code: the standard library and every site-packages folder."""
    roots = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:  # an old virtualenv's site module
        pass
    return tuple(sorted(os.path.realpath(r) for r in roots if r))


def installed(path: str) -> bool:
    """Whether the file ``path`` (a real path) is installed code or data: under the standard library
    or a ``site-packages`` / ``dist-packages`` folder."""
    if {"site-packages", "dist-packages"} & set(path.split(os.sep)):
        return True
    return any(path.startswith(root + os.sep) for root in _installed_roots())


def user_module_file(namespace) -> str | None:
    """The source file of a module (given by its namespace, ``vars(module)``) when it is the user's
    own code: a ``.py`` file that is not tokdyn's (its results are keyed by tokdyn's version), nor
    the script run (``__main__``: its functions are digested by their own code), nor under the
    standard library or a ``site-packages`` / ``dist-packages`` folder (installed packages); else
    None."""
    name, path = namespace.get("__name__"), namespace.get("__file__")
    if not isinstance(name, str) or name == "__main__" or name == "tokdyn" or name.startswith("tokdyn."):
        return None
    if not isinstance(path, str) or not path.endswith(".py"):
        return None
    real = os.path.realpath(path)
    if {"site-packages", "dist-packages"} & set(real.split(os.sep)):
        return None
    if any(real.startswith(root + os.sep) for root in _installed_roots()):
        return None
    return real


def _namespace(value) -> dict | None:
    """The namespace of the module a module-level value belongs to: the module's own for a module,
    the globals of a function, the module's of a class (where it can be found); else None."""
    if isinstance(value, types.ModuleType):
        return vars(value)
    if isinstance(value, types.FunctionType):
        return value.__globals__
    if isinstance(value, type):
        module = sys.modules.get(getattr(value, "__module__", None) or "")
        return vars(module) if module is not None else None
    return None


def user_modules(obj) -> list:
    """The namespaces of the modules of the user's (:func:`user_module_file`) that the code of
    ``obj`` reaches: the module of every function it runs (as :func:`code_digest` walks it) and,
    from each of those, every module of the user's it imports, transitively; sorted by name."""
    digester = _Digester()
    digester.token(obj)
    return imported_modules(digester.modules.values())


def imported_modules(namespaces) -> list:
    """The modules of the user's (:func:`user_module_file`) among ``namespaces`` (module
    namespaces) and every module of the user's they import, transitively (a module is found
    through the names it binds, ``import helper``, ``from helper import f``, and, for a file
    :func:`tokdyn.studies.load_file` ran, through every import its loading made,
    ``from helper import VALUE`` included: :data:`LOADING_IMPORTS`); sorted by name."""
    todo = [ns for ns in namespaces if user_module_file(ns)]
    seen: dict = {}
    while todo:
        ns = todo.pop()
        if id(ns) in seen:
            continue
        seen[id(ns)] = ns
        loaded = [sys.modules.get(name) for name in ns.get(LOADING_IMPORTS, ())]  # from helper import VALUE
        for value in [*ns.values(), *(m for m in loaded if m is not None)]:
            other = _namespace(value)
            if other is not None and id(other) not in seen and user_module_file(other):
                todo.append(other)
    return sorted(seen.values(), key=lambda ns: ns["__name__"])


_SOURCES: dict = {}  # path -> (its stat, its digest): a file is parsed again only once it changed


def source_digest(path: str) -> str:
    """The SHA-256 (hex) of the Python file ``path`` by its syntax tree, as :func:`code_digest`
    hashes a function's source (docstrings, comments and layout aside); ``"absent"`` when it
    cannot be read."""
    try:
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if path in _SOURCES and _SOURCES[path][0] == key:
            return _SOURCES[path][1]
        with open(path, "rb") as f:
            text = importlib.util.decode_source(f.read())
    except (OSError, UnicodeDecodeError, SyntaxError):
        return "absent"
    digest = hashlib.sha256(_source_key(text).encode()).hexdigest()
    _SOURCES[path] = (key, digest)
    return digest


_SNAPSHOTS: dict = {}  # id(namespace) -> (namespace, its functions and classes when digested, its digest)


def _members(namespace) -> tuple:
    return tuple(v for v in namespace.values() if isinstance(v, (types.FunctionType, type)))


def module_digest(namespace) -> str:
    """The digest (:func:`source_digest`) of a module of the user's (by its namespace) as this
    process runs it: its file is read the first time the module is digested and again only once
    the module was run anew (``importlib.reload``, or imported again: its functions and classes are
    other objects), so that a file edited after it was imported never stands for the code the
    process runs."""
    members = _members(namespace)
    snap = _SNAPSHOTS.get(id(namespace))
    if (
        snap is None
        or snap[0] is not namespace
        or len(snap[1]) != len(members)
        or any(a is not b for a, b in zip(snap[1], members))
    ):
        snap = _SNAPSHOTS[id(namespace)] = (namespace, members, source_digest(user_module_file(namespace) or ""))
    return snap[2]


def module_digests(obj) -> dict:
    """``{module name: digest}`` of every module of the user's that ``obj``'s code reaches
    (:func:`user_modules`, :func:`module_digest`): what a sweep's results depend on beyond the
    functions :func:`code_digest` hashes. A helper module the user's rule imports is covered, as is
    every module of the user's it imports in turn; installed packages and tokdyn are not."""
    return {ns["__name__"]: module_digest(ns) for ns in user_modules(obj)}


def changed_since_import(obj) -> list:
    """The names of the modules of the user's that ``obj``'s code reaches (:func:`user_modules`)
    whose file now differs from the code this process runs from it (:func:`module_digest`)."""
    return [
        ns["__name__"] for ns in user_modules(obj) if source_digest(user_module_file(ns) or "") != module_digest(ns)
    ]
