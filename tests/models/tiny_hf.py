"""Tiny random Hugging Face checkpoints of every registered architecture, built locally.

Weights are drawn with a large spread (not transformers' 0.02 init), norms and biases included,
so that logits are O(1) and any mis-mapped tensor (a swapped q/k, a wrong qkv interleave, a
transposed expert) moves them by far more than the 1e-4 tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

VOCAB = 150  # not a multiple of 16: make_vocab_size_divisible_by=16 pads it to 160
SEQ = 12

_COMMON: dict[str, Any] = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

# name -> (model_type, extra config keys)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2": ("qwen2", {"rope_theta": 1000000.0}),
    "qwen2_tied": ("qwen2", {"tie_word_embeddings": True, "rms_norm_eps": 1e-5}),
    "qwen3": ("qwen3", {"head_dim": 16, "num_key_value_heads": 2}),
    "qwen3_moe": (
        "qwen3_moe",
        {
            "head_dim": 8,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 16,
            "norm_topk_prob": True,
        },
    ),
    "llama": (
        "llama",
        {
            "num_hidden_layers": 4,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 2.0,
                "original_max_position_embeddings": 64,
            },
        },
    ),
}


def hf_config(name: str, **overrides: Any):
    """The config of ``name``; ``overrides`` replace keys (e.g. ``num_experts=8``)."""
    import transformers

    model_type, extra = MODELS[name]
    return transformers.AutoConfig.for_model(model_type, **{**_COMMON, **extra, **overrides})


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Spread out every parameter: weights ~ N(0, 1/sqrt(fan_in)), norms ~ 1 + N(0, 0.2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif p.dim() == 1:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)


def save_tiny_model(
    name: str,
    directory: Path,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> Path:
    """Save a tiny random model of ``name`` in several safetensors shards with an index."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(name, **overrides))
    randomize_(model, seed)
    model.to(dtype).save_pretrained(directory, max_shard_size="40KB")
    return Path(directory)


def prompts(batch: int = 2, seq: int = SEQ, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def hf_logits(directory: Path, tokens: torch.Tensor) -> torch.Tensor:
    """Float32 logits ``[B, S, V]`` of the Hugging Face model saved in ``directory``."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(tokens).logits
