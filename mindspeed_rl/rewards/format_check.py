"""``format``: does the response follow ``<think>...</think> <answer>...</answer>``?

Semantics of the Ascend suite's ``format`` verifier: 1.0 when
``re.match(r"^<think>.*?</think>\\s*<answer>.*?</answer>$", response, re.DOTALL | re.MULTILINE)``
succeeds, else 0.0. That regex backtracks quadratically on responses with many tags (a policy can
learn to emit them); this module decides the same language with a few forward scans
(tests/rewards/test_format_check.py checks equality against the regex on random strings).
"""

from __future__ import annotations

import re

from mindspeed_rl.rewards.verifier import VerifierResult

CORRECT_SCORE = 1.0
INCORRECT_SCORE = 0.0

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_WHITESPACE = re.compile(r"\s*")  # anchored at a position by .match: linear in the run


def _first_answer_open(response: str) -> int:
    """Index of the earliest ``<answer>`` that follows some ``</think>`` plus whitespace, or -1.

    The earliest one is enough: any ``</answer>`` that closes a later one also closes it.
    """
    close = response.find(_THINK_CLOSE, len(_THINK_OPEN))
    while close >= 0:
        pos = _WHITESPACE.match(response, close + len(_THINK_CLOSE)).end()
        if response.startswith(_ANSWER_OPEN, pos):
            return pos
        # The whitespace run ends at a non-space character, so runs are disjoint: linear overall.
        close = response.find(_THINK_CLOSE, close + 1)
    return -1


def format_reward(response: str, ground_truth: str) -> VerifierResult:
    """1.0 when the response is ``<think>...</think>`` then ``<answer>...</answer>``, else 0.0.

    ``ground_truth`` is unused (the signature is the registry's). With ``re.MULTILINE`` the final
    ``</answer>`` may end the string or a line.
    """
    del ground_truth
    ok = False
    if response.startswith(_THINK_OPEN):
        answer_open = _first_answer_open(response)
        if answer_open >= 0:
            body = answer_open + len(_ANSWER_OPEN)
            ends_string = (
                response.endswith(_ANSWER_CLOSE) and len(response) - len(_ANSWER_CLOSE) >= body
            )
            ok = ends_string or response.find(_ANSWER_CLOSE + "\n", body) >= 0
    return VerifierResult(CORRECT_SCORE if ok else INCORRECT_SCORE, ok, "")
