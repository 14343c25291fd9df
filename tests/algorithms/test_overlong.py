"""Overlong reward shaping and overlong filtering, with hand-computed values."""

from __future__ import annotations

import pytest
import torch

from mindspeed_rl.algorithms.overlong import (
    filter_overlong,
    overlong_penalty,
    truncated_responses,
)

EOS = 2


def test_penalty_ramps_linearly_over_the_buffer():
    # max 20, buffer 4: free up to 16 tokens, then -factor/4 per token, -factor at 20.
    lengths = torch.tensor([0, 15, 16, 17, 18, 20])
    penalty = overlong_penalty(lengths, 20, 4, 1.0)
    assert penalty.dtype == torch.float32
    assert penalty.tolist() == [0.0, 0.0, 0.0, -0.25, -0.5, -1.0]
    assert overlong_penalty(lengths, 20, 4, 0.5).tolist() == [0.0, 0.0, 0.0, -0.125, -0.25, -0.5]


def test_penalty_with_the_dapo_recipe_values():
    # Qwen2.5-32B recipe: rollout_max_tokens 2048, overlong_buffer 512, factor 1.0.
    penalty = overlong_penalty(torch.tensor([1536, 1537, 1792, 2048]), 2048, 512, 1.0)
    assert penalty.tolist() == [0.0, -1 / 512, -0.5, -1.0]


def test_buffer_equal_to_max_penalizes_from_the_first_token():
    assert overlong_penalty(torch.tensor([0, 1, 8]), 8, 8, 2.0).tolist() == [0.0, -0.25, -2.0]


@pytest.mark.parametrize(
    ("max_tokens", "buffer", "factor", "message"),
    [
        (20, 0, 1.0, "overlong_buffer must be in"),
        (20, 21, 1.0, "overlong_buffer must be in"),
        (20, 4, -1.0, "penalty_factor must be >= 0"),
    ],
)
def test_bad_settings_name_the_key(max_tokens, buffer, factor, message):
    with pytest.raises(ValueError, match=message):
        overlong_penalty(torch.tensor([1]), max_tokens, buffer, factor)


def test_truncated_means_at_the_limit_without_eos():
    responses = torch.tensor(
        [
            [5, 6, 7, 8],  # 4 tokens, no EOS: truncated
            [5, 6, 7, EOS],  # 4 tokens ending in EOS: finished exactly at the limit
            [5, EOS, 0, 0],  # short
            [0, 0, 0, 0],  # empty
            [5, 6, 7, 9],  # 4 tokens ending in another stop token
        ]
    )
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    truncated = truncated_responses(responses, mask, [EOS, 9], rollout_max_tokens=4)
    assert truncated.tolist() == [True, False, False, False, False]


def test_filter_zeroes_only_truncated_rows():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    filtered = filter_overlong(mask, torch.tensor([False, True]))
    assert filtered.dtype == mask.dtype
    assert filtered.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
