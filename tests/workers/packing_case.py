"""Rank bodies for test_packing_equality.py: one actor scores and trains the same rows padded,
trimmed to each micro-batch and packed (THD), at several layouts."""

from __future__ import annotations

import dataclasses

import torch

from mindspeed_rl.config.schema import MegatronConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed
from tests.distributed_harness import rendezvous
from tests.workers.actor_case import BATCH, MODEL, PROMPT, RESPONSE, mini_batch

LAYOUTS = {
    "tp1": (ParallelLayout(), False),
    "tp2_sp": (ParallelLayout(tensor_model_parallel_size=2), True),
    "pp2": (ParallelLayout(pipeline_model_parallel_size=2), False),
    "dp2": (ParallelLayout(), False),
}


def _one_layout(name: str, world_size: int, run_index: int) -> dict:
    from megatron.core import parallel_state as ps

    from mindspeed_rl.workers.actor import MegatronActor, UpdateBatch
    from mindspeed_rl.workers.forward_pass import forward_log_probs
    from mindspeed_rl.workers.rows import to_megatron_rows

    layout, sequence_parallel = LAYOUTS[name]
    init_distributed(layout, seed=5, init_method=rendezvous(f"packing{run_index}"))
    try:
        rl = RLConfig(
            actor_resource={"num_npus": world_size}, n_samples_per_prompt=2,
            max_prompt_length=PROMPT, mini_batch_size=4, entropy_coeff=0.01,
        )  # fmt: skip
        actor_cfg = MegatronConfig(
            model="tiny", global_batch_size=4, seq_length=32, train_iters=1, lr=1e-3,
            tensor_model_parallel_size=layout.tensor_model_parallel_size,
            pipeline_model_parallel_size=layout.pipeline_model_parallel_size,
            sequence_parallel=sequence_parallel,
        )  # fmt: skip
        actor = MegatronActor(MODEL, actor_cfg, rl, layout, total_optimizer_steps=1,
                              temperature=0.7)  # fmt: skip
        # trimmed and packed micro-batches differ in length: the pipeline sends shapes first
        actor.module.config.variable_seq_lengths = layout.pipeline_model_parallel_size > 1
        data = mini_batch()
        rows = to_megatron_rows(
            data["prompts"], data["prompt_mask"], data["responses"], data["response_mask"], 0,
            length=PROMPT + RESPONSE,
        )  # fmt: skip
        dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
        share = torch.arange(dp_rank * BATCH // dp, (dp_rank + 1) * BATCH // dp)
        batch = UpdateBatch(
            rows.select(share), data["response_mask"][share], data["advantages"][share],
            data["old_log_probs"][share],
        )  # fmt: skip
        rows_per_rank = len(share)
        micro = [1, rows_per_rank - 1]  # uneven, as token-budget micro-batches are
        out = {"mask": batch.loss_mask.bool()}
        for mode in ("padded", "trimmed", "packed"):
            actor.micro_layout = dataclasses.replace(actor.micro_layout, mode=mode)
            log_probs = actor.compute_log_prob(batch.rows, micro)
            # the reference model's pass: the same function on a bare GPTModel (no DDP)
            reference = forward_log_probs(
                actor.module, actor.device, 0.7, batch.rows, rows_per_rank, actor.micro_layout
            )
            actor.zero_grad()
            metrics = actor.backward_mini_batch(batch, micro)
            grads = {n: p.main_grad.detach().clone() for n, p in actor.module.named_parameters()}
            out[mode] = {"log_probs": log_probs, "reference": reference, "grads": grads,
                         "metrics": metrics}  # fmt: skip
        return out
    finally:
        destroy_distributed()


def run_world2(rank: int, world_size: int) -> dict:
    return {name: _one_layout(name, 2, i) for i, name in enumerate(("tp2_sp", "pp2", "dp2"))}


def run_world1(rank: int, world_size: int) -> dict:
    return {"tp1": _one_layout("tp1", 1, 10)}
