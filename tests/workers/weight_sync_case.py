"""Rank body for test_weight_sync.py: a TP=2 Megatron actor syncs into the HF rollout engine."""

from __future__ import annotations

import torch
import transformers

from mindspeed_rl.config.schema import MegatronConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed

VOCAB = 96
HF_CONFIG = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-6,
)  # fmt: skip
PROMPTS = [[5, 9, 13, 2, 7, 31], [4, 8], [17, 3, 3, 40, 41]]


def _megatron_logits(actor, tokens: torch.Tensor) -> torch.Tensor:
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    from mindspeed_rl.workers.rows import MegatronRows

    rows = MegatronRows(tokens, torch.zeros(tokens.shape[0], dtype=torch.long), 1)
    with torch.no_grad():
        logits = actor.module(tokens, rows.position_ids(), rows.causal_mask())
    return gather_from_tensor_model_parallel_region(logits)[..., :VOCAB]


def run(rank: int, world_size: int) -> dict:
    from mindspeed_rl.models.hf_config import model_config_from_hf
    from mindspeed_rl.models.param_mapping import WeightMapping
    from mindspeed_rl.platform.host_gather import host_gather_for
    from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
    from mindspeed_rl.rollout.sampling import SamplingParams
    from mindspeed_rl.workers.actor import MegatronActor, UpdateBatch
    from mindspeed_rl.workers.rows import to_megatron_rows
    from mindspeed_rl.workers.weight_sync import iter_synced_blocks, iter_synced_weights

    layout = ParallelLayout(tensor_model_parallel_size=world_size)
    init_distributed(layout, seed=3)
    try:
        hf_config = transformers.Qwen2Config(**HF_CONFIG)
        info = model_config_from_hf(hf_config.to_dict(), tensor_parallel_size=world_size)
        rl = RLConfig(
            actor_resource={"num_npus": world_size}, n_samples_per_prompt=2, max_prompt_length=8,
            mini_batch_size=3,
        )  # fmt: skip
        actor_cfg = MegatronConfig(
            model="tiny", global_batch_size=3, seq_length=32, train_iters=1, lr=1e-2
        )
        temperature = 0.7
        actor = MegatronActor(info.model, actor_cfg, rl, layout, 1, temperature=temperature)
        torch.manual_seed(100)  # the engine starts from other (random) weights than the actor
        engine = HFRolloutEngine(
            transformers.Qwen2ForCausalLM(hf_config), eos_token_ids=[VOCAB - 1], pad_token_id=0
        )
        mapping = WeightMapping(info.model, VOCAB, layout)
        probe = torch.tensor([[5, 9, 13, 2, 7, 31, 60, 61]])
        result = {
            "before": (engine.model(probe).logits - _megatron_logits(actor, probe))
            .abs()
            .max()
            .item()
        }

        loaded = engine.load_weights(iter_synced_weights(actor.module, mapping), version=1)
        result["loaded"] = loaded
        result["n_hf_params"] = len(dict(engine.model.named_parameters()))
        with torch.no_grad():
            result["synced"] = (
                (engine.model(probe).logits - _megatron_logits(actor, probe)).abs().max().item()
            )

        def rollout_rows(seed: int):
            """Sampled rollouts of PROMPTS (different lengths) as the actor's rows."""
            out = engine.generate(
                PROMPTS, SamplingParams(n=2, temperature=temperature, max_tokens=6, seed=seed)
            )
            prompts = torch.zeros(len(out.prompt_index), 6, dtype=torch.long)
            prompt_mask = torch.zeros_like(prompts)
            for row, p in enumerate(out.prompt_index):
                prompts[row, 6 - len(PROMPTS[p]) :] = torch.tensor(PROMPTS[p])
                prompt_mask[row, 6 - len(PROMPTS[p]) :] = 1
            rows = to_megatron_rows(prompts, prompt_mask, out.responses, out.response_mask, 0)
            return out, rows, out.response_mask.bool()

        # rollout log-probs vs the actor's recomputation, prompts of different lengths
        out, rows, mask = rollout_rows(seed=1)
        recomputed = actor.compute_log_prob(rows, 2)
        result["logprob_mean_abs_diff"] = (
            (recomputed - out.rollout_log_probs)[mask].abs().mean().item()
        )

        # one optimizer step, re-sync: the engine follows the new weights
        advantages = torch.randn(len(rows.tokens), 1, generator=torch.Generator().manual_seed(0))
        batch = UpdateBatch(rows, out.response_mask, advantages.expand_as(recomputed).clone(), None)
        actor.zero_grad()
        actor.backward_mini_batch(batch, 3)
        ok, _ = actor.step()
        result["step_ok"] = ok
        # the update moves log-probs in the direction of the advantages
        after = actor.compute_log_prob(rows, 2)
        change = ((after - recomputed) * mask).sum(-1) / mask.sum(-1)
        result["direction"] = float((change * advantages.squeeze(-1)).sum())
        with torch.no_grad():
            result["stale"] = (
                (engine.model(probe).logits - _megatron_logits(actor, probe)).abs().max().item()
            )
        # the worker's path: shards through shared memory, blocks straight into the engine --
        # the same bytes as gloo's all-gather and whole tensors
        from megatron.core import parallel_state

        tp_gather = host_gather_for(parallel_state.get_tensor_model_parallel_group())
        result["shared_memory"] = tp_gather is not None
        engine.load_weight_blocks(iter_synced_blocks(actor.module, mapping, tp_gather), version=2)
        with torch.no_grad():
            result["resynced"] = (
                (engine.model(probe).logits - _megatron_logits(actor, probe)).abs().max().item()
            )
        result["version"] = engine.weight_version
        through_blocks = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
        engine.load_weights(iter_synced_weights(actor.module, mapping), version=3)
        result["paths_equal"] = all(
            torch.equal(through_blocks[n], p) for n, p in engine.model.named_parameters()
        )

        # a checkpoint with a padded vocabulary (128 rows for 96 ids: rank 1 holds the 32
        # padding rows, randomly initialised here): the padding stays out of the softmax
        padded_info = model_config_from_hf(
            hf_config.to_dict(), tensor_parallel_size=world_size, make_vocab_size_divisible_by=64
        )
        padded = MegatronActor(padded_info.model, actor_cfg, rl, layout, 1,
                               temperature=temperature, vocab_size=VOCAB)  # fmt: skip
        padded_mapping = WeightMapping(padded_info.model, VOCAB, layout)
        engine.load_weights(iter_synced_weights(padded.module, padded_mapping), version=4)
        out, rows, mask = rollout_rows(seed=2)
        diff = (padded.compute_log_prob(rows, 2) - out.rollout_log_probs)[mask].abs().mean()
        result["padded_vocab_diff"] = diff.item()
        padded.module.output_layer._forward_hooks.clear()  # the same weights, unmasked
        unmasked = (padded.compute_log_prob(rows, 2) - out.rollout_log_probs)[mask]
        result["unmasked_padded_vocab_diff"] = unmasked.abs().mean().item()
        return result
    finally:
        destroy_distributed()
