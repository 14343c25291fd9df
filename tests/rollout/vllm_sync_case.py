"""Rank body for test_vllm_weight_sync.py: a Megatron actor (TP 1 x DP 2, or TP 2) syncs into a
real vLLM engine of infer TP 2 (both ranks, gloo, ``external_launcher``) that started from dummy
weights; after each push vLLM's greedy outputs and log-probs equal an HF engine given the same
synced tensors."""

from __future__ import annotations

import torch
import transformers

from mindspeed_rl.config.schema import MegatronConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed

PROMPTS = [[5, 9, 13, 2, 7, 31], [4, 8], [17, 3, 3, 40, 41]]


def _rows(out):
    return [out.responses[i, : int(n)].tolist() for i, n in enumerate(out.response_lengths)]


def _compare(engine, pairs, hf_config, eos, pad) -> dict:
    from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
    from mindspeed_rl.rollout.sampling import SamplingParams

    hf = HFRolloutEngine(transformers.AutoModelForCausalLM.from_config(hf_config), eos, pad)
    hf.load_weights(pairs, version=0)
    greedy = SamplingParams(temperature=0.0, max_tokens=10)
    ours, reference = engine.generate(PROMPTS, greedy), hf.generate(PROMPTS, greedy)
    mask = ours.response_mask.bool()
    same = _rows(ours) == _rows(reference)
    diff = (ours.rollout_log_probs - reference.rollout_log_probs)[mask].abs().mean().item()
    return {"greedy_equal": same, "log_prob_diff": diff if same else float("inf"),
            "rows": _rows(ours)}  # fmt: skip


def run(rank: int, world_size: int, model_dir: str, actor_tp: int) -> dict:
    from mindspeed_rl.models.hf_config import model_config_from_hf
    from mindspeed_rl.models.param_mapping import WeightMapping
    from mindspeed_rl.rollout.base import eos_token_ids_of
    from mindspeed_rl.rollout.vllm_engine import VLLMRolloutEngine
    from mindspeed_rl.workers.actor import MegatronActor
    from mindspeed_rl.workers.weight_sync import iter_synced_weights
    from tests.rollout.vllm_case import generate_config

    layout = ParallelLayout(tensor_model_parallel_size=actor_tp)
    init_distributed(layout, seed=3)
    try:
        hf_config = transformers.AutoConfig.from_pretrained(model_dir)
        info = model_config_from_hf(hf_config.to_dict(), tensor_parallel_size=actor_tp)
        rl = RLConfig(
            actor_resource={"num_npus": world_size}, n_samples_per_prompt=2, max_prompt_length=8,
            mini_batch_size=2,
        )  # fmt: skip
        actor_cfg = MegatronConfig(model="tiny", global_batch_size=2, seq_length=32, train_iters=1)
        actor = MegatronActor(info.model, actor_cfg, rl, layout, 1)
        mapping = WeightMapping(info.model, hf_config.vocab_size, layout)
        eos, pad = eos_token_ids_of(model_dir), hf_config.pad_token_id
        engine = VLLMRolloutEngine(
            generate_config(infer_tensor_parallel_size=2), model_dir, None, eos, pad, seed=0,
            device_type="cpu",
        )  # fmt: skip
        pairs = list(iter_synced_weights(actor.module, mapping))
        result = {"loaded": engine.load_weights(pairs, version=1), "n_pairs": len(pairs)}
        result["first"] = _compare(engine, pairs, hf_config, eos, pad)

        # a second push after the actor's weights moved (same noise on every rank, so replicated
        # tensors stay replicated): the engine follows
        torch.manual_seed(5)
        with torch.no_grad():
            for p in actor.module.parameters():
                p.add_(0.5 * p.std() * torch.randn_like(p))
        pairs = list(iter_synced_weights(actor.module, mapping))
        engine.load_weights(pairs, version=2)
        result["second"] = _compare(engine, pairs, hf_config, eos, pad)
        result["version"] = engine.weight_version
        return result
    finally:
        destroy_distributed()
