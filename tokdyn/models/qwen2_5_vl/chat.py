"""The tokenizer and the chat template of a Qwen2.5-VL checkpoint, from its own files, as a user has them.

:class:`Chat` reads ``tokenizer.json`` (through the ``tokenizers`` package) and the chat template
(``chat_template.jinja``, ``chat_template.json`` or ``tokenizer_config.json``'s ``chat_template``, rendered by
``jinja2`` in a sandbox as ``transformers`` renders it), and turns a conversation with images into the
model's inputs: the template's text, each ``<|image_pad|>`` expanded to one token per merged patch of its
image (as ``Qwen2_5_VLProcessor`` does), the token ids, and the image processor's ``pixel_values`` and
``image_grid_thw``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from tokdyn.models.qwen2_5_vl.processor import ImageProcessor

IMAGE_PAD = "<|image_pad|>"


def read_template(directory: str | Path) -> str | None:
    """The chat template among a checkpoint's files, or None when it has none."""
    directory = Path(directory)
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text()
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = directory / name
        if path.is_file():
            template = json.loads(path.read_text()).get("chat_template")
            if isinstance(template, list):  # named templates: the default one
                named = {t.get("name"): t.get("template") for t in template}
                template = named.get("default")
            if template:
                return template
    return None


def render(template: str, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
    """``template`` rendered over ``messages`` in a sandboxed Jinja environment set up as ``transformers``'
    (blocks trimmed, loop controls, ``raise_exception``, ``tojson``)."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("rendering a chat template needs 'jinja2': pip install 'tokdyn[models]'") from None

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **extra)


@dataclasses.dataclass(frozen=True)
class Chat:
    """A checkpoint's tokenizer, chat template and image processor.

    Attributes:
        tokenizer: the ``tokenizers.Tokenizer`` of ``tokenizer.json``.
        template: the chat template (Jinja), or None.
        processor: the image processor of ``preprocessor_config.json``.
        special: the special tokens' strings the template may name (``eos_token``, ``bos_token``, ``pad_token``).
    """

    tokenizer: object
    template: str | None
    processor: ImageProcessor
    special: dict

    @classmethod
    def load(cls, directory: str | Path) -> Chat:
        """The tokenizer, template and image processor of the checkpoint in ``directory``."""
        try:
            from tokenizers import Tokenizer
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("the tokenizer needs the 'tokenizers' package: pip install 'tokdyn[models]'") from None
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {str(directory)!r}: the checkpoint's tokenizer is needed")
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        special = {}
        for name in ("bos_token", "eos_token", "pad_token"):
            value = config.get(name)
            if isinstance(value, dict):
                value = value.get("content")
            special[name] = value
        return cls(Tokenizer.from_file(str(path)), read_template(directory), ImageProcessor.read(directory), special)

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The conversation ``messages`` as text through the checkpoint's chat template."""
        if self.template is None:
            raise ValueError("the checkpoint has no chat template (chat_template.jinja or tokenizer_config.json)")
        return render(self.template, messages, add_generation_prompt, **self.special)

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

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """The text of token ids ``ids`` (one sequence)."""
        return self.tokenizer.decode(
            [int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=skip_special_tokens
        )
