"""format: the Ascend suite's <think>/<answer> format check, decided without backtracking."""

from __future__ import annotations

import random
import re
import time

import pytest

from mindspeed_rl.rewards.format_check import format_reward

REFERENCE = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>$", re.DOTALL | re.MULTILINE)
_PIECES = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "\t", "x", "<", ">", "/"]


def test_matches_reference_regex_on_random_strings():
    rng = random.Random(1)
    for _ in range(5000):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 10)))
        if rng.random() < 0.5:
            text = "<think>" + text
        expected = REFERENCE.match(text) is not None
        assert format_reward(text, "")[1] is expected, repr(text)


@pytest.mark.parametrize(
    ("response", "ok"),
    [
        ("<think>reasoning</think>\n<answer>42</answer>", True),
        ("<think></think><answer></answer>", True),  # empty parts are allowed
        ("<think>a</think> <answer>b</answer>\ntrailing line", True),  # MULTILINE '$'
        ("<think>a</think> x <answer>b</answer>", False),  # text between the blocks
        (" <think>a</think><answer>b</answer>", False),  # must start with <think>
        ("<think>a</think><answer>b</answer>.", False),
        ("<think>a<answer>b</answer>", False),
        ("", False),
    ],
)
def test_examples(response, ok):
    assert format_reward(response, "unused") == ((1.0 if ok else 0.0), ok, "")


def test_many_tags_stay_linear():
    # Quadratic for the regex (every </think> and </answer> pair is tried); one scan here.
    response = "<think>" + "</think><answer></answer>x" * 40_000
    start = time.perf_counter()
    assert format_reward(response, "")[1] is False
    assert time.perf_counter() - start < 0.5
