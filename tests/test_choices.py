"""Multiple-choice scoring (``tokdyn.diagnostics.choices``): the prompt is the documented template, every rule
of the documented extraction reads what it promises and no more (the order of the rules holds, letters outside
the options are never read), unparsable answers are counted and scored wrong (a text cut by the token limit
counted apart), and the accuracy's Wilson interval is SciPy's. PHRASINGS and OPEN are the tables of phrasings
written by hand, each beside the reading the rules must give (articles, brackets, languages, hedges, refusals,
numbers with units, decimals and thousands separators)."""

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


# The phrasings a model writes, each with the reading the rules of tokdyn.diagnostics.choices must give
# (letter, rule; "" "" for unparsable), written by hand. CARS' options start with the article "a", so the
# article and the letter A meet; MANY has 26 options (every capital is a letter of the options).
CARS = ["a red car", "a bus", "a tree", "a dog"]
MANY = [f"object {n}" for n in range(1, 27)]
NUMS = ["1", "2", "3", "10"]
SETS = {"cars": CARS, "four": OPTIONS, "many": MANY, "nums": NUMS}
PHRASINGS = [
    # the letter alone, decorated
    ("B", "cars", "B", "letter"),
    ("b", "cars", "B", "letter"),
    ("a", "cars", "A", "letter"),  # the text is only "a": the letter, no noun follows
    ("A", "cars", "A", "letter"),
    ("(B)", "cars", "B", "letter"),
    ("B.", "cars", "B", "letter"),
    ("B)", "cars", "B", "letter"),
    ("[C]", "cars", "C", "letter"),
    ("**B**", "cars", "B", "letter"),
    ("*D*", "cars", "D", "letter"),
    ("`C`", "cars", "C", "letter"),
    ('"B"', "cars", "B", "letter"),
    ("“C”", "cars", "C", "letter"),
    ("'D'", "cars", "D", "letter"),
    ("  D \n", "cars", "D", "letter"),
    ("（B）", "cars", "B", "letter"),  # full-width parentheses
    ("Ｃ", "cars", "C", "letter"),  # a full-width capital
    ("「A」", "cars", "A", "letter"),
    ("B!", "cars", "B", "letter"),
    ("E", "cars", "", ""),  # a letter past the options
    ("e", "cars", "", ""),
    # answer phrases, any language
    ("The answer is B", "cars", "B", "answer is"),
    ("The answer is B.", "cars", "B", "answer is"),
    ("The answer is (b)", "cars", "B", "answer is"),
    ("answer: (b)", "four", "B", "answer is"),
    ("Answer: A", "cars", "A", "answer is"),  # the letter A: nothing follows it
    ("The correct answer is **C**.", "cars", "C", "answer is"),
    ("The correct option is D", "cars", "D", "answer is"),
    ("Final answer: B", "cars", "B", "answer is"),
    ("The answer would be option C.", "cars", "C", "answer is"),
    ("I choose B.", "cars", "B", "answer is"),
    ("I would pick option C here", "four", "C", "answer is"),
    ("I'll go with D", "cars", "D", "answer is"),
    ("The answer is A because the car is red.", "cars", "A", "answer is"),
    ("Looking closely, the bus is on the left. The answer is B.", "cars", "B", "answer is"),
    ("B is wrong and D is wrong; the answer is C", "cars", "C", "answer is"),
    ("The answer is B, not A.", "cars", "B", "answer is"),
    ("The answer is A. Wait, no: the answer is C.", "cars", "C", "answer is"),  # the last phrase decides
    ("答案：B", "cars", "B", "answer is"),
    ("答案是B", "cars", "B", "answer is"),
    ("答案：（C）", "cars", "C", "answer is"),
    ("正解はD", "cars", "D", "answer is"),
    ("Antwort: B", "cars", "B", "answer is"),
    ("Die Antwort ist C.", "cars", "C", "answer is"),
    ("réponse : B", "cars", "B", "answer is"),
    ("La réponse est D.", "cars", "D", "answer is"),
    ("La respuesta es C", "cars", "C", "answer is"),
    ("La risposta è B", "cars", "B", "answer is"),
    ("The answer is E", "four", "", ""),
    ("The answer is E, the van", "four", "", ""),
    # the user's report: the article "a" after an answer phrase is no letter
    ("The answer is a bus.", "cars", "B", "option text"),
    ("answer: a tree", "cars", "C", "option text"),
    ("The answer is a dog", "cars", "D", "option text"),
    ("The answer is a plane.", "cars", "", ""),  # the article, and no option's text
    ("The answer is A bus", "cars", "B", "option text"),
    # a letter at the start
    ("B. a bus", "cars", "B", "leading letter"),
    ("B. blue bus", "four", "B", "leading letter"),
    ("(A) the red car", "four", "A", "leading letter"),
    ("C: green", "four", "C", "leading letter"),
    ("b) the bus", "cars", "B", "leading letter"),
    ("Option B", "cars", "B", "leading letter"),
    ("option c", "cars", "C", "leading letter"),
    ("Choice D: a dog", "cars", "D", "leading letter"),
    ("B is correct.", "cars", "B", "leading letter"),
    ("A is correct.", "cars", "A", "leading letter"),  # "A is": the letter
    ("A because it is red", "cars", "A", "leading letter"),
    ("A, the red car", "cars", "A", "leading letter"),
    ("D - a dog sits there", "cars", "D", "leading letter"),
    ("# B", "cars", "B", "leading letter"),
    ("> C: a tree", "cars", "C", "leading letter"),
    ("C\n\nThe tree stands left of the bus.", "cars", "C", "leading letter"),
    ("A\n\nThe red car is the one.", "cars", "A", "leading letter"),  # a word on the next line: no article
    # one capital letter stands alone
    ("It must be (B), the bus", "four", "B", "lone letter"),
    ("A bus, so B", "four", "B", "lone letter"),  # "A bus": the article
    ("I think it's C", "cars", "C", "lone letter"),  # "I think": the pronoun
    ("I'm fairly sure it is D.", "many", "D", "lone letter"),  # "I'm" holds no letter I
    ("Among the options, B", "many", "B", "lone letter"),  # no S read from "options"
    ("the choices, it is K", "many", "K", "lone letter"),  # no S read from "choices"
    ("Looking at the image, I believe B fits best", "many", "B", "lone letter"),
    ("c'est B", "cars", "B", "lone letter"),  # "c'" is no letter C
    ("It's (C).", "cars", "C", "lone letter"),
    ("The T-shirt is red, so H", "many", "H", "lone letter"),  # no T read from "T-shirt"
    ("The bus has a GPS, so B", "many", "B", "lone letter"),  # no S read from "GPS"
    ("The bus was made in the USA.", "cars", "B", "option text"),  # no A read from "USA"
    ("The dog is on the right, which is option D.", "cars", "D", "lone letter"),
    # two letters, hedges, refusals: unparsable
    ("A or B", "cars", "", ""),
    ("A and C", "cars", "", ""),
    ("A/B", "cars", "", ""),
    ("B or C", "cars", "", ""),
    ("either (A) or (B)", "four", "", ""),
    ("The answer is A or B.", "cars", "", ""),
    ("The answer is (B) or (C)", "cars", "", ""),
    ("It is B or maybe C", "cars", "", ""),
    ("It could be B, or it could be C", "cars", "", ""),
    ("I cannot tell", "cars", "", ""),
    ("I cannot tell from the image.", "many", "", ""),
    ("none of the options", "cars", "", ""),
    ("None of the options is correct.", "many", "", ""),
    ("I am not sure.", "cars", "", ""),
    ("I don't know", "many", "", ""),
    ("Sorry, I can't help with that.", "cars", "", ""),
    ("", "cars", "", ""),
    ("   ", "cars", "", ""),
    ("...", "cars", "", ""),
    ("E", "four", "", ""),
    # the option's text
    ("the Blue Bus on the left", "four", "B", "option text"),
    ("A red car.", "four", "A", "option text"),  # the article, then the option's text
    ("a red car or a blue bus", "four", "", ""),  # two options' texts
    ("It is the tree.", "cars", "C", "option text"),  # "a tree" found as "tree"
    ("A dog.", "cars", "D", "option text"),
    ("a dog", "cars", "D", "option text"),
    ("The red car", "cars", "A", "option text"),
    ("I see a dog and a bus.", "cars", "", ""),
    ("a buses", "cars", "", ""),  # "bus" inside a longer word
    ("object 12", "many", "L", "option text"),  # "object 1" inside "object 12" does not count
    ("It is object 3.", "many", "C", "option text"),
    ("2", "nums", "B", "option text"),
    ("10", "nums", "D", "option text"),  # "1" inside "10" does not count
    ("2.5", "nums", "", ""),  # no option: 2 is inside a longer number
    ("There are 3 of them.", "nums", "C", "option text"),
]


@pytest.mark.parametrize("text, options, letter, rule", PHRASINGS)
def test_the_table_of_phrasings_reads_as_written(text, options, letter, rule):
    assert choices.extract(text, SETS[options]) == (letter, rule)


def test_the_table_covers_every_rule_and_a_hundred_phrasings():
    assert len(PHRASINGS) >= 100 and {r for *_, r in PHRASINGS} == set(choices.RULES) | {""}


def test_a_text_cut_by_the_token_limit_is_told_apart_from_an_unparsable_one():
    assert choices.extract("The answer is", CARS, cut=True) == ("", choices.CUT)
    assert choices.extract("The answer is", CARS) == ("", "")
    assert choices.extract("The answer is B and", CARS, cut=True) == ("B", "answer is")  # read before the cut
    scored = [
        choices.score("Let me look at the", "B", CARS, cut=True),
        choices.score("no idea", "B", CARS),
        choices.score("B", "B", CARS, cut=True),
        choices.score("There are", "3", cut=True),
    ]
    assert [s.rule for s in scored] == [choices.CUT, "", "letter", choices.CUT]
    acc = choices.accuracy(scored)
    assert (acc.correct, acc.unparsable, acc.cut, acc.n) == (1, 1, 2, 4)
    with pytest.raises(TypeError, match="cut must be True or False"):
        choices.extract("B", CARS, cut="yes")


# Open answers: (text, answer, correct, rule); rule "" is unparsable (counted wrong, and counted apart).
OPEN = [
    ("3", "3", True, "number"),
    ("3.", "3", True, "number"),
    ("3 objects", "3", True, "number"),
    ("There are 3 objects.", "3", True, "number"),
    ("Three", "3", True, "number"),
    ("three dogs sit", "three", True, "number"),
    ("3", "three", True, "number"),
    ("1.5", "1", False, "number"),  # 1.5 is not 1
    ("1.5", "1.5", True, "number"),
    ("3.5 meters", "3", False, "number"),
    ("3.5 meters", "3.5", True, "number"),
    ("3.50 m", "3.5", True, "number"),
    ("3.0", "3", True, "number"),
    ("2,000", "2", False, "number"),  # 2,000 is 2000
    ("2,000", "2000", True, "number"),
    ("2000", "2,000", True, "number"),
    ("-3", "-3", True, "number"),
    ("−3 degrees", "-3", True, "number"),  # the minus sign
    ("-3", "3", False, "number"),
    ("30", "3", False, "number"),
    ("３", "3", True, "number"),  # a full-width digit
    ("**4**", "4", True, "number"),
    ("The answer is 3, not 4.", "3", True, "answer is"),
    ("Answer: 12", "12", True, "answer is"),
    ("1 or 2", "1", False, ""),  # a hedge
    ("2 or 3", "3", False, ""),
    ("The answer is 1 or 2", "1", False, ""),
    ("between 2 and 4", "3", False, ""),
    ("1, 2 or 3", "1", False, ""),
    ("2-3", "2", False, ""),
    ("1,5", "1.5", False, ""),  # a decimal comma, or the list 1, 5: no number
    ("threefold", "three", False, ""),
    ("twenty-one", "21", False, ""),  # number words past twenty are not read
    ("many", "3", False, ""),
    ("", "3", False, ""),
    ("red", "red", True, "open"),
    ("Red.", "red", True, "open"),
    ("The answer is red.", "red", True, "open"),
    ("red, I think", "red", True, "open"),
    ("reddish", "red", False, "open"),
    ("blue", "red", False, "open"),
    ("red or blue", "red", False, ""),
]


@pytest.mark.parametrize("text, answer, correct, rule", OPEN)
def test_open_answers_read_numbers_whole(text, answer, correct, rule):
    got = choices.score(text, answer)
    assert (got.correct, got.rule, got.parsed) == (correct, rule, rule != "")
    assert choices.matches(text, answer) == correct
