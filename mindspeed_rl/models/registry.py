"""The architectures this project trains, keyed by Hugging Face ``model_type``.

An :class:`Architecture` says what distinguishes one family in Megatron's GPT model: bias on the
q/k/v projections (Qwen2), RMSNorm on queries and keys (Qwen3), routed experts (Qwen3-MoE). All
four share the Hugging Face parameter names of Llama (``model.layers.N.self_attn.q_proj``, ...),
so they share one parameter mapping (``param_mapping.py``); the registry entry decides which rules
of it apply. Building Megatron objects from a :class:`ModelConfig` is ``gpt_builder.py``.

To add an architecture: add an entry here, teach ``hf_config.model_config_from_hf`` its config
keys, and add its tiny model to tests/models/tiny_hf.py so the logits tests cover it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Architecture:
    model_type: str  # config.json "model_type"
    hf_class: str  # config.json "architectures"[0]
    cli_name: str  # cli/convert_ckpt.py --model-type-hf (MindSpeed-LLM's spelling)
    qkv_bias: bool  # q/k/v projections carry a bias (o_proj never does)
    qk_layernorm: bool  # per-head RMSNorm on queries and keys, before RoPE
    moe: bool  # every layer's MLP is a routed mixture of experts
    shared_experts: bool = False  # no supported architecture has them yet (Qwen2-MoE would)


ARCHITECTURES: dict[str, Architecture] = {
    "qwen2": Architecture("qwen2", "Qwen2ForCausalLM", "qwen2", True, False, False),
    "qwen3": Architecture("qwen3", "Qwen3ForCausalLM", "qwen3", False, True, False),
    "qwen3_moe": Architecture("qwen3_moe", "Qwen3MoeForCausalLM", "qwen3-moe", False, True, True),
    "llama": Architecture("llama", "LlamaForCausalLM", "llama3", False, False, False),
}

CLI_NAMES: dict[str, str] = {arch.cli_name: arch.model_type for arch in ARCHITECTURES.values()}


def architecture(model_type: str | None, source: str = "config.json") -> Architecture:
    """The registry entry of ``model_type``; ValueError listing the known ones otherwise."""
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"{source}: model_type {model_type!r} is not known to the model registry; "
            f"supported: {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[model_type]


def architecture_for_cli(name: str) -> Architecture:
    """The entry for a ``--model-type-hf`` value (qwen2, qwen3, qwen3-moe, llama3)."""
    if name not in CLI_NAMES:
        raise ValueError(f"--model-type-hf {name!r} is unknown; choose one of {sorted(CLI_NAMES)}")
    return ARCHITECTURES[CLI_NAMES[name]]
