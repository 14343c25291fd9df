"""Handlers map raw rows to conversations + ground truths, and reject bad rows with a reason."""

from __future__ import annotations

import pytest

from mindspeed_rl.data.handlers import (
    HANDLERS,
    REJECTION_REASONS,
    HandledRow,
    Rejection,
    build_handler,
)
from mindspeed_rl.data.templates import Message

from .conftest import dapo_row

MATH17K = "Math17kAlpacaStyleInstructionHandler"
MATH17K_KEYS = {"prompt": "prompt", "query": "", "response": "reward_model", "system": ""}


def math17k(additional=("labels",)):
    return build_handler(MATH17K, MATH17K_KEYS, additional)


def test_dapo_row_gives_user_turn_and_ground_truth() -> None:
    result = math17k(("labels", "data_source"))(dapo_row(2))
    assert isinstance(result, HandledRow)
    assert result.messages == (Message("user", dapo_row(2)["prompt"][0]["content"]),)
    assert result.texts == {"labels": "62", "data_source": "math_dapo"}


def test_system_and_multi_turn_messages_are_kept_in_order() -> None:
    row = dapo_row(0)
    row["prompt"] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
    ]
    result = math17k()(row)
    assert [m.role for m in result.messages] == ["system", "user", "assistant", "user"]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.pop("prompt"), "missing_prompt"),
        (lambda r: r.update(prompt=[]), "missing_prompt"),
        (lambda r: r.update(prompt=[{"role": "user", "content": "   "}]), "missing_prompt"),
        (lambda r: r.update(prompt=[{"role": "user", "content": 7}]), "non_string_prompt"),
        (lambda r: r.update(prompt=12), "non_string_prompt"),
        (lambda r: r.update(prompt=[{"content": "x"}]), "malformed_messages"),
        (lambda r: r.update(prompt=[{"role": "assistant", "content": "x"}]), "malformed_messages"),
        (lambda r: r.update(reward_model={"style": "rule"}), "missing_ground_truth"),
        (lambda r: r.update(reward_model=None), "missing_ground_truth"),
        (lambda r: r.update(reward_model={"ground_truth": ""}), "missing_ground_truth"),
        (lambda r: r.update(reward_model={"ground_truth": 3}), "non_string_ground_truth"),
    ],
)
def test_bad_rows_are_rejected_with_their_reason(mutate, reason: str) -> None:
    row = dapo_row(0)
    mutate(row)
    result = math17k()(row)
    assert isinstance(result, Rejection) and result.reason == reason
    assert reason in REJECTION_REASONS


def test_additional_keys_must_be_strings() -> None:
    handler = math17k(("labels", "data_source"))
    row = dapo_row(0)
    row["data_source"] = None
    assert handler(row).reason == "missing_additional_key"
    row["data_source"] = 5
    assert handler(row).reason == "non_string_additional_key"


def test_r1_handler_joins_prompt_and_query_and_reads_system() -> None:
    handler = build_handler(
        "R1AlpacaStyleInstructionHandler",
        {"prompt": "problem", "query": "hint", "response": "answer", "system": "sys"},
        ["labels"],
    )
    result = handler({"problem": "P", "hint": "H", "answer": "A", "sys": "S"})
    assert result.messages == (Message("system", "S"), Message("user", "P\nH"))
    assert result.texts == {"labels": "A"}
    assert handler({"problem": "P", "hint": "", "answer": "A", "sys": None}).messages == (
        Message("user", "P"),
    )


def test_alpaca_handler_defaults_and_history() -> None:
    handler = build_handler("AlpacaStyleInstructionHandler", {"history": "history"}, ["labels"])
    row = {"instruction": "I", "input": "", "output": "O", "history": [["u0", "a0"]]}
    result = handler(row)
    assert result.messages == (
        Message("user", "u0"),
        Message("assistant", "a0"),
        Message("user", "I"),
    )
    assert result.texts == {"labels": "O"}
    assert handler({**row, "history": [["only one"]]}).reason == "malformed_messages"


def test_configuration_errors_name_the_key() -> None:
    with pytest.raises(
        ValueError, match="handler_name='Nope'.*Math17kAlpacaStyleInstructionHandler"
    ):
        build_handler("Nope", None, [])
    with pytest.raises(ValueError, match="unknown key 'promt'"):
        build_handler(MATH17K, {"promt": "x"}, [])
    with pytest.raises(ValueError, match="does not read a 'history' column"):
        build_handler(MATH17K, {"history": "h"}, [])
    assert math17k(("labels", "data_source")).required_columns() == [
        "prompt",
        "reward_model",
        "data_source",
    ]
    assert set(HANDLERS) >= {
        MATH17K,
        "R1AlpacaStyleInstructionHandler",
        "AlpacaStyleInstructionHandler",
    }
