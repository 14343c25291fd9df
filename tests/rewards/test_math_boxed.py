"""Parity of the GRPO math verifiers with the Ascend suite's (``math_17k_acc``, ``base_acc``,
``math_verify_reward``).

The expected scores were produced by running the suite's own functions (``new_acc``,
``new_format_and_acc``, ``math_verify_reward`` + ``compute_math_score`` of
``mindspeed_rl/models/rule_verifier.py`` and ``models/math_verify.py``, MindSpeed-RL commit
05a90d7) on these cases, outside this repository, with the packages the suite installs:
mathruler 0.1.0 (``grader.py``: ``extract_boxed_content``, ``grade_answer``), pylatexenc 2.10,
sympy 1.14.0, math-verify 0.9.0. The cases cover what that code distinguishes: last box, nested
braces, unclosed box, MATH normalization (``\\dfrac``, ``0.5``, ``a/b``, ``k =``, percent, units,
degrees, ``\\sqrt3``, thousands), integers exact, unreduced fractions, tuples vs intervals, sympy
equality, text answers, and the R1 answer shape (order, prefix, suffix, trailing text).
"""

from __future__ import annotations

import random
import re
import threading
import time

import pytest

from mindspeed_rl.rewards.math_boxed import has_r1_answer_shape
from mindspeed_rl.rewards.math_grade import grade_answer, last_boxed
from mindspeed_rl.rewards.registry import VERIFIERS

# (verifier, response, ground truth, the suite's score)
SUITE_SCORES = [
    ("math_17k_acc", "The answer is \\boxed{5}.", "5", 1.0),
    ("math_17k_acc", "\\boxed{5}", "6", 0.0),
    ("math_17k_acc", "The answer is 5.", "5", 0.0),
    ("math_17k_acc", "\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),
    ("math_17k_acc", "\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("math_17k_acc", "\\boxed{1/2}", "\\frac12", 1.0),
    ("math_17k_acc", "\\boxed{2/4}", "1/2", 0.0),
    ("math_17k_acc", "\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 1.0),
    ("math_17k_acc", "\\boxed{x = 3}", "3", 1.0),
    ("math_17k_acc", "\\boxed{10\\%}", "10", 1.0),
    ("math_17k_acc", "\\boxed{5 \\text{ cm}}", "5", 1.0),
    ("math_17k_acc", "\\boxed{1,000}", "1000", 1.0),
    ("math_17k_acc", "\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1.0),
    ("math_17k_acc", "\\boxed{(1,2)}", "[1,2]", 0.0),
    ("math_17k_acc", "\\boxed{(1, 2)}", "(1,2)", 1.0),
    ("math_17k_acc", "\\boxed{3.0}", "3", 1.0),
    ("math_17k_acc", "\\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
    ("math_17k_acc", "\\boxed{\\pi}", "\\pi", 1.0),
    ("math_17k_acc", "first \\boxed{4}, finally \\boxed{5}", "5", 1.0),
    ("math_17k_acc", "first \\boxed{5}, finally \\boxed{4}", "5", 0.0),
    ("math_17k_acc", "\\boxed{5", "5", 0.0),
    ("math_17k_acc", "\\boxed{\\text{Yes}}", "yes", 1.0),
    ("math_17k_acc", "\\boxed{90^\\circ}", "90", 1.0),
    ("math_17k_acc", "\\boxed{\\sqrt3}", "\\sqrt{3}", 1.0),
    ("math_17k_acc", "\\boxed{4.5}", "\\frac{9}{2}", 1.0),
    ("math_17k_acc", "\\boxed{-3}", "- 3", 1.0),
    ("math_17k_acc", "\\boxed{3}", "3.5", 0.0),
    ("math_17k_acc", "\\boxed{\\left( 1, 2 \\right)}", "(1,2)", 1.0),
    ("math_17k_acc", "\\boxed{2 \\text{ hours}}", "2", 1.0),
    ("math_17k_acc", "\\boxed{12 \\text{ apples and } 3 \\text{ pears}}", "12", 0.0),
    ("math_17k_acc", "\\boxed{\\$18.90}", "18.90", 1.0),
    ("math_17k_acc", "\\boxed{1.5 million}", "1500000", 0.0),
    ("math_17k_acc", "\\boxed{7 3/4}", "\\frac{31}{4}", 1.0),
    ("math_17k_acc", "\\boxed{ 2 }", "2", 1.0),
    ("math_17k_acc", "\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", 1.0),
    ("math_17k_acc", "\\boxed{x}", "y", 0.0),
    ("math_17k_acc", "\\boxed{a+b+c}", "c+b+a", 0.0),
    ("math_17k_acc", "\\boxed{3\\sqrt{2}}", "\\sqrt{18}", 1.0),
    ("math_17k_acc", "\\boxed{[0, 1)}", "[0,1)", 1.0),
    ("math_17k_acc", "\\boxed{(0, 1]}", "[0,1)", 0.0),
    ("math_17k_acc", "\\boxed{\\infty}", "\\infty", 1.0),
    ("math_17k_acc", "\\boxed{1, 2, 3}", "3, 2, 1", 0.0),
    ("math_17k_acc", "\\boxed{k=2}", "2", 1.0),
    ("math_17k_acc", "\\boxed{\\textbf{(B)}}", "B", 1.0),
    ("math_17k_acc", "\\boxed{\\frac{2}{3}}", "0.6667", 0.0),
    ("math_17k_acc", "\\boxed{1e3}", "1000", 1.0),
    (
        "math_17k_acc",
        "<think>Reason step by step.</think> <answer>The answer is \\boxed{5}.</answer>",
        "5",
        1.0,
    ),
    ("math_17k_acc", "<think>Reason step by step.</think> <answer>\\boxed{6}</answer>", "5", 0.0),
    ("math_17k_acc", "<answer>\\boxed{5}</answer>", "5", 1.0),
    (
        "base_acc",
        "<think>Reason step by step.</think> <answer>The answer is \\boxed{5}.</answer>",
        "5",
        1.0,
    ),
    ("base_acc", "<think>Reason step by step.</think> <answer>\\boxed{6}</answer>", "5", 0.0),
    ("base_acc", "<answer>\\boxed{5}</answer>", "5", 0.0),
    ("base_acc", "<think>Reason step by step.</think> <answer>\\boxed{5}</answer>\n", "5", 0.0),
    ("base_acc", "<answer>\\boxed{5}</answer><think>x</think>", "5", 0.0),
    ("base_acc", "<think>Reason step by step.</think> \\boxed{5} <answer>5</answer>", "5", 0.0),
    ("base_acc", "<think>\\boxed{4}</think><answer>\\boxed{5}</answer>", "5", 1.0),
    ("base_acc", "<think>x</think><answer>\\boxed{\\frac12}</answer>", "0.5", 1.0),
    ("base_acc", "<think>Reason step by step.</think> <answer>no box</answer>", "5", 0.0),
    ("base_acc", "<think></think><answer>\\boxed{}</answer>", "", 1.0),
    (
        "base_acc",
        "<think>Reason step by step.</think> <answer>\\boxed{5} then more</answer>",
        "5",
        1.0,
    ),
    ("base_acc", "<think>x</think><answer>\\boxed{5}</answer> trailing", "5", 0.0),
    ("base_acc", "x<think>y</think><answer>\\boxed{5}</answer>", "5", 0.0),
    ("base_acc", "The answer is \\boxed{5}.", "5", 0.0),
    ("base_acc", "\\boxed{5}", "6", 0.0),
    ("base_acc", "The answer is 5.", "5", 0.0),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{\\frac{1}{2}}</answer>",
        "0.5",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{2}</answer>",
        "3",
        0.0,
    ),
    ("math_verify_reward", "\\boxed{5}", "5", 0.0),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>The answer is $\\boxed{\\sqrt{2}/2}$.</answer>",
        "\\frac{\\sqrt{2}}{2}",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{(0, 1]}</answer>",
        "(0,1]",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{(0, 1)}</answer>",
        "(0,1]",
        0.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{x=3}</answer>",
        "3",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{3}</answer>",
        "3",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{1000}</answer>",
        "1,000",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{\\frac{2}{4}}</answer>",
        "\\frac12",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{10\\%}</answer>",
        "10",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{\\pi}</answer>",
        "3.14159265",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{2x+2}</answer>",
        "2(x+1)",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>no box 5</answer>",
        "5",
        0.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{\\{1,2\\}}</answer>",
        "\\{2,1\\}",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{-\\infty}</answer>",
        "-\\infty",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>The answer is \\boxed{5}.</answer>",
        "5",
        1.0,
    ),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{6}</answer>",
        "5",
        0.0,
    ),
    ("math_verify_reward", "<answer>\\boxed{5}</answer>", "5", 0.0),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> <answer>\\boxed{5}</answer>\n",
        "5",
        0.0,
    ),
    ("math_verify_reward", "<answer>\\boxed{5}</answer><think>x</think>", "5", 0.0),
    (
        "math_verify_reward",
        "<think>Reason step by step.</think> \\boxed{5} <answer>5</answer>",
        "5",
        0.0,
    ),
]


@pytest.mark.parametrize(("name", "response", "truth", "expected"), SUITE_SCORES)
def test_scores_equal_the_suites(name, response, truth, expected):
    result = VERIFIERS[name].fn(response, truth)
    assert result.score == expected
    assert result.acc is (expected == 1.0)


def test_the_table_has_both_verdicts_for_every_verifier():
    for name in ("math_17k_acc", "base_acc", "math_verify_reward"):
        scores = {s for n, _, _, s in SUITE_SCORES if n == name}
        assert scores == {0.0, 1.0}, name


# The suite's shape check, the regex this module's linear scan replaces.
_SUITE_SHAPE = re.compile(r"<think>.*</think>.*<answer>.*\\boxed\{.*\}.*</answer>", re.DOTALL)


def test_the_answer_shape_scan_decides_what_the_suites_regex_does():
    rng = random.Random(0)
    pieces = ["<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "}", "{", "x", " ", "\n"]
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        assert has_r1_answer_shape(text) == bool(_SUITE_SHAPE.fullmatch(text)), repr(text)


def test_the_answer_shape_scan_is_linear_where_the_regex_backtracks():
    text = "<think>" + "</think><answer>\\boxed{" * 3000 + "x"
    start = time.perf_counter()
    assert not has_r1_answer_shape(text)
    assert time.perf_counter() - start < 0.5


def test_the_pred_is_the_last_closed_box():
    assert last_boxed("\\boxed{1} and \\boxed{\\frac{a}{b}} ") == "\\frac{a}{b}"
    assert last_boxed("\\boxed{ 2 }") == "2"
    assert last_boxed("\\boxed{1} \\boxed{2") is None
    assert VERIFIERS["math_17k_acc"].fn("so \\boxed{ 7 }", "7").pred == "7"


def test_a_response_without_a_box_is_wrong_even_when_the_truth_reads_none():
    # deliberate difference: the suite grades mathruler's "None" (not found) string here
    assert VERIFIERS["math_17k_acc"].fn("no box at all", "None").score == 0.0
    assert VERIFIERS["math_17k_acc"].fn("\\boxed{None}", "None").score == 1.0


@pytest.mark.parametrize(
    "given",
    ["9**9**9**9", "(9**9)**(9**9)", "__import__('os').system('false')", "x.__class__", "99999!"],
)
def test_model_text_that_is_not_arithmetic_never_reaches_sympy(given, monkeypatch):
    from sympy.parsing import sympy_parser

    def refuse(*args, **kwargs):
        raise AssertionError(f"parse_expr called on {args[0]!r}")

    monkeypatch.setattr(sympy_parser, "parse_expr", refuse)
    assert grade_answer(given, "x+1") is False


def test_sympy_still_decides_plain_expressions():
    assert grade_answer("x^2+2x+1", "(x+1)^2") and not grade_answer("x^2+2x", "(x+1)^2")


def test_math_verify_reward_scores_off_the_main_thread():
    # math-verify enforces its own limits with SIGALRM, which only the main thread may set; a
    # scorer thread must still get real verdicts (the scorer's own timeout bounds the call)
    response = "<think>t</think><answer>\\boxed{\\frac{1}{2}}</answer>"
    out = {}
    thread = threading.Thread(
        target=lambda: out.update(
            right=VERIFIERS["math_verify_reward"].fn(response, "0.5").score,
            wrong=VERIFIERS["math_verify_reward"].fn(response, "0.25").score,
        )
    )
    thread.start()
    thread.join()
    assert out == {"right": 1.0, "wrong": 0.0}
