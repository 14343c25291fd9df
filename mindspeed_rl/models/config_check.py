"""Config validation hook of the model registry: can the actor's model entry be built?"""

from __future__ import annotations

from collections.abc import Callable

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.config.validation import Problem


def model_problems(config: RunConfig, where: Callable[[str], str]) -> list[Problem]:
    problems: list[Problem] = []
    name, model = config.actor.model, config.model
    tp = config.actor.tensor_model_parallel_size

    def report(key: str, message: str) -> None:
        dotted = f"model.{name}.{key}"
        problems.append(Problem(where(dotted), dotted, message))

    if not model.use_mcore_models or not config.actor.use_mcore_models:
        report("use_mcore_models", "only megatron-core models are supported; set it to true")
    if model.padded_vocab_size is not None:
        multiple = model.make_vocab_size_divisible_by * tp
        if model.padded_vocab_size % multiple:
            report(
                "padded_vocab_size",
                f"{model.padded_vocab_size} is not a multiple of make_vocab_size_divisible_by x TP "
                f"= {multiple}; the vocabulary cannot be split over {tp} TP ranks",
            )
    if model.kv_channels is None and model.hidden_size % model.num_attention_heads:
        report(
            "kv_channels",
            f"hidden_size {model.hidden_size} is not divisible by num_attention_heads "
            f"{model.num_attention_heads}: set kv_channels (the head dim)",
        )
    groups = model.num_query_groups or model.num_attention_heads
    if model.num_attention_heads % groups:
        report(
            "num_query_groups",
            f"{groups} does not divide num_attention_heads = {model.num_attention_heads}",
        )
    # the MLP weights are split over TP ranks (the layout itself is checked in config/checks.py)
    sizes = {"ffn_hidden_size": model.ffn_hidden_size}
    if model.num_experts:
        sizes = {"moe_ffn_hidden_size": model.moe_ffn_hidden_size or model.ffn_hidden_size}
    for key, size in sizes.items():
        if size % tp:
            report(key, f"{size} is not divisible by tensor_model_parallel_size = {tp}")
    if config.actor.attention_softmax_in_fp32 != model.attention_softmax_in_fp32:
        # one switch of the built model; the suite spells it in both sections
        key = "megatron_training.attention_softmax_in_fp32"
        problems.append(
            Problem(
                where(key), key,
                f"{config.actor.attention_softmax_in_fp32} differs from "
                f"model.{name}.attention_softmax_in_fp32 = {model.attention_softmax_in_fp32}, "
                "which builds the model; set them equal (or drop this one)",
            )
        )  # fmt: skip
    if model.add_qkv_bias and model.qk_layernorm:
        report("add_qkv_bias", "no supported architecture has both qkv bias and qk_layernorm")
    return problems + pipeline_problems(config, where)


def pipeline_problems(config: RunConfig, where: Callable[[str], str]) -> list[Problem]:
    """``num_layer_list``: parses, one entry of at least 1 per stage, sums to num_layers;
    recompute fits its smallest stage."""
    from mindspeed_rl.config.checks import recompute_problems
    from mindspeed_rl.models import pipeline_split

    actor = config.actor
    if actor.num_layer_list is None:
        return []
    key = "actor_config.num_layer_list"
    try:
        layers = pipeline_split.parse_num_layer_list(actor.num_layer_list)
        problem = pipeline_split.split_problem(
            config.model.num_layers, actor.pipeline_model_parallel_size, layers
        )
    except ValueError as err:
        layers, problem = None, str(err)
    if problem is not None:
        return [Problem(where(key), key, problem)]
    if layers is None:
        return []
    return [
        Problem(where(f"actor_config.{name}"), f"actor_config.{name}", message)
        for name, message in recompute_problems(actor, min(layers))
    ]
