"""Rank body for test_vllm_moe_sync.py: a Qwen3-MoE actor at TP 2, EP 2 with sequence
parallelism (4 gloo ranks), loaded from a grouped-GEMM conversion, pushes its weights into real
vLLM engines (``external_launcher``: two engines of infer TP 2, every expert split over an
engine's 2 ranks) that started from dummy weights. After each push vLLM's log-probs of its own greedy
responses are compared with the actor's and with transformers given the synced tensors; between
the pushes two optimizer steps move the actor, and the engine, not yet synced, is scored too."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from mindspeed_rl.config.schema import MegatronConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed
from tests.workers import actor_case, moe_case

TP, EP = moe_case.TP, moe_case.EP  # the layout convert_grouped writes
INFER_TP = 2  # vLLM's expert parallelism does not run on CPU (docs/rollout.md): experts TP-split
STEPS = 2
PROMPTS = [[5, 9, 13, 2, 7, 31], [4, 8], [17, 3, 3, 40, 41], [60, 61, 62]]
MAX_TOKENS = 8


def _rows(out):
    """vLLM's prompts + responses as Megatron rows (each row from position 0)."""
    from mindspeed_rl.workers.rows import MegatronRows

    lengths = out.response_lengths.tolist()
    sequences = [
        p + out.responses[i, :n].tolist() for i, (p, n) in enumerate(zip(PROMPTS, lengths))
    ]
    tokens = torch.zeros((len(sequences), max(map(len, sequences))), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        tokens[i, : len(sequence)] = torch.tensor(sequence)
    return MegatronRows(
        tokens, torch.tensor([len(p) for p in PROMPTS]), out.responses.shape[1],
        torch.tensor([len(s) for s in sequences]),
    )  # fmt: skip


def _scores(engine, actor, hf, pairs) -> dict:
    """Greedy responses of ``engine``; the max |diff| of its log-probs against the actor's and
    (when ``pairs`` are given) against transformers holding them."""
    from mindspeed_rl.rollout.sampling import SamplingParams

    out = engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))
    rows, mask = _rows(out), out.response_mask.bool()
    scores = {"tokens": int(mask.sum())}
    actor_lp = actor.compute_log_prob(rows, len(PROMPTS))
    scores["actor_diff"] = float((actor_lp - out.rollout_log_probs)[mask].abs().max())
    if pairs is not None:
        hf.load_weights(pairs, version=0)
        hf_lp = moe_case._engine_log_probs(hf, rows)
        scores["hf_diff"] = float((hf_lp - out.rollout_log_probs)[mask].abs().max())
    return scores


def run(rank: int, world_size: int, hf_dir: Path, mg_dir: Path, extend: bool = False) -> dict:
    """``extend``: the actor and its shards in MindSpeed's moe_tp_extend_ep expert layout."""
    from mindspeed_rl.checkpoint import mcore_layout
    from mindspeed_rl.checkpoint.mcore_to_hf import plan_mcore_to_hf
    from mindspeed_rl.checkpoint.training_state import load_rank
    from mindspeed_rl.models.param_mapping import WeightMapping
    from mindspeed_rl.rollout.base import eos_token_ids_of
    from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
    from mindspeed_rl.rollout.vllm_engine import VLLMRolloutEngine
    from mindspeed_rl.workers.actor import MegatronActor, UpdateBatch
    from mindspeed_rl.workers.weight_sync import iter_synced_weights
    from tests.rollout.vllm_case import generate_config

    layout = ParallelLayout(TP, 1, EP, moe_tp_extend_ep=extend)
    init_distributed(layout, seed=3)
    try:
        plan = plan_mcore_to_hf(mg_dir)
        vocab = plan.hf_config["vocab_size"]
        rl = RLConfig(
            actor_resource={"num_npus": world_size}, n_samples_per_prompt=2,
            max_prompt_length=actor_case.PROMPT, mini_batch_size=4, clip_higher_enable=True,
        )  # fmt: skip
        cfg = MegatronConfig(
            model="tiny", global_batch_size=4, seq_length=32, train_iters=STEPS, lr=1e-2,
            tensor_model_parallel_size=TP, expert_model_parallel_size=EP, sequence_parallel=True,
            moe_tp_extend_ep=extend,
        )  # fmt: skip
        actor = MegatronActor(
            plan.mapping.model, cfg, rl, layout, total_optimizer_steps=STEPS, initialize=False,
            vocab_size=vocab,
        )  # fmt: skip
        shard_layout = mcore_layout.ShardLayout(TP, 1, EP, moe_tp_extend_ep=extend)
        position = mcore_layout.rank_position(shard_layout)
        load_rank(actor, mg_dir, "release", shard_layout, position, False, False)
        mapping = WeightMapping(actor.model_config, vocab, layout)
        hf_config = transformers.AutoConfig.from_pretrained(hf_dir)
        eos, pad = eos_token_ids_of(hf_dir), hf_config.pad_token_id
        hf = HFRolloutEngine(transformers.AutoModelForCausalLM.from_config(hf_config), eos, pad)
        engine = VLLMRolloutEngine(
            generate_config(infer_tensor_parallel_size=INFER_TP),
            str(hf_dir), None, eos, pad, seed=0, device_type="cpu",
        )  # fmt: skip
        out = {"dispatcher": actor.module.config.moe_token_dispatcher_type}

        pairs = list(iter_synced_weights(actor.module, mapping))
        out["loaded"], out["n_pairs"] = engine.load_weights(pairs, version=1), len(pairs)
        out["converted"] = _scores(engine, actor, hf, pairs)

        data, rows = moe_case._rows(vocab)
        batch = UpdateBatch(rows, data["response_mask"], data["advantages"], data["old_log_probs"])
        for _ in range(STEPS):
            actor.zero_grad()
            actor.backward_mini_batch(batch, 4)
            assert actor.step()[0]
        out["stale"] = _scores(engine, actor, hf, None)  # the engine still runs version 1

        pairs = list(iter_synced_weights(actor.module, mapping))
        engine.load_weights(pairs, version=2)
        out["trained"] = _scores(engine, actor, hf, pairs)
        out["version"] = engine.weight_version
        return out
    finally:
        destroy_distributed()
