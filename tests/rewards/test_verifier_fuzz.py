"""Fuzz: random and adversarial responses never make a built-in verifier raise or run long.

Each string goes through ``call_verifier``, the path every scored call takes (in-process and in
worker processes) with the response window the scorer passes: an exception or a malformed result
shows as an error and fails the test. Every call is timed: none may reach the bound (a time-out is
a failure of the verifier) and at least 99% must finish in under 10 ms.
"""

from __future__ import annotations

import random
import time

from mindspeed_rl.rewards.registry import VERIFIERS
from mindspeed_rl.rewards.verifier_worker import OK, call_verifier

NUM_STRINGS = 10_000
MB = 1 << 20
FAST_CALL_S = 0.010
BOUND_S = 1.0  # a verifier_timeout no call may reach

_TOKENS = [
    "Answer:", "answer :", "ANSWER:", "\\boxed{", "\\text{", "\\textbf{", "\\overline{", "\\frac",
    "\\sqrt", "}", "{", "$", "\\$", "=", ",", ".", " ", "\n", "\t", "<think>", "</think>",
    "<answer>", "</answer>", "1", "9" * 50, "-", "^\\circ", "\\!", "a ", "an ", "mbox", "\\left(",
    "\\right)", "π", "∞", "√", "²", "١٢٣", "𝟙", "\u200b", "\ufeff", "\ud800", "é", "中文", "😀",
]  # fmt: skip


def _adversarial(rng: random.Random) -> list[str]:
    """Shapes known to hurt regex- or parser-based verifiers."""
    return [
        "",
        "Answer: " + "9" * 100_000,  # huge number
        "Answer: " + "1" * 5000 + "e" + "9" * 5000,
        "Answer: " + "\\boxed{" * 20_000 + "1" + "}" * 20_000,  # deep braces
        "{" * 100_000,
        "}" * 100_000 + "Answer: }",
        "Answer: " + "$" * 100_000,
        "Answer: " + "\\text{" * 30_000,  # openers without a close
        "x" * MB,  # 1 MB strings
        "Answer: 1\n" * (MB // 10),
        "<think>" + "</think><answer></answer>x" * (MB // 30),
        "<think>" + " " * MB + "</think>" + " " * MB,
        "Answer:" + " " * MB + "1",
        "Answer: \\frac{\\sqrt{2}}{2} \\cdot \\left(\\int_0^1 x^2 dx\\right)",
        "Answer: __import__('os').system('echo pwned')",
        "Answer: 10**10**10",
        "Answer: " + "(" * 5000 + ")" * 5000,
        "Answer: \x00\x01\x02\x7f",
        "Answer: " + "".join(chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(300)),
        "".join(chr(rng.randrange(0, 0x110000)) for _ in range(5000)),
    ]


def _random_string(rng: random.Random) -> str:
    size = rng.choice([1, 5, 20, 60, 200, 800])
    return "".join(rng.choice(_TOKENS) for _ in range(size))


def test_built_in_verifiers_survive_random_and_adversarial_strings():
    rng = random.Random(1234)
    responses = _adversarial(rng)
    responses += [_random_string(rng) for _ in range(NUM_STRINGS - len(responses))]
    truths = ["42", "\\frac{1}{2}", "1,000", "\\boxed{7}", "", "x" * 500]
    slow, worst, failures = 0, 0.0, []
    for i, response in enumerate(responses):
        for name, verifier in VERIFIERS.items():
            truth = truths[i % len(truths)]
            start = time.perf_counter()
            # The scorer's own call path: exceptions and malformed results become "error".
            outcome = call_verifier(verifier.fn, verifier.window(response), truth)
            elapsed = time.perf_counter() - start
            if outcome.status != OK:
                failures.append((name, i, outcome.error))
            worst = max(worst, elapsed)
            slow += elapsed >= FAST_CALL_S
    calls = len(responses) * len(VERIFIERS)
    assert len(responses) >= NUM_STRINGS
    assert not failures, failures[:5]
    assert worst < BOUND_S, f"a call took {worst:.3f} s"
    assert slow <= 0.01 * calls, f"{slow} of {calls} calls took >= 10 ms (worst {worst:.3f} s)"
