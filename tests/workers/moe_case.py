"""Rank body for test_moe_end_to_end.py: a Qwen3-MoE actor at TP 2, EP 2 with sequence
parallelism on 4 gloo ranks, loaded from a grouped-GEMM conversion, trained, synced into the HF
engine (transformers 5's fused experts) and saved for the export back to Hugging Face."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from mindspeed_rl.config.schema import MegatronConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed
from tests.workers import actor_case

TP, EP = 2, 2
STEPS = 2


def convert_grouped(hf_dir: Path, mg_dir: Path, extend: bool = False) -> int:
    """HF -> mcore at TP, EP with the recipe's grouped-GEMM expert layout (the CLI's exit code);
    ``extend``: MindSpeed's moe_tp_extend_ep layout, as the Ascend 30B-A3B recipe trains."""
    from cli.convert_ckpt import main

    return main([
        "--load-model-type", "hf", "--save-model-type", "mg", "--load-dir", str(hf_dir),
        "--save-dir", str(mg_dir), "--target-tensor-parallel-size", str(TP),
        "--target-expert-parallel-size", str(EP),
        # no padded vocabulary rows: the engine's softmax runs over the HF vocabulary
        "--make-vocab-size-divisible-by", "1", "--moe-grouped-gemm",
        *(["--moe-tp-extend-ep"] if extend else []),
    ])  # fmt: skip


def _rows(vocab: int):
    from mindspeed_rl.workers.rows import to_megatron_rows

    data = actor_case.mini_batch()
    rows = to_megatron_rows(
        data["prompts"] % vocab, data["prompt_mask"], data["responses"] % vocab,
        data["response_mask"], 0, length=actor_case.PROMPT + actor_case.RESPONSE,
    )  # fmt: skip
    return data, rows


def _engine_log_probs(engine, rows) -> torch.Tensor:
    with torch.no_grad():
        logp = engine.model(rows.tokens).logits.float().log_softmax(-1)
    return rows.response_values(logp[:, :-1].gather(-1, rows.tokens[:, 1:, None])[..., 0])


def run(
    rank: int,
    world_size: int,
    hf_dir: Path,
    mg_dir: Path,
    save_dir: Path,
    tp: int = TP,
    ep: int = EP,
    extend: bool = False,
) -> dict:
    from mindspeed_rl.checkpoint import mcore_layout
    from mindspeed_rl.checkpoint.mcore_to_hf import plan_mcore_to_hf
    from mindspeed_rl.checkpoint.training_state import (
        finalize,
        hf_config_record,
        load_rank,
        save_rank,
    )
    from mindspeed_rl.models.param_mapping import WeightMapping
    from mindspeed_rl.models.tensor_layouts import concat_blocks
    from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
    from mindspeed_rl.workers.actor import MegatronActor, UpdateBatch
    from mindspeed_rl.workers.weight_sync import iter_synced_blocks

    layout = ParallelLayout(tp, 1, ep, moe_tp_extend_ep=extend)
    init_distributed(layout, seed=3)
    try:
        plan = plan_mcore_to_hf(mg_dir)
        model = plan.mapping.model  # as converted: moe_grouped_gemm
        vocab = plan.hf_config["vocab_size"]
        rl = RLConfig(
            actor_resource={"num_npus": world_size}, n_samples_per_prompt=2,
            max_prompt_length=actor_case.PROMPT, mini_batch_size=4, clip_higher_enable=True,
            entropy_coeff=0.01,
        )  # fmt: skip
        cfg = MegatronConfig(
            model="tiny", global_batch_size=4, seq_length=32, train_iters=STEPS, lr=1e-2,
            tensor_model_parallel_size=tp, expert_model_parallel_size=ep, sequence_parallel=tp > 1,
            moe_tp_extend_ep=extend,
        )  # fmt: skip
        actor = MegatronActor(model, cfg, rl, layout, total_optimizer_steps=STEPS, initialize=False)
        shard_layout = mcore_layout.ShardLayout(tp, 1, ep, moe_tp_extend_ep=extend)
        position = mcore_layout.rank_position(shard_layout)
        load_rank(actor, mg_dir, "release", shard_layout, position, False, False)

        data, rows = _rows(vocab)
        mask = data["response_mask"].bool()
        hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
        engine = HFRolloutEngine(hf, eos_token_ids=[vocab - 1], pad_token_id=0)
        before = actor.compute_log_prob(rows, 4)  # the converted weights, no training yet
        out = {"loaded_diff": float((before - _engine_log_probs(engine, rows))[mask].abs().max())}

        batch = UpdateBatch(rows, data["response_mask"], data["advantages"], data["old_log_probs"])
        out["losses"] = []
        for _ in range(STEPS):
            actor.zero_grad()
            out["losses"].append(actor.backward_mini_batch(batch, 4)["pg_loss"])
            assert actor.step()[0]
        out["dispatcher"] = actor.module.config.moe_token_dispatcher_type
        out["sequence_parallel"] = actor.module.config.sequence_parallel
        config = actor.module.config
        out["expert_sizes"] = (
            config.expert_tensor_parallel_size,
            config.expert_model_parallel_size,
        )
        moe = next(m for m in actor.module.modules() if hasattr(m, "local_expert_indices"))
        out["local_expert_indices"] = list(moe.local_expert_indices)
        out["position"] = position

        synced = {}
        mapping = WeightMapping(actor.model_config, vocab, layout)

        def remember(items):
            for name, blocks in items:
                synced[name] = concat_blocks(blocks).clone()  # the blocks' buffers are reused
                yield name, blocks

        # the integrated worker's path: TP row blocks straight into the (fused) parameters
        engine.load_weight_blocks(remember(iter_synced_blocks(actor.module, mapping)), version=1)
        trained = actor.compute_log_prob(rows, 4)
        out["trained_moved"] = float((trained - before)[mask].abs().max())
        out["sync_diff"] = float((trained - _engine_log_probs(engine, rows))[mask].abs().max())
        out["synced"] = synced if rank == 0 else {}

        save_rank(
            actor, save_dir, STEPS, shard_layout, position, {}, save_optim=False,
            save_rng=False, hf_config=hf_config_record(None, hf_dir),
        )  # fmt: skip
        torch.distributed.barrier()
        if rank == 0:
            finalize(save_dir, STEPS, {})
        torch.distributed.barrier()
        return out
    finally:
        destroy_distributed()
