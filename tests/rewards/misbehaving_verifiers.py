"""Verifiers that break the rules, for the scorer's safety tests.

Module-level functions (worker processes import them by name). Each behaves when the response is
ordinary and misbehaves on a trigger word, so one batch mixes good and bad calls.
"""

from __future__ import annotations

import os
import time

from mindspeed_rl.rewards.verifier import Verifier, VerifierResult

HANG_SECONDS = 60.0


def exact_match(response: str, ground_truth: str) -> VerifierResult:
    """1.0 / -1.0 on string equality; the well-behaved baseline."""
    ok = response == ground_truth
    return VerifierResult(1.0 if ok else -1.0, ok, response[:16])


def hangs_on_trigger(response: str, ground_truth: str) -> VerifierResult:
    """Sleeps (far past any test's limit) when the response contains HANG."""
    if "HANG" in response:
        time.sleep(HANG_SECONDS)
    return exact_match(response, ground_truth)


def spins_on_trigger(response: str, ground_truth: str) -> VerifierResult:
    """Busy-loops in pure Python when the response contains SPIN (holds the GIL, no syscalls)."""
    if "SPIN" in response:
        end = time.monotonic() + HANG_SECONDS
        while time.monotonic() < end:
            pass
    return exact_match(response, ground_truth)


def raises_on_trigger(response: str, ground_truth: str) -> VerifierResult:
    if "RAISE" in response:
        raise ZeroDivisionError("the verifier divided by zero")
    return exact_match(response, ground_truth)


def dies_on_trigger(response: str, ground_truth: str) -> VerifierResult:
    """Kills its own process (as a segfault or the OOM killer would) when the response has DIE."""
    if "DIE" in response:
        os._exit(3)
    return exact_match(response, ground_truth)


def returns_nan(response: str, ground_truth: str) -> VerifierResult:
    return VerifierResult(float("nan"), False, "")


def _entry(fn) -> Verifier:
    return Verifier(
        fn=fn, correct_score=1.0, incorrect_score=-1.0, response_tail_chars=None, description=""
    )


REGISTRY: dict[str, Verifier] = {
    "exact": _entry(exact_match),
    "hangs": _entry(hangs_on_trigger),
    "spins": _entry(spins_on_trigger),
    "raises": _entry(raises_on_trigger),
    "dies": _entry(dies_on_trigger),
    "nan": _entry(returns_nan),
}
