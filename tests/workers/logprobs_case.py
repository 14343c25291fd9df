"""Rank body for test_logprobs.py: vocab-parallel log-probs / entropy vs the full vocabulary."""

import torch

from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed


def run(rank: int, world_size: int) -> dict:
    init_distributed(ParallelLayout(tensor_model_parallel_size=world_size), seed=1)
    try:
        from mindspeed_rl.workers.logprobs import token_log_probs

        g = torch.Generator().manual_seed(0)
        full = torch.randn(3, 5, 22, generator=g) * 3
        labels = torch.randint(0, 22, (3, 5), generator=g)
        weights = torch.randn(3, 5, generator=g)
        out = {}
        for temperature in (1.0, 0.7):
            local = full.chunk(world_size, dim=-1)[rank].clone().requires_grad_(True)
            lp, ent = token_log_probs(local, labels, temperature, with_entropy=True, chunk_tokens=4)
            ((lp * weights).sum() + ent.sum()).backward()

            ref_full = full.clone().requires_grad_(True)
            logp = torch.log_softmax(ref_full / temperature, -1)
            ref_lp = logp.gather(-1, labels[..., None]).squeeze(-1)
            ref_ent = -(logp.exp() * logp).sum(-1)
            ((ref_lp * weights).sum() + ref_ent.sum()).backward()
            out[temperature] = {
                "lp": (lp - ref_lp).abs().max().item(),
                "entropy": (ent - ref_ent).abs().max().item(),
                "grad": (local.grad - ref_full.grad.chunk(world_size, -1)[rank]).abs().max().item(),
            }
        return out
    finally:
        destroy_distributed()
