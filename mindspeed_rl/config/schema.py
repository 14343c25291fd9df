"""Typed sections of a training YAML (layout of the Ascend suite: see docs/configuration.md).

Every field has a type, a default and a one-line description; ``docs/configuration.md`` is
generated from these classes (``python -m mindspeed_rl.config.reference``). Types are strict: a
string where an int belongs is an error, not a silent conversion. Keys that the Ascend suite
carries that are not fields here (inert values, performance switches, refused features) live in
``unsupported.py``, never here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


def _f(default: Any, doc: str, **kwargs: Any) -> Any:
    return Field(default, description=doc, **kwargs)


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ModelConfig(Section):
    """One entry of ``configs/model/<name>.yaml`` (Megatron / MindSpeed-LLM argument names)."""

    use_mcore_models: Literal[True] = _f(True, "Build megatron-core GPTModel (the only kind).")
    num_layers: int = _f(..., "Transformer layers.", gt=0)
    hidden_size: int = _f(..., "Hidden size.", gt=0)
    ffn_hidden_size: int = _f(..., "Dense MLP intermediate size.", gt=0)
    num_attention_heads: int = _f(..., "Query heads.", gt=0)
    kv_channels: int | None = _f(None, "Head dim; default hidden_size / num_attention_heads.")
    group_query_attention: bool = _f(False, "Use num_query_groups key/value heads (GQA).")
    num_query_groups: int | None = _f(None, "Key/value heads with GQA.", gt=0)
    rotary_base: float = _f(10000.0, "RoPE base (theta).", gt=0)
    rope_scaling_type: Literal["llama3"] | None = _f(None, "RoPE scaling (Llama-3.1 style).")
    rope_scaling_factor: float = _f(8.0, "Llama-3 RoPE scaling factor.", gt=0)
    low_freq_factor: float = _f(1.0, "Llama-3 RoPE low-frequency factor.", gt=0)
    high_freq_factor: float = _f(4.0, "Llama-3 RoPE high-frequency factor.", gt=0)
    original_max_position_embeddings: int = _f(8192, "Llama-3 RoPE original context.", gt=0)
    max_position_embeddings: int = _f(..., "Maximum sequence length of the model.", gt=0)
    make_vocab_size_divisible_by: int = _f(
        1, "Pad the vocabulary to a multiple of this x TP.", gt=0
    )
    padded_vocab_size: int | None = _f(None, "Vocabulary size after padding (checkpoint shape).")
    untie_embeddings_and_output_weights: bool = _f(True, "Separate lm_head (False = tied).")
    add_qkv_bias: bool = _f(False, "Bias on the QKV projection (Qwen2 / Qwen2.5).")
    disable_bias_linear: bool = _f(True, "No bias on other linear layers.")
    position_embedding_type: Literal["rope"] = _f("rope", "Position embedding.")
    norm_epsilon: float = _f(1e-5, "RMSNorm epsilon.", gt=0)
    normalization: Literal["RMSNorm"] = _f("RMSNorm", "Normalization layer.")
    swiglu: bool = _f(True, "SwiGLU MLP (gate and up projections fused in linear_fc1).")
    attention_softmax_in_fp32: bool = _f(True, "Softmax in fp32.")
    qk_layernorm: bool = _f(False, "RMSNorm on queries and keys per head (Qwen3).")
    num_experts: int | None = _f(None, "Routed experts per MoE layer (None = dense).", gt=0)
    moe_router_topk: int = _f(2, "Experts per token.", gt=0)
    moe_ffn_hidden_size: int | None = _f(None, "Expert MLP intermediate size.", gt=0)
    moe_router_load_balancing_type: Literal["aux_loss", "none"] = _f("aux_loss", "Balancing.")
    moe_aux_loss_coeff: float = _f(0.0, "Auxiliary load-balancing loss coefficient.", ge=0)
    moe_grouped_gemm: bool = _f(False, "Experts as GroupedMLP weights (needs a grouped GEMM).")
    moe_token_dispatcher_type: Literal["allgather", "alltoall", "alltoall_seq"] = _f(
        "alltoall", "Token dispatcher (alltoall_seq is MindSpeed's; alltoall elsewhere)."
    )
    norm_topk_prob: bool = _f(False, "Renormalise the top-k router probabilities (Qwen3-MoE).")


class MegatronConfig(Section):
    """``megatron_training`` (shared by every model of the run) merged with ``actor_config``."""

    model: str = _f(..., "Name of the model entry (a key under `model`, from configs/model/).")
    use_mcore_models: Literal[True] = _f(True, "Build megatron-core models (the only kind).")
    stage: Literal["ray_dapo", "ray_grpo"] = _f(
        "ray_dapo", "Training stage: ray_dapo, or ray_grpo (KL loss on by default; docs/dapo.md)."
    )
    tokenizer_type: Literal["PretrainedFromHF"] = _f("PretrainedFromHF", "Tokenizer kind.")
    tokenizer_name_or_path: str | None = _f(None, "HF tokenizer directory.")
    data_path: str | None = _f(None, "Output prefix of cli/preprocess_data.py.")
    split: str = _f("100,0,0", "train,valid,test percentages of the dataset.")
    dataset_additional_keys: list[str] = _f([], "Extra indexed-dataset keys, e.g. [labels].")
    no_shuffle: bool = _f(False, "Serve prompts in file order.")
    full_shuffle_instruction_dataset: bool = _f(False, "Shuffle across epochs as one pool.")
    seed: int = _f(1234, "Seed of every RNG (data order, sampling, init).")
    global_batch_size: int = _f(..., "Prompts per generation batch.", gt=0)
    seq_length: int = _f(
        ...,
        "Longest prompt in tokens, as in the Ascend suite (preprocessing filters longer ones); "
        "generate_config.max_model_len must be >= it.",
        gt=0,
    )
    train_iters: int = _f(..., "Training iterations.", gt=0)
    save_interval: int = _f(0, "Save every N iterations (0 = only at the end).", ge=0)
    log_interval: int = _f(1, "Print the summary line every N iterations.", gt=0)
    sequence_parallel: bool = _f(False, "Megatron sequence parallelism (with TP > 1).")
    recompute_granularity: Literal["full", "selective"] | None = _f(
        None, "Activation recompute: whole layers (full) or core attention (selective)."
    )
    recompute_method: Literal["uniform", "block"] | None = _f(
        None, "With full recompute: layers in groups of N (uniform) or the first N (block)."
    )
    recompute_num_layers: int | None = _f(
        None, "With full recompute: N of recompute_method (per pipeline stage).", gt=0
    )
    use_distributed_optimizer: bool = _f(False, "Shard optimizer state over data-parallel ranks.")
    bf16: bool = _f(False, "bf16 parameters with fp32 main weights.")
    attention_dropout: float = _f(0.0, "Attention dropout.", ge=0, lt=1)
    hidden_dropout: float = _f(0.0, "Hidden dropout.", ge=0, lt=1)
    init_method_std: float = _f(0.01, "Init std (only used when no weights are loaded).", gt=0)
    attention_softmax_in_fp32: bool = _f(True, "Softmax in fp32.")
    use_flash_attn: bool = _f(False, "MindSpeed flash attention (NPU only; ignored elsewhere).")
    use_fused_rmsnorm: bool = _f(False, "MindSpeed fused RMSNorm (NPU only).")
    use_fused_swiglu: bool = _f(False, "MindSpeed fused SwiGLU (NPU only).")
    use_fused_rotary_pos_emb: bool = _f(False, "MindSpeed fused RoPE (NPU only).")
    no_shared_storage: bool = _f(False, "Each node saves its own ranks' shards and tracker.")
    # actor_config
    micro_batch_size: int = _f(1, "Samples per micro-batch in the update.", gt=0)
    tensor_model_parallel_size: int = _f(1, "Training TP.", gt=0)
    pipeline_model_parallel_size: int = _f(1, "Training PP.", gt=0)
    num_layer_list: str | int | list[int] | None = _f(
        None, "Layers per pipeline stage, e.g. '16,17,16,15' (unset: num_layers / PP each)."
    )
    expert_model_parallel_size: int = _f(1, "Training EP (MoE).", gt=0)
    moe_tp_extend_ep: bool = _f(
        False, "MindSpeed's expert layout: whole experts over TP x EP ranks (expert TP 1)."
    )
    context_parallel_size: int = _f(
        1, "Training CP: each sequence split over CP ranks (TE / MindSpeed attention only).", gt=0
    )
    context_parallel_algo: Literal["megatron_cp_algo"] = _f(
        "megatron_cp_algo", "CP algorithm: ring attention over megatron's load-balanced split."
    )
    lr: float = _f(1e-6, "Peak learning rate.", gt=0)
    min_lr: float = _f(0.0, "Floor of the decayed learning rate.", ge=0)
    lr_decay_style: Literal["constant", "cosine", "linear"] = _f("constant", "LR schedule.")
    lr_warmup_fraction: float = _f(0.0, "Fraction of train_iters spent warming up.", ge=0, lt=1)
    weight_decay: float = _f(0.0, "AdamW weight decay.", ge=0)
    clip_grad: float = _f(1.0, "Gradient norm clip (0 = off).", ge=0)
    adam_beta1: float = _f(0.9, "Adam beta1.", gt=0, lt=1)
    adam_beta2: float = _f(0.999, "Adam beta2.", gt=0, lt=1)
    finetune: bool = _f(True, "True: weights only from `load`, iteration 0. False: full resume.")
    load: str | None = _f(None, "Megatron checkpoint directory to start from.")
    ckpt_step: int | None = _f(None, "Resume this iteration instead of the tracker's.", ge=0)
    save: str | None = _f(None, "Directory for training checkpoints.")
    no_load_optim: bool = _f(False, "On resume, do not load the optimizer state.")
    no_load_rng: bool = _f(False, "On resume, do not load the RNG states.")
    no_save_optim: bool = _f(False, "Do not save the optimizer state.")
    no_save_rng: bool = _f(False, "Do not save the RNG states.")
    keep_last_checkpoints: int = _f(0, "Keep only the last K checkpoints (0 = keep all).", ge=0)


class ActorResource(Section):
    num_npus: int = _f(..., "Devices for the actor (NPUs, GPUs, or CPU processes).", gt=0)


class IntegratedModeConfig(Section):
    ref_model_load_path: str | None = _f(
        None,
        "Megatron checkpoint of the reference model (default: actor_config.load when it starts "
        "from converted weights; required to resume a run with KL).",
    )


class RLConfig(Section):
    """``rl_config``: the DAPO algorithm and its orchestration."""

    use_integrated_worker: Literal[True] = _f(True, "Actor and rollout share each device.")
    blocking: Literal[True] = _f(True, "Phases run one after the other (the only mode).")
    actor_resource: ActorResource = _f(..., "Devices of the run.")
    actor_forward_micro_batch_size: int | None = _f(None, "Micro-batch of log-prob passes.")
    adv_estimator: Literal["group_norm"] = _f("group_norm", "Advantage estimator (GRPO-style).")
    norm_adv_by_std: bool = _f(True, "Divide group-centred scores by the group std.")
    n_samples_per_prompt: int = _f(..., "Responses per prompt (group size).", gt=0)
    max_prompt_length: int = _f(..., "Longest prompt in tokens.", gt=0)
    mini_batch_size: int = _f(..., "Prompts per optimizer step.", gt=0)
    epochs: int = _f(1, "Update passes over each batch.", gt=0)
    shuffle_mini_batch: bool = _f(
        False, "Shuffle samples (seeded) before splitting them into mini-batches."
    )
    clip_ratio: float = _f(0.2, "PPO clip range when clip-higher is off.")
    clip_higher_enable: bool = _f(False, "DAPO clip-higher: separate low / high clip ranges.")
    clip_ratio_low: float = _f(0.2, "Lower clip range (ratio >= 1 - low).")
    clip_ratio_high: float = _f(0.28, "Upper clip range (ratio <= 1 + high).")
    clip_ratio_c: float | None = _f(None, "Dual-clip bound for negative advantages (None = off).")
    tis_imp_ratio_cap: float = _f(
        -1.0, "Truncated importance sampling cap for rollout vs training log-probs (<= 0 = off)."
    )
    entropy_coeff: float = _f(0.0, "Entropy bonus coefficient.", ge=0)
    token_level_loss: bool = _f(True, "DAPO token-level loss: mean over all tokens of a batch.")
    loss_agg_mode: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] | None = _f(
        None, "Explicit aggregation; default follows token_level_loss."
    )
    use_kl_loss: bool = _f(False, "Add a KL loss against the reference model (off in DAPO).")
    use_kl_in_reward: bool = _f(
        False, "Subtract the per-token KL to the reference from the rewards (off in DAPO)."
    )
    kl_penalty: Literal["kl", "abs", "mse", "low_var_kl", "k1", "k2", "k3"] = _f(
        "low_var_kl", "KL estimator of use_kl_loss and use_kl_in_reward."
    )
    init_kl_coef: float = _f(
        0.01, "KL coefficient (its start value with kl_ctrl_type adaptive).", ge=0
    )
    kl_ctrl_type: Literal["fixed", "adaptive"] = _f(
        "fixed", "KL coefficient control: fixed, or adaptive towards kl_target."
    )
    kl_target: float | None = _f(None, "Adaptive control: the KL aimed at (per token).", gt=0)
    kl_horizon: int | None = _f(
        None, "Adaptive control: samples over which the coefficient moves by at most 20%.", gt=0
    )
    ref_forward_micro_batch_size: int | None = _f(
        None, "Micro-batch of the reference log-prob pass (default: the actor's).", gt=0
    )
    integrated_mode_config: IntegratedModeConfig = _f(
        IntegratedModeConfig(), "The reference model's weights (built only with a KL term)."
    )
    runtime_env_path: str | None = _f(
        None, "YAML with env_vars for every worker, as the Ascend suite's "
        "configs/envs/runtime_env.yaml (over the platform's defaults; docs/platform.md).",
    )  # fmt: skip
    hccl_buffersize: int | None = _f(
        None, "HCCL_BUFFSIZE (MB) of every worker on NPU (over runtime_env_path).", gt=0
    )
    use_remove_padding: bool = _f(
        False, "Pack each micro-batch's sequences end to end (THD) instead of padding them."
    )
    use_dynamic_bsz: bool = _f(
        False, "Micro-batches by a token budget (max_packing_token_size) instead of row counts."
    )
    max_packing_token_size: int = _f(
        4096, "Token budget of a dynamic micro-batch (every prompt + response must fit).", gt=0
    )
    ref_max_packing_token_size: int | None = _f(
        None, "Budget of the reference log-prob pass (default: max_packing_token_size).", gt=0
    )
    actor_max_packing_token_size: int | None = _f(
        None, "Budget of the old log-prob pass (default: max_packing_token_size).", gt=0
    )
    update_max_packing_token_size: int | None = _f(
        None, "Budget of the update (default: max_packing_token_size).", gt=0
    )
    dynamic_max_batch_size: int | None = _f(
        None, "Most rows in a dynamic micro-batch (None = no cap).", gt=0
    )
    ref_dynamic_max_batch_size: int | None = _f(
        None, "Row cap of the reference pass (default: dynamic_max_batch_size).", gt=0
    )
    actor_dynamic_max_batch_size: int | None = _f(
        None, "Row cap of the old log-prob pass (default: dynamic_max_batch_size).", gt=0
    )
    update_dynamic_max_batch_size: int | None = _f(
        None, "Row cap of the update (default: dynamic_max_batch_size).", gt=0
    )
    use_dp_batch_balance: bool = _f(
        False, "Give data-parallel ranks equal tokens (not equal positions) of each mini-batch."
    )
    rule_reward: Literal[True] = _f(True, "Rewards from rule verifiers (the only kind).")
    verifier_function: list[str] = _f(["acc_for_dapo"], "Rule verifiers by name.")
    verifier_weight: list[float] = _f([1.0], "One weight per verifier.")
    verifier_timeout: float = _f(10.0, "Seconds allowed per verifier call.", gt=0)
    verifier_parallel: int = _f(1, "Processes scoring responses (1 = in the caller).", gt=0)
    overlong_buffer_enable: bool = _f(False, "DAPO overlong reward shaping.")
    rollout_max_tokens: int = _f(2048, "Response length cap used by overlong shaping.", gt=0)
    overlong_buffer: int = _f(512, "Tokens before the cap where the penalty ramps up.", ge=0)
    overlong_buffer_penalty_factor: float = _f(1.0, "Penalty at the cap.", ge=0)
    overlong_filtering: bool = _f(False, "Mask truncated responses out of the loss.")
    partial_rollout_max_split: int = _f(
        1,
        "Partial rollout: a round gives each unfinished sample at most ceil(rollout_max_tokens / N)"
        " tokens; the rest continue in later rounds with newer weights (1 = off).",
        ge=1,
    )
    rollout_threshold_rate: float = _f(
        1.0,
        "Partial rollout: end a round once this share of its samples has finished (1 = off).",
        gt=0,
        le=1,
    )
    filter_groups_enable: bool = _f(False, "DAPO dynamic sampling: drop zero-variance groups.")
    filter_groups_metric: str = _f("acc_for_dapo", "Verifier whose score decides the filter.")
    filter_groups_max_batches: int = _f(-1, "Generation batches per iteration (-1 = no limit).")
    filter_groups_train_batch_size: int | None = _f(None, "Prompts kept per iteration.", gt=0)
    filter_groups_on_max_batches: Literal["error", "train"] = _f(
        "error", "At filter_groups_max_batches: stop with a diagnosis, or train on what was kept."
    )
    use_tensorboard: bool = _f(False, "Write TensorBoard events.")
    use_wandb: bool = _f(False, "Log to Weights & Biases.")
    wandb_project: str | None = _f(None, "W&B project.")
    wandb_exp_name: str | None = _f(None, "W&B run name.")
    validation_interval: int = _f(0, "Validate every N iterations (0 = never).", ge=0)
    max_restarts: int = _f(
        0,
        "After a worker or node failure, resume from the last complete checkpoint under "
        "actor_config.save, at most N times (cli/train_dapo.py --max-restarts overrides).",
        ge=0,
    )
    validate_before_train: bool = _f(False, "Validate before the first iteration.")
    validation_temperature: float | None = _f(
        None,
        "Sampling temperature of validation (unset: sampling_config.temperature; 0: greedy, "
        "the same answer in every run).",
        ge=0,
    )


class SamplingConfig(Section):
    logprobs: int = _f(1, "Return the sampled token's log-prob (the only supported value).")
    max_tokens: int = _f(2048, "Maximum response tokens.", gt=0)
    temperature: float = _f(1.0, "Sampling temperature (0 = greedy).", ge=0)
    top_p: float = _f(1.0, "Nucleus sampling.", gt=0, le=1)
    top_k: int = _f(-1, "Top-k sampling (-1 = off).", ge=-1)
    min_p: float = _f(0.0, "Min-p sampling.", ge=0, le=1)
    detokenize: Literal[False] = _f(False, "The engine never detokenizes: the trainer decodes.")
    seed: int | None = _f(None, "Sampling seed (default: megatron_training.seed).")


class GenerateConfig(Section):
    """``generate_config``: the colocated rollout engine."""

    engine: Literal["auto", "vllm", "hf"] = _f("auto", "auto = vllm on NPU/GPU, hf on CPU.")
    trust_remote_code: bool = _f(True, "Passed to the engine and tokenizer.")
    offload_train_optimizer: bool = _f(False, "Offload optimizer state while generating.")
    offload_train_grad: bool = _f(False, "Offload gradients while generating.")
    offload_train_param: bool = _f(False, "Offload training weights while generating.")
    infer_tensor_parallel_size: int = _f(1, "Rollout TP.", gt=0)
    infer_pipeline_parallel_size: Literal[1] = _f(1, "Rollout PP (only 1 is supported).")
    infer_expert_parallel_size: int = _f(1, "Rollout EP.", gt=0)
    max_num_seqs: int = _f(256, "Concurrent sequences in the engine.", gt=0)
    max_model_len: int = _f(4096, "Engine context (prompt + response).", gt=0)
    max_num_batched_tokens: int = _f(8192, "Tokens per engine step.", gt=0)
    dtype: Literal["bfloat16", "float16", "float32"] = _f("bfloat16", "Engine weights dtype.")
    gpu_memory_utilization: float = _f(0.5, "Share of device memory for the engine.", gt=0, le=1)
    device_memory_gb: float | None = _f(
        None, "Device memory per rank for the --dry-run memory ledger (default 64: Atlas A2/A3).",
        gt=0,
    )  # fmt: skip
    kv_cache_memory_bytes: int | None = _f(
        None, "vLLM KV cache per engine in bytes (required with engine: vllm on CPU; on "
        "accelerators it replaces gpu_memory_utilization).", gt=0,
    )  # fmt: skip
    sleep_level: Literal[1, 2] = _f(
        1, "vLLM sleep level where the platform has sleep mode: 1 offloads the weights to host "
        "memory (safe on vllm-ascend), 2 discards them (the sync refills them).",
    )  # fmt: skip
    enforce_eager: bool = _f(True, "No graph capture in the engine.")
    enable_prefix_caching: bool = _f(False, "Engine prefix cache (reset after every weight load).")
    sampling_config: SamplingConfig = _f(SamplingConfig(), "Sampling parameters.")


class ProfilerConfig(Section):
    """``profiler``: torch.profiler (torch_npu.profiler on NPU) around chosen iterations."""

    enable: bool = _f(False, "Record a trace of the iterations below (docs/dapo.md, Profiling).")
    save_path: str = _f("./profiling", "Trace directory (one file per rank and window).")
    ranks: list[int] = _f([0], "Ranks that record (0 .. num_npus - 1).")
    start_iteration: int = _f(1, "First recorded iteration (1-based, as in the logs).", ge=0)
    end_iteration: int = _f(2, "Last recorded iteration (inclusive).", ge=0)
    with_memory: bool = _f(False, "Also record tensor allocations and shapes.")


class RunConfig(Section):
    """The resolved training config: ``actor`` = megatron_training overridden by actor_config."""

    models: dict[str, ModelConfig]
    actor: MegatronConfig
    rl_config: RLConfig
    generate_config: GenerateConfig
    profiler: ProfilerConfig = ProfilerConfig()
    # (level, message) pairs that validation found worth telling but not refusing: keys accepted
    # without effect (INFO), suspicious values (WARNING); logged once per run, printed by --dry-run
    _notices: list[tuple[str, str]] = PrivateAttr(default_factory=list)

    @property
    def model(self) -> ModelConfig:
        return self.models[self.actor.model]

    @property
    def notices(self) -> list[tuple[str, str]]:
        return self._notices


# What a stage changes in rl_config's defaults: only keys the YAML leaves unset. GRPO is the same
# loop with a KL loss against the reference (the Ascend suite's GRPO loss always has that term).
STAGE_RL_DEFAULTS: dict[str, dict[str, Any]] = {
    "ray_dapo": {},
    "ray_grpo": {"use_kl_loss": True},
}

# What a stage changes in rl_config's defaults: only keys the YAML leaves unset. GRPO is the same
# loop with a KL loss against the reference (the Ascend suite's GRPO loss always has that term).
STAGE_RL_DEFAULTS: dict[str, dict[str, Any]] = {
    "ray_dapo": {},
    "ray_grpo": {"use_kl_loss": True},
}

# YAML section -> its type; actor_config shares megatron_training's type.
SECTIONS: dict[str, type[Section]] = {
    "megatron_training": MegatronConfig,
    "actor_config": MegatronConfig,
    "rl_config": RLConfig,
    "generate_config": GenerateConfig,
    "profiler": ProfilerConfig,
}
