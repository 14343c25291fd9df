"""Reduce per-token losses to the scalar whose gradient is the mini-batch's, however it is split.

DAPO's token-level loss (Yu et al. 2025, arXiv:2503.14476, sec. 3.3) is the mean over *all* valid
tokens of a mini-batch. Averaging inside each micro-batch and then over micro-batches (or over
data-parallel ranks) instead gives a mean of means, which weighs a token of a short micro-batch
more than one of a long micro-batch: a different objective that also changes with the split.

The fix is to divide by a *global* denominator: each micro-batch contributes

    sum over its tokens of loss * mask / D,     D = valid tokens of the whole mini-batch

so the contributions of all micro-batches on all data-parallel ranks *sum* to the mini-batch
mean, and so do their gradients. The caller computes ``D`` once per mini-batch: the sum of
``loss_denominator`` over its micro-batches, then one all-reduce (SUM) over the data-parallel group.
It must also undo what its training loop adds on top of a sum: Megatron's pipeline schedule
divides each micro-batch loss by the number of micro-batches and its DDP averages gradients over
data-parallel ranks (unless ``TransformerConfig.calculate_per_token_loss`` is set), so multiply the
returned loss by ``num_microbatches * dp_size`` there.

Modes (``rl_config.loss_agg_mode``; ``token_level_loss: true`` is token-mean, false is
seq-mean-token-mean):

    token-mean            sum_i sum_t l_it m_it / (global valid tokens)
    seq-mean-token-mean   sum_i (sum_t l_it m_it / n_i) / (global sequences with n_i > 0)
    seq-mean-token-sum    sum_i sum_t l_it m_it / (global sequences with n_i > 0)

A sequence with no valid token (empty, or removed by overlong filtering) counts in no denominator.
"""

from __future__ import annotations

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def resolve_loss_agg_mode(token_level_loss: bool, loss_agg_mode: str | None) -> str:
    """The aggregation mode from ``rl_config.token_level_loss`` and ``rl_config.loss_agg_mode``.

    ``loss_agg_mode`` None follows ``token_level_loss`` (the Ascend suite's switch). When both are
    given they must agree: token-mean with ``token_level_loss: true``, a seq-mean mode with false.
    """
    if loss_agg_mode is None:
        return "token-mean" if token_level_loss else "seq-mean-token-mean"
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(
            f"rl_config.loss_agg_mode: unknown mode '{loss_agg_mode}'; valid: "
            f"{', '.join(LOSS_AGG_MODES)}"
        )
    if token_level_loss != (loss_agg_mode == "token-mean"):
        raise ValueError(
            f"rl_config.token_level_loss={token_level_loss} contradicts "
            f"rl_config.loss_agg_mode='{loss_agg_mode}': token_level_loss true means "
            "'token-mean'; set token_level_loss: false for a seq-mean mode, or drop loss_agg_mode"
        )
    return loss_agg_mode


def _check_mode(mode: str) -> None:
    if mode not in LOSS_AGG_MODES:
        raise ValueError(
            f"unknown loss aggregation mode '{mode}'; valid: {', '.join(LOSS_AGG_MODES)}"
        )


def loss_denominator(response_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """This micro-batch's share of the global denominator: valid tokens, or non-empty sequences.

    Args:
        response_mask: [B, R] loss mask (after overlong filtering, if any).
        mode: one of ``LOSS_AGG_MODES``.

    Returns:
        int64 scalar (a count: exact at any size, and every backend all-reduces int64). Sum it
        over the micro-batches of a mini-batch and all-reduce (SUM) over data-parallel ranks to
        get ``global_denominator``.
    """
    _check_mode(mode)
    valid = response_mask != 0
    if mode == "token-mean":
        return valid.sum()
    return valid.any(dim=-1).sum()


def aggregate_loss(
    values: torch.Tensor,
    response_mask: torch.Tensor,
    mode: str,
    global_denominator: torch.Tensor | float,
) -> torch.Tensor:
    """This micro-batch's contribution to the mini-batch mean of ``values`` (see module docstring).

    Args:
        values: [B, R] per-token values (losses, or metrics aggregated the same way); reduced in
            at least float32.
        response_mask: [B, R] loss mask (a bool mask saves a comparison per call).
        mode: one of ``LOSS_AGG_MODES``.
        global_denominator: the mini-batch's total of ``loss_denominator``. Zero (nothing valid in
            the whole mini-batch) gives a zero loss rather than NaN.

    Returns:
        scalar; summing it over micro-batches and data-parallel ranks gives the mini-batch value.
    """
    _check_mode(mode)
    values = values.to(torch.promote_types(values.dtype, torch.float32))
    valid = response_mask if response_mask.dtype == torch.bool else response_mask != 0
    # where, not a product: a non-finite value on padding (a log-prob of -inf) must not leak in.
    token_sums = torch.where(valid, values, values.new_zeros(())).sum(dim=-1)  # [B]
    if mode == "seq-mean-token-mean":
        token_sums = token_sums / valid.sum(dim=-1).clamp(min=1)
    denominator = torch.as_tensor(global_denominator, device=values.device).to(values.dtype)
    return token_sums.sum() / denominator.clamp(min=1)
