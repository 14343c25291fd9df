"""The verifier registry: names users write, the signature every entry has, unknown names."""

from __future__ import annotations

import inspect
import pickle

import pytest

from mindspeed_rl.rewards.registry import (
    VERIFIERS,
    get_verifier,
    known_verifiers,
    unknown_verifier_message,
)
from mindspeed_rl.rewards.verifier import VerifierResult


def test_known_verifiers_lists_the_registered_names():
    assert known_verifiers() == [
        "acc_for_dapo",
        "base_acc",
        "format",
        "math_17k_acc",
        "math_verify_reward",
    ]


@pytest.mark.parametrize("name", sorted(VERIFIERS))
def test_every_entry_has_the_registry_signature(name):
    verifier = VERIFIERS[name]
    assert list(inspect.signature(verifier.fn).parameters) == ["response", "ground_truth"]
    result = verifier.fn("", "")
    assert isinstance(result, VerifierResult)
    assert result.score == verifier.incorrect_score and result.acc is False
    # Worker processes receive the function by reference: it must pickle to the same object.
    assert pickle.loads(pickle.dumps(verifier.fn)) is verifier.fn


def test_response_window_is_a_suffix():
    acc = VERIFIERS["acc_for_dapo"]
    assert acc.window("x" * 1000 + "tail") == ("x" * 1000 + "tail")[-300:]
    assert VERIFIERS["format"].window("abc") == "abc"


def test_misspelled_name_gets_a_suggestion():
    with pytest.raises(
        ValueError, match="unknown verifier 'acc_for_dap'. Did you mean 'acc_for_dapo'"
    ):
        get_verifier("acc_for_dap")


def test_unrelated_name_lists_the_known_ones():
    message = unknown_verifier_message("sympy_equal")
    assert "Did you mean" not in message
    assert message.endswith(
        "Known verifiers: acc_for_dapo, base_acc, format, math_17k_acc, math_verify_reward."
    )
    assert message.startswith("rl_config.verifier_function:")
