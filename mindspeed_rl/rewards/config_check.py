"""Config validation hook of the verifier registry (called by ``--dry-run`` and the trainer)."""

from __future__ import annotations

from collections.abc import Callable

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.config.validation import Problem
from mindspeed_rl.rewards.registry import VERIFIERS, unknown_verifier_message


def verifier_problems(config: RunConfig, where: Callable[[str], str]) -> list[Problem]:
    """Every verifier name in rl_config must be registered."""
    key = "rl_config.verifier_function"
    return [
        Problem(where(key), key, unknown_verifier_message(name).split(": ", 1)[1])
        for name in config.rl_config.verifier_function
        if name not in VERIFIERS
    ]
