"""The mini-batch gradient does not depend on how the mini-batch is split.

A tiny shared-weight model (logits = x @ W) produces log-probs and entropy, and the full actor loss
(clip-higher, dual clip, TIS, entropy bonus, k3 KL) is aggregated with a global denominator. The
gradient of W over the whole mini-batch equals the sum of gradients over 4 uneven micro-batches,
and the sum over 2 simulated data-parallel ranks (each with 2 micro-batches; the gradient
all-reduce is a sum, the denominator all-reduce too). The mean of micro-batch means, the bug this
prevents, is checked to give a clearly different gradient, so the test can fail.
"""

from __future__ import annotations

import pytest
import torch

from mindspeed_rl.algorithms.loss_aggregation import LOSS_AGG_MODES, loss_denominator
from mindspeed_rl.algorithms.policy_loss import policy_loss

B, R, H, V = 16, 24, 8, 11
RTOL = 1e-6


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, R + 1, (B,), generator=g)
    lengths[0], lengths[1] = 0, R  # an empty response and a full one
    mask = (torch.arange(R) < lengths.unsqueeze(1)).float()
    noise = lambda scale: scale * torch.randn(B, R, generator=g)  # noqa: E731
    return {
        "x": torch.randn(B, R, H, generator=g),
        "tokens": torch.randint(0, V, (B, R), generator=g),
        "mask": mask,
        "advantages": torch.randn(B, 1, generator=g).expand(B, R) * mask,
        "old_shift": noise(0.3),  # old = current + shift, so ratios spread over the clip edges
        "ref_shift": noise(0.5),
        "rollout_shift": noise(0.2),
    }


def _loss(weight: torch.Tensor, rows: slice, batch: dict, mode: str, denominator) -> torch.Tensor:
    logits = batch["x"][rows] @ weight
    log_softmax = torch.log_softmax(logits, dim=-1)
    log_probs = log_softmax.gather(-1, batch["tokens"][rows].unsqueeze(-1)).squeeze(-1)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    old = log_probs.detach() + batch["old_shift"][rows]
    return policy_loss(
        log_probs,
        old,
        batch["advantages"][rows],
        batch["mask"][rows],
        loss_agg_mode=mode,
        global_denominator=denominator,
        global_tokens=batch["mask"].ne(0).sum(),  # every split covers the whole batch
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        clip_ratio_c=3.0,
        entropy=entropy,
        entropy_coeff=0.01,
        use_kl_loss=True,
        ref_log_probs=log_probs.detach() + batch["ref_shift"][rows],
        kl_penalty_kind="low_var_kl",
        kl_coef=0.1,
        rollout_log_probs=old + batch["rollout_shift"][rows],
        tis_imp_ratio_cap=2.0,
    ).loss


def _grad(weight0: torch.Tensor, splits: list[list[slice]], batch: dict, mode: str):
    """Sum of W gradients over ranks; each rank accumulates over its micro-batches."""
    mask = batch["mask"]
    # One all-reduce (SUM) of per-micro-batch denominators, as the trainer does per mini-batch.
    denominator = sum(loss_denominator(mask[mb], mode) for rank in splits for mb in rank)
    total = torch.zeros_like(weight0)
    for rank in splits:
        weight = weight0.clone().requires_grad_(True)  # each rank holds its own replica
        for micro_batch in rank:
            _loss(weight, micro_batch, batch, mode, denominator).backward()
        total += weight.grad  # the gradient all-reduce
    return total


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_is_independent_of_micro_batches_and_data_parallel_ranks(mode, seed):
    batch = _batch(seed)
    weight0 = torch.randn(H, V, generator=torch.Generator().manual_seed(100 + seed))
    whole = _grad(weight0, [[slice(0, B)]], batch, mode)
    uneven = _grad(weight0, [[slice(0, 1), slice(1, 8), slice(8, 11), slice(11, B)]], batch, mode)
    two_ranks = _grad(
        weight0, [[slice(0, 5), slice(5, 9)], [slice(9, 10), slice(10, B)]], batch, mode
    )
    assert whole.norm() > 0
    assert _rel(uneven, whole) <= RTOL
    assert _rel(two_ranks, whole) <= RTOL


def test_mean_of_micro_batch_means_gives_a_different_gradient():
    batch = _batch(0)
    weight0 = torch.randn(H, V, generator=torch.Generator().manual_seed(100))
    whole = _grad(weight0, [[slice(0, B)]], batch, "token-mean")
    micro_batches = [slice(0, 1), slice(1, 8), slice(8, 11), slice(11, B)]
    weight = weight0.clone().requires_grad_(True)
    for mb in micro_batches:  # each micro-batch normalized by its own token count, then averaged
        local = loss_denominator(batch["mask"][mb], "token-mean")
        (_loss(weight, mb, batch, "token-mean", local) / len(micro_batches)).backward()
    assert _rel(weight.grad, whole) > 1e-2
