"""Multiple-choice scoring (``tokdyn.diagnostics.choices``): the prompt is the documented template, every rule
of the documented extraction reads what it promises and no more (the order of the rules holds, letters outside
the options are never read), unparsable answers are counted and scored wrong, and the accuracy's Wilson
interval is SciPy's."""

from __future__ import annotations

import pytest
from scipy import stats as sps

from tokdyn.diagnostics import choices

OPTIONS = ["red car", "blue bus", "green tram", "yellow van"]


def test_the_prompt_is_the_documented_template():
    text = choices.prompt("  What is left of the tree? ", OPTIONS)
    assert text.split("\n") == [
        "What is left of the tree?",
        "A. red car",
        "B. blue bus",
        "C. green tram",
        "D. yellow van",
        "Answer with the option's letter from the given choices directly.",
    ]


@pytest.mark.parametrize(
    "text, letter, rule",
    [
        ("B", "B", "letter"),
        (" (C) ", "C", "letter"),
        ("D.", "D", "letter"),
        ("B. blue bus", "B", "leading letter"),
        ("(A) the red car", "A", "leading letter"),
        ("C: green", "C", "leading letter"),
        ("The answer is D.", "D", "answer is"),
        ("answer: (b)", "B", "answer is"),
        ("I would pick option C here", "C", "answer is"),
        ("It must be (B), the bus", "B", "lone letter"),
        ("A bus, so B", "B", "lone letter"),  # "A bus": the article, not a letter
        ("the Blue Bus on the left", "B", "option text"),
        ("E", "", ""),  # a letter past the options
        ("The answer is E", "", ""),
        ("either (A) or (B)", "", ""),  # two letters stand alone: no rule decides
        ("A red car.", "A", "option text"),  # the article, then the option's text
        ("a red car or a blue bus", "", ""),  # two options' texts
        ("", "", ""),
    ],
)
def test_extract_reads_each_rule_in_order(text, letter, rule):
    assert choices.extract(text, OPTIONS) == (letter, rule)


def test_answers_and_options_are_checked_naming_them():
    assert choices.answer_letter("c", OPTIONS) == "C" and choices.answer_letter("Yellow Van", OPTIONS) == "D"
    for bad in ("E", "purple", ""):
        with pytest.raises(ValueError, match="neither a letter|option's letter"):
            choices.answer_letter(bad, OPTIONS)
    for bad in (["one"], "AB", ["a", ""], list("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + ["x"]):
        with pytest.raises(ValueError, match="options"):
            choices.check_options(bad)


def test_open_answers_match_at_a_word_boundary():
    assert choices.matches("3.", "3") and choices.matches("Three dogs sit", "three")
    assert not choices.matches("30", "3") and not choices.matches("threefold", "three") and not choices.matches("", "3")


def test_accuracy_counts_unparsable_as_wrong_with_scipys_wilson_interval():
    scored = [choices.score(t, "B", OPTIONS) for t in ("B", "(B) bus", "A", "no idea", "The answer is B")]
    assert [s.correct for s in scored] == [True, True, False, False, True]
    assert [s.parsed for s in scored] == [True, True, True, False, True]
    acc = choices.accuracy(scored, [4, 4, 4, 4, 2])
    ci = sps.binomtest(3, 5).proportion_ci(method="wilson")
    assert (acc.correct, acc.n, acc.unparsable) == (3, 5, 1) and acc.rate == pytest.approx(0.6)
    assert (acc.low, acc.high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert acc.chance == pytest.approx((4 * 0.25 + 0.5) / 5)
    open_ = choices.accuracy([choices.score("2", "2")])
    assert open_.rate == 1.0 and open_.chance != open_.chance  # open answers: no chance level (NaN)
