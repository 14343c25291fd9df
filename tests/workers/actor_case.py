"""Rank bodies for test_actor_gradients.py: one mini-batch's gradient in several splits."""

from __future__ import annotations

from pathlib import Path

import torch

from mindspeed_rl.config.schema import MegatronConfig, ModelConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed
from tests.distributed_harness import rendezvous

MODEL = ModelConfig(
    num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4,
    group_query_attention=True, num_query_groups=2, max_position_embeddings=64,
    padded_vocab_size=64, add_qkv_bias=True,
)  # fmt: skip
BATCH, PROMPT, RESPONSE = 8, 6, 7


def mini_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(42)
    prompt_len = torch.randint(2, PROMPT + 1, (BATCH,), generator=g)
    response_len = torch.randint(1, RESPONSE + 1, (BATCH,), generator=g)
    prompts = torch.randint(1, 64, (BATCH, PROMPT), generator=g)
    prompt_mask = (torch.arange(PROMPT) >= PROMPT - prompt_len[:, None]).long()  # left-padded
    responses = torch.randint(1, 64, (BATCH, RESPONSE), generator=g)
    response_mask = (torch.arange(RESPONSE) < response_len[:, None]).long()
    return {
        "prompts": prompts * prompt_mask,
        "prompt_mask": prompt_mask,
        "responses": responses * response_mask,
        "response_mask": response_mask,
        "advantages": torch.randn(BATCH, 1, generator=g).expand(BATCH, RESPONSE).clone(),
        "old_log_probs": -4.2 + 0.3 * torch.randn(BATCH, RESPONSE, generator=g),
    }


def _grads(dp_rank: int, dp: int, micro_batch_size: int | list[int], run_index: int) -> dict:
    from mindspeed_rl.workers.actor import MegatronActor, UpdateBatch
    from mindspeed_rl.workers.rows import to_megatron_rows

    init_distributed(ParallelLayout(), seed=5, init_method=rendezvous(f"grads{run_index}"))
    try:
        rl = RLConfig(
            actor_resource={"num_npus": dp}, n_samples_per_prompt=2, max_prompt_length=PROMPT,
            mini_batch_size=4, clip_higher_enable=True, entropy_coeff=0.01,
        )  # fmt: skip
        actor_cfg = MegatronConfig(
            model="tiny", global_batch_size=4, seq_length=32, train_iters=1, lr=1e-3
        )
        actor = MegatronActor(MODEL, actor_cfg, rl, ParallelLayout(), total_optimizer_steps=1,
                              temperature=0.7)  # fmt: skip
        data = mini_batch()
        rows = to_megatron_rows(
            data["prompts"], data["prompt_mask"], data["responses"], data["response_mask"], 0,
            length=PROMPT + RESPONSE,
        )  # fmt: skip
        share = slice(dp_rank * BATCH // dp, (dp_rank + 1) * BATCH // dp)
        from mindspeed_rl.workers.rows import MegatronRows

        batch = UpdateBatch(
            MegatronRows(rows.tokens[share], rows.response_start[share], RESPONSE),
            data["response_mask"][share],
            data["advantages"][share],
            data["old_log_probs"][share],
        )
        actor.zero_grad()
        metrics = actor.backward_mini_batch(batch, micro_batch_size)
        grads = {name: p.main_grad.detach().clone() for name, p in actor.module.named_parameters()}
        return {"grads": grads, "metrics": metrics}
    finally:
        destroy_distributed()


def run_dp1(rank: int, world_size: int) -> dict:
    return {
        "whole": _grads(0, 1, micro_batch_size=BATCH, run_index=0),
        "mbs1": _grads(0, 1, micro_batch_size=1, run_index=1),
        "uneven": _grads(0, 1, micro_batch_size=3, run_index=2),
    }


def run_dp2(rank: int, world_size: int) -> dict:
    return {
        "whole": _grads(rank, 2, micro_batch_size=BATCH // 2, run_index=0),
        "mbs1": _grads(rank, 2, micro_batch_size=1, run_index=1),
        # token-budget micro-batches: a different cut on each rank, the same count
        "planned": _grads(rank, 2, micro_batch_size=[1, 3] if rank == 0 else [3, 1], run_index=2),
    }


def run_offload(rank: int, world_size: int) -> dict:
    """Offload / reload keeps every parameter and optimizer state and frees the grad buffers."""
    from mindspeed_rl.workers.actor import MegatronActor, UpdateBatch
    from mindspeed_rl.workers.offload import TrainStateOffloader
    from mindspeed_rl.workers.rows import to_megatron_rows

    init_distributed(ParallelLayout(), seed=5)
    try:
        rl = RLConfig(actor_resource={"num_npus": 1}, n_samples_per_prompt=2,
                      max_prompt_length=PROMPT, mini_batch_size=4)  # fmt: skip
        cfg = MegatronConfig(model="tiny", global_batch_size=4, seq_length=32, train_iters=2,
                             lr=1e-2, use_distributed_optimizer=True)  # fmt: skip
        actor = MegatronActor(MODEL, cfg, rl, ParallelLayout(), total_optimizer_steps=2)
        data = mini_batch()
        rows = to_megatron_rows(data["prompts"], data["prompt_mask"], data["responses"],
                                data["response_mask"], 0)  # fmt: skip
        batch = UpdateBatch(rows, data["response_mask"], data["advantages"], None)

        def step():
            actor.zero_grad()
            actor.backward_mini_batch(batch, BATCH)
            return actor.step()

        step()
        offloader = TrainStateOffloader(actor.model, actor.optimizer, params=True, grads=True,
                                        optimizer_state=True)  # fmt: skip
        before = {k: v.clone() for k, v in actor.module.state_dict().items() if "_extra" not in k}
        offloader.offload()
        freed = [b.grad_data.untyped_storage().size() for b in actor.model.buffers]
        offloader.reload()
        after = {k: v for k, v in actor.module.state_dict().items() if "_extra" not in k}
        same = all(torch.equal(before[k], after[k]) for k in before)
        ok, _ = step()
        return {
            "freed": freed,
            "same": same,
            "step_ok": ok,
            "grad_restored": [b.grad_data.untyped_storage().size() for b in actor.model.buffers],
        }
    finally:
        destroy_distributed()


def run_bf16_weights_survive_a_step(rank: int, world_size: int) -> dict:
    """bf16 actor started from checkpoint weights without optimizer state: a zero-gradient step
    must keep the loaded weights (the fp32 main copy is refreshed from them)."""
    import tempfile

    from mindspeed_rl.checkpoint.mcore_layout import ShardLayout, save_shard, write_tracker
    from mindspeed_rl.checkpoint.training_state import load_rank
    from mindspeed_rl.workers.actor import MegatronActor, UpdateBatch
    from mindspeed_rl.workers.rows import to_megatron_rows

    init_distributed(ParallelLayout(), seed=5, init_method=rendezvous("bf16"))
    try:
        rl = RLConfig(actor_resource={"num_npus": 1}, n_samples_per_prompt=2,
                      max_prompt_length=PROMPT, mini_batch_size=4)  # fmt: skip
        cfg = MegatronConfig(model="tiny", global_batch_size=4, seq_length=32, train_iters=1,
                             lr=1e-2, bf16=True)  # fmt: skip
        actor = MegatronActor(MODEL, cfg, rl, ParallelLayout(), 1, params_dtype=torch.bfloat16)
        own = {k: v for k, v in actor.module.state_dict().items() if "_extra" not in k}
        loaded = {k: (v.float() + 0.5).to(v.dtype) for k, v in own.items()}
        with tempfile.TemporaryDirectory() as root:
            save_shard(
                Path(root) / "release" / "mp_rank_00" / "model_optim_rng.pt", loaded,
                ShardLayout(),
            )  # fmt: skip
            write_tracker(root, "release")
            load_rank(actor, root, "release", ShardLayout(), (0, 0, 0), False, False)
        data = mini_batch()
        rows = to_megatron_rows(data["prompts"], data["prompt_mask"], data["responses"],
                                data["response_mask"], 0)  # fmt: skip
        zero = torch.zeros_like(data["advantages"])
        actor.zero_grad()
        actor.backward_mini_batch(UpdateBatch(rows, data["response_mask"], zero, None), BATCH)
        ok, _ = actor.step()
        after = {k: v for k, v in actor.module.state_dict().items() if "_extra" not in k}
        return {"ok": ok, "kept": all(torch.equal(after[k], loaded[k]) for k in loaded)}
    finally:
        destroy_distributed()
