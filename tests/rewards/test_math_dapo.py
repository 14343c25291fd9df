"""acc_for_dapo: DAPO's math verifier semantics, and the linear-time normalization's equivalence
with the reference regexes."""

from __future__ import annotations

import random
import re

import pytest

from mindspeed_rl.rewards import math_dapo
from mindspeed_rl.rewards.math_dapo import acc_for_dapo, extract_answer, normalize_final_answer


def reference_normalize(final_answer: str) -> str:
    """The reference normalization, regexes and all (verl recipe/dapo math_dapo.py)."""
    final_answer = final_answer.split("=")[-1]
    for before, after in math_dapo.SUBSTITUTIONS:
        final_answer = final_answer.replace(before, after)
    for expr in math_dapo.REMOVED_EXPRESSIONS:
        final_answer = final_answer.replace(expr, "")
    final_answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", final_answer)
    final_answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", final_answer)
    final_answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", final_answer)
    final_answer = final_answer.replace("$", "")
    if final_answer.replace(",", "").isdigit():
        final_answer = final_answer.replace(",", "")
    return final_answer.strip()


# Pieces that exercise every normalization step, including the ones rewritten as scans.
_PIECES = [
    "$",
    "$",
    "{",
    "}",
    "}",
    "\n",
    " ",
    ",",
    "=",
    "1",
    "2",
    "x",
    "a ",
    "\\text{",
    "\\textbf{",
    "\\overline{",
    "\\boxed{",
    "frac",
    "sqrt",
    "\\$",
    "mbox",
    "cm",
    "\\!",
    "^\\circ",
    "\\text{}",
]


# Dense in braces and wrappers: where the rewritten steps could differ from the regexes.
_BRACE_PIECES = ["\\boxed{", "\\text{", "\\overline{", "}", "}", "x", "\n", "$"]


@pytest.mark.parametrize("pieces", [_PIECES, _BRACE_PIECES], ids=["all-steps", "braces"])
def test_normalization_matches_reference_regexes_on_random_strings(pieces):
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        assert normalize_final_answer(text) == reference_normalize(text), repr(text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("72", "72"),
        ("1,000", "1000"),  # thousands separator
        ("\\boxed{42}", "42"),
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("\\frac12", "\\frac{1}{2}"),  # shorthand TeX
        ("\\sqrt2", "\\sqrt{2}"),
        ("10 \\text{ cm}", "10"),  # unit inside \text{}
        ("5 dollars", "5"),
        ("x = 3", "3"),  # only what follows the last '='
        ("90^\\circ", "90"),
        ("\\text{(A)}", "(A)"),
        ("3.", "3."),  # a trailing dot alone stays (the reference only drops '.$')
        ("$3.$", "3"),
    ],
)
def test_normalize_final_answer_examples(raw, expected):
    assert normalize_final_answer(raw) == expected


def test_correct_answer_scores_one_and_reports_pred():
    result = acc_for_dapo("Let me think... so the total is 1,000.\nAnswer: $1,000$", "1000")
    assert result == (1.0, True, "1000")


def test_wrong_answer_scores_minus_one():
    assert acc_for_dapo("Answer: 41", "42") == (-1.0, False, "41")


def test_last_answer_line_wins_and_match_is_case_insensitive():
    response = "answer: 1\nsome more work\nANSWER :  \\boxed{7}\n"
    assert extract_answer(response) == "\\boxed{7}"
    assert acc_for_dapo(response, "7").acc


def test_only_the_last_300_characters_are_read():
    inside = "Answer: 5" + " " * (math_dapo.RESPONSE_TAIL_CHARS - len("Answer: 5"))
    assert acc_for_dapo(inside, "5").acc  # exactly 300 characters: the answer is read
    outside = "Answer: 5" + " " * (math_dapo.RESPONSE_TAIL_CHARS - len("Answer: 5") + 1)
    assert acc_for_dapo(outside, "5") == (-1.0, False, "[INVALID]")


def test_missing_answer_is_wrong_even_against_an_invalid_looking_ground_truth():
    assert acc_for_dapo("no final line", "[INVALID]") == (-1.0, False, "[INVALID]")
    assert acc_for_dapo("", "0") == (-1.0, False, "[INVALID]")


def test_empty_answer_text_does_not_match():
    # "Answer:" followed by nothing on its line: the pattern needs at least one character.
    assert acc_for_dapo("Answer:\n", "") == (-1.0, False, "[INVALID]")


def test_model_text_is_never_evaluated():
    # An expression equal in value but not in text is wrong: nothing is evaluated.
    assert not acc_for_dapo("Answer: 2+2", "4").acc
    assert not acc_for_dapo("Answer: __import__('os').system('true')", "0").acc
