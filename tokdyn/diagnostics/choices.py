"""Multiple-choice and open questions as the benchmarks of visual reasoning score them (V* Bench, HR-Bench;
after lmms-eval's and VLMEvalKit's rules, where they differ said in ``docs/studies/vlm-diagnostics.md``): the
prompt built from a question and its options (:func:`prompt`), the option a model chose read from the text it
generated (:func:`extract`, a documented rule, with "unparsable" when no rule applies, or "cut off" when the
caller says the text was cut by the token limit), an open answer read and matched (:func:`read_open`,
:func:`matches`), and the accuracy of a set of answers with its Wilson interval (:func:`accuracy`). Host-side
Python, no JAX.

The prompt (``options`` A, B, ... in order)::

    {question}
    A. {option A}
    B. {option B}
    ...
    Answer with the option's letter from the given choices directly.

**Reading a letter.** The generated text is first normalised: Unicode NFKC (full-width ``（Ｂ）`` and ``：``
become ``(B)`` and ``:``), the minus sign ``−`` becomes ``-``, markdown emphasis (``*``) and backticks are
removed. A *letter token* is one letter standing alone: no letter or digit (Latin, accents included) right
before or after it, and no apostrophe or hyphen joining it to one (``c'est``, ``I'm``, ``T-shirt``, ``don't``
hold none); characters of other scripts are no letters here, so ``答案是B`` holds the token ``B``. An ``A``
(either case) followed by spaces on its line and a word of two letters or more is the article ("A bus",
"a tree"), an ``I`` so followed the pronoun ("I think"), unless that word is one of :data:`AFTER_LETTER`
("A is correct", "A because ..."). A letter token followed by ``or``, ``and``, ``nor``, ``/``, ``&`` or ``或`` and
another letter of the options ("A or B", "A and C", "A/B") is a *hedge*: where a rule meets one, the answer
is unparsable. Letters outside the options are never read. The rules, tried in this order (:data:`RULES`):

1. ``letter``: the text, stripped of spaces, brackets, quotes and ``.:,;!?`` around it, is one letter of the
   options, either case: ``B``, ``(B)``, ``B.``, ``b``, ``"B"``, ``**B**``;
2. ``answer is``: an answer phrase followed by a letter token of the options; the last such phrase decides:
   ``the answer is B``, ``answer: (b)``, ``the correct option is C``, ``answer would be option D``, ``I
   choose B``, ``pick option C``, ``Final answer: B``; ``Antwort: B``, ``Die Antwort ist B``, ``La réponse est
   B``, ``réponse : B``, ``la respuesta es B``, ``la risposta è B``, ``答案：B``, ``答案是B``, ``正解はB``;
3. ``leading letter``: the text begins (after brackets, quotes, ``#``, ``>``) with a letter token of the
   options, either case, optionally after ``Option`` or ``Choice``: ``B. the red car``, ``(B) red``,
   ``b) red``, ``Option B: red``, ``C is correct``;
4. ``lone letter``: exactly one capital letter of the options stands alone in the text, as a letter token
   (``It must be (C) here``, ``Among the options, B``); lower-case letters are not read here (``a`` and
   ``i`` in running text are words);
5. ``option text``: exactly one option's text appears in the text (case-insensitive, spaces collapsed, at
   word boundaries, a number not inside a longer number; an option written with a leading article "a",
   "an" or "the" is also found without it, and a trailing period is ignored); an appearance inside the
   appearance of a longer option does not count (``red car`` inside ``dark red car``);

else the answer is :data:`UNPARSABLE` (scored wrong, counted apart), or :data:`CUT` when the caller says the
text was cut by the token limit (``cut=True``: a text the limit cut may have named its option later).
Refusals ("I cannot tell", "none of the options") and texts naming two options are unparsable.

**Reading an open answer** (:func:`read_open`). When the answer is a number (an optional sign, digits with
optional ``,`` thousands groups of three, an optional decimal part: ``3``, ``-2``, ``2,000``, ``3.5``; or an
English number word from ``zero`` to ``twenty``), the text is read as a number (:data:`OPEN_RULES`):

1. ``answer is``: the number after the last answer phrase (as in rule 2 above: ``the answer is 3``);
2. ``number``: the text's numbers (numerals as above, not inside a longer number: ``1.5`` is 1.5, ``2,000``
   is 2000, ``2,00`` and ``1,5`` are no number; units may follow, ``3.5 meters``, ``3m``; if the text holds
   no numeral, the number words ``zero`` to ``twenty``) have exactly one value;

and the answer is right when that value equals the answer's (exactly, as fractions: ``3.0`` is ``3``). A
number after an answer phrase followed by ``or``, ``to``, ``and``, ``/`` or ``-`` and another ("the answer is
1 or 2"), no number, or several values ("1 or 2", "between 2 and 4") is unparsable. Any other answer is text (rule ``open``): the text, lower-cased, stripped of spaces and of
``.,;:!?"'()`` at both ends and of a leading answer phrase ("The answer is"), equals the answer so stripped,
or begins with it followed by a character that is not a letter or a digit; the answer followed by ``or``
("red or blue") is unparsable.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple, Optional, Sequence

from tokdyn.models.vlm import chat

LETTERS = chat.LETTERS
"""The option letters, in order: A to Z (at most 26 options; :data:`tokdyn.models.vlm.chat.LETTERS`)."""
INSTRUCTION = chat.INSTRUCTION
"""The line that closes a multiple-choice prompt (lmms-eval's for V* Bench and LLaVA's;
:data:`tokdyn.models.vlm.chat.INSTRUCTION`, where training prompts are made too)."""
UNPARSABLE = ""
"""What :func:`extract` returns when no rule finds an option."""
CUT = "cut off"
"""The rule of an answer no rule reads in a text the caller says was cut by the token limit."""
RULES = ("letter", "answer is", "leading letter", "lone letter", "option text")
"""The names of :func:`extract`'s rules, in the order they are tried."""
OPEN_RULES = ("answer is", "number", "open")
"""The names of :func:`read_open`'s rules: a numeric answer's two, in order, then a text answer's."""
AFTER_LETTER = frozenset(
    "is was seems appears looks fits matches would should could must might may can will has and or nor but so "
    "because since as which that then".split()
)
"""Words after which an ``A`` (or an ``I``) is the option's letter, not the article (or the pronoun)."""
NUMBER_WORDS = dict(
    zip(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split(),
        range(21),
    )
)
"""The English number words an open numeric answer may be written in, with their values."""

_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits at
_WORD = "A-Za-z0-9\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"  # letters and digits of Latin scripts
_TOKEN = rf"(?<![{_WORD}])(?<![{_WORD}]['’\-])([A-Za-z])(?![{_WORD}])(?!['’\-][{_WORD}])"
_AROUND = " \t\n()[]{}<>.:,;!?\"'“”‘’«»「」『』"
_OPEN_STRIP = " \t\n.,;:!?\"'()“”‘’«»"
_PHRASE = (
    r"(?:(?<![A-Za-z])(?:(?:correct|final|best|right)\s+)?(?:answer|option|choice)\s*"
    r"(?:is|would\s+be|should\s+be|must\s+be|will\s+be|=|:)"
    r"|(?<![A-Za-z])(?:choose|chose|pick|select|go\s+with|opt\s+for)"
    r"|(?<![A-Za-z])antwort\s*(?:ist|lautet|:)"
    r"|(?<![A-Za-z])r[ée]ponse\s*(?:est|:)"
    r"|(?<![A-Za-z])respuesta\s*(?:es|:)"
    r"|(?<![A-Za-z])risposta\s*(?:è|e|:)"
    r"|答案\s*(?:是|为|為|:)?|正解\s*(?:は|:)?)"
)
_ANSWER = re.compile(_PHRASE + r"[\s:\"'“”‘’(\[]*(?:(?:option|choice|letter)\s+)?[(\[]?\s*" + _TOKEN, re.I)
_LEADING = re.compile(r"^[\s\"'“”‘’«»「『(\[{#>]*(?:(?:option|choice)\s*[:.]?\s*)?[(\[]?\s*" + _TOKEN, re.I)
_LONE = re.compile(_TOKEN)
_HEDGE = re.compile(r"\s*[)\].]?\s*(?:or|and|nor|/|&|或)\s*(?:(?:option|choice)\s+)?[(\[]?\s*" + _TOKEN, re.I)
_NUMERAL = r"([-+]?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![0-9])(?![.,]\d)"
_NUMBER = re.compile(rf"(?<![{_WORD}.,])" + _NUMERAL)
_NUMBER_WORD = re.compile(rf"(?<![{_WORD}\-])({'|'.join(NUMBER_WORDS)})(?![{_WORD}\-])", re.I)
_ANSWER_NUMBER = re.compile(_PHRASE + r"[\s\"'“”‘’(\[]*" + _NUMERAL, re.I)
_OPEN_PHRASE = re.compile(r"^(?:the\s+)?(?:(?:correct|final)\s+)?answer\s*(?:is|:)\s*", re.I)


def normalise(text) -> str:
    """``text`` as the rules read it: Unicode NFKC (full-width letters, digits, brackets and colons become
    ASCII), the minus sign ``−`` as ``-``, markdown emphasis (``*``) and backticks removed; None as ``""``."""
    t = unicodedata.normalize("NFKC", text or "")
    return t.replace("\u2212", "-").replace("*", "").replace("`", "")


def check_options(options, where: str = "options") -> tuple:
    """``options`` as a tuple of stripped strings: 2 to 26 non-empty strings, none holding a line break (it
    would write an option line of its own into the prompt), no two the same (case and spaces aside); else a
    ValueError naming ``where``, the option and what is allowed."""
    if not isinstance(options, (list, tuple)) or not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"{where} must be a list of 2 to {len(LETTERS)} option strings, got {options!r}")
    out, seen = [], {}
    for i, o in enumerate(options):
        if not isinstance(o, str) or not o.strip():
            raise ValueError(f"{where}: option {i} ({LETTERS[i]}) must be a non-empty string, got {o!r}")
        if any(c in o.strip() for c in _LINE_BREAKS):
            raise ValueError(
                f"{where}: option {i} ({LETTERS[i]}) {o!r} holds a line break: an option is one line of the "
                "prompt (a break would write a line of its own, such as a forged option); write it on one line"
            )
        key = " ".join(o.split()).casefold()
        if key in seen:
            j = seen[key]
            raise ValueError(
                f"{where}: options {j} ({LETTERS[j]}) {options[j]!r} and {i} ({LETTERS[i]}) {o!r} are the same "
                "(case and spaces aside): each option must differ from the others"
            )
        seen[key] = i
        out.append(o.strip())
    return tuple(out)


def answer_letter(answer: str, options: Sequence[str], where: str = "answer") -> str:
    """The letter of the correct option, from ``answer``: a letter of the options (``"B"``, any case), or the
    text of exactly one option (case and spaces aside). An answer that is both (options ``["B", "A"]``, answer
    ``"A"``: the letter A or option B's text) is refused unless both name the same option. Else a ValueError
    naming ``where``, the answer and what is allowed."""
    options = check_options(options)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"{where} must be an option's letter or its text, got {answer!r}")
    a = answer.strip()
    key = " ".join(a.split()).casefold()
    same = [LETTERS[i] for i, o in enumerate(options) if " ".join(o.split()).casefold() == key]
    letter = a.upper() if len(a) == 1 and a.upper() in LETTERS[: len(options)] else None
    if letter and same and same != [letter]:
        raise ValueError(
            f"{where} {answer!r} is ambiguous: it is the letter {letter} and the text of option {same[0]}; "
            f"write the answer as the letter of the option meant (here {letter} or {same[0]})"
        )
    if letter:
        return letter
    if len(same) == 1:
        return same[0]
    raise ValueError(
        f"{where} {answer!r} is neither a letter of the {len(options)} options ({LETTERS[0]}-{LETTERS[len(options) - 1]}) "
        f"nor the text of exactly one option"
    )


def prompt(question: str, options: Sequence[str]) -> str:
    """The multiple-choice prompt of ``question`` and its ``options`` (the template in the module's docstring)."""
    return chat.multiple_choice(question, check_options(options))


class Extracted(NamedTuple):
    """The option read from a generated text: ``letter`` (:data:`UNPARSABLE` when none) and ``rule`` (the name
    from :data:`RULES` that found it; ``""`` when none did, :data:`CUT` when none did in a text cut by the
    token limit)."""

    letter: str
    rule: str


def _word_after(t: str, end: int, letter: str) -> bool:
    """Whether the letter token ending at ``end`` is the article "a" / "A" or the pronoun "I" (followed by a
    space on its line and a word of two letters or more not in :data:`AFTER_LETTER`)."""
    if letter not in "aAiI":
        return False
    m = re.match(r"[ \t]+([A-Za-z][A-Za-z'’\-]+)", t[end:])
    return m is not None and m.group(1).lower() not in AFTER_LETTER


def _hedged(t: str, end: int, allowed: str, letter: str) -> bool:
    """Whether the letter token ending at ``end`` is joined to another letter of the options by or / and / nor
    / ``/`` / ``&`` ("A or B")."""
    m = _HEDGE.match(t, end)
    return m is not None and m.group(1).upper() in allowed and m.group(1).upper() != letter


def _check_cut(cut) -> None:
    if not isinstance(cut, bool):
        raise TypeError(f"cut must be True or False (whether the token limit cut the text), got {cut!r}")


def _letter(t: str, m, allowed: str):
    """The letter of match ``m`` (group 1 a letter token): its capital if it is one of ``allowed`` and not
    the article or the pronoun; ``False`` if it is hedged; else None."""
    letter = m.group(1).upper()
    if letter not in allowed or _word_after(t, m.end(1), m.group(1)):
        return None
    return False if _hedged(t, m.end(1), allowed, letter) else letter


def _option_text(t: str, options: Sequence[str], allowed: str) -> list:
    """The letters of the options whose text appears in ``t`` (rule 5 of the module's docstring)."""
    low = " ".join(t.split()).casefold()
    spans = []
    for i, o in enumerate(options):
        o = " ".join(o.split()).casefold().rstrip(".").strip()
        forms = {o}
        bare = re.sub(r"^(?:a|an|the)\s+", "", o)
        if bare:
            forms.add(bare)
        for form in forms:
            if not form:
                continue
            pattern = rf"(?<![{_WORD}])(?<!\d[.,]){re.escape(form)}(?![{_WORD}])(?![.,]\d)"
            spans += [(m.start(), m.end(), i) for m in re.finditer(pattern, low)]
    kept = {i for s, e, i in spans if not any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _ in spans)}
    return [allowed[i] for i in sorted(kept)]


def extract(text: str, options: Sequence[str], cut: bool = False) -> Extracted:
    """The option ``text`` chooses among ``options``, by the rules of the module's docstring, in order.

    Args:
      text: the generated text (None reads as ``""``).
      options: the question's options (:func:`check_options`).
      cut: whether the token limit cut ``text``: an answer no rule reads is then :data:`CUT`, not unparsable.

    Returns:
      :class:`Extracted`: the letter and the rule that read it (``""`` or :data:`CUT` when none did).
    """
    options = check_options(options)
    _check_cut(cut)
    allowed = LETTERS[: len(options)]
    none = Extracted(UNPARSABLE, CUT if cut else "")
    t = normalise(text).strip()
    core = t.strip(_AROUND)
    if len(core) == 1 and core.upper() in allowed:
        return Extracted(core.upper(), RULES[0])
    found = None
    for m in _ANSWER.finditer(t):
        letter = _letter(t, m, allowed)
        if letter is not None:
            found = letter
    if found is False:
        return none
    if found:
        return Extracted(found, RULES[1])
    m = _LEADING.match(t)
    if m:
        letter = _letter(t, m, allowed)
        if letter is False:
            return none
        if letter:
            return Extracted(letter, RULES[2])
    lone = set()
    for m in _LONE.finditer(t):
        if m.group(1).isupper() and m.group(1) in allowed and not _word_after(t, m.end(1), m.group(1)):
            lone.add(m.group(1))
    if len(lone) == 1:
        return Extracted(lone.pop(), RULES[3])
    by_text = _option_text(t, options, allowed)
    if len(by_text) == 1:
        return Extracted(by_text[0], RULES[4])
    return none


def number(text) -> Optional[Fraction]:
    """The value of ``text`` when it is one number and nothing else (spaces aside): an optional sign, digits
    with optional ``,`` thousands groups of three, an optional decimal part (``3``, ``-2``, ``2,000``,
    ``3.5``), or an English number word of :data:`NUMBER_WORDS` (``"three"``); else None."""
    t = normalise(text).strip()
    m = re.fullmatch(_NUMERAL, t)
    if m:
        return _value(m)
    return Fraction(NUMBER_WORDS[t.lower()]) if t.lower() in NUMBER_WORDS else None


def _value(m) -> Fraction:
    sign, whole, frac = m.group(1), m.group(2).replace(",", ""), m.group(3) or ""
    return Fraction(sign + whole + frac)


def _numbers(t: str) -> list:
    """The values of the numbers in ``t``: its numerals, or, if it holds none, its number words."""
    values = [_value(m) for m in _NUMBER.finditer(t)]
    if not values:
        values = [Fraction(NUMBER_WORDS[m.group(1).lower()]) for m in _NUMBER_WORD.finditer(t)]
    return values


class Opened(NamedTuple):
    """An open answer read from a generated text: ``value`` (the number read, as text, for a numeric answer;
    the text stripped for a text answer; ``""`` when unparsable), ``correct`` (bool) and ``rule`` (the name from
    :data:`OPEN_RULES` that read it; ``""`` when none did)."""

    value: str
    correct: bool
    rule: str


def _show(v: Fraction) -> str:
    """``v`` (a number read from decimal digits) written out in full."""
    return str(v.numerator) if v.denominator == 1 else format(Decimal(v.numerator) / Decimal(v.denominator), "f")


def read_open(text: str, answer: str) -> Opened:
    """The open ``answer`` read from the generated ``text`` and matched, by the rules of the module's docstring
    (a numeric answer read as a number, "unparsable" when the text holds none or several; else the text
    rule)."""
    t = normalise(text).strip()
    want = number(answer)
    if want is not None:
        got = None
        for m in _ANSWER_NUMBER.finditer(t):
            got = (_value(m), m.end())
        if got is not None:
            rest = re.match(r"\s*(?:or|to|and|/|-)\s*[-+]?\d", t[got[1] :], re.I)
            if rest:
                return Opened("", False, "")
            return Opened(_show(got[0]), got[0] == want, OPEN_RULES[0])
        values = set(_numbers(t))
        if len(values) != 1:
            return Opened("", False, "")
        (value,) = values
        return Opened(_show(value), value == want, OPEN_RULES[1])
    a = normalise(answer).strip().lower().strip(_OPEN_STRIP)
    s = _OPEN_PHRASE.sub("", t.lower().strip(_OPEN_STRIP)).strip(_OPEN_STRIP)
    if not a:
        return Opened(s, False, OPEN_RULES[2])
    if s.startswith(a) and re.match(r"\s+or\s", s[len(a) :]):
        return Opened("", False, "")
    right = s == a or (s.startswith(a) and not s[len(a)].isalnum())
    return Opened(s, right, OPEN_RULES[2])


def matches(text: str, answer: str) -> bool:
    """Whether the generated ``text`` gives the open ``answer`` (:func:`read_open`)."""
    return read_open(text, answer).correct


class Scored(NamedTuple):
    """One generated answer scored: ``choice`` (the option's letter, :data:`UNPARSABLE`, or the text for an
    open answer), ``correct`` (bool), ``parsed`` (False for an answer no rule reads) and ``rule`` (the rule
    that read it, from :data:`RULES` or :data:`OPEN_RULES`; ``""`` or :data:`CUT` when none did)."""

    choice: str
    correct: bool
    parsed: bool
    rule: str


def score(text: str, answer: str, options: Optional[Sequence[str]] = None, cut: bool = False) -> Scored:
    """Score a generated ``text`` against ``answer``: with ``options``, :func:`extract`'s letter against the
    answer's letter (:func:`answer_letter`); without, :func:`read_open`. ``cut``: whether the token limit cut
    ``text`` (an answer no rule reads then has the rule :data:`CUT`)."""
    _check_cut(cut)
    if options is None:
        got = read_open(text, answer)
        rule = got.rule or (CUT if cut else "")
        return Scored((text or "").strip(), bool(got.correct), bool(got.rule), rule)
    got = extract(text, options, cut)
    return Scored(got.letter, got.letter == answer_letter(answer, options), got.letter != UNPARSABLE, got.rule)


class Accuracy(NamedTuple):
    """Accuracy of n answers: ``rate`` with its 95% Wilson interval ``(low, high)``, ``correct`` and ``n``
    counts, ``unparsable`` answers (counted wrong; those cut by the token limit apart, in ``cut``), and
    ``chance`` (the mean of 1 / options; NaN for open answers)."""

    rate: float
    low: float
    high: float
    correct: int
    n: int
    unparsable: int
    chance: float
    cut: int = 0


def accuracy(scored: Sequence[Scored], n_options: Optional[Sequence[int]] = None) -> Accuracy:
    """The :class:`Accuracy` of ``scored`` answers (:func:`score`), its chance level from ``n_options`` (the
    number of options of each question; None: open answers, no chance level). An answer no rule read counts
    as ``cut`` when its text was cut by the token limit (rule :data:`CUT`), else as ``unparsable``."""
    from tokdyn.stats import inference

    n = len(scored)
    k = sum(bool(s.correct) for s in scored)
    cut = sum(not s.parsed and s.rule == CUT for s in scored)
    bad = sum(not s.parsed for s in scored) - cut
    low, high = inference.wilson_interval(k, n) if n else (float("nan"), float("nan"))
    chance = float("nan")
    if n_options is not None and len(n_options):
        chance = float(sum(1.0 / m for m in n_options) / len(n_options))
    return Accuracy(k / n if n else float("nan"), float(low), float(high), k, n, bad, chance, cut)


__all__ = [
    "AFTER_LETTER",
    "Accuracy",
    "CUT",
    "Extracted",
    "INSTRUCTION",
    "LETTERS",
    "NUMBER_WORDS",
    "OPEN_RULES",
    "Opened",
    "RULES",
    "Scored",
    "UNPARSABLE",
    "accuracy",
    "answer_letter",
    "check_options",
    "extract",
    "matches",
    "normalise",
    "number",
    "prompt",
    "read_open",
    "score",
]
