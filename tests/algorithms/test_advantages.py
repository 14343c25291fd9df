"""Group-normalized advantages and token placement, with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from mindspeed_rl.algorithms.advantages import (
    GROUP_NORM_EPSILON,
    broadcast_to_tokens,
    group_norm_advantages,
    place_at_last_token,
)


def test_scores_land_on_the_last_valid_token_for_masks_of_different_lengths():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    out = place_at_last_token(torch.tensor([1.0, -1.0, 0.5, 7.0]), mask)
    assert out.tolist() == [
        [0.0, 0.0, 1.0, 0.0],
        [-1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.5],
        [0.0, 0.0, 0.0, 0.0],  # empty response: nothing to credit
    ]


def test_group_norm_with_std():
    # Group "a": [1, -1, -1, 1]: mean 0, unbiased std sqrt(4/3).
    # Group "b": [1, 1, -1]: mean 1/3, deviations [2/3, 2/3, -4/3], std sqrt((8/3)/2) = sqrt(4/3).
    scores = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, 1.0, -1.0])
    uids = ["a", "a", "b", "a", "a", "b", "b"]  # groups need not be contiguous
    adv = group_norm_advantages(scores, uids)
    std = math.sqrt(4 / 3) + GROUP_NORM_EPSILON
    expected = [1 / std, -1 / std, (2 / 3) / std, -1 / std, 1 / std, (2 / 3) / std, (-4 / 3) / std]
    assert adv.dtype == torch.float32
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


def test_group_norm_without_std_is_centering_only():
    adv = group_norm_advantages(
        torch.tensor([3.0, 1.0, 2.0, 5.0]), [0, 0, 1, 1], norm_adv_by_std=False
    )
    assert adv.tolist() == [1.0, -1.0, -1.5, 1.5]


def test_all_equal_scores_give_zero_advantage():
    adv = group_norm_advantages(torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0]), [0, 0, 0, 1, 1])
    assert adv.tolist() == [0.0] * 5


def test_group_of_one_keeps_its_score():
    adv = group_norm_advantages(torch.tensor([0.5, 1.0, -1.0]), ["solo", "p", "p"])
    assert adv[0].item() == pytest.approx(0.5 / (1 + GROUP_NORM_EPSILON))
    assert adv[1:].tolist() == pytest.approx(
        [1 / (math.sqrt(2) + 1e-6), -1 / (math.sqrt(2) + 1e-6)]
    )
    raw = group_norm_advantages(torch.tensor([0.5]), ["solo"], norm_adv_by_std=False)
    assert raw.tolist() == [0.5]


def test_epsilon_is_used():
    adv = group_norm_advantages(torch.tensor([1.0, -1.0]), [0, 0], epsilon=0.5)
    # std of [1, -1] (unbiased) is sqrt(2).
    assert adv.tolist() == pytest.approx([1 / (math.sqrt(2) + 0.5), -1 / (math.sqrt(2) + 0.5)])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one uid per score"):
        group_norm_advantages(torch.tensor([1.0, 2.0]), ["a"])


def test_broadcast_over_response_tokens():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    out = broadcast_to_tokens(torch.tensor([0.5, 2.0, -1.0]), mask)
    assert out.tolist() == [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]]
