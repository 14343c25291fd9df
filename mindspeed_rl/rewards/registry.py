"""The rule verifiers, keyed by the names users write in ``rl_config.verifier_function``.

An explicit dict: adding a verifier means adding a line here (and a test). Nothing is matched by
substring and nothing registers itself on import. The config validation calls
``known_verifiers()`` to reject an unknown name with a suggestion; ``get_verifier`` raises the same
error for code that looks a name up directly.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from mindspeed_rl.rewards import format_check, math_boxed, math_dapo
from mindspeed_rl.rewards.verifier import Verifier, VerifierFn


def _boxed_math(fn: VerifierFn, description: str) -> Verifier:
    return Verifier(
        fn=fn,
        correct_score=math_boxed.CORRECT_SCORE,
        incorrect_score=math_boxed.INCORRECT_SCORE,
        response_tail_chars=None,
        description=description,
    )


VERIFIERS: dict[str, Verifier] = {
    "acc_for_dapo": Verifier(
        fn=math_dapo.acc_for_dapo,
        correct_score=math_dapo.CORRECT_SCORE,
        incorrect_score=math_dapo.INCORRECT_SCORE,
        response_tail_chars=math_dapo.RESPONSE_TAIL_CHARS,
        description="DAPO math: normalized text after the last 'Answer:' equals the ground truth "
        "(1.0 / -1.0)",
    ),
    "format": Verifier(
        fn=format_check.format_reward,
        correct_score=format_check.CORRECT_SCORE,
        incorrect_score=format_check.INCORRECT_SCORE,
        response_tail_chars=None,
        description="response is '<think>...</think> <answer>...</answer>' (1.0 / 0.0)",
    ),
    # The Ascend suite's GRPO recipes: the answer is the last \boxed{} (whole response read)
    "math_17k_acc": _boxed_math(
        math_boxed.math_17k_acc,
        "last \\boxed{} equals the ground truth under PRM800K grading (1.0 / 0.0)",
    ),
    "base_acc": _boxed_math(
        math_boxed.base_acc,
        "math_17k_acc, and the response is <think>..</think>..<answer>..\\boxed{}..</answer> "
        "(1.0 / 0.0)",
    ),
    "math_verify_reward": _boxed_math(
        math_boxed.math_verify_reward,
        "base_acc's shape, and math-verify finds the response equal to \\boxed{ground truth} "
        "(1.0 / 0.0)",
    ),
}


def known_verifiers() -> list[str]:
    """Names accepted in ``rl_config.verifier_function``, sorted."""
    return sorted(VERIFIERS)


def unknown_verifier_message(
    name: str,
    registry: Mapping[str, Verifier] = VERIFIERS,
    key: str = "rl_config.verifier_function",
) -> str:
    """The error text for an unknown verifier name, with the closest known name if there is one."""
    close = difflib.get_close_matches(name, list(registry), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    known = ", ".join(sorted(registry))
    return f"{key}: unknown verifier '{name}'.{hint} Known verifiers: {known}."


def get_verifier(name: str) -> Verifier:
    """The registry entry for ``name``; ValueError naming the known verifiers if there is none."""
    try:
        return VERIFIERS[name]
    except KeyError:
        raise ValueError(unknown_verifier_message(name)) from None
