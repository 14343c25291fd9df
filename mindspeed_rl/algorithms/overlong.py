"""Overlong reward shaping and overlong filtering (DAPO, Yu et al. 2025, arXiv:2503.14476, sec. 3.4).

Soft overlong punishment: responses longer than ``rollout_max_tokens - overlong_buffer`` lose
reward linearly, up to ``overlong_buffer_penalty_factor`` at ``rollout_max_tokens``:

    penalty(L) = min(-(L - (max - buffer)) / buffer * factor, 0)

added to the rule score. Overlong filtering, the alternative the paper compares it with, keeps
truncated responses out of the loss (their reward says nothing about the answer they never wrote)
but keeps them in their group's advantage statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def overlong_penalty(
    response_lengths: torch.Tensor,
    rollout_max_tokens: int,
    overlong_buffer: int,
    overlong_buffer_penalty_factor: float,
) -> torch.Tensor:
    """Per-response length penalty, <= 0.

    Args:
        response_lengths: [B] valid response tokens per sample (EOS included).
        rollout_max_tokens: the generation limit (``rl_config.rollout_max_tokens``).
        overlong_buffer: penalty ramp length in tokens (``rl_config.overlong_buffer``).
        overlong_buffer_penalty_factor: penalty at ``rollout_max_tokens``
            (``rl_config.overlong_buffer_penalty_factor``).

    Returns:
        float32 [B]: 0 up to ``rollout_max_tokens - overlong_buffer`` tokens, then falling
        linearly to ``-overlong_buffer_penalty_factor`` at ``rollout_max_tokens``.
    """
    if not 0 < overlong_buffer <= rollout_max_tokens:
        raise ValueError(
            f"rl_config.overlong_buffer must be in (0, rollout_max_tokens={rollout_max_tokens}], "
            f"got {overlong_buffer}"
        )
    if overlong_buffer_penalty_factor < 0:
        raise ValueError(
            "rl_config.overlong_buffer_penalty_factor must be >= 0 (it is the size of a penalty), "
            f"got {overlong_buffer_penalty_factor}"
        )
    expected_length = rollout_max_tokens - overlong_buffer
    exceed = response_lengths.to(torch.float32) - expected_length
    return torch.clamp(-exceed / overlong_buffer * overlong_buffer_penalty_factor, max=0.0)


def truncated_responses(
    responses: torch.Tensor,
    response_mask: torch.Tensor,
    eos_token_ids: Sequence[int],
    rollout_max_tokens: int,
) -> torch.Tensor:
    """Which responses hit the length limit without ending in an EOS token.

    Args:
        responses: int64 [B, R] right-padded response tokens.
        response_mask: [B, R], 1 on generated tokens (EOS included).
        eos_token_ids: token ids that end a response (the tokenizer's EOS and any stop tokens).
        rollout_max_tokens: the generation limit.

    Returns:
        bool [B]. A response of exactly ``rollout_max_tokens`` tokens whose last one is EOS
        finished in time: it is not truncated.
    """
    lengths = response_mask.sum(dim=-1).long()
    last = responses.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    eos = torch.as_tensor(list(eos_token_ids), dtype=responses.dtype, device=responses.device)
    ends_with_eos = torch.isin(last, eos) & (lengths > 0)
    return (lengths >= rollout_max_tokens) & ~ends_with_eos


def filter_overlong(response_mask: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """The loss mask without truncated responses (``rl_config.overlong_filtering``).

    Args:
        response_mask: [B, R].
        truncated: bool [B] from ``truncated_responses``.

    Returns:
        [B, R], same dtype: rows of truncated responses zeroed. Compute the global token /
        sequence counts of ``loss_aggregation`` from this mask, so filtered tokens do not count.
        Metric: ``response/overlong_filtered_frac`` = ``truncated.float().mean()``.
    """
    return response_mask * (~truncated).unsqueeze(-1).to(response_mask.dtype)
