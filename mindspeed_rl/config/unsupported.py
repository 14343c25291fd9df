"""Keys that Ascend-suite YAMLs carry and this project recognises but does not implement yet.

A key listed here is never reported as a typo. Set to its inert value (the value that turns the
feature off) it is accepted and has no effect; set to anything else it is rejected as "recognised,
not supported yet", so that a run never silently behaves differently from what the YAML asks.
"""

from __future__ import annotations

import json
from typing import Any

_OFF = (None, False, 0, "", [])

# section -> key -> the values that leave the feature off
UNSUPPORTED: dict[str, dict[str, tuple[Any, ...]]] = {
    "megatron_training": {
        "recompute_activation_function": _OFF,
        "swap_attention": _OFF,
        "swap_optimizer": _OFF,
        "reuse_fp32_param": _OFF,
        "variable_seq_lengths": _OFF,
        "no_pad_to_seq_lengths": _OFF,
        "reset_attention_mask": _OFF,
        "num_layers_per_virtual_pipeline_stage": (None,),
        "noop_layers": (None, ""),
        "moe_tp_extend_ep": _OFF,
        "moe_alltoall_overlap_comm": _OFF,
        "moe_permutation_async_comm": _OFF,
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
        "partial_rollout_max_split": (None, 1),
        "actor_logprob_dispatch_size": (None,),
        "actor_update_dispatch_size": (None,),
        "adv_dispatch_size": (None,),
        "guarantee_order": _OFF,
        # GAE's: group_norm advantages (the only estimator) use neither
        "gamma": (None, 1, 1.0),
        "lam": (None, 0.95),
        # the driver runs in the launching process, not as a Ray task with reserved CPUs
        "num_cpus_for_local_task": (None, 1),
    },
    "generate_config": {
        "torchair_graph": _OFF,
    },
}
# actor_config overrides megatron_training and may carry the same keys.
UNSUPPORTED["actor_config"] = UNSUPPORTED["megatron_training"]


# where the Ascend suite needs a Megatron-side key for a feature that this project configures in
# one place, the refusal says so
HINTS = {
    "no_pad_to_seq_lengths": "rl_config.use_remove_padding packs sequences without it",
    "reset_attention_mask": "rl_config.use_remove_padding keeps attention within each sequence "
    "without it",
    "variable_seq_lengths": "packed or token-budget micro-batches switch it on where the "
    "pipeline needs it",
    "noop_layers": "MindSpeed's identity layers that pad the layer count to a multiple of PP "
    "are not built on megatron-core here; split the real layers unevenly with num_layer_list "
    "instead (docs/parallelism.md)",
    "moe_tp_extend_ep": "MindSpeed's layout of whole experts per TP rank; experts here are split "
    "over TP like dense MLPs (megatron-core's expert TP = TP), the layout that conversion and "
    "weight sync map; the recipe runs without it",
}


def hint(key: str) -> str:
    return f" ({HINTS[key]})" if key in HINTS else ""


def is_inert(section: str, key: str, value: Any) -> bool:
    inert_values = UNSUPPORTED[section][key]
    return any(value == inert and type(value) is type(inert) for inert in inert_values) or (
        value is None and None in inert_values
    )


def inert_description(section: str, key: str) -> str:
    inert_values = UNSUPPORTED[section][key]
    if inert_values is _OFF:
        return "false"
    return " or ".join(json.dumps(v) for v in inert_values)  # YAML's spelling: null, true
