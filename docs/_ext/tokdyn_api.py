"""The API reference of tokdyn, generated from the package at build time, and its checks.

What this extension does, in order:

1. ``builder-inited``: walks every module of the package (:func:`modules`), finds each module's
   public names (:func:`public_names`: its ``__all__``, else the non-underscore names it defines,
   plus, for a package, the non-underscore names it re-exports from tokdyn) and writes one page per
   module into ``docs/api/`` (``api/index.rst`` is the package itself). A name defined in the
   module gets an autodoc entry (signature and docstring; a class with its documented members); a
   name re-exported from another module links to the entry where it is defined.
2. The same walk checks that every public module, function, class, method and property has a
   docstring of its own (:func:`undocumented`); a missing one fails the build with the list, unless
   it is named in the ``tokdyn_undocumented_allowed`` config value (names in files being rewritten
   by their owners; a listed name that has a docstring now is reported). Constants are not checked: Python gives them no docstring (their meaning is
   in their module's docstring).
3. ``missing-reference``: a cross-reference to a tokdyn name that is documented under another
   name (``tokdyn.train.train_many`` is defined in ``tokdyn.train.loop``) resolves to the entry
   where it is defined; a reference to an object outside tokdyn that exists (``jax.Array``,
   ``int``, ``numpy.rot90``: no inventory of theirs is available offline) is rendered as code
   without a link. Anything else stays unresolved and fails the strict build.

The module can be imported without Sphinx for its pure-Python parts (:func:`modules`,
:func:`public_names`, :func:`undocumented`): ``tests/test_docs.py`` uses them.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import importlib
import inspect
import os
import pkgutil
import re
import sys
import textwrap
import typing

PACKAGE = "tokdyn"
API_DIR = "api"


# --------------------------------------------------------------------------- the walk


def modules(package: str = PACKAGE) -> list[str]:
    """Every public module of ``package``, the package first, parents before children
    (names with a leading underscore, and ``__main__``, are private)."""
    out = []

    def walk(name):
        out.append(name)
        module = importlib.import_module(name)
        if hasattr(module, "__path__"):
            for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda i: i.name):
                if not info.name.startswith("_"):
                    walk(f"{name}.{info.name}")

    walk(package)
    return out


def is_package(module) -> bool:
    return hasattr(module, "__path__")


_TREES: dict = {}  # (module name, file) -> its syntax tree: the walk reads each module's many times


def _source_tree(module) -> ast.Module:
    """The module's syntax tree, parsed once per process (callers only read it)."""
    key = (module.__name__, getattr(module, "__file__", None))
    if key not in _TREES:
        try:
            _TREES[key] = ast.parse(inspect.getsource(module))
        except (OSError, TypeError):  # an empty __init__.py has no source to get
            _TREES[key] = ast.Module(body=[], type_ignores=[])
    return _TREES[key]


def _defined(tree: ast.Module) -> list[str]:
    """Names bound at the top level of a module by def, class or assignment, in source order."""
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(node.name)
        elif isinstance(node, ast.Assign):
            out.extend(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out.append(node.target.id)
    return list(dict.fromkeys(out))


def _imported(tree: ast.Module, modname: str, package: bool) -> dict[str, tuple[str, str]]:
    """``{name: (module, name there)}`` for every ``from tokdyn... import`` at the top level."""
    out = {}
    nodes = list(tree.body)
    nodes += [n for node in tree.body if isinstance(node, ast.If) for n in node.body]  # `if TYPE_CHECKING:`
    for node in nodes:
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = modname.split(".") if package else modname.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source != PACKAGE and not source.startswith(PACKAGE + "."):
            continue
        for alias in node.names:
            out[alias.asname or alias.name] = (source, alias.name)
    return out


@dataclasses.dataclass(frozen=True)
class Name:
    """One public name of a module: ``kind`` is ``module``, ``class``, ``function``, ``data``
    (defined in this module) or ``alias`` (re-exported; ``origin`` is ``module.name`` there)."""

    name: str
    kind: str
    origin: str = ""


def _kind(obj) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "function"
    return "data"


def public_names(modname: str) -> list[Name]:
    """The public names of a module: its ``__all__`` if it has one, else the non-underscore names
    it defines (and, for a package, the non-underscore names it imports from tokdyn). A name
    imported from a module that does not make it public is documented here."""
    module = importlib.import_module(modname)
    tree = _source_tree(module)
    defined = _defined(tree)
    imported = _imported(tree, modname, is_package(module))
    declared = getattr(module, "__all__", None)
    if declared is not None:
        names = list(declared)
    else:
        names = [n for n in defined if not n.startswith("_")]
        if is_package(module):
            names += [n for n in imported if not n.startswith("_") and n not in names]
    out = []
    for name in names:
        obj = getattr(module, name)
        kind = _kind(obj)
        if kind == "module":
            out.append(Name(name, "module", obj.__name__))
        elif name in imported and name not in defined and canonical(".".join(imported[name])) is not None:
            out.append(Name(name, "alias", ".".join(imported[name])))
        else:
            out.append(Name(name, kind))
    return out


def canonical(target: str) -> str | None:
    """Where the tokdyn object named ``target`` (a dotted path) is documented: follows re-exports
    (``tokdyn.train.train_many`` -> ``tokdyn.train.loop.train_many``) and attributes of documented
    classes. None when it is not a public tokdyn name."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        modname, rest = ".".join(parts[:cut]), parts[cut:]
        try:
            module = importlib.import_module(modname)
        except ImportError:
            continue
        if not modname.startswith(PACKAGE) or any(p.startswith("_") for p in modname.split(".")):
            return None
        try:
            names = {n.name: n for n in public_names(modname)}
        except Exception:  # noqa: BLE001 - a module that cannot be read has nothing to resolve
            return None
        head = names.get(rest[0])
        if head is None:
            return None
        if head.kind == "alias":
            found = canonical(head.origin)
            return None if found is None else ".".join([found, *rest[1:]])
        if head.kind == "module":
            return canonical(".".join([head.origin, *rest[1:]])) if rest[1:] else head.origin
        if len(rest) == 1:
            return f"{modname}.{rest[0]}"
        obj = getattr(module, rest[0])
        for attr in rest[1:]:
            if attr.startswith("_") or not hasattr(obj, attr):
                return None
            obj = getattr(obj, attr)
        return ".".join([modname, *rest])
    return None


# --------------------------------------------------------------------------- the docstring check


def _class_node(cls) -> ast.ClassDef | None:
    """The class's definition in its module's syntax tree (read once per module), found by its
    qualified name among the top-level statements; None where it is not there (a class made in a
    function, or under an ``if``)."""
    module = sys.modules.get(cls.__module__)
    if module is None:
        return None
    body, node = _source_tree(module).body, None
    for part in cls.__qualname__.split("."):
        node = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == part), None)
        if node is None:
            return None
        body = node.body
    return node


def _own_doc(obj) -> str | None:
    """The docstring written in the object's source (a dataclass without one gets its signature as
    ``__doc__``, which does not count)."""
    if inspect.isclass(obj):
        node = _class_node(obj)
        if node is not None:
            return ast.get_docstring(node)
        try:
            node = ast.parse(textwrap.dedent(inspect.getsource(obj))).body[0]
        except (OSError, TypeError, SyntaxError, IndexError):
            return obj.__dict__.get("__doc__")
        return ast.get_docstring(node) if isinstance(node, ast.ClassDef) else obj.__dict__.get("__doc__")
    return getattr(obj, "__doc__", None)


def _members(cls) -> list[tuple[str, object]]:
    """The public methods and properties a class defines itself (not inherited, not generated)."""
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            out.append((name, value.fget))
        elif isinstance(value, (staticmethod, classmethod)):
            out.append((name, value.__func__))
        elif inspect.isfunction(value) and value.__qualname__.startswith(cls.__qualname__ + "."):
            out.append((name, value))
    return out


def undocumented(names: list[str] | None = None) -> list[str]:
    """Every public module, function, class, method and property of the package without a
    docstring of its own, as dotted names."""
    missing = []
    for modname in names or modules():
        module = importlib.import_module(modname)
        if not (module.__doc__ or "").strip():
            missing.append(modname)
        for entry in public_names(modname):
            if entry.kind not in ("class", "function"):
                continue
            obj = getattr(module, entry.name)
            if not (_own_doc(obj) or "").strip():
                missing.append(f"{modname}.{entry.name}")
            if entry.kind == "class":
                for member, fn in _members(obj):
                    if not (getattr(fn, "__doc__", None) or "").strip():
                        missing.append(f"{modname}.{entry.name}.{member}")
    return missing


# --------------------------------------------------------------------------- the pages


def page_name(modname: str) -> str:
    return "index" if modname == PACKAGE else modname


def _short_repr(obj) -> bool:
    try:
        return len(repr(obj)) <= 70 and "\n" not in repr(obj)
    except Exception:  # noqa: BLE001
        return False


def _title(text: str) -> list[str]:
    return [text, "=" * len(text), ""]


def _role(origin: str) -> str:
    try:
        obj = _resolve_object(origin)
    except LookupError:
        return "obj"
    return {"class": "class", "function": "func", "module": "mod"}.get(_kind(obj), "data")


_ROLE = re.compile(r":(\w+):`(~?)([^`<>]+)`")


def summary_line(modname: str) -> str:
    """The first sentence of a module's docstring, its cross-references made absolute (they are
    written relative to that module, and shown on another module's page)."""
    doc = inspect.cleandoc(importlib.import_module(modname).__doc__ or "")
    first = doc.split("\n\n")[0].replace("\n", " ")
    end = re.search(r"[.:](\s|$)", first)
    first = first[: end.start() + 1] if end else first

    def absolute(m):
        role, tilde, target = m.groups()
        if role not in ("func", "class", "data", "mod", "meth", "attr", "obj", "const", "exc"):
            return m.group(0)
        found = None
        for name in (target, f"{modname}.{target}"):
            try:
                obj = _resolve_object(name)
            except LookupError:
                continue
            found = name if name.startswith(PACKAGE) else None
            if found is None and _is_tokdyn(obj, name):
                found = f"{getattr(obj, '__module__', modname)}.{getattr(obj, '__qualname__', target)}"
            break
        if found is None:
            return m.group(0)
        title = target.split(".")[-1] if tilde else target
        return f":{role}:`{title} <{found}>`"

    return _ROLE.sub(absolute, first.rstrip(":") + ("" if first.endswith(".") else "."))


def render(modname: str) -> str:
    """The reST page of one module."""
    module = importlib.import_module(modname)
    entries = public_names(modname)
    lines = [f".. _api-{modname}:", ""]
    lines += _title("API reference" if modname == PACKAGE else modname)
    lines += [f".. automodule:: {modname}", "", f".. currentmodule:: {modname}", ""]
    own = [e for e in entries if e.kind in ("class", "function", "data")]
    aliases = [e for e in entries if e.kind == "alias"]
    children = [e.origin for e in entries if e.kind == "module" and e.origin.startswith(modname + ".")]
    if is_package(module):
        children += [m for m in modules(modname) if m.count(".") == modname.count(".") + 1 and m not in children]
    if children:
        lines += [".. rubric:: Modules", "", ".. list-table::", "   :widths: 30 70", ""]
        for m in children:
            lines += [f"   * - :mod:`~{m}`", f"     - {summary_line(m)}"]
        lines += ["", ".. toctree::", "   :hidden:", ""] + [f"   {page_name(m)}" for m in children] + [""]
    if own:
        lines += [".. rubric:: Summary", "", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {e.name}" for e in own] + [""]
    if aliases:
        lines += [
            ".. rubric:: Re-exported here",
            "",
            "Available under this module's name too; documented where they are defined.",
            "",
            ".. list-table::",
            "   :header-rows: 1",
            "",
            "   * - name",
            "     - defined in",
        ]
        for e in aliases:
            lines += [f"   * - ``{modname}.{e.name}``", f"     - :{_role(e.origin)}:`{e.origin}`"]
        lines.append("")
    for e in own:
        obj = getattr(module, e.name)
        if e.kind == "class":
            lines += [f".. autoclass:: {e.name}", "   :members:", ""]
        elif e.kind == "function":
            lines += [f".. autofunction:: {e.name}", ""]
        else:
            lines += [f".. autodata:: {e.name}"] + ([] if _short_repr(obj) else ["   :no-value:"]) + [""]
    return "\n".join(lines)


def write_pages(srcdir: str) -> list[str]:
    """Write every module's page into ``srcdir/api`` (a file is rewritten only when it changes,
    and pages of modules that no longer exist are removed). Returns the module names."""
    outdir = os.path.join(srcdir, API_DIR)
    os.makedirs(outdir, exist_ok=True)
    names = modules()
    wanted = set()
    for modname in names:
        path = os.path.join(outdir, page_name(modname) + ".rst")
        wanted.add(os.path.basename(path))
        text = render(modname)
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        except FileNotFoundError:
            pass
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    for stale in set(os.listdir(outdir)) - wanted:
        if stale.endswith(".rst"):
            os.remove(os.path.join(outdir, stale))
    return names


# --------------------------------------------------------------------------- references


def _resolve_object(target: str, context: tuple[str, ...] = ()):
    """The object a dotted name refers to, absolute or relative to the given module / class
    contexts, or to builtins. Raises LookupError."""
    candidates = [target] + [f"{c}.{target}" for c in context if c]
    for name in candidates:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            except Exception:  # noqa: BLE001 - a module that fails to import resolves nothing
                break
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return obj
    head, *rest = target.split(".")
    if rest and head != PACKAGE:  # a private path to a public name: ``jax.jaxlib._jax.Array`` is ``jax.Array``
        try:
            return getattr(importlib.import_module(head), rest[-1])
        except (ImportError, AttributeError):
            pass
    if hasattr(builtins, head):
        obj = getattr(builtins, head)
        for attr in rest:
            obj = getattr(obj, attr)
        return obj
    if hasattr(typing, head) and not rest:
        return getattr(typing, head)
    raise LookupError(target)


def _is_tokdyn(obj, target: str) -> bool:
    module = getattr(obj, "__module__", None) if not inspect.ismodule(obj) else obj.__name__
    if isinstance(module, str) and (module == PACKAGE or module.startswith(PACKAGE + ".")):
        return True
    return target == PACKAGE or target.startswith(PACKAGE + ".")


def missing_reference(app, env, node, contnode):
    """Resolve a Python cross-reference Sphinx could not: a tokdyn name documented under another
    name links there; an existing object outside tokdyn is shown as code without a link."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    context = []
    module, cls = node.get("py:module"), node.get("py:class")
    if module and cls:
        context.append(f"{module}.{cls}")
    if module:
        context.append(module)
    try:
        obj = _resolve_object(target, tuple(context))
    except LookupError:
        return None
    domain = env.get_domain("py")
    if _is_tokdyn(obj, target):
        names = [target] + [f"{c}.{target}" for c in context]
        candidates = [canonical(name) for name in names]
        qualname = getattr(obj, "__qualname__", None)
        if isinstance(getattr(obj, "__module__", None), str) and isinstance(qualname, str):
            candidates.append(f"{obj.__module__}.{qualname}")
        candidates.append(_documented_objects(app, env).get(id(obj)))
        for found in candidates:
            if found and found in domain.objects:
                refnode = domain.resolve_xref(
                    env, node["refdoc"], app.builder, domain.objects[found].objtype, found, node, contnode
                )
                if refnode is not None:
                    return refnode
        return None
    return contnode


def _documented_objects(app, env) -> dict:
    """``{id(object): documented name}`` of every tokdyn object with an entry (functions and
    classes: each is documented once), built once per build."""
    cache = getattr(app, "_tokdyn_documented", None)
    if cache is None:
        cache = {}
        for name in env.get_domain("py").objects:
            if not name.startswith(PACKAGE + "."):
                continue
            try:
                obj = _resolve_object(name)
            except Exception:  # noqa: BLE001
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                cache.setdefault(id(obj), name)
        app._tokdyn_documented = cache
    return cache


def drop_type_docstring(app, what, name, obj, options, lines):
    """A constant has no docstring of its own; autodoc would show its type's (``dict``'s, an
    array's): show none instead (a ``#:`` comment or a string after the assignment still shows)."""
    if what not in ("data", "attribute") or inspect.isclass(obj) or not lines:
        return
    own = getattr(obj, "__doc__", None)
    if callable(obj) and own and own != getattr(type(obj), "__doc__", None):
        return  # a wrapped function (``jax.jit(f)``): f's docstring is its own
    from sphinx.pycode import ModuleAnalyzer

    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        modname = ".".join(parts[:k])
        try:
            importlib.import_module(modname)
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # noqa: BLE001 - not a module: try a shorter prefix
            continue
        if (".".join(parts[k:-1]), parts[-1]) not in docs:
            lines.clear()
        return


_DOTTED = re.compile(r"(?<![\w.'\"])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


def qualify_signature(app, what, name, obj, options, signature, return_annotation):
    """Annotations autodoc could not evaluate stay strings (``Config``, ``M.Config``): write the
    tokdyn names among them in full, as they resolve in the object's module (imports under
    ``if TYPE_CHECKING:`` included), so that each links to its one entry."""
    modname = getattr(obj, "__module__", None)
    if not isinstance(modname, str) or not modname.startswith(PACKAGE):
        return None
    module = importlib.import_module(modname)
    imported = _imported(_source_tree(module), modname, is_package(module))

    def full(m):
        dotted = m.group(1)
        head, *rest = dotted.split(".")
        try:
            target = getattr(module, head)
            origin = None
        except AttributeError:
            if head not in imported:
                return dotted
            origin = ".".join(imported[head])
            try:
                target = _resolve_object(origin)
            except LookupError:
                return dotted
        try:
            for attr in rest:
                target = getattr(target, attr)
        except AttributeError:
            return dotted
        if inspect.ismodule(target) or not _is_tokdyn(target, origin or ""):
            return dotted
        qual = getattr(target, "__qualname__", None)
        return f"{target.__module__}.{qual}" if isinstance(qual, str) else dotted

    def rewrite(text):
        return None if text is None else _DOTTED.sub(full, text)

    return rewrite(signature), rewrite(return_annotation)


def skip_member(app, what, name, obj, skip, options):
    """Leave out NamedTuple field accessors ("Alias for field number N"): the class docstring's
    Attributes section documents the fields."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


def generate(app):
    write_pages(app.srcdir)
    allowed = set(app.config.tokdyn_undocumented_allowed)
    missing = undocumented()
    new = [m for m in missing if m not in allowed]
    if new:
        from sphinx.errors import ExtensionError

        raise ExtensionError("public names without a docstring (write one):\n  " + "\n  ".join(new))
    from sphinx.util import logging

    stale = sorted(allowed - set(missing))
    if stale:  # not a warning: documenting a listed name must not fail the strict build
        logging.getLogger(__name__).info(
            "tokdyn_undocumented_allowed lists names that are documented now (remove them): %s", ", ".join(stale)
        )


def _plain_attribute_docstring(self):
    """Napoleon reads the first line of an attribute's or property's docstring as ``type:
    description``; tokdyn's docstrings are sentences that may hold a colon, so the whole docstring
    is parsed as an ordinary one instead."""
    return self.__class__(self._consume_to_end(), self._config).lines()


def setup(app):
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    GoogleDocstring._parse_attribute_docstring = _plain_attribute_docstring
    app.add_config_value("tokdyn_undocumented_allowed", [], "env")
    app.connect("builder-inited", generate)
    app.connect("missing-reference", missing_reference)
    app.connect("autodoc-skip-member", skip_member)
    app.connect("autodoc-process-docstring", drop_type_docstring)
    app.connect("autodoc-process-signature", qualify_signature)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
