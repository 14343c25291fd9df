"""Rank body for test_logits.py: many (model, layout) cases in one spawned 2-process group.

Every case re-initialises torch.distributed and Megatron's parallel state on a fresh port (a
peer must never read the previous store's keys). World size 2 covers TP=2, PP=2, EP=2 and, as
two data-parallel replicas, TP=PP=EP=1.
"""

from __future__ import annotations

import os

import torch

from mindspeed_rl.checkpoint.logits_check import MegatronLogitsCase, megatron_rank_logits


def run_cases(
    rank: int, world_size: int, cases: list[tuple[str, MegatronLogitsCase]]
) -> dict[str, torch.Tensor]:
    base_port = int(os.environ["MASTER_PORT"])
    results = {}
    for i, (label, case) in enumerate(cases):
        logits = megatron_rank_logits(rank, world_size, case, base_port + 1 + i)
        if logits is not None:
            results[label] = logits
    return results
