"""The Ascend suite's GRPO math verifiers: the answer is the last ``\\boxed{...}``.

Semantics of the suite's ``mindspeed_rl/models/rule_verifier.py`` (MindSpeed-RL 05a90d7), each
scoring 1.0 (correct) or 0.0:

* ``math_17k_acc``: the last ``\\boxed{}`` of the response equals the ground truth under the
  PRM800K grading rule (``math_grade.grade_answer``; the suite calls ``mathruler``).
* ``base_acc``: the same, and the response has the R1 template's shape: it starts with
  ``<think>``, ends with ``</answer>`` and holds ``</think>``, ``<answer>``, ``\\boxed{``, ``}``
  in that order (the suite's ``re.fullmatch(r"<think>.*</think>.*<answer>.*\\boxed\\{.*\\}.*
  </answer>", DOTALL)``).
* ``math_verify_reward``: that shape, and HuggingFace's ``math-verify`` (the package itself)
  finds the response equal to ``\\boxed{<ground truth>}``: the gold parsed as LaTeX, the
  response as an expression or LaTeX, compared at 6 decimal places.

One deliberate difference: with no closed ``\\boxed{}`` the suite grades the string ``"None"``
(mathruler's "not found"), so a response without a box scores 1.0 when the ground truth is
``None``; here such a response is wrong.
"""

from __future__ import annotations

import threading

from mindspeed_rl.rewards.math_grade import grade_answer, last_boxed
from mindspeed_rl.rewards.verifier import VerifierResult

CORRECT_SCORE = 1.0
INCORRECT_SCORE = 0.0
# math-verify's own limits per parse / comparison (its defaults); it enforces them with SIGALRM,
# which only the main thread may set: elsewhere the scorer's verifier_timeout is the bound.
MATH_VERIFY_TIMEOUT_S = 5

_ORDERED_MARKERS = ("</think>", "<answer>", "\\boxed{", "}")
_OPEN, _CLOSE = "<think>", "</answer>"


def has_r1_answer_shape(response: str) -> bool:
    """The suite's ``<think>.*</think>.*<answer>.*\\boxed\\{.*\\}.*</answer>`` fullmatch (DOTALL),
    decided by one forward scan: taking each marker at its earliest position after the previous
    one leaves the most room for the rest, so the regex matches iff this succeeds."""
    if not (response.startswith(_OPEN) and response.endswith(_CLOSE)):
        return False
    end = len(response) - len(_CLOSE)
    pos = len(_OPEN)
    for marker in _ORDERED_MARKERS:
        found = response.find(marker, pos, end)
        if found < 0:
            return False
        pos = found + len(marker)
    return True


def _boxed_result(response: str, ground_truth: str, shape_ok: bool) -> VerifierResult:
    pred = last_boxed(response)
    ok = shape_ok and pred is not None and grade_answer(pred, ground_truth)
    return VerifierResult(CORRECT_SCORE if ok else INCORRECT_SCORE, ok, pred or "")


def math_17k_acc(response: str, ground_truth: str) -> VerifierResult:
    """1.0 when the last ``\\boxed{}`` is the ground truth (PRM800K grading), else 0.0."""
    return _boxed_result(response, ground_truth, True)


def base_acc(response: str, ground_truth: str) -> VerifierResult:
    """``math_17k_acc`` for responses in the ``<think>..</think><answer>..\\boxed{}..</answer>``
    shape; 0.0 for any other shape."""
    return _boxed_result(response, ground_truth, has_r1_answer_shape(response))


def math_verify_reward(response: str, ground_truth: str) -> VerifierResult:
    """1.0 when the response has the R1 shape and math-verify finds it equal to
    ``\\boxed{<ground truth>}``, else 0.0 (also when math-verify finds no gold or times out)."""
    if not has_r1_answer_shape(response):
        return VerifierResult(INCORRECT_SCORE, False, "")
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    limit = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    gold = parse("\\boxed{" + ground_truth + "}", (LatexExtractionConfig(),), parsing_timeout=limit)
    pred = parse(response, (ExprExtractionConfig(), LatexExtractionConfig()), parsing_timeout=limit)
    ok = bool(gold) and verify(gold, pred, float_rounding=6, timeout_seconds=limit)
    return VerifierResult(
        CORRECT_SCORE if ok else INCORRECT_SCORE, ok, str(pred[-1]) if pred else ""
    )
