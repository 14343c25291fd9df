"""Cross-field rules of a training config. Each rule names the keys it concerns and the fix."""

from __future__ import annotations

from collections.abc import Callable

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.config.validation import Problem


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def trained_prompts_per_iteration(config: RunConfig) -> int:
    """Prompts whose samples are trained on in one iteration."""
    rl = config.rl_config
    if rl.filter_groups_enable and rl.filter_groups_train_batch_size is not None:
        return rl.filter_groups_train_batch_size
    return config.actor.global_batch_size


def data_parallel_size(config: RunConfig) -> int:
    actor = config.actor
    return config.rl_config.actor_resource.num_npus // (
        actor.tensor_model_parallel_size
        * actor.pipeline_model_parallel_size
        * actor.context_parallel_size
    )


def recompute_problems(actor, layers_per_stage: int) -> list[tuple[str, str]]:
    """(key, problem) pairs of the recompute keys (megatron-core's ``TransformerConfig`` rules,
    reported before any worker starts; a key that would be ignored is a problem too)."""
    granularity, method, layers = (
        actor.recompute_granularity,
        actor.recompute_method,
        actor.recompute_num_layers,
    )
    problems = []
    if granularity != "full":
        for key, value in (("recompute_method", method), ("recompute_num_layers", layers)):
            if value is not None:
                problems.append(
                    (key, f"{value!r} applies to recompute_granularity: full only (it is "
                          f"{granularity!r}); remove it or set full")
                )  # fmt: skip
    elif method is None or layers is None:
        problems.append(
            ("recompute_granularity", "full needs recompute_method (uniform | block) and "
                                      "recompute_num_layers")
        )  # fmt: skip
    elif layers > layers_per_stage:
        problems.append(
            ("recompute_num_layers", f"{layers} exceeds the {layers_per_stage} layers of a "
                                     "pipeline stage")
        )  # fmt: skip
    return problems


def cross_field_problems(config: RunConfig, where: Callable[[str], str]) -> list[Problem]:
    problems: list[Problem] = []

    def report(key: str, message: str) -> None:
        problems.append(Problem(where(key), key, message))

    actor, rl, gen, model = config.actor, config.rl_config, config.generate_config, config.model
    sampling = gen.sampling_config
    devices = rl.actor_resource.num_npus
    tp, pp, ep = (
        actor.tensor_model_parallel_size,
        actor.pipeline_model_parallel_size,
        actor.expert_model_parallel_size,
    )

    # --- parallel layout -----------------------------------------------------------------------
    cp = actor.context_parallel_size
    layout_ok = devices % (tp * pp * cp) == 0
    if devices % (tp * pp):
        report(
            "actor_config.tensor_model_parallel_size",
            f"TP x PP = {tp} x {pp} = {tp * pp} does not divide "
            f"rl_config.actor_resource.num_npus = {devices}; valid TP x PP: {_divisors(devices)}",
        )
    elif not layout_ok:
        report(
            "actor_config.context_parallel_size",
            f"TP x PP x CP = {tp} x {pp} x {cp} does not divide "
            f"rl_config.actor_resource.num_npus = {devices}; valid CP: "
            f"{_divisors(devices // (tp * pp))}",
        )
    elif ep > 1:
        # megatron-core carves expert groups out of (DP x TP) ranks of each pipeline stage, with
        # the expert tensor-parallel size equal to TP.
        per_stage = devices // pp
        if per_stage % (ep * tp):
            report(
                "actor_config.expert_model_parallel_size",
                f"EP x TP = {ep} x {tp} must divide the {per_stage} ranks of a pipeline stage "
                f"(num_npus / PP); valid EP: "
                f"{[d for d in _divisors(per_stage // tp) if per_stage % (d * tp) == 0]}",
            )
    if ep > 1 and (model.num_experts is None or model.num_experts % ep):
        report(
            "actor_config.expert_model_parallel_size",
            f"EP = {ep} needs an MoE model whose num_experts ({model.num_experts}) it divides",
        )
    if actor.moe_tp_extend_ep:
        key = "actor_config.moe_tp_extend_ep"
        if not model.num_experts:
            report(key, f"needs an MoE model; model '{actor.model}' is dense")
        elif model.num_experts % (tp * ep):
            report(
                key,
                f"spreads num_experts = {model.num_experts} over TP x EP = {tp} x {ep} ranks, "
                f"which does not divide it",
            )
        if tp > 1 and not actor.sequence_parallel:
            report(
                key,
                "with TP > 1 experts are spread over TP x EP ranks, and megatron-core needs "
                "megatron_training.sequence_parallel: true for expert parallelism at TP > 1",
            )
    heads, groups = model.num_attention_heads, model.num_query_groups or model.num_attention_heads
    if heads % tp:
        report(
            "actor_config.tensor_model_parallel_size",
            f"TP = {tp} does not divide num_attention_heads = {heads} of model '{actor.model}'",
        )
    if groups % tp:
        report(
            "actor_config.tensor_model_parallel_size",
            f"TP = {tp} does not divide num_query_groups = {groups} of model '{actor.model}'; "
            f"valid TP: {_divisors(groups)}",
        )
    # an uneven split (num_layer_list) is checked with the model registry (models/config_check.py)
    uneven = actor.num_layer_list is not None
    if model.num_layers % pp and not uneven:
        report(
            "actor_config.pipeline_model_parallel_size",
            f"PP = {pp} does not divide num_layers = {model.num_layers}; "
            f"valid PP: {_divisors(model.num_layers)}",
        )
    if actor.sequence_parallel and tp == 1:
        report("megatron_training.sequence_parallel", "needs tensor_model_parallel_size > 1")
    for key, problem in [] if uneven else recompute_problems(actor, model.num_layers // pp):
        report(f"actor_config.{key}", problem)
    if devices % gen.infer_tensor_parallel_size:
        report(
            "generate_config.infer_tensor_parallel_size",
            f"{gen.infer_tensor_parallel_size} does not divide num_npus = {devices}; "
            f"valid: {_divisors(devices)}",
        )
    if (gen.infer_tensor_parallel_size * gen.infer_expert_parallel_size) > devices:
        report(
            "generate_config.infer_expert_parallel_size",
            f"infer TP x EP = {gen.infer_tensor_parallel_size * gen.infer_expert_parallel_size} "
            f"exceeds num_npus = {devices}",
        )

    # --- batch sizes -----------------------------------------------------------------------------
    trained = trained_prompts_per_iteration(config)
    trained_key = (
        "rl_config.filter_groups_train_batch_size"
        if rl.filter_groups_enable and rl.filter_groups_train_batch_size is not None
        else "megatron_training.global_batch_size"
    )
    if trained % rl.mini_batch_size:
        report(
            "rl_config.mini_batch_size",
            f"{rl.mini_batch_size} prompts does not divide the {trained} prompts trained per "
            f"iteration ({trained_key}); valid: {_divisors(trained)}",
        )
    if layout_ok:
        dp = data_parallel_size(config)
        samples = rl.mini_batch_size * rl.n_samples_per_prompt
        if rl.use_dynamic_bsz and samples % dp:
            report(
                "rl_config.mini_batch_size",
                f"mini_batch_size x n_samples_per_prompt = {samples} samples cannot be split "
                f"over DP ({dp}) ranks equally",
            )
        elif not rl.use_dynamic_bsz and samples % (dp * actor.micro_batch_size):
            report(
                "actor_config.micro_batch_size",
                f"mini_batch_size x n_samples_per_prompt = {samples} samples cannot be split "
                f"into DP ({dp}) x micro_batch_size ({actor.micro_batch_size}) equal parts",
            )
    if rl.filter_groups_enable:
        if rl.filter_groups_train_batch_size is None:
            report("rl_config.filter_groups_train_batch_size", "required with filter_groups_enable")
        if rl.filter_groups_max_batches == 0 or rl.filter_groups_max_batches < -1:
            report(
                "rl_config.filter_groups_max_batches",
                f"{rl.filter_groups_max_batches}: use -1 (no limit) or a positive count",
            )
        # DynamicSampler keeps at most global_batch_size groups per generation batch and stops at
        # filter_groups_max_batches: beyond their product the target can never be reached.
        reachable = rl.filter_groups_max_batches * actor.global_batch_size
        target = rl.filter_groups_train_batch_size
        if rl.filter_groups_max_batches > 0 and target is not None and target > reachable:
            report(
                "rl_config.filter_groups_train_batch_size",
                f"{target} prompts can never be kept: filter_groups_max_batches "
                f"({rl.filter_groups_max_batches}) x megatron_training.global_batch_size "
                f"({actor.global_batch_size}) = {reachable} prompts are generated per iteration "
                "at most; raise filter_groups_max_batches (-1 = no limit) or global_batch_size, "
                f"or set filter_groups_train_batch_size <= {reachable}",
            )
        if rl.filter_groups_metric not in rl.verifier_function:
            report(
                "rl_config.filter_groups_metric",
                f"'{rl.filter_groups_metric}' is not one of verifier_function {rl.verifier_function}",
            )
    if rl.n_samples_per_prompt < 2 and (
        rl.adv_estimator == "group_norm" or rl.filter_groups_enable
    ):
        report(
            "rl_config.n_samples_per_prompt",
            f"{rl.n_samples_per_prompt}: group_norm advantages and filter groups compare "
            "samples of one prompt; use >= 2",
        )

    # --- DAPO knobs ------------------------------------------------------------------------------
    clip_keys = ["clip_ratio"] + (
        ["clip_ratio_low", "clip_ratio_high"] if rl.clip_higher_enable else []
    )
    for key in clip_keys:
        value = getattr(rl, key)
        if not 0 < value < 1:
            report(f"rl_config.{key}", f"{value}: must be in (0, 1)")
    if rl.clip_ratio_c is not None and rl.clip_ratio_c <= 1:
        report("rl_config.clip_ratio_c", f"{rl.clip_ratio_c}: the dual-clip bound must be > 1")
    if len(rl.verifier_weight) != len(rl.verifier_function):
        report(
            "rl_config.verifier_weight",
            f"{len(rl.verifier_weight)} weights for {len(rl.verifier_function)} verifiers "
            f"{rl.verifier_function}: give one weight per verifier",
        )
    if not rl.verifier_function:
        report("rl_config.verifier_function", "at least one verifier is needed")
    if rl.overlong_buffer_enable and rl.rollout_max_tokens <= rl.overlong_buffer:
        report(
            "rl_config.overlong_buffer",
            f"{rl.overlong_buffer} must be smaller than rollout_max_tokens = {rl.rollout_max_tokens}",
        )
    if rl.partial_rollout_max_split > rl.rollout_max_tokens:
        report(
            "rl_config.partial_rollout_max_split",
            f"{rl.partial_rollout_max_split} rounds for rollout_max_tokens = "
            f"{rl.rollout_max_tokens}: a round needs at least one token; use <= "
            f"{rl.rollout_max_tokens}",
        )
    if rl.rollout_threshold_rate < 1 and (
        config.generate_config.infer_expert_parallel_size
        > config.generate_config.infer_tensor_parallel_size
    ):
        report(
            "rl_config.rollout_threshold_rate",
            f"{rl.rollout_threshold_rate} with vLLM data-parallel engines (infer EP "
            f"{config.generate_config.infer_expert_parallel_size} > infer TP "
            f"{config.generate_config.infer_tensor_parallel_size}): each engine would stop at its "
            "own step while its peers step together; use 1 (rounds end at their token cap)",
        )
    if rl.rollout_threshold_rate < 1 and rl.partial_rollout_max_split <= 1:
        report(
            "rl_config.rollout_threshold_rate",
            f"{rl.rollout_threshold_rate} cuts rounds short, which needs partial rollout: set "
            "partial_rollout_max_split >= 2 (the most rounds a sample may take) or the rate to 1",
        )
    if rl.rollout_max_tokens != sampling.max_tokens:
        report(
            "rl_config.rollout_max_tokens",
            f"{rl.rollout_max_tokens} differs from generate_config.sampling_config.max_tokens = "
            f"{sampling.max_tokens}; set both to the same response cap",
        )
    if rl.loss_agg_mode is not None and (rl.loss_agg_mode == "token-mean") != rl.token_level_loss:
        report(
            "rl_config.loss_agg_mode",
            f"'{rl.loss_agg_mode}' contradicts token_level_loss = {rl.token_level_loss}",
        )

    # --- lengths ---------------------------------------------------------------------------------
    if rl.max_prompt_length + sampling.max_tokens > gen.max_model_len:
        report(
            "generate_config.max_model_len",
            f"{gen.max_model_len} < max_prompt_length ({rl.max_prompt_length}) + "
            f"sampling_config.max_tokens ({sampling.max_tokens})",
        )
    # the Ascend suite's meaning of seq_length: the longest prompt (preprocessing filters longer
    # ones); the engine must hold such a prompt (the suite's own rule)
    if actor.seq_length > gen.max_model_len:
        report(
            "megatron_training.seq_length",
            f"{actor.seq_length} exceeds generate_config.max_model_len = {gen.max_model_len}: "
            "the engine could not hold a prompt of seq_length tokens; raise max_model_len or "
            "lower seq_length",
        )
    if rl.max_prompt_length + sampling.max_tokens > model.max_position_embeddings:
        report(
            "rl_config.max_prompt_length",
            f"max_prompt_length + max_tokens = {rl.max_prompt_length + sampling.max_tokens} "
            f"exceeds the model's max_position_embeddings = {model.max_position_embeddings}",
        )
    if sampling.logprobs != 1:
        report(
            "generate_config.sampling_config.logprobs", "only 1 (the sampled token) is supported"
        )
    for key, value, active in (
        ("top_p", sampling.top_p, sampling.top_p < 1.0),
        ("top_k", sampling.top_k, sampling.top_k > 0),
        ("min_p", sampling.min_p, sampling.min_p > 0.0),
    ):
        if active:
            # the log-prob semantics are "before truncation" everywhere (docs/rollout.md): vLLM's
            # processed log-probs are renormalised over the kept tokens, the actor's are not
            report(
                f"generate_config.sampling_config.{key}",
                f"{value}: truncated sampling is refused for training rollouts (rollout and "
                "actor log-probs would follow different distributions; docs/rollout.md, "
                "Truncated sampling); use top_p 1.0, top_k -1, min_p 0.0",
            )
    if actor.min_lr > actor.lr:
        report("actor_config.min_lr", f"{actor.min_lr} is larger than lr = {actor.lr}")
    if not actor.finetune and actor.load is None:
        report("actor_config.load", "finetune: false (resume) needs the checkpoint directory")
    split = actor.split.split(",")
    if (
        len(split) != 3
        or not all(s.strip().isdigit() for s in split)
        or not any(int(s) for s in split)
    ):
        report(
            "megatron_training.split", f"'{actor.split}': expected three integers like '100,0,0'"
        )
    if model.group_query_attention and model.num_query_groups is None:
        report(f"model.{actor.model}.num_query_groups", "required with group_query_attention")
    if model.num_experts is not None and model.moe_ffn_hidden_size is None:
        report(f"model.{actor.model}.moe_ffn_hidden_size", "required with num_experts")
    if model.num_experts is not None and model.moe_router_topk > model.num_experts:
        report(
            f"model.{actor.model}.moe_router_topk",
            f"{model.moe_router_topk} exceeds num_experts = {model.num_experts}",
        )
    problems.extend(kl_problems(config, where))
    problems.extend(batching_problems(config, where))
    if rl.use_wandb and not rl.wandb_project:
        report("rl_config.wandb_project", "required with use_wandb")
    profiler = config.profiler
    if profiler.enable and profiler.end_iteration < profiler.start_iteration:
        report("profiler.end_iteration", "must not be before start_iteration")
    outside = [r for r in profiler.ranks if not 0 <= r < devices]
    if profiler.enable and outside:
        report(
            "profiler.ranks",
            f"{outside} are not ranks of this run; valid: 0..{devices - 1} "
            "(rl_config.actor_resource.num_npus)",
        )
    return problems


def kl_problems(config: RunConfig, where: Callable[[str], str]) -> list[Problem]:
    """The KL term and its reference model (docs/kl.md)."""
    from pathlib import Path

    rl, actor = config.rl_config, config.actor
    problems: list[Problem] = []

    def report(key: str, message: str) -> None:
        problems.append(Problem(where(key), key, message))

    kl_on = rl.use_kl_loss or rl.use_kl_in_reward
    if not kl_on:
        # keys that only configure a KL term: set without one, the YAML expects a KL that is not
        # there (init_kl_coef / kl_penalty are accepted: the Ascend suite's DAPO YAMLs carry them)
        explicit = rl.model_fields_set
        for key in ("kl_target", "kl_horizon"):
            if key in explicit and getattr(rl, key) is not None:
                report(
                    f"rl_config.{key}",
                    "has no effect: neither use_kl_loss nor use_kl_in_reward is on",
                )
        if rl.kl_ctrl_type == "adaptive":
            report(
                "rl_config.kl_ctrl_type",
                "adaptive has no effect: neither use_kl_loss nor use_kl_in_reward is on",
            )
        return problems
    if rl.kl_ctrl_type == "adaptive":
        for key in ("kl_target", "kl_horizon"):
            if getattr(rl, key) is None:
                report(f"rl_config.{key}", "required with kl_ctrl_type: adaptive")
    else:
        for key in ("kl_target", "kl_horizon"):
            if getattr(rl, key) is not None:
                report(f"rl_config.{key}", "is read only with kl_ctrl_type: adaptive")
    if rl.init_kl_coef == 0:
        report(
            "rl_config.init_kl_coef",
            "0 makes the KL term zero for the whole run (adaptive control multiplies it); set a "
            "positive coefficient or turn use_kl_loss / use_kl_in_reward off",
        )
    ref_key = "rl_config.integrated_mode_config.ref_model_load_path"
    ref = rl.integrated_mode_config.ref_model_load_path
    if ref is None and not actor.finetune and _resumes_a_run(actor.load, actor.ckpt_step):
        report(
            ref_key,
            "required to resume (finetune: false) with a KL term: actor_config.load is the run's "
            "own checkpoint; point it at the original weights",
        )
    elif ref is None and actor.load is None:
        report(
            ref_key,
            "a KL term needs reference weights: set it or actor_config.load (converted weights)",
        )
    elif ref is not None and not Path(ref).is_dir():
        report(ref_key, f"{ref}: directory not found")
    return problems


def _resumes_a_run(load: str | None, ckpt_step: int | None) -> bool:
    """``finetune: false`` resumes a run unless ``load`` holds converted weights (tracker
    'release'; Megatron starts from them). A directory not there yet (a recipe checked away from
    the cluster) is taken at its word: the weights it will hold when the run starts."""
    from pathlib import Path

    tracker = Path(load or "") / "latest_checkpointed_iteration.txt"
    if load is None or not tracker.is_file():
        return load is not None and ckpt_step is not None
    return ckpt_step is not None or tracker.read_text(encoding="utf-8").strip() != "release"


BUDGET_KEYS = ("max_packing_token_size", "ref_max_packing_token_size",
               "actor_max_packing_token_size", "update_max_packing_token_size")  # fmt: skip
ROW_CAP_KEYS = ("dynamic_max_batch_size", "ref_dynamic_max_batch_size",
                "actor_dynamic_max_batch_size", "update_dynamic_max_batch_size")  # fmt: skip


def batching_problems(config: RunConfig, where: Callable[[str], str]) -> list[Problem]:
    """Token-budget micro-batches (docs/packing.md)."""
    rl, sampling = config.rl_config, config.generate_config.sampling_config
    problems: list[Problem] = []
    if not rl.use_dynamic_bsz:
        for key in BUDGET_KEYS + ROW_CAP_KEYS:
            if key in rl.model_fields_set and getattr(rl, key) is not None:
                problems.append(
                    Problem(where(f"rl_config.{key}"), f"rl_config.{key}",
                            "is read only with use_dynamic_bsz: true")
                )  # fmt: skip
        return problems
    longest = rl.max_prompt_length + sampling.max_tokens
    for key in effective_budget_keys(rl, needs_reference=rl.use_kl_loss or rl.use_kl_in_reward):
        value = getattr(rl, key)
        if value < longest:
            problems.append(
                Problem(
                    where(f"rl_config.{key}"), f"rl_config.{key}",
                    f"{value} tokens cannot hold one sample of max_prompt_length + "
                    f"sampling_config.max_tokens = {longest} tokens; the Ascend guide suggests "
                    f"twice that ({2 * longest})",
                )
            )  # fmt: skip
    return problems


def effective_budget_keys(rl, needs_reference: bool) -> list[str]:
    """The keys whose value is the token budget of a pass that runs: each phase's own key when
    set, else ``max_packing_token_size`` (once); the reference pass only with a KL term."""
    phases = ["actor_max_packing_token_size", "update_max_packing_token_size"]
    if needs_reference:
        phases.insert(0, "ref_max_packing_token_size")
    keys = [key if getattr(rl, key) is not None else "max_packing_token_size" for key in phases]
    return list(dict.fromkeys(keys))


def cross_field_warnings(config: RunConfig) -> list[str]:
    """Values that run, but probably not as the YAML's author expects (logged, never refused)."""
    rl, actor = config.rl_config, config.actor
    sampling = config.generate_config.sampling_config
    warnings = []
    kl_on = rl.use_kl_loss or rl.use_kl_in_reward
    if rl.ref_forward_micro_batch_size is not None and not kl_on:
        warnings.append(
            f"rl_config.ref_forward_micro_batch_size = {rl.ref_forward_micro_batch_size} has no "
            "effect: without use_kl_loss / use_kl_in_reward no reference model is built"
        )
    longest = rl.max_prompt_length + sampling.max_tokens
    if actor.seq_length < rl.max_prompt_length:
        warnings.append(
            f"megatron_training.seq_length = {actor.seq_length} < rl_config.max_prompt_length = "
            f"{rl.max_prompt_length}: the dataset was preprocessed for prompts of at most "
            "seq_length tokens (in the Ascend suite's meaning); trained rows are prompt + "
            f"response, up to {longest} tokens, whatever seq_length says"
        )
    return warnings
