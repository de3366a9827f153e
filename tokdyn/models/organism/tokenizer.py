"""The organism's tokenizer: Qwen2's byte-level pipeline over a small vocabulary of the tasks' words, Qwen's
special tokens, three latent tokens, and Qwen2.5-VL's chat template.

:func:`build` makes a ``tokenizers.Tokenizer`` that splits text as Qwen2's does (NFC, then Qwen2's
pre-tokenisation pattern :data:`SPLIT_PATTERN`, then bytes mapped to symbols as GPT-2's byte-level BPE), with a
BPE model of no merges that matches a whole piece to the vocabulary first (``ignore_merges``): every piece of
the tasks' texts (:func:`corpus`: the questions, captions, options, the multiple-choice instruction and the chat
template's words) is one token, and any other text falls back to one token per byte, so every string encodes
and decodes back to itself and nothing is unknown. Ids: the 256 byte symbols (id = the byte's value), the
pieces (sorted), then :data:`SPECIAL_TOKENS` (Qwen2.5-VL's, in its order) and :data:`LATENT_TOKENS`.

:func:`files` gives the files a checkpoint holds: ``tokenizer.json``, ``tokenizer_config.json`` (end of turn
``<|im_end|>``, padding ``<|endoftext|>``, no begin token, as Qwen2.5-VL) and ``chat_template.jinja``
(:data:`CHAT_TEMPLATE`, Qwen2.5-VL's own), which ``transformers``' ``AutoTokenizer``/``AutoProcessor`` and
:meth:`tokdyn.models.vlm.Chat.load` both read to the same ids.
"""

from __future__ import annotations

import functools
import itertools
import json

from tokdyn.models.organism import tasks
from tokdyn.models.vlm import chat

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen2.5-VL's special tokens, in the order of their ids there."""
LATENT_TOKENS = ("<|latent_start|>", "<|latent_end|>", "<|latent_pad|>")
"""The latent block's start, end and pad tokens (special tokens after :data:`SPECIAL_TOKENS`)."""
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokenisation: contractions, words with one leading non-letter, single digits, punctuation runs,
newlines, spaces."""
SYSTEM_PROMPT = "You are a helpful assistant."
"""The system turn :data:`CHAT_TEMPLATE` adds when a conversation has none."""
INSTRUCTION = chat.INSTRUCTION
"""The closing line of a multiple-choice prompt in the form the ``vlm-diagnostics`` study writes it
(:data:`tokdyn.diagnostics.choices.INSTRUCTION`; a test holds the two equal), so its words are tokens."""
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
"""Qwen2.5-VL's chat template (its ``chat_template.json``, verbatim): a system turn unless the conversation
opens with one, each turn between ``<|im_start|>role`` and ``<|im_end|>``, an image as
``<|vision_start|><|image_pad|><|vision_end|>``."""
MODEL_MAX_LENGTH = 32768


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of the 256 byte values to printable symbols (the byte-level BPE alphabet): printable
    Latin-1 bytes stand for themselves, the others for the characters from U+0100 on, in order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def corpus() -> list[str]:
    """The texts whose pieces are the vocabulary: every question, caption and option of every family with each
    field over all its values (the others at their first), the option lines (a line break, a letter, a full stop,
    a space and the option's text) for every letter and option text, the instruction and the chat template's own
    words."""
    g = tasks.latent_tasks.MAX_GRID
    colours = tasks.COLOUR_NAMES[1:]
    numbers = [str(n) for n in range(g + 1)]
    domains = {
        "r": numbers,
        "c": numbers,
        "sr": numbers,
        "sc": numbers,
        "er": numbers,
        "ec": numbers,
        "n0": numbers,
        "n1": numbers,
        "k": colours,
        "a": colours,
        "b": colours,
        "marker": colours,
        "op": list(tasks.OPERATIONS.values()),
        "d0": list(tasks.latent_tasks.DIRECTIONS),
        "d1": list(tasks.latent_tasks.DIRECTIONS),
        "row": [", ".join(p) for p in itertools.product(tasks.COLOUR_NAMES, repeat=2)],
    }
    out = [SYSTEM_PROMPT, INSTRUCTION, "system\n", "user\n", "assistant\n", "Picture 1: ", "Video 1: "]
    for template in (*tasks.QUESTIONS.values(), *tasks.CAPTIONS.values()):
        fields = [f for f in domains if "{" + f + "}" in template]
        first = {f: domains[f][0] for f in fields}
        for f in fields:
            out += [template.format(**{**first, f: value}) for value in domains[f]]
    texts = [*tasks.COLOUR_NAMES, *numbers]
    out += [f"?\n{letter}. {text}\n" for letter in tasks.LETTERS for text in texts]
    out += [f".\n{letter}. {text}.\n" for letter in tasks.LETTERS for text in texts]
    return out


@functools.lru_cache(maxsize=1)
def _pre_tokenizer():
    from tokenizers import Regex, normalizers, pre_tokenizers

    split = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return normalizers.NFC(), pre_tokenizers.Sequence([split, byte_level])


def pieces() -> list[str]:
    """The vocabulary's pieces beyond the byte symbols: every piece of :func:`corpus` longer than one symbol,
    sorted."""
    normalizer, pre = _pre_tokenizer()
    found = set()
    for text in corpus():
        found.update(p for p, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    return sorted(p for p in found if len(p) > 1)


def build():
    """The organism's ``tokenizers.Tokenizer`` (the module's docstring says what it holds)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    symbols = bytes_to_unicode()
    vocab = {symbols[b]: b for b in range(256)}
    for piece in pieces():
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    tok.normalizer, tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS + LATENT_TOKENS])
    return tok


def tokenizer_config(tok) -> dict:
    """``tokenizer_config.json`` of ``tok`` (a ``tokenizers.Tokenizer`` holding :data:`SPECIAL_TOKENS`): the
    generic fast tokenizer over ``tokenizer.json``, ``<|im_end|>`` ending a turn, ``<|endoftext|>`` padding, no
    begin token, its other added special tokens listed (as Qwen2.5-VL's)."""
    for token in (EOS_TOKEN, PAD_TOKEN):
        if tok.token_to_id(token) is None:
            raise ValueError(f"the tokenizer lacks {token!r}; a Qwen2.5-VL tokenizer holds {list(SPECIAL_TOKENS)}")
    added = sorted(tok.get_added_tokens_decoder().items())
    extra = [t.content for _, t in added if t.special and t.content not in (EOS_TOKEN, PAD_TOKEN)]
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "additional_special_tokens": extra,
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
    }


def files(tok=None, chat_template: str = CHAT_TEMPLATE) -> dict[str, str]:
    """The tokenizer's files of a checkpoint, ``{file name: text}``: ``tokenizer.json`` (``tok``; default
    :func:`build`), ``tokenizer_config.json`` (:func:`tokenizer_config`) and ``chat_template.jinja``."""
    tok = build() if tok is None else tok
    return {
        "tokenizer.json": tok.to_str(pretty=True),
        "tokenizer_config.json": json.dumps(tokenizer_config(tok), indent=2) + "\n",
        "chat_template.jinja": chat_template,
    }


__all__ = [
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "INSTRUCTION",
    "LATENT_TOKENS",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "SPLIT_PATTERN",
    "SYSTEM_PROMPT",
    "build",
    "bytes_to_unicode",
    "corpus",
    "files",
    "pieces",
    "tokenizer_config",
]
