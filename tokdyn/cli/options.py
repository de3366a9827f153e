"""The options of a command, generated from its configuration dataclass: one option per field
(:func:`add_config_args`; nested configs flattened, help text from the config's ``Attributes:``,
:func:`config_help`), and the config built back from the parsed options and checked
(:func:`config_from_args`, :func:`check_repeats`)."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from tokdyn.experiment import attributes


def config_help(cls) -> dict[str, str]:
    """Field name -> help text, from the ``Attributes:`` sections of the docstrings of ``cls`` and
    its bases (Google style: ``name: text``, continuation lines indented deeper; see
    :func:`tokdyn.experiment.attributes.documented`)."""
    return attributes.documented(cls)


def _fields(cls, prefix=(), fixed=None):
    """Flattened ``(path, field, owner class)`` of a config dataclass; nested dataclass fields are
    expanded (their options keep their own names). The paths the class lists in its
    ``FIXED_OPTIONS`` (e.g. ``("model", "seeds")``: set by the study itself) are left out."""
    fixed = set(getattr(cls, "FIXED_OPTIONS", ())) if fixed is None else fixed
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or prefix + (f.name,) in fixed:
            continue
        kind = hints.get(f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        nested = (
            kind if dataclasses.is_dataclass(kind) else type(default) if dataclasses.is_dataclass(default) else None
        )
        if nested is not None:
            yield from _fields(nested, prefix + (f.name,), fixed)
        else:
            yield prefix + (f.name,), f, cls


def field_default(cls, path):
    """The default of the (flattened) field at ``path`` of the config dataclass ``cls``: a nested
    field's is read from its enclosing field's default (``training.train.steps`` of a study whose
    ``training`` defaults to a model config with 3000 steps is 3000, whatever the nested class's own
    default); ``dataclasses.MISSING`` for a field without one."""
    value, klass = dataclasses.MISSING, cls
    for name in path:
        f = next(f for f in dataclasses.fields(klass) if f.name == name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = getattr(value, name)
        else:
            value = f.default
        klass = type(value) if dataclasses.is_dataclass(value) else typing.get_type_hints(klass).get(name)
    return value


def _element_type(f, hint, default):
    args = typing.get_args(hint)
    if args and args[0] is not Ellipsis and not isinstance(args[0], typing.TypeVar):
        return args[0]
    if default:
        first = default[0]
        return tuple if isinstance(first, tuple) else type(first)
    return str


def _parser_for(f, hint, default):
    """``(argparse type, metavar, text of the default)`` for a field."""
    origin = typing.get_origin(hint)
    base = hint
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        base = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(base)
    if base is tuple or origin is tuple:
        elem = _element_type(f, base, default)
        if elem is tuple:  # e.g. grids ((5, 3), (7, 3)) written 5x3,7x3
            parse_one = lambda t: tuple(int(v) for v in t.lower().split("x"))  # noqa: E731
            shown = ",".join("x".join(str(v) for v in d) for d in (default or ()))
        else:
            parse_one = elem
            shown = ",".join(str(v) for v in (default or ()))

        def parse(text, _one=parse_one, _elem=elem):
            try:
                return tuple(_one(v.strip()) for v in text.split(",") if v.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected a comma list of {getattr(_elem, '__name__', 'values')}"
                    f"{' (NxC)' if _elem is tuple else ''}, got {text!r}"
                ) from None

        return parse, "LIST", shown
    if base is bool:
        return None, None, str(default)
    if base in (int, float, str):
        return base, base.__name__.upper(), "" if default is None else str(default)
    raise TypeError(f"config field {f.name!r} has a type the command line cannot express: {hint!r}")


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """One option per field of the config dataclass ``cls`` (nested configs flattened): ``--name``
    (underscores as dashes), typed by the field's annotation or default (tuples as comma lists,
    bools as ``--name/--no-name``), help text from the docstring. Fields without a default are
    positional; a field whose help text ends in ``(required)`` is an option that must be given. Options not given keep the config's (or the preset's) value."""
    docs = {}
    for klass in [cls] + [c for *_, c in _fields(cls)]:
        docs.update({k: v for k, v in config_help(klass).items() if k not in docs or klass is cls})
    seen = set()
    for path, f, owner in _fields(cls):
        name = path[-1]
        if name in seen:
            raise TypeError(f"config {cls.__name__} has two fields named {name!r}: the command line needs unique names")
        seen.add(name)
        hint = typing.get_type_hints(owner).get(f.name, type(f.default))
        default = field_default(cls, path)
        default = None if default is dataclasses.MISSING else default
        kind, metavar, shown = _parser_for(f, hint, default)
        text = config_help(owner).get(f.name) or docs.get(f.name)
        if not text:
            raise TypeError(
                f"config field {owner.__name__}.{f.name} has no help text: document it in the class "
                "docstring's Attributes: section"
            )
        dest = "cfg__" + "__".join(path)
        if f.default is dataclasses.MISSING:
            parser.add_argument(dest, metavar=name.upper(), type=kind, help=text.rstrip(".").replace("%", "%%"))
            continue
        text = text.rstrip(".").replace("%", "%%")  # argparse %-formats help strings
        required = text.endswith("(required)")  # documented so: an option that must be given, no default
        help_text = text if required else f"{text} (default: {shown or 'empty'})"
        flag = "--" + name.replace("_", "-")
        if kind is None:
            parser.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            parser.add_argument(
                flag,
                dest=dest,
                type=kind,
                metavar=metavar,
                default=argparse.SUPPRESS,
                help=help_text,
                required=required,
            )


def check_repeats(cls, values) -> None:
    """Refuse a value given twice in a comma list (``--temperatures 1,1``), for every study's
    options alike, before any work: a list option is a set of conditions, and a repeated one would
    count its runs twice. ``ValueError`` naming the field (``tokdyn.checks.distinct``). A field
    whose tuple is a sequence, where a value may repeat (a ``(low, high)`` range, layer widths),
    is named in its config class's ``SEQUENCES``, or has a default that repeats a value.
    ``values``: flattened field path -> the value given."""
    from tokdyn import checks

    fields = {path: (f, owner) for path, f, owner in _fields(cls)}
    for path, value in values.items():
        if not isinstance(value, tuple) or path not in fields:
            continue
        f, owner = fields[path]
        default = field_default(cls, path)
        if f.name in getattr(owner, "SEQUENCES", ()) or (
            isinstance(default, tuple) and len(set(default)) < len(default)
        ):
            continue
        checks.distinct(f.name, value)


def config_from_args(cls, args: argparse.Namespace, base=None):
    """The config the parsed ``args`` describe: ``base`` (default: ``cls()`` where every field has
    a default) with every option given replaced, nested configs included, then checked (a list
    option holding a value twice, :func:`check_repeats`) and by its ``validate()``."""
    values = {tuple(k[5:].split("__")): v for k, v in vars(args).items() if k.startswith("cfg__")}

    def build(klass, obj, prefix):
        kwargs = {}
        for f in dataclasses.fields(klass):
            path = prefix + (f.name,)
            current = getattr(obj, f.name) if obj is not None else None
            if any(k[: len(path)] == path and len(k) > len(path) for k in values):
                sub = current if current is not None else f.default
                kwargs[f.name] = build(type(sub), sub, path)
            elif path in values:
                kwargs[f.name] = values[path]
        if obj is None:
            return klass(**kwargs)
        return dataclasses.replace(obj, **kwargs) if kwargs else obj

    cfg = build(cls, base, ())
    check_repeats(cls, values)
    validate = getattr(cfg, "validate", None)
    return validate() if validate is not None else cfg
