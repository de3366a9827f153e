"""Multiple-choice questions as the benchmarks of visual reasoning score them (V* Bench, HR-Bench; the rules of
lmms-eval and VLMEvalKit): the prompt built from a question and its options (:func:`prompt`), the option a
model chose read from the text it generated (:func:`extract`, a documented rule, with "unparsable" when no
rule applies), an open answer's match (:func:`matches`), and the accuracy of a set of answers with its Wilson
interval (:func:`accuracy`). Host-side Python, no JAX.

The prompt (``options`` A, B, ... in order)::

    {question}
    A. {option A}
    B. {option B}
    ...
    Answer with the option's letter from the given choices directly.

:func:`extract`'s rule, tried in this order on the generated text (letters only among the options'):

1. the text, stripped of spaces and of ``()[]{}.:,;`` around it, is one capital letter: ``B``, ``(B)``, ``B.``;
2. the text starts with a capital letter followed by a character that is not a letter or a digit:
   ``B. the red car``, ``(B) red``, ``B: red`` (an ``A`` or ``I`` followed by a space and a lower-case
   letter is read as a word, here and in rule 4);
3. ``answer is B``, ``answer: B``, ``answer is (B)``, ``option B`` or ``choice B`` (any case; the first
   such phrase);
4. exactly one letter of the options stands alone in the text (between characters that are not letters or
   digits: ``I pick (C) here``);
5. exactly one option's text appears in the generated text (case-insensitive), and no other option's does;

else the answer is unparsable (scored wrong, and counted apart). An open answer (no options) matches when
the generated text, lower-cased and stripped of spaces and of ``.,;:!?"'()`` at both ends, equals the answer
so stripped, or begins with it followed by a character that is not a letter or a digit.
"""

from __future__ import annotations

import re
import string
from typing import NamedTuple, Optional, Sequence

LETTERS = string.ascii_uppercase
"""The option letters, in order: A to Z (at most 26 options)."""
INSTRUCTION = "Answer with the option's letter from the given choices directly."
"""The line that closes a multiple-choice prompt (lmms-eval's for V* Bench and LLaVA's)."""
UNPARSABLE = ""
"""What :func:`extract` returns when no rule finds an option."""
RULES = ("letter", "leading letter", "answer is", "lone letter", "option text")
"""The names of :func:`extract`'s rules, in the order they are tried."""

_STRIP = " \t\n()[]{}.:,;"
_OPEN_STRIP = " \t\n.,;:!?\"'()"


def check_options(options, where: str = "options") -> tuple:
    """``options`` as a tuple of stripped strings: 2 to 26 non-empty strings, else a ValueError naming
    ``where`` and what is allowed."""
    if not isinstance(options, (list, tuple)) or not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"{where} must be a list of 2 to {len(LETTERS)} option strings, got {options!r}")
    out = []
    for i, o in enumerate(options):
        if not isinstance(o, str) or not o.strip():
            raise ValueError(f"{where}: option {i} must be a non-empty string, got {o!r}")
        out.append(o.strip())
    return tuple(out)


def answer_letter(answer: str, options: Sequence[str], where: str = "answer") -> str:
    """The letter of the correct option, from ``answer``: a letter of the options (``"B"``, any case), or the
    text of exactly one option (case-insensitive); else a ValueError naming ``where``."""
    options = check_options(options)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"{where} must be an option's letter or its text, got {answer!r}")
    a = answer.strip()
    if len(a) == 1 and a.upper() in LETTERS[: len(options)]:
        return a.upper()
    same = [LETTERS[i] for i, o in enumerate(options) if o.lower() == a.lower()]
    if len(same) == 1:
        return same[0]
    raise ValueError(
        f"{where} {answer!r} is neither a letter of the {len(options)} options ({LETTERS[0]}-{LETTERS[len(options) - 1]}) "
        f"nor the text of exactly one option"
    )


def prompt(question: str, options: Sequence[str]) -> str:
    """The multiple-choice prompt of ``question`` and its ``options`` (the template in the module's docstring)."""
    options = check_options(options)
    lines = [question.strip()] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)] + [INSTRUCTION]
    return "\n".join(lines)


class Extracted(NamedTuple):
    """The option read from a generated text: ``letter`` (:data:`UNPARSABLE` when none) and ``rule`` (the name
    from :data:`RULES` that found it, ``""`` when none did)."""

    letter: str
    rule: str


def _word(text: str, at: int) -> bool:
    """Whether the capital at ``at`` is the article "A" or the pronoun "I" (followed by a space and a
    lower-case letter), not an option's letter."""
    return text[at] in "AI" and re.match(r" [a-z]", text[at + 1 : at + 3]) is not None


def extract(text: str, options: Sequence[str]) -> Extracted:
    """The option ``text`` chooses among ``options``, by the rule of the module's docstring."""
    options = check_options(options)
    allowed = LETTERS[: len(options)]
    t = (text or "").strip()
    core = t.strip(_STRIP)
    if len(core) == 1 and core.upper() == core and core in allowed:
        return Extracted(core, RULES[0])
    m = re.match(r"^[\s(\[{]*([A-Z])(?:[^A-Za-z0-9]|$)", t)
    if m and m.group(1) in allowed and not _word(t, m.start(1)):
        return Extracted(m.group(1), RULES[1])
    for m in re.finditer(r"(?:answer\s*(?:is|:)|option|choice)\s*[:\s]*[(\[]?\s*([A-Za-z])(?![A-Za-z0-9])", t, re.I):
        letter = m.group(1).upper()
        if letter in allowed:
            return Extracted(letter, RULES[2])
    lone = set()
    for m in re.finditer(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])", t):
        if _word(t, m.start(1)):
            continue
        lone.add(m.group(1))
    lone &= set(allowed)
    if len(lone) == 1:
        return Extracted(lone.pop(), RULES[3])
    low = t.lower()
    found = [allowed[i] for i, o in enumerate(options) if o.lower() in low]
    if len(found) == 1:
        return Extracted(found[0], RULES[4])
    return Extracted(UNPARSABLE, "")


def matches(text: str, answer: str) -> bool:
    """Whether the generated ``text`` gives the open ``answer`` (the rule of the module's docstring)."""
    t = (text or "").strip().lower().strip(_OPEN_STRIP)
    a = (answer or "").strip().lower().strip(_OPEN_STRIP)
    if not a:
        return False
    if t == a:
        return True
    return t.startswith(a) and not t[len(a)].isalnum()


class Scored(NamedTuple):
    """One generated answer scored: ``choice`` (the option's letter, :data:`UNPARSABLE`, or the text for an
    open answer), ``correct`` (bool), ``parsed`` (False only for an unparsable multiple-choice answer) and
    ``rule`` (the rule that read it; ``"open"`` for an open answer)."""

    choice: str
    correct: bool
    parsed: bool
    rule: str


def score(text: str, answer: str, options: Optional[Sequence[str]] = None) -> Scored:
    """Score a generated ``text`` against ``answer``: with ``options``, :func:`extract`'s letter against the
    answer's letter (:func:`answer_letter`); without, :func:`matches`."""
    if options is None:
        return Scored((text or "").strip(), matches(text, answer), True, "open")
    got = extract(text, options)
    return Scored(got.letter, got.letter == answer_letter(answer, options), got.letter != UNPARSABLE, got.rule)


class Accuracy(NamedTuple):
    """Accuracy of n answers: ``rate`` with its 95% Wilson interval ``(low, high)``, ``correct`` and ``n``
    counts, ``unparsable`` answers (counted wrong), and ``chance`` (the mean of 1 / options; NaN for open
    answers)."""

    rate: float
    low: float
    high: float
    correct: int
    n: int
    unparsable: int
    chance: float


def accuracy(scored: Sequence[Scored], n_options: Optional[Sequence[int]] = None) -> Accuracy:
    """The :class:`Accuracy` of ``scored`` answers (:func:`score`), its chance level from ``n_options`` (the
    number of options of each question; None: open answers, no chance level)."""
    from tokdyn.stats import inference

    n = len(scored)
    k = sum(bool(s.correct) for s in scored)
    bad = sum(not s.parsed for s in scored)
    low, high = inference.wilson_interval(k, n) if n else (float("nan"), float("nan"))
    chance = float("nan")
    if n_options is not None and len(n_options):
        chance = float(sum(1.0 / m for m in n_options) / len(n_options))
    return Accuracy(k / n if n else float("nan"), float(low), float(high), k, n, bad, chance)


__all__ = [
    "Accuracy",
    "Extracted",
    "INSTRUCTION",
    "LETTERS",
    "RULES",
    "Scored",
    "UNPARSABLE",
    "accuracy",
    "answer_letter",
    "check_options",
    "extract",
    "matches",
    "prompt",
    "score",
]
