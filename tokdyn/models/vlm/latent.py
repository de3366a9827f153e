"""Latent mode: the values that describe it to :func:`tokdyn.models.vlm.generation.generate` and what it hands
back.

- :class:`LatentMode`: the checkpoint's latent start, end and pad tokens (ids, or strings resolved through its
  tokenizer), the latent size and what is fed back (the final-norm state, the last layer's output before the
  norm, or, text-space, the greedy token's embedding); :meth:`LatentMode.read` reads a checkpoint's
  ``latent_mode.json``.
- :class:`Generation`: the tokens, the latents written and where each block sits, whether each block was
  complete or cut by the token limit, the scores, and where each row writes its answer.

The semantics (as the published latent-reasoning methods generate): once a row emits the start token (or has
it forced, the block mode) it is fed as a token; each of the next ``size`` inputs is the state the step before
computed (the latent); then the end token is fed as a token (forced, and written in ``tokens``) and text
generation goes on. ``tokens`` holds the pad token at each latent step. What can be done to the latents is
the one table of :mod:`tokdyn.models.vlm.interventions`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

FEEDS = ("norm", "prenorm", "token")
"""What a latent step feeds back: the final-norm hidden state (``"norm"``, as Hugging Face returns the last of
``hidden_states``, as Coconut and the latent-reasoning checkpoints feed it), the last layer's output before the
final norm (``"prenorm"``), or the input embedding of the most likely token there (``"token"``: text-space
imagination, the state never fed)."""
MAX_SIZE = 4096
"""The most latents a block may hold."""
FILE = "latent_mode.json"
"""The file beside a checkpoint's ``config.json`` that says how to run it in latent mode:
``{"start": "<token>", "end": "<token>", "pad": "<token>", "size": N}`` (optionally ``"feed"``)."""


def _token(value, name: str):
    if isinstance(value, str):
        if not value:
            raise ValueError(f"LatentMode {name} must be a token id or a non-empty token string, got ''")
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"LatentMode {name} must be a token id (int >= 0) or a token string, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class LatentMode:
    """The latent mode of a checkpoint trained to write its own latents.

    Attributes:
      start: the token that opens a latent block (id, or its string in the tokenizer).
      end: the token fed after ``size`` latents, closing the block.
      pad: the token written in ``tokens`` at each latent step.
      size: latents per block (1 to :data:`~tokdyn.models.vlm.latent.MAX_SIZE`; the published methods use 4, 8 or 10).
      feed: one of :data:`~tokdyn.models.vlm.latent.FEEDS`: ``"norm"`` (the final-norm hidden state), ``"prenorm"`` (the last layer's
        output before it) or ``"token"`` (the greedy token's input embedding).
    """

    start: int | str
    end: int | str
    pad: int | str
    size: int
    feed: str = "norm"

    def __post_init__(self):
        for name in ("start", "end", "pad"):
            object.__setattr__(self, name, _token(getattr(self, name), name))
        if isinstance(self.size, (bool, np.bool_)) or not isinstance(self.size, (int, np.integer)):
            raise ValueError(f"LatentMode size must be a positive integer, got {self.size!r}")
        if not 1 <= self.size <= MAX_SIZE:
            raise ValueError(f"LatentMode size must lie in [1, {MAX_SIZE}], got {self.size!r}")
        object.__setattr__(self, "size", int(self.size))
        if self.feed not in FEEDS:
            raise ValueError(f"LatentMode feed must be one of {FEEDS}, got {self.feed!r}")
        ids = [t for t in (self.start, self.end, self.pad) if isinstance(t, int)]
        if len(set(ids)) != len(ids):
            raise ValueError(f"LatentMode start, end and pad must be three different tokens, got {self}")

    @property
    def resolved(self) -> bool:
        """Whether the three tokens are ids (no string left to look up)."""
        return all(isinstance(t, int) for t in (self.start, self.end, self.pad))

    def resolve(self, tokenizer) -> LatentMode:
        """The same mode with each token string replaced by its id in ``tokenizer`` (a
        :class:`~tokdyn.models.vlm.chat.Chat`, a ``tokenizers.Tokenizer`` or anything with
        ``token_to_id``); ValueError naming a string the tokenizer does not hold, and the added tokens it does."""
        tok = getattr(tokenizer, "tokenizer", tokenizer)
        if not hasattr(tok, "token_to_id"):
            raise TypeError(f"resolve needs a Chat or a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        out = {}
        for name in ("start", "end", "pad"):
            value = getattr(self, name)
            if isinstance(value, str):
                found = tok.token_to_id(value)
                if found is None:
                    added = sorted(getattr(tok, "get_added_tokens_decoder", dict)().values(), key=str)
                    names = [getattr(a, "content", str(a)) for a in added]
                    raise ValueError(
                        f"LatentMode {name}={value!r} is not a token of this tokenizer; its added tokens are "
                        f"{names[:20]}{' ...' if len(names) > 20 else ''}"
                    )
                value = int(found)
            out[name] = value
        return dataclasses.replace(self, **out)

    @classmethod
    def from_tokenizer(cls, tokenizer, start: str, end: str, pad: str, size: int, feed: str = "norm") -> LatentMode:
        """A resolved :class:`LatentMode` from token strings looked up in ``tokenizer`` (see :meth:`resolve`)."""
        return cls(start, end, pad, size, feed).resolve(tokenizer)

    @classmethod
    def read(cls, directory: str | Path, tokenizer=None) -> LatentMode | None:
        """The latent mode a checkpoint records in its :data:`~tokdyn.models.vlm.latent.FILE` (None when it has none), resolved through
        ``tokenizer`` when given (else through the checkpoint's ``tokenizer.json``, when it has one): its fields
        checked by :func:`~tokdyn.models.vlm.latent.read_fields`."""
        path = Path(directory) / FILE
        if not path.is_file():
            return None
        fields = read_fields(directory, tokenizer)
        mode = cls(**fields)
        tok = tokenizer if tokenizer is not None else _checkpoint_tokenizer(directory)
        return mode if tok is None else mode.resolve(tok)

    def write(self, directory: str | Path) -> Path:
        """Write this mode as the checkpoint's :data:`~tokdyn.models.vlm.latent.FILE` (token strings only: a mode of ids cannot say which
        tokens they are in another tokenizer), atomically. Returns the file's path."""
        from tokdyn import io

        tokens = {name: getattr(self, name) for name in ("start", "end", "pad")}
        if not all(isinstance(t, str) for t in tokens.values()):
            raise ValueError(f"{FILE} names tokens by their strings; this mode holds ids: {self}")
        path = Path(directory) / FILE
        io.write_json(str(path), {**tokens, "size": self.size, "feed": self.feed})
        return path

    def check(self, vocab: int, eos: tuple[int, ...] = ()) -> None:
        """ValueError unless the tokens are ids in ``[0, vocab)`` and none is a stop token."""
        if not self.resolved:
            raise ValueError(
                f"{self} names tokens by string: resolve them first with latent.resolve(chat) (or "
                "LatentMode.from_tokenizer)"
            )
        for name in ("start", "end", "pad"):
            value = getattr(self, name)
            if value >= vocab:
                raise ValueError(f"LatentMode {name}={value} is not a token id of this model (vocabulary {vocab})")
            if value in eos:
                raise ValueError(
                    f"LatentMode {name}={value} is a stop token ({list(eos)}); it cannot open or close a block"
                )


FIELDS = ("start", "end", "pad", "size")
"""The fields of :data:`~tokdyn.models.vlm.latent.FILE` (``feed`` may follow, ``"norm"`` when absent)."""


def _checkpoint_tokenizer(directory):
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokdyn.models.vlm.chat import read_tokenizer

    return read_tokenizer(path)


def check_fields(fields, tokenizer, where: str) -> dict:
    """``fields`` (a mapping of :data:`~tokdyn.models.vlm.latent.FIELDS`, optionally ``feed``) checked, against
    ``tokenizer`` when given: each token a non-empty string the tokenizer holds as one token (its text encodes to
    that token alone), the three distinct, ``size`` an integer in [1, :data:`~tokdyn.models.vlm.latent.MAX_SIZE`],
    ``feed`` one of :data:`~tokdyn.models.vlm.latent.FEEDS`, no other field. A ValueError naming ``where``, the
    field and its value otherwise. Returns the fields as a dict
    (``LatentMode(**fields)`` takes it)."""
    if not isinstance(fields, dict):
        raise ValueError(f"{where}: expected a JSON object with fields {list(FIELDS)}, got {type(fields).__name__}")
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise ValueError(f"{where}: field {missing[0]!r} is missing; expected the fields {list(FIELDS)}")
    extra = sorted(set(fields) - set(FIELDS) - {"feed"})
    if extra:
        raise ValueError(f"{where}: field {extra[0]!r} is not one of {list(FIELDS)} (or feed)")
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    for name in FIELDS[:3]:
        value = fields[name]
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: {name} is {value!r}; expected a token's string, e.g. '<|latent_{name}|>'")
        if tok is None:
            continue
        found = tok.token_to_id(value)
        if found is None or tok.encode(value, add_special_tokens=False).ids != [found]:
            added = [getattr(t, "content", str(t)) for _, t in sorted(tok.get_added_tokens_decoder().items())]
            raise ValueError(
                f"{where}: {name} is {value!r}, which the tokenizer does not hold as one token (its added tokens: "
                f"{added[-8:]})"
            )
    tokens = [fields[n] for n in FIELDS[:3]]
    if len(set(tokens)) != 3:
        raise ValueError(f"{where}: start, end and pad are {tokens}; expected three different tokens")
    size = fields["size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise ValueError(f"{where}: size is {size!r}; expected an integer in [1, {MAX_SIZE}] (latents per block)")
    feed = fields.get("feed", "norm")
    if feed not in FEEDS:
        raise ValueError(f"{where}: feed is {feed!r}; expected one of {FEEDS}")
    return {name: fields[name] for name in FIELDS} | ({"feed": feed} if "feed" in fields else {})


def read_fields(directory, tokenizer=None) -> dict:
    """The fields of the checkpoint's :data:`~tokdyn.models.vlm.latent.FILE` in ``directory``, checked by :func:`check_fields` against
    ``tokenizer`` (default: the checkpoint's ``tokenizer.json``, when it has one): FileNotFoundError without the
    file; a ValueError naming the file when it is not a JSON object or a field is wrong."""
    path = Path(directory) / FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {FILE} in {str(directory)!r}: the checkpoint does not state its latent mode (give the latent tokens "
            "and the size by hand)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({e}); expected the latent mode (fields {list(FIELDS)})") from None
    tok = tokenizer if tokenizer is not None else _checkpoint_tokenizer(directory)
    try:
        return check_fields(raw, tok, str(path))
    except ValueError as e:
        if tok is not None and "as one token" in str(e):
            raise ValueError(f"{e} ({FILE} disagrees with the checkpoint's tokenizer)") from None
        raise


@dataclasses.dataclass(frozen=True)
class Generation:
    """What latent-mode generation hands back (host arrays).

    Attributes:
      tokens: (B, N) the ids generated: the latent pad at each latent step, the end token after each block,
        the checkpoint's pad id after a row stops.
      latents: (B, K, S, hidden) float32: the latents each row computed, block by block (K: the most blocks of
        any row; S = min(size, N), the most latent steps a run of N steps can hold; zeros past a row's
        ``n_blocks`` or past the run's last step). Under an intervention these are the computed states, before
        the intervention replaced them.
      n_blocks: (B,) the blocks each row opened, a block cut by the token limit included (``complete``).
      block_steps: (B, K) the step of each block's start token (-1 past ``n_blocks``).
      complete: (B, K) whether each block was written whole: its ``size`` latents and its end token inside the
        run (False past ``n_blocks``). A block cut by ``max_new_tokens`` is the row's last.
      scores: (B, N, C) the model's log-probabilities of ``score_ids`` at every step (before the repetition
        penalty and the sampling filters), or None.
      score_ids: the C token ids of ``scores``.
      stop_steps: (B,) the step of each row's stop token (N for a row that did not stop).
      pad_token_id: the id a stopped row is filled with.
      latent: the :class:`LatentMode`, or None.
    """

    tokens: np.ndarray
    latents: np.ndarray
    n_blocks: np.ndarray
    block_steps: np.ndarray
    complete: np.ndarray
    scores: np.ndarray | None
    score_ids: tuple[int, ...]
    stop_steps: np.ndarray
    pad_token_id: int
    latent: LatentMode | None

    @property
    def stopped(self) -> np.ndarray:
        """(B,) whether each row emitted a stop token."""
        return self.stop_steps < self.tokens.shape[1]

    @property
    def blocks(self) -> np.ndarray:
        """(B,) the blocks each row wrote whole (its cut block, if any, left out)."""
        return np.asarray(self.complete, bool).sum(1).astype(np.int64)

    @property
    def cut(self) -> np.ndarray:
        """(B,) whether each row's last block was cut by the token limit."""
        return np.asarray(self.n_blocks) > self.blocks

    def answer_start(self, row: int) -> int:
        """The first step of row ``row``'s answer: the step after its last whole block's end token (0 when it
        wrote none; N when a block was cut, so that there is no answer)."""
        if self.latent is None or int(self.n_blocks[row]) == 0:
            return 0
        if self.cut[row]:
            return self.tokens.shape[1]
        return int(self.block_steps[row, int(self.n_blocks[row]) - 1]) + self.latent.size + 2

    def answer_ids(self, row: int, after_latents: bool = False) -> np.ndarray:
        """Row ``row``'s tokens without the fill after its stop token, the latent pads and (with
        ``after_latents``) everything up to its last block's end token (:meth:`answer_start`)."""
        ids = self.tokens[row]
        keep = np.arange(len(ids)) <= self.stop_steps[row]
        if self.latent is not None:
            size = self.latent.size
            for s in self.block_steps[row, : self.n_blocks[row]]:
                keep[s + 1 : s + 1 + size] = False
            if after_latents:
                keep[: self.answer_start(row)] = False
        return ids[keep]

    def text(self, chat, after_latents: bool = False, skip_special_tokens: bool = True) -> list[str]:
        """Each row's text through ``chat`` (a :class:`~tokdyn.models.vlm.chat.Chat`), without the fill after
        the stop token and the latent pads (:meth:`answer_ids`); with ``after_latents``, only what follows the
        last block."""
        return [
            chat.decode(self.answer_ids(r, after_latents), skip_special_tokens=skip_special_tokens)
            for r in range(len(self.tokens))
        ]

    def rows(self, index) -> Generation:
        """The same generation restricted to the rows ``index`` (an index array or slice)."""
        take = lambda a: None if a is None else np.asarray(a)[index]  # noqa: E731
        fields = ("tokens", "latents", "n_blocks", "block_steps", "complete", "scores", "stop_steps")
        return dataclasses.replace(self, **{f: take(getattr(self, f)) for f in fields})


__all__ = ["FEEDS", "FIELDS", "FILE", "Generation", "LatentMode", "MAX_SIZE", "check_fields", "read_fields"]
