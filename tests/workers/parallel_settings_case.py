"""Rank body for test_parallel_settings.py: TP 2 with sequence parallelism or activation
recompute trains exactly as TP 2 without them, and the SP actor syncs into the HF engine."""

from __future__ import annotations

import torch
import transformers

from mindspeed_rl.config.schema import MegatronConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed
from tests.workers import actor_case
from tests.workers.weight_sync_case import HF_CONFIG, VOCAB

STEPS = 3
VARIANTS = {
    "baseline": {},
    "sequence_parallel": {"sequence_parallel": True},
    "full_uniform": {
        "recompute_granularity": "full",
        "recompute_method": "uniform",
        "recompute_num_layers": 1,
    },
    "full_block": {
        "recompute_granularity": "full",
        "recompute_method": "block",
        "recompute_num_layers": 1,
    },
    "selective": {"recompute_granularity": "selective"},
    "sp_and_full": {
        "sequence_parallel": True,
        "recompute_granularity": "full",
        "recompute_method": "uniform",
        "recompute_num_layers": 2,
    },
}


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _train(model, layout, settings: dict) -> dict:
    from megatron.core import tensor_parallel

    from mindspeed_rl.workers.actor import MegatronActor, UpdateBatch
    from mindspeed_rl.workers.rows import to_megatron_rows

    torch.manual_seed(11)  # same initial weights for every variant
    tensor_parallel.model_parallel_cuda_manual_seed(11)
    rl = RLConfig(
        actor_resource={"num_npus": 2}, n_samples_per_prompt=2, max_prompt_length=8,
        mini_batch_size=4, clip_higher_enable=True, entropy_coeff=0.01,
    )  # fmt: skip
    cfg = MegatronConfig(
        model="tiny", global_batch_size=4, seq_length=32, train_iters=STEPS, lr=1e-2,
        tensor_model_parallel_size=2, **settings,
    )  # fmt: skip
    actor = MegatronActor(model, cfg, rl, layout, total_optimizer_steps=STEPS, temperature=0.7)
    layer = actor.module.decoder.layers[0]
    layer_calls = _count_calls(layer)
    attention_calls = _count_calls(layer.self_attention.core_attention)
    data = actor_case.mini_batch()
    rows = to_megatron_rows(
        data["prompts"], data["prompt_mask"], data["responses"] % VOCAB, data["response_mask"], 0,
        length=actor_case.PROMPT + actor_case.RESPONSE,
    )  # fmt: skip
    batch = UpdateBatch(rows, data["response_mask"], data["advantages"], data["old_log_probs"])
    losses, grads = [], []
    for _ in range(STEPS):
        actor.zero_grad()
        metrics = actor.backward_mini_batch(batch, 4)
        losses.append(metrics["pg_loss"])
        grads.append({n: p.main_grad.clone() for n, p in actor.module.named_parameters()})
        assert actor.step()[0]
    norms = [m for m in actor.module.modules() if type(m).__name__ == "RMSNorm"]
    return {
        "actor": actor,
        "rows": rows,
        "losses": losses,
        "grads": grads,
        # forward calls per training micro-batch (2 micro-batches per step)
        "layer_calls": layer_calls[0] / (2 * STEPS),
        "attention_calls": attention_calls[0] / (2 * STEPS),
        "norms_marked": bool(norms) and all(n.weight.sequence_parallel for n in norms),
        "config": {k: getattr(actor.module.config, k) for k in settings},
    }


def _max_rel(a: dict, b: dict) -> float:
    """Largest gradient difference relative to the step's largest gradient. Not per tensor: a
    tensor whose gradients are ~1e-3 of the step's (the norms here) carries fp32 reduction-order
    noise that Adam's normalisation turns into ~2e-5 of its own scale by step 3 on
    megatron-core 0.12.3 (2e-8 absolute), while a wrong SP reduction (a norm's gradient missing
    its TP all-reduce) is ~1e-3 of the step's scale."""
    scale = max(float(t.abs().max()) for t in b.values())
    return max(float((a[k] - b[k]).abs().max()) for k in b) / max(scale, 1e-12)


def run(rank: int, world_size: int) -> dict:
    from mindspeed_rl.models.hf_config import model_config_from_hf
    from mindspeed_rl.models.param_mapping import WeightMapping
    from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
    from mindspeed_rl.workers.weight_sync import iter_synced_weights

    layout = ParallelLayout(tensor_model_parallel_size=world_size)
    init_distributed(layout, seed=3)
    try:
        hf_config = transformers.Qwen2Config(**HF_CONFIG)
        model = model_config_from_hf(hf_config.to_dict(), tensor_parallel_size=world_size).model
        runs = {name: _train(model, layout, settings) for name, settings in VARIANTS.items()}
        base = runs["baseline"]
        out = {"odd_length": runs["baseline"]["rows"].tokens.shape[1] % 2 == 1}
        for name, result in runs.items():
            out[name] = {
                "loss_diff": max(abs(a - b) for a, b in zip(result["losses"], base["losses"])),
                "grad_rel": max(_max_rel(g, b) for g, b in zip(result["grads"], base["grads"])),
                "grad_scale": min(
                    sum(float(t.abs().sum()) for t in g.values()) for g in result["grads"]
                ),
                "layer_calls": result["layer_calls"],
                "attention_calls": result["attention_calls"],
                "norms_marked": result["norms_marked"],
                "config": result["config"],
            }
        # the trained SP actor's weights through the rollout weight sync
        actor = runs["sequence_parallel"]["actor"]
        engine = HFRolloutEngine(
            transformers.Qwen2ForCausalLM(hf_config), eos_token_ids=[VOCAB - 1], pad_token_id=0
        )
        engine.load_weights(
            iter_synced_weights(actor.module, WeightMapping(model, VOCAB, layout)), 1
        )
        rows = runs["sequence_parallel"]["rows"]
        with torch.no_grad():
            hf = engine.model(rows.tokens).logits.float().log_softmax(-1)
        hf_lp = rows.response_values(hf[:, :-1].gather(-1, rows.tokens[:, 1:, None])[..., 0])
        actor.temperature = 1.0
        mega_lp = actor.compute_log_prob(rows, 4)
        mask = actor_case.mini_batch()["response_mask"].bool()
        out["sync_logprob_diff"] = float((hf_lp - mega_lp)[mask].abs().max())
        return out
    finally:
        destroy_distributed()
