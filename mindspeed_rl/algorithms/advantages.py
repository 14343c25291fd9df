"""Outcome rewards on tokens, and group-normalized advantages (``adv_estimator: group_norm``).

GRPO (Shao et al. 2024, arXiv:2402.03300) / DAPO: the n samples of one prompt form a group (same
``uid``); a sample's advantage is its reward minus the group mean, divided by the group's standard
deviation (Bessel-corrected, ``torch.std``) when ``norm_adv_by_std`` is on (Dr. GRPO, Liu et al.
2025, turns it off). The advantage is the same for every token of the response.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

ADV_ESTIMATORS = ("group_norm",)
# Added to the standard deviation so a zero-variance group gets advantage 0, not 0/0 (verl's
# value). Dynamic sampling removes such groups anyway when it is on.
GROUP_NORM_EPSILON = 1e-6


def place_at_last_token(sequence_values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Put one value per response on its last valid token (``token_level_scores`` / ``_rewards``).

    Args:
        sequence_values: [B] per-response reward.
        response_mask: [B, R], 1 on generated tokens; right-padded, so the last valid token is at
            ``sum(mask) - 1``.

    Returns:
        float32 [B, R], zero except at each last valid token. An empty response (no valid token)
        gets an all-zero row: there is no token to credit and it contributes nothing to the loss;
        use ``sequence_values`` directly (as ``group_norm_advantages`` does) for its reward.
    """
    lengths = response_mask.sum(dim=-1).long()
    out = torch.zeros(response_mask.shape, dtype=torch.float32, device=response_mask.device)
    rows = torch.nonzero(lengths > 0).squeeze(-1)
    out[rows, lengths[rows] - 1] = sequence_values[rows].to(torch.float32)
    return out


def group_ids(uids: Sequence[Hashable]) -> tuple[torch.Tensor, int]:
    """Dense group index per sample, numbered by first appearance: (int64 [B], number of groups)."""
    index: dict[Hashable, int] = {}
    ids = [index.setdefault(uid, len(index)) for uid in uids]
    return torch.tensor(ids, dtype=torch.long), len(index)


def group_norm_advantages(
    scores: torch.Tensor,
    uids: Sequence[Hashable],
    norm_adv_by_std: bool = True,
    epsilon: float = GROUP_NORM_EPSILON,
) -> torch.Tensor:
    """GRPO outcome advantages, one per response.

    Args:
        scores: [B] per-response reward (rule score plus overlong penalty).
        uids: B group ids; samples of one prompt share one. Groups need not be contiguous.
        norm_adv_by_std: divide by the group std (``rl_config.norm_adv_by_std``).
        epsilon: added to the std.

    Returns:
        float32 [B]: ``(s - mean_g) / (std_g + epsilon)``, or ``s - mean_g`` without std
        normalization. A group of one has no baseline: its advantage is its score (mean taken as 0,
        std as 1, as in verl), so dynamic sampling's kept singletons still carry a signal.
    """
    if scores.dim() != 1 or scores.shape[0] != len(uids):
        raise ValueError(
            f"scores must be [B] with one uid per score, got {tuple(scores.shape)} "
            f"and {len(uids)} uids"
        )
    ids, num_groups = group_ids(uids)
    ids = ids.to(scores.device)
    values = scores.to(torch.float64)  # exact sums for the statistics
    counts = torch.zeros(num_groups, dtype=torch.float64, device=scores.device)
    counts.index_add_(0, ids, torch.ones_like(values))
    sums = torch.zeros_like(counts).index_add_(0, ids, values)
    means = sums / counts
    centered = values - means[ids]
    squares = torch.zeros_like(counts).index_add_(0, ids, centered * centered)
    stds = torch.sqrt(squares / (counts - 1).clamp(min=1))
    singleton = counts == 1
    means = torch.where(singleton, torch.zeros_like(means), means)
    stds = torch.where(singleton, torch.ones_like(stds), stds)
    advantages = values - means[ids]
    if norm_adv_by_std:
        advantages = advantages / (stds[ids] + epsilon)
    return advantages.to(torch.float32)


def broadcast_to_tokens(sequence_values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, R]: the value on every valid token, 0 on padding (the batch's ``advantages``)."""
    return sequence_values.to(torch.float32).unsqueeze(-1) * response_mask.to(torch.float32)
