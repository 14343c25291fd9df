"""Rank body for test_uneven_pipeline.py: an actor built and loaded in a given pipeline split
scores a mini-batch and syncs its weights out as Hugging Face tensors."""

from __future__ import annotations

from pathlib import Path

from mindspeed_rl.config.schema import MegatronConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed
from tests.distributed_harness import rendezvous
from tests.workers.actor_case import BATCH, PROMPT, RESPONSE, mini_batch


def run(rank: int, world_size: int, mcore_dir: str, run_index: int) -> dict:
    from megatron.core import parallel_state as ps

    from mindspeed_rl.checkpoint.mcore_to_hf import plan_mcore_to_hf
    from mindspeed_rl.checkpoint.training_state import load_model
    from mindspeed_rl.models.param_mapping import WeightMapping
    from mindspeed_rl.workers.actor import MegatronActor
    from mindspeed_rl.workers.rows import to_megatron_rows
    from mindspeed_rl.workers.weight_sync import iter_synced_weights

    plan = plan_mcore_to_hf(Path(mcore_dir))
    shards = plan.files.layout
    layout = ParallelLayout(pipeline_model_parallel_size=shards.pp,
                            pipeline_layers=shards.pipeline_layers)  # fmt: skip
    init_distributed(layout, seed=5, init_method=rendezvous(f"uneven{run_index}"))
    try:
        model = plan.mapping.model
        rl = RLConfig(actor_resource={"num_npus": world_size}, n_samples_per_prompt=2,
                      max_prompt_length=PROMPT, mini_batch_size=4)  # fmt: skip
        actor_cfg = MegatronConfig(
            model="tiny", global_batch_size=4, seq_length=32, train_iters=1,
            pipeline_model_parallel_size=shards.pp,
            num_layer_list=",".join(map(str, shards.pipeline_layers or ())) or None,
        )  # fmt: skip
        actor = MegatronActor(model, actor_cfg, rl, layout, total_optimizer_steps=1,
                              temperature=0.7, initialize=False)  # fmt: skip
        pp_rank = ps.get_pipeline_model_parallel_rank()
        load_model(actor.module, mcore_dir, plan.files.iteration, shards, (0, pp_rank, 0))
        data = mini_batch()
        rows = to_megatron_rows(
            data["prompts"], data["prompt_mask"], data["responses"], data["response_mask"], 0,
            length=PROMPT + RESPONSE,
        )  # fmt: skip
        log_probs = actor.compute_log_prob(rows, [BATCH // 2, BATCH // 2])
        mapping = WeightMapping(model, plan.mapping.vocab_size, layout)
        synced = {
            name: tensor.clone() for name, tensor in iter_synced_weights(actor.module, mapping)
        }
        layers = [len(actor.module.decoder.layers)]
        numbers = [layer.layer_number for layer in actor.module.decoder.layers]
        return {"log_probs": log_probs, "synced": synced, "layers": layers, "numbers": numbers,
                "mask": data["response_mask"].bool()}  # fmt: skip
    finally:
        destroy_distributed()
