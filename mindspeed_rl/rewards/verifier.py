"""What a rule verifier is: a pure function of (response, ground truth) and a few facts about it.

A verifier reads model-written text, so it must be safe to run on anything a policy can emit: it
never evaluates or executes the text, and its work is bounded by the length of its inputs (the
built-in ones read a fixed window of the response and use only linear-time string operations).
The scorer (``scoring.py``) adds the wall-clock bound on top, for verifiers that break that promise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple


class VerifierResult(NamedTuple):
    """One verifier's verdict on one response.

    ``score`` is what enters the reward (weighted by ``verifier_weight``), ``acc`` whether the
    response counts as correct (for accuracy metrics), ``pred`` what the verifier extracted from
    the response (normalized answer; empty when the verifier extracts nothing).
    """

    score: float
    acc: bool
    pred: str


VerifierFn = Callable[[str, str], VerifierResult]
"""Signature every registered verifier has: ``fn(response, ground_truth) -> VerifierResult``."""


@dataclass(frozen=True)
class Verifier:
    """A registry entry: the function plus what the scorer needs to know to run it safely.

    Attributes:
        fn: the verifier, a module-level function (it is pickled by reference into worker
            processes, so lambdas and closures do not work).
        correct_score: the score of a correct response (dynamic sampling reports groups at this
            score as "all correct").
        incorrect_score: the score given when the response is wrong, and also when the verifier
            raises or runs out of time.
        response_tail_chars: the verifier reads only the last this-many characters of the response
            (None: the whole response). The scorer ships only that window to worker processes.
        description: one line for docs and error messages.
    """

    fn: VerifierFn
    correct_score: float
    incorrect_score: float
    response_tail_chars: int | None
    description: str

    def window(self, response: str) -> str:
        """The part of ``response`` this verifier reads (a suffix, or all of it)."""
        if self.response_tail_chars is None:
            return response
        return response[-self.response_tail_chars :]
