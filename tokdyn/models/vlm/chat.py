"""The tokenizer and the chat template of a checkpoint of any family, from its own files, as a user has them.

:class:`Chat` reads ``tokenizer.json`` (through the ``tokenizers`` package), the chat template
(``chat_template.jinja``, ``chat_template.json`` or ``tokenizer_config.json``'s ``chat_template``, rendered by
``jinja2`` in a sandbox as ``transformers`` renders it) and the family's image processor, and turns a
conversation with images into the model's inputs: the template's text, each ``<|image_pad|>`` expanded to one
token per merged patch of its image (as the Qwen-VL processors do), the token ids, and the image processor's
``pixel_values`` and ``image_grid_thw``; :meth:`Chat.encode_batch` does it for many conversations at once
(padded on one side, one image grid).

A chat template is code a checkpoint brings: :func:`render` runs it in Jinja's immutable sandbox under a time
and a size limit (:data:`RENDER_SECONDS`, :data:`RENDER_CHARS`, :data:`RENDER_RANGE`): ``range`` is bounded, a
string or list repeated (``*``), raised to a power, formatted or joined is sized before it is built, every
string the template concatenates and the output are bounded, and a watchdog thread stops the template at the
time limit, whatever tracer (coverage, a debugger) is installed. A template that runs past a limit, fails, or
calls ``raise_exception`` is a ValueError naming the template's file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import string
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np

from tokdyn.models.blocks import fields


IMAGE_PAD = "<|image_pad|>"
LETTERS = string.ascii_uppercase
"""The option letters of a multiple-choice prompt, in order: A to Z."""
INSTRUCTION = "Answer with the option's letter from the given choices directly."
"""The line that closes a multiple-choice prompt (lmms-eval's for V* Bench and LLaVA's)."""
RENDER_SECONDS = 2.0
"""The longest a chat template may take to render one conversation (seconds of wall-clock time)."""
RENDER_CHARS = 1 << 22
"""The longest string (or list) a chat template may build, its output included (4,194,304 characters)."""
RENDER_RANGE = 10_000
"""The most numbers a template's ``range`` may give."""
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
"""Where a checkpoint keeps its chat template, in the order they are looked for."""


class TemplateLimit(Exception):
    """A chat template ran past a limit of :func:`render` (the message says which)."""


def multiple_choice(question: str, options) -> str:
    """The multiple-choice prompt of ``question`` and its ``options`` (strings, at most 26).

    The prompt is the question, one line per option (its letter, a full stop, a space and the option), then
    :data:`INSTRUCTION`; the scoring of the answers is :mod:`tokdyn.diagnostics.choices`."""
    options = [str(o).strip() for o in options]
    if not 1 <= len(options) <= len(LETTERS):
        raise ValueError(f"options must hold 1 to {len(LETTERS)} options, got {len(options)}")
    return "\n".join([question.strip()] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)] + [INSTRUCTION])


def find_template(directory: str | Path) -> tuple[str | None, str]:
    """The chat template among a checkpoint's files (None when it has none) and where it was found (the file,
    and the key inside it); a ValueError naming the file when the JSON file holding it cannot be read."""
    directory = Path(directory)
    if (directory / "chat_template.jinja").is_file():
        path = directory / "chat_template.jinja"
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a UTF-8 text file ({e})") from None
    for name in TEMPLATE_FILES[1:]:
        path = directory / name
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: not a JSON file ({e})") from None
            template = raw.get("chat_template") if isinstance(raw, dict) else None
            where = f"{path}'s chat_template"
            if isinstance(template, list):  # named templates: the default one
                named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
                template, where = named.get("default"), f"{path}'s chat_template 'default'"
            if template is not None and not isinstance(template, str):
                raise ValueError(f"{where} is {type(template).__name__}; expected a Jinja template (a string)")
            if template:
                return template, where
    return None, ""


def read_template(directory: str | Path) -> str | None:
    """The chat template among a checkpoint's files, or None when it has none (:func:`find_template`)."""
    return find_template(directory)[0]


# ---- the bounded sandbox ------------------------------------------------------------------------------------

_WIDTHS = (re.compile(r"%[#0\- +]*(\d*)(?:\.(\d+))?"), re.compile(r"\{[^{}]*?:([^{}]*)\}"))


def _size(value) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) else None


def _items(value) -> str:
    return "characters" if isinstance(value, (str, bytes)) else "items"


def _big_int(value, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > limit


@functools.lru_cache(maxsize=1)
def _sandbox_class():
    try:
        import jinja2
        import jinja2.ext
        from jinja2.compiler import CodeGenerator
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("rendering a chat template needs 'jinja2': pip install 'tokdyn[models]'") from None

    class Bounded(CodeGenerator):
        """Jinja's code generator, with every concatenation (``~``) sized by the environment."""

        def visit_Concat(self, node, frame):
            self.write("environment.bounded(")
            super().visit_Concat(node, frame)
            self.write(")")

    class Sandbox(ImmutableSandboxedEnvironment):
        """Jinja's immutable sandbox with the sizes of what a template builds bounded by ``max_chars``."""

        intercepted_binops = frozenset({"*", "**", "+", "%"})
        code_generator_class = Bounded

        def __init__(self, max_chars: int):
            super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
            self.max_chars = max_chars
            for name, f in list(self.filters.items()):
                self.filters[name] = self.bounded_filter(f, name)
            self.globals["range"] = self.bounded_range

        def bounded(self, value):
            n = _size(value)
            if n is not None and n > self.max_chars:
                raise TemplateLimit(
                    f"it builds a {type(value).__name__} of {n:,} {_items(value)}, more than {self.max_chars:,}"
                )
            return value

        def bounded_range(self, *args):
            r = range(*args)
            if len(r) > RENDER_RANGE:
                shown = ", ".join(map(str, args))
                raise TemplateLimit(f"range({shown}) gives {len(r):,} numbers, more than {RENDER_RANGE:,}")
            return r

        def check_ints(self, values, what: str):
            for v in values:
                if _big_int(v, self.max_chars):
                    raise TemplateLimit(f"{what} is given {v:,}, more than the size limit {self.max_chars:,}")

        def check_format(self, fmt: str, what: str):
            for pattern in _WIDTHS:
                for match in pattern.finditer(fmt):
                    for group in match.groups():
                        for digits in re.findall(r"\d+", group or ""):
                            if int(digits) > self.max_chars:
                                raise TemplateLimit(f"{what} asks for a width of {int(digits):,}")

        def bounded_filter(self, f, name):
            @functools.wraps(f)
            def wrapper(*args, **kwargs):
                skip = 2 if getattr(f, "jinja_pass_arg", None) is not None else 1  # the context, the value
                self.check_ints([*args[skip:], *kwargs.values()], f"the filter {name!r}")
                if name == "join" and len(args) >= skip:
                    items = list(args[skip - 1])
                    sep = args[skip] if len(args) > skip else kwargs.get("d", "")
                    n = sum(len(str(x)) for x in items) + len(str(sep)) * max(len(items) - 1, 0)
                    if n > self.max_chars:
                        raise TemplateLimit(f"the filter 'join' builds {n:,} characters, more than {self.max_chars:,}")
                    args = (*args[: skip - 1], items, *args[skip:])
                if name == "format" and len(args) >= skip and isinstance(args[skip - 1], str):
                    self.check_format(args[skip - 1], "the filter 'format'")
                return self.bounded(f(*args, **kwargs))

            return wrapper

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if _size(seq) is not None and isinstance(n, int) and len(seq) * n > self.max_chars:
                        raise TemplateLimit(
                            f"it repeats a {type(seq).__name__} of {len(seq):,} {_items(seq)} {n:,} times, more than "
                            f"{self.max_chars:,}"
                        )
            elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
                if right > 0 and right * math.log2(abs(left)) > 8 * self.max_chars:
                    raise TemplateLimit(f"it raises {left} to the power {right:,}, a number too large to hold")
            elif operator == "%" and isinstance(left, str):
                self.check_format(left, "a '%' format")
                self.check_ints(right if isinstance(right, tuple) else [right], "a '%' format")
            return self.bounded(super().call_binop(context, operator, left, right))

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
            __self.check_ints([*args, *kwargs.values()], f"the call of {getattr(__obj, '__name__', __obj)!r}")
            target = getattr(__obj, "__wrapped__", __obj)
            owner, name = getattr(target, "__self__", None), getattr(target, "__name__", "")
            if isinstance(owner, str):
                if name in ("format", "format_map"):
                    __self.check_format(owner, "str.format")
                elif name == "join" and args:
                    items = list(args[0])
                    n = sum(len(x) for x in items if isinstance(x, str)) + len(owner) * max(len(items) - 1, 0)
                    if n > __self.max_chars:
                        raise TemplateLimit(f"str.join builds {n:,} characters, more than {__self.max_chars:,}")
                    args = (items, *args[1:])
                elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
                    count = (len(owner) + 1) if args[0] == "" else owner.count(args[0])
                    n = len(owner) + count * (len(args[1]) - len(args[0]))
                    if n > __self.max_chars:
                        raise TemplateLimit(f"str.replace builds {n:,} characters, more than {__self.max_chars:,}")
            return __self.bounded(super().call(__context, __obj, *args, **kwargs))

    return Sandbox


class _Late(BaseException):
    """Raised inside a running template by :class:`_Watchdog`. A BaseException, as KeyboardInterrupt
    is: no ``except Exception`` in the Python code a template calls (Jinja's own included) can swallow it."""


class _Watchdog:
    """One daemon thread per process that raises :class:`_Late` in the thread of each :class:`_Clock` block
    still open at its deadline (``PyThreadState_SetAsyncExc``: the interpreter raises it in that thread between
    two bytecodes), once. It sleeps until the earliest deadline; a block that ends first only takes its clock
    off the list. Started on the first block (again in a forked child, which has no thread of its parent's)."""

    def __init__(self):
        self.reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reset)

    def reset(self):
        # The blocks' threads take the lock itself (``with self.lock``: acquired and released in C, never left
        # held by an exception raised between bytecodes), the watchdog waits on the condition.
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.clocks: set[_Clock] = set()
        self.wake_at = math.inf
        self.thread: threading.Thread | None = None

    def arm(self, clock: _Clock):
        with self.lock:
            self.clocks.add(clock)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self.run, name="tokdyn-chat-template-clock", daemon=True)
                self.thread.start()
            elif clock.deadline < self.wake_at:
                self.cond.notify()

    def disarm(self, clock: _Clock) -> bool:
        """Take ``clock`` off the list; True when the watchdog raised in its block already."""
        with self.lock:
            self.clocks.discard(clock)
            return clock.raised

    def run(self):
        import ctypes

        with self.cond:
            while True:
                now = time.monotonic()
                for clock in [c for c in self.clocks if c.deadline <= now]:
                    self.clocks.discard(clock)
                    clock.raised = True
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(clock.thread), ctypes.py_object(_Late))
                self.wake_at = min((c.deadline for c in self.clocks), default=math.inf)
                self.cond.wait(None if self.wake_at == math.inf else self.wake_at - now)


class _Clock:
    """``with _Clock(seconds):`` raises :class:`_Late` inside the block once ``seconds`` have passed
    (:class:`_Watchdog`).

    This holds whatever tracer or profiler is installed (a clock read by a ``sys.settrace`` function of our
    own was silently dropped under coverage's C tracer or a debugger) and costs a few microseconds a block,
    not a call per line. A single C call is not interrupted: the size limits bound each one. The raise and the
    block's end exclude each other (the watchdog's lock), and a raise made as the block ended is received at
    its end (the block's work stands), so ``_Late`` never escapes the block."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.thread = threading.get_ident()
        self.raised = False

    def __enter__(self):
        _WATCHDOG.arm(self)
        return self

    def __exit__(self, exc_type, exc, tb):
        if _WATCHDOG.disarm(self) and exc_type is not _Late:  # raised as the block ended: receive it here
            until = time.monotonic() + 1.0  # bounded: code the template called may have swallowed it already
            try:
                while time.monotonic() < until:
                    pass
            except _Late:
                pass
        return False


_WATCHDOG = _Watchdog()


@functools.lru_cache(maxsize=16)
def compile_template(template: str, max_chars: int = RENDER_CHARS):
    """``template`` compiled in the bounded sandbox (:func:`render`'s environment); ``jinja2``'s
    TemplateSyntaxError when it is not a Jinja template."""
    import jinja2

    env = _sandbox_class()(max_chars)

    def raise_exception(message):
        err = jinja2.exceptions.TemplateError(message)
        err.raised_by_template = True
        raise err

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env.filters["tojson"] = env.bounded_filter(tojson, "tojson")
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render(
    template: str,
    messages: list[dict],
    add_generation_prompt: bool = True,
    *,
    template_name: str = "the chat template",
    max_seconds: float = RENDER_SECONDS,
    max_chars: int = RENDER_CHARS,
    **extra,
) -> str:
    """``template`` rendered over ``messages`` in a sandboxed Jinja environment set up as ``transformers``'
    (blocks trimmed, loop controls, ``raise_exception``, ``tojson``), under a time limit (``max_seconds``) and a
    size limit (``max_chars`` characters for any string or list it builds and for its output; ``range`` gives at
    most :data:`RENDER_RANGE` numbers).

    A ValueError naming ``template_name`` when the template is not valid Jinja, runs past a limit, calls
    ``raise_exception`` (its message quoted) or fails in any other way."""
    import jinja2

    limit = f"a chat template must render a conversation in {max_seconds:g} s and {max_chars:,} characters"
    try:
        compiled = compile_template(template, max_chars)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"{template_name} is not a valid Jinja template: {e} (line {e.lineno})") from None
    out, n = [], 0
    try:
        with _Clock(max_seconds):
            for chunk in compiled.generate(messages=messages, add_generation_prompt=add_generation_prompt, **extra):
                n += len(chunk)
                if n > max_chars:
                    raise TemplateLimit(f"its output passed {max_chars:,} characters")
                out.append(chunk)
    except TemplateLimit as e:
        raise ValueError(f"{template_name} was stopped: {e}; {limit}") from None
    except _Late:
        raise ValueError(
            f"{template_name} was stopped: it ran past the time limit of {max_seconds:g} s; {limit}"
        ) from None
    except jinja2.exceptions.TemplateError as e:
        if getattr(e, "raised_by_template", False):
            raise ValueError(f"{template_name} refused the conversation (raise_exception): {e}") from None
        raise ValueError(f"{template_name} failed to render the conversation: {type(e).__name__}: {e}") from None
    except (RecursionError, MemoryError) as e:
        raise ValueError(f"{template_name} was stopped: {type(e).__name__}; {limit}") from None
    except Exception as e:  # the template's own code failed (a bad operand, an overflow ...)
        raise ValueError(f"{template_name} failed to render the conversation: {type(e).__name__}: {e}") from None
    return "".join(out)


# ---- the chat -----------------------------------------------------------------------------------------------


def _require(name: str):
    """The module ``name`` of the ``models`` extra, or an ImportError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(
            f"checkpoints' tokenizers and chat templates need the '{name}' package: pip install -e \".[models]\" "
            "(or pip install 'tokdyn[models]')"
        ) from None


def read_tokenizer(path: Path):
    """The ``tokenizers.Tokenizer`` of the file at ``path``; a ValueError naming the file when the package cannot
    read it (a truncated or corrupt ``tokenizer.json``)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("the tokenizer needs the 'tokenizers' package: pip install 'tokdyn[models]'") from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a plain Exception with serde's message
        raise ValueError(
            f"{path}: the tokenizers package cannot read it ({e}); expected the checkpoint's tokenizer.json "
            "(is the file truncated?)"
        ) from None


@dataclasses.dataclass(frozen=True)
class Chat:
    """A checkpoint's tokenizer, chat template and image processor.

    Attributes:
        tokenizer: the ``tokenizers.Tokenizer`` of ``tokenizer.json``.
        template: the chat template (Jinja), or None.
        processor: the image processor of ``preprocessor_config.json`` (the family's ``ImageProcessor``).
        special: the special tokens' strings the template may name (``eos_token``, ``bos_token``, ``pad_token``).
        template_name: where the template was found (the file), for errors.
    """

    tokenizer: object
    template: str | None
    processor: object
    special: dict
    template_name: str = "the chat template"

    @classmethod
    def load(cls, directory: str | Path, family=None) -> Chat:
        """The tokenizer, template and image processor of the checkpoint in ``directory``; the image processor
        is that of ``family`` (a family's name or package), by default the family its ``config.json`` names
        (Qwen2.5-VL's for a directory without one).

        FileNotFoundError without ``tokenizer.json``; a ValueError naming the file and the field when a file
        cannot be read (``tokenizer.json`` truncated, a JSON file that is not JSON, a template that is not
        Jinja, a processor setting out of range) or when ``preprocessor_config.json`` cuts images otherwise
        than ``config.json``'s vision tower reads them (when ``config.json`` is there)."""
        from tokdyn.models import families

        jinja2 = _require("jinja2")
        directory = Path(directory)
        has_config = (directory / "config.json").is_file()
        if family is None:
            family = families.detect(directory) if has_config else "qwen2_5_vl"
        fam = families.family(family) if isinstance(family, str) else family
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {str(directory)!r}: the checkpoint's tokenizer is needed")
        config_path = directory / "tokenizer_config.json"
        config = fields.read_json(config_path, "the tokenizer's settings") if config_path.is_file() else {}
        special = {}
        for name in ("bos_token", "eos_token", "pad_token"):
            value = config.get(name)
            if isinstance(value, dict):
                value = value.get("content")
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{config_path}: {name} is {value!r}; expected a token's string")
            special[name] = value
        template, where = find_template(directory)
        if template is not None:
            try:
                compile_template(template)
            except jinja2.exceptions.TemplateSyntaxError as e:
                raise ValueError(f"{where} is not a valid Jinja template: {e} (line {e.lineno})") from None
        processor = fam.ImageProcessor.read(directory)
        if has_config:
            model = fam.config.read(directory)
            processor.check_model(model.vision, str(directory / "preprocessor_config.json"), "config.json")
        return cls(read_tokenizer(path), template, processor, special, where or "the chat template")

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The conversation ``messages`` as text through the checkpoint's chat template (:func:`render`: bounded
        in time and size; a ValueError naming the template when it fails)."""
        if self.template is None:
            raise ValueError("the checkpoint has no chat template (chat_template.jinja or tokenizer_config.json)")
        return render(self.template, messages, add_generation_prompt, template_name=self.template_name, **self.special)

    def text_ids(self, text: str, what: str = "text") -> np.ndarray:
        """The token ids (int64) of ``text`` without special tokens added, every character accounted for: a
        ValueError naming ``what`` when the tokenizer maps it to nothing, maps part of it to its unknown token,
        or drops characters (a tokenizer without an unknown token skips what its vocabulary lacks)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            raise ValueError(f"{what} {text!r} has no tokens: the tokenizer maps it to nothing")
        unk = getattr(getattr(self.tokenizer, "model", None), "unk_token", None)
        unk_id = self.tokenizer.token_to_id(unk) if unk else None
        if unk_id is not None and unk_id in ids:
            raise ValueError(f"{what} {text!r} holds characters the tokenizer maps to its unknown token {unk!r}")
        decoded = self.tokenizer.decode(ids, skip_special_tokens=False)
        norm = lambda s: unicodedata.normalize("NFC", s).strip()  # noqa: E731
        if norm(decoded) != norm(text):
            lost = sorted(set(norm(text)) - set(norm(decoded)))
            raise ValueError(
                f"{what} {text!r} is not what its tokens spell ({decoded!r}): the tokenizer drops "
                f"{''.join(lost) or 'part of it'!r}, which its vocabulary lacks"
            )
        return np.asarray(ids, np.int64)

    def encode(self, messages: list[dict] | str, images=None, add_generation_prompt: bool = True) -> dict:
        """The model's inputs for a conversation (``messages``, rendered by the template) or a prompt's text
        (a str, used as it is), with ``images`` in the order their ``<|image_pad|>`` placeholders appear:
        ``{"input_ids": (1, T), "attention_mask": (1, T), "pixel_values", "image_grid_thw"}`` (the last two
        only with images)."""
        text = messages if isinstance(messages, str) else self.render(messages, add_generation_prompt)
        images = [] if images is None else list(images) if isinstance(images, (list, tuple)) else [images]
        if text.count(IMAGE_PAD) != len(images):
            raise ValueError(f"the prompt holds {text.count(IMAGE_PAD)} image placeholders but {len(images)} images")
        out: dict = {}
        if images:
            vision = self.processor(images)
            merge = self.processor.merge_size**2
            parts = text.split(IMAGE_PAD)
            counts = [int(np.prod(g)) // merge for g in vision["image_grid_thw"]]
            text = parts[0] + "".join(IMAGE_PAD * n + rest for n, rest in zip(counts, parts[1:]))
            out.update(vision)
        ids = np.asarray(self.tokenizer.encode(text).ids, np.int64)[None]
        out["input_ids"] = ids
        out["attention_mask"] = np.ones_like(ids)
        return out

    def encode_batch(
        self,
        conversations: list,
        images=None,
        *,
        padding_side: str = "left",
        pad_token_id: int | None = None,
        add_generation_prompt: bool = True,
    ) -> dict:
        """The inputs of a batch of conversations (each as :meth:`encode` takes it, one image per conversation
        or none for any) as one batch: ``{"input_ids": (B, T), "attention_mask": (B, T), "pixel_values":
        (B, patches, patch_dim), "image_grid_thw": (B, 3)}`` (the last two only with images), each row padded on
        ``padding_side`` (``"left"``, as generation packs them, or ``"right"``) with ``pad_token_id`` (default:
        the tokenizer's pad token, else 0) under a zero mask. Every image must come out of the processor in one
        grid (resize them to one size first): a batch holds one grid, so that one program runs it; a ValueError
        names the first image of another grid."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if isinstance(conversations, (str, dict)) or not len(conversations):
            raise ValueError("conversations must be a non-empty list of conversations (or prompt strings)")
        images = [None] * len(conversations) if images is None else list(images)
        if len(images) != len(conversations):
            raise ValueError(f"images: {len(images)} given for {len(conversations)} conversations (one each, or None)")
        if any(i is None for i in images) and not all(i is None for i in images):
            raise ValueError("images: give one image for every conversation, or none at all")
        rows = [
            self.encode(c, None if i is None else [i], add_generation_prompt) for c, i in zip(conversations, images)
        ]
        if pad_token_id is None:
            pad = self.special.get("pad_token")
            pad_token_id = self.tokenizer.token_to_id(pad) if pad else None
            pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, (int, np.integer)) or pad_token_id < 0:
            raise ValueError(f"pad_token_id must be a token id >= 0, got {pad_token_id!r}")
        width = max(r["input_ids"].shape[1] for r in rows)
        ids = np.full((len(rows), width), int(pad_token_id), np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for b, r in enumerate(rows):
            n = r["input_ids"].shape[1]
            at = slice(width - n, width) if padding_side == "left" else slice(0, n)
            ids[b, at], mask[b, at] = r["input_ids"][0], 1
        out = {"input_ids": ids, "attention_mask": mask}
        if images[0] is not None:
            grids = np.concatenate([np.asarray(r["image_grid_thw"]) for r in rows])
            other = np.flatnonzero((grids != grids[0]).any(1))
            if len(other):
                raise ValueError(
                    f"images: image {int(other[0])} makes the grid {grids[other[0]].tolist()}, image 0 "
                    f"{grids[0].tolist()}: a batch holds one grid (resize the images to one size)"
                )
            out["pixel_values"] = np.stack([np.asarray(r["pixel_values"], np.float32) for r in rows])
            out["image_grid_thw"] = grids
        return out

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """The text of token ids ``ids`` (one sequence)."""
        return self.tokenizer.decode(
            [int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=skip_special_tokens
        )
