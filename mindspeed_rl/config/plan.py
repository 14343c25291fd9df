"""The run plan derived from a validated config: what ``--dry-run`` prints next to the YAML."""

from __future__ import annotations

import dataclasses

from mindspeed_rl.config.checks import data_parallel_size, trained_prompts_per_iteration
from mindspeed_rl.config.schema import RunConfig


@dataclasses.dataclass(frozen=True)
class RunPlan:
    devices: int
    tensor_parallel: int
    pipeline_parallel: int
    expert_parallel: int
    expert_layout: str
    context_parallel: int
    data_parallel: int
    prompts_per_generation_batch: int
    samples_per_generation_batch: int
    prompts_trained_per_iteration: int
    samples_trained_per_iteration: int
    mini_batches_per_iteration: int
    optimizer_steps_per_iteration: int
    micro_batches_per_mini_batch_per_dp_rank: int | str
    rollout_tensor_parallel: int
    rollout_expert_parallel: int
    rollout_engines: int
    dynamic_sampling: str
    sequences: str
    micro_batches: str
    kl_loss: bool
    kl_in_reward: bool
    reference_model: str
    hccl_buffsize_mb: int | str  # HCCL_BUFFSIZE of the workers (platform/worker_env.py sets it)
    partial_rollout: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_plan(config: RunConfig) -> RunPlan:
    actor, rl, gen = config.actor, config.rl_config, config.generate_config
    dp = data_parallel_size(config)
    trained = trained_prompts_per_iteration(config)
    n = rl.n_samples_per_prompt
    mini_batches = trained // rl.mini_batch_size
    if rl.filter_groups_enable:
        limit = "no limit" if rl.filter_groups_max_batches == -1 else rl.filter_groups_max_batches
        dynamic = f"on: keep {trained} prompts, generation batches per iteration: {limit}"
    else:
        dynamic = "off"
    return RunPlan(
        devices=rl.actor_resource.num_npus,
        tensor_parallel=actor.tensor_model_parallel_size,
        pipeline_parallel=actor.pipeline_model_parallel_size,
        expert_parallel=actor.expert_model_parallel_size,
        expert_layout=_expert_layout(config),
        context_parallel=actor.context_parallel_size,
        data_parallel=dp,
        prompts_per_generation_batch=actor.global_batch_size,
        samples_per_generation_batch=actor.global_batch_size * n,
        prompts_trained_per_iteration=trained,
        samples_trained_per_iteration=trained * n,
        mini_batches_per_iteration=mini_batches,
        optimizer_steps_per_iteration=mini_batches * rl.epochs,
        micro_batches_per_mini_batch_per_dp_rank=(
            "by the token budget, per batch"
            if rl.use_dynamic_bsz
            else rl.mini_batch_size * n // (dp * actor.micro_batch_size)
        ),
        rollout_tensor_parallel=gen.infer_tensor_parallel_size,
        rollout_expert_parallel=gen.infer_expert_parallel_size,
        rollout_engines=rl.actor_resource.num_npus // gen.infer_tensor_parallel_size,
        dynamic_sampling=dynamic,
        sequences="packed (THD)" if rl.use_remove_padding else "padded",
        micro_batches=_micro_batches(config),
        kl_loss=rl.use_kl_loss,
        kl_in_reward=rl.use_kl_in_reward,
        reference_model=_reference(config),
        hccl_buffsize_mb=(
            rl.hccl_buffersize if rl.hccl_buffersize is not None else "platform default"
        ),
        partial_rollout=_partial_rollout(config),
    )


def _partial_rollout(config: RunConfig) -> str:
    rl = config.rl_config
    split = rl.partial_rollout_max_split
    if split <= 1:
        return "off"
    per_round = -(-rl.rollout_max_tokens // split)
    threshold = (
        f", a round ends once {rl.rollout_threshold_rate:.0%} of its samples ended"
        if rl.rollout_threshold_rate < 1
        else ""
    )
    tis = f"TIS cap {rl.tis_imp_ratio_cap}" if rl.tis_imp_ratio_cap > 0 else "no TIS correction"
    return (
        f"on: <= {per_round} new tokens per sample and round, every sample ends within {split} "
        f"rounds (policy age <= {split - 1}){threshold}; {tis}"
    )


def _expert_layout(config: RunConfig) -> str:
    actor, experts = config.actor, config.model.num_experts
    if not experts:
        return "dense (no experts)"
    tp, ep = actor.tensor_model_parallel_size, actor.expert_model_parallel_size
    if actor.moe_tp_extend_ep:
        return (
            f"moe_tp_extend_ep: {experts // (tp * ep)} whole experts per rank over TP x EP = "
            f"{tp * ep} ranks (expert TP 1)"
        )
    return f"{experts // ep} experts per EP rank, each split over TP = {tp} (expert TP = TP)"


def _reference(config: RunConfig) -> str:
    rl, actor = config.rl_config, config.actor
    if not (rl.use_kl_loss or rl.use_kl_in_reward):
        return "not built (no KL term)"
    path = rl.integrated_mode_config.ref_model_load_path or actor.load
    coef = f"{rl.init_kl_coef} ({rl.kl_ctrl_type}"
    coef += (
        f", target {rl.kl_target}, horizon {rl.kl_horizon})"
        if rl.kl_ctrl_type == "adaptive"
        else ")"
    )
    return f"{path}, {rl.kl_penalty}, coefficient {coef}"


def _micro_batches(config: RunConfig) -> str:
    rl = config.rl_config
    balance = ", DP ranks balanced by tokens" if rl.use_dp_batch_balance else ""
    if not rl.use_dynamic_bsz:
        return f"{config.actor.micro_batch_size} rows{balance}"
    cap = f", at most {rl.dynamic_max_batch_size} rows" if rl.dynamic_max_batch_size else ""
    return f"token budget {rl.max_packing_token_size}{cap}{balance}"
