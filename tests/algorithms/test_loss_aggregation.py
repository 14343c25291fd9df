"""Loss aggregation modes and their global denominators, with hand-computed values."""

from __future__ import annotations

import pytest
import torch

from mindspeed_rl.algorithms.loss_aggregation import (
    aggregate_loss,
    loss_denominator,
    resolve_loss_agg_mode,
)

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # lengths 2, 1 and an empty response


@pytest.mark.parametrize(
    ("mode", "denominator", "expected"),
    [
        ("token-mean", 3.0, (1 + 2 + 4) / 3),
        ("seq-mean-token-mean", 2.0, ((1 + 2) / 2 + 4 / 1) / 2),  # the empty row counts nowhere
        ("seq-mean-token-sum", 2.0, ((1 + 2) + 4) / 2),
    ],
)
def test_modes_on_one_micro_batch(mode, denominator, expected):
    assert loss_denominator(MASK, mode).item() == denominator
    assert aggregate_loss(VALUES, MASK, mode, denominator).item() == pytest.approx(expected)


def test_a_micro_batch_contributes_its_share_of_the_global_mean():
    # The same rows split in two: the contributions add up to the unsplit value.
    total = loss_denominator(MASK, "token-mean")
    first = aggregate_loss(VALUES[:1], MASK[:1], "token-mean", total)
    second = aggregate_loss(VALUES[1:], MASK[1:], "token-mean", total)
    assert first.item() == pytest.approx(3 / 3) and second.item() == pytest.approx(4 / 3)
    # The mean of per-micro-batch means is a different number: the bug this module prevents.
    naive = ((VALUES[:1] * MASK[:1]).sum() / 2 + (VALUES[1:] * MASK[1:]).sum() / 1) / 2
    assert naive.item() == pytest.approx(2.75)
    assert (first + second).item() == pytest.approx(7 / 3)


def test_non_finite_values_on_padding_do_not_leak():
    values = VALUES.clone()
    values[MASK == 0] = float("-inf")
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        out = aggregate_loss(values, MASK, mode, loss_denominator(MASK, mode))
        assert torch.isfinite(out)


def test_nothing_valid_gives_zero_not_nan():
    mask = torch.zeros(2, 3)
    values = torch.ones(2, 3, requires_grad=True)
    out = aggregate_loss(values, mask, "token-mean", loss_denominator(mask, "token-mean"))
    out.backward()
    assert out.item() == 0.0 and values.grad.abs().sum().item() == 0.0


@pytest.mark.parametrize(
    ("token_level_loss", "loss_agg_mode", "expected"),
    [
        (True, None, "token-mean"),
        (False, None, "seq-mean-token-mean"),
        (True, "token-mean", "token-mean"),
        (False, "seq-mean-token-sum", "seq-mean-token-sum"),
    ],
)
def test_resolve_mode(token_level_loss, loss_agg_mode, expected):
    assert resolve_loss_agg_mode(token_level_loss, loss_agg_mode) == expected


def test_contradicting_or_unknown_modes_are_config_errors():
    with pytest.raises(ValueError, match="token_level_loss=True contradicts"):
        resolve_loss_agg_mode(True, "seq-mean-token-mean")
    with pytest.raises(ValueError, match="token_level_loss=False contradicts"):
        resolve_loss_agg_mode(False, "token-mean")
    with pytest.raises(ValueError, match="unknown mode 'token_mean'"):
        resolve_loss_agg_mode(True, "token_mean")
    with pytest.raises(ValueError, match="unknown loss aggregation mode"):
        loss_denominator(MASK, "mean")


def test_denominators_are_exact_counts_and_low_precision_values_reduce_in_float32():
    denominator = loss_denominator(MASK, "token-mean")
    assert denominator.dtype == torch.int64 and denominator.item() == 3
    out = aggregate_loss(VALUES.to(torch.bfloat16), MASK, "token-mean", denominator)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(7 / 3)
