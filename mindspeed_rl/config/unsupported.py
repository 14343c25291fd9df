"""Keys of the Ascend suite's YAMLs (MindSpeed-RL) that are not fields of the schema.

Three kinds, so that the suite's recipes run unchanged and no key is silently ignored
(docs/coming_from_mindspeed_rl.md lists every key of its recipes):

* ``UNSUPPORTED``: accepted only at the value this project *behaves as* (for a feature we do not
  have, the value that turns it off; for a switch we always have on, ``true``); any other value
  is refused as "recognised, not supported" naming the value that would be accepted.
* ``NO_EFFECT``: platform performance switches and data-transport granularities of the suite:
  they change speed, never results, and have no counterpart here. Any value is accepted and each
  run names them in one INFO line.
* ``REFUSED_FEATURES``: a switch that asks for a kind of run this project does not do (multi-turn
  rollouts with tools). The config is refused with that one problem, pointing to the docs.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Callable, Mapping
from typing import Any

_OFF = (None, False, 0, "", [])


@dataclasses.dataclass(frozen=True)
class Derived:
    """Accepted when equal to what this project derives from the same section's other keys."""

    derive: Callable[[Mapping[str, Any]], Any]
    description: str


# section -> key -> the values we behave as (a tuple) or a derivation
UNSUPPORTED: dict[str, dict[str, tuple[Any, ...] | Derived]] = {
    "megatron_training": {
        "recompute_activation_function": _OFF,
        "swap_attention": _OFF,
        "swap_optimizer": _OFF,
        "reuse_fp32_param": _OFF,
        "variable_seq_lengths": _OFF,
        # packing here never pads a packed row to seq_length and never lets one sequence attend
        # to another: the suite demands both switches on with use_remove_padding
        "no_pad_to_seq_lengths": (None, True),
        "reset_attention_mask": (None, True),
        "attention_mask_type": (None, "causal"),
        "use_rotary_position_embeddings": (None, True),
        "num_workers": (0, None),
        "num_layers_per_virtual_pipeline_stage": (None,),
        "noop_layers": (None, ""),
        "overlap_grad_reduce": _OFF,
        "overlap_param_gather": _OFF,
        "npu_deterministic": _OFF,
        "tokenizer_padding_side": (None, "left"),
        "prompt_type": (None,),
        "prompt_type_path": (None,),
        # the builder never uses these kernels: only "disabled" matches what runs
        "no_masked_softmax_fusion": (None, True),
        "no_gradient_accumulation_fusion": (None, True),
        # the platform picks hccl / nccl / gloo; 'nccl' is the Ascend suite's spelling of "the
        # accelerator's backend" (transfer_to_npu maps it to hccl), so it is inert too
        "distributed_backend": (None, "nccl", "hccl"),
    },
    "rl_config": {
        "use_swanlab": _OFF,
        # the driver runs the phases one after another in submission order: ordered either way
        "guarantee_order": (None, True, False),
        # data moves between driver and workers through Ray's object store, not ZeroMQ
        "zmq_communication": (None, False),
        "async_engine": (None, False),
        # GAE's: group_norm advantages (the only estimator) use neither
        "gamma": (None, 1),
        "lam": (None, 0.95),
        # the driver runs in the launching process, not as a Ray task with reserved CPUs
        "num_cpus_for_local_task": (None, 1),
        # the multi-turn keys at the suite's defaults (multi_turn_enable itself is refused)
        "tool_config_path": (None,),
        "max_tool_calls": (None, 0),
        "max_parallel_calls": (None, 0),
        "max_total_response_length": (None, 0),
        "max_tool_response_length": (None, 0),
        "tool_response_truncate_side": (None,),
        "tool_parser_format": (None,),
    },
    "generate_config": {
        "torchair_graph": _OFF,
        # rollout expert parallelism is on exactly when infer_expert_parallel_size > 1
        "enable_expert_parallel": Derived(
            lambda section: section.get("infer_expert_parallel_size", 1) > 1,
            "infer_expert_parallel_size > 1 (true with rollout EP, false without)",
        ),
    },
    "model": {
        # a bias on the attention projections other than QKV (add_qkv_bias) is never built
        "attention_bias": (None, False),
        "no_gradient_accumulation_fusion": (None, True),
        "use_rotary_position_embeddings": (None, True),
    },
}
# actor_config overrides megatron_training and may carry the same keys.
UNSUPPORTED["actor_config"] = UNSUPPORTED["megatron_training"]

_PERFORMANCE = "an Ascend performance switch of MindSpeed / vllm-ascend"
_DISPATCH = (
    "the suite's transfer-dock chunk of one phase; the driver here hands each phase its whole "
    "batch, which is the suite's result for any valid chunk"
)
# section -> key -> why it has no effect here (accepted with any value, named once per run)
NO_EFFECT: dict[str, dict[str, str]] = {
    "megatron_training": {
        "moe_alltoall_overlap_comm": _PERFORMANCE,
        "moe_permutation_async_comm": _PERFORMANCE,
        "gemm_gradient_accumulation_fusion": _PERFORMANCE,
        "shape_order": _PERFORMANCE + " (attention layout of the fused kernel)",
        "use_fused_moe_token_permute_and_unpermute": _PERFORMANCE,
    },
    "rl_config": {
        "log_max_throughput": "the suite's extra throughput metric; tokens/s is always logged",
        "actor_rollout_dispatch_size": _DISPATCH,
        "actor_logprob_dispatch_size": _DISPATCH,
        "ref_dispatch_size": _DISPATCH,
        "reward_dispatch_size": _DISPATCH,
        "adv_dispatch_size": _DISPATCH,
        "actor_update_dispatch_size": _DISPATCH,
        "dynamic_sampling_dispatch_size": _DISPATCH,
        "num_cpus_for_placement_group": "Ray CPUs of the suite's placement group; workers here "
        "reserve one device slot each",
    },
    "generate_config": {
        "ascend_scheduler_config_enabled": _PERFORMANCE + " (vllm-ascend's scheduler)",
        "num_scheduler_steps": _PERFORMANCE + " (multi-step scheduling of old vLLM)",
    },
    "model": {
        "moe_permutation_async_comm": _PERFORMANCE,
        "use_fused_moe_token_permute_and_unpermute": _PERFORMANCE,
        "spec": "MindSpeed-LLM's layer-spec module; the layer spec here comes from the "
        "platform (models/layer_specs.py) and the model keys",
        "shape_order": _PERFORMANCE + " (attention layout of the fused kernel)",
    },
}
NO_EFFECT["actor_config"] = NO_EFFECT["megatron_training"]

DOCS = "docs/coming_from_mindspeed_rl.md"
# section -> key -> why the run is refused when the key is true
REFUSED_FEATURES: dict[str, dict[str, str]] = {
    "rl_config": {
        "multi_turn_enable": "multi-turn rollouts with tool calls are not supported (single-turn "
        f"rule-reward RL only; {DOCS}, Multi-turn)",
    },
}

# where the Ascend suite needs a Megatron-side key for a feature that this project configures in
# one place, the refusal says so
HINTS = {
    "no_pad_to_seq_lengths": "packed rows are never padded to seq_length here",
    "reset_attention_mask": "rl_config.use_remove_padding keeps attention within each sequence",
    "variable_seq_lengths": "packed or token-budget micro-batches switch it on where the "
    "pipeline needs it",
    "attention_bias": "QKV bias is add_qkv_bias; no other attention bias is built",
    "zmq_communication": "data moves through Ray's object store",
    "num_workers": "the driver reads the prompts of an iteration itself; no loader processes",
    "noop_layers": "MindSpeed's identity layers that pad the layer count to a multiple of PP "
    "are not built on megatron-core here; split the real layers unevenly with num_layer_list "
    "instead (docs/parallelism.md)",
    "async_engine": "generation and training alternate (blocking)",
}


def hint(key: str) -> str:
    return f" ({HINTS[key]})" if key in HINTS else ""


def _same(value: Any, inert: Any) -> bool:
    """YAML-equal: 1 and 1.0 are the same number (the suite's recipes write both); a bool is
    not a number (``true`` is not ``1``)."""
    if isinstance(value, bool) or isinstance(inert, bool):
        return type(value) is type(inert) and value == inert
    if isinstance(value, numbers.Number) and isinstance(inert, numbers.Number):
        return value == inert
    return type(value) is type(inert) and value == inert


def is_inert(section: str, key: str, value: Any, siblings: Mapping[str, Any] = {}) -> bool:
    """Whether ``value`` is what this project behaves as; ``siblings``: the section's keys."""
    spec = UNSUPPORTED[section][key]
    if isinstance(spec, Derived):
        try:
            derived = spec.derive(siblings)
        except TypeError:  # a sibling of the wrong type: validation reports that one
            return True
        return value is None or _same(value, derived)
    return any(_same(value, inert) for inert in spec)


def inert_description(section: str, key: str) -> str:
    spec = UNSUPPORTED[section][key]
    if isinstance(spec, Derived):
        return spec.description
    if spec is _OFF:
        return "false"
    return " or ".join(json.dumps(v) for v in spec)  # YAML's spelling: null, true
