"""Hugging Face ``config.json`` <-> :class:`ModelConfig` (the model YAML), for the registry.

Both paths into Megatron -- our model YAMLs and a Hugging Face checkpoint -- end in one
:class:`ModelConfig`, so one builder (``gpt_builder.py``) and one parameter mapping
(``param_mapping.py``) serve both.

The parser reads the JSON itself rather than going through ``transformers.AutoConfig``, so that it
accepts every spelling in circulation and gives one clear error for what Megatron cannot express:

* as published on the Hub (written by transformers 4.x): ``rope_theta`` and
  ``rope_scaling: {"type" | "rope_type": "llama3", "factor": ...}``, ``torch_dtype``, and for
  Qwen3-MoE ``num_experts``;
* as written by transformers 5.x: ``rope_parameters: {"rope_type", "rope_theta", ...}``,
  ``dtype``, and for Qwen3-MoE ``num_local_experts``.

:func:`hf_config_dict` writes the Hub spelling, which both transformers 4.x and 5.x (and vLLM)
read.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mindspeed_rl.config.schema import ModelConfig
from mindspeed_rl.models.registry import architecture

# Defaults of the transformers config classes for keys a config.json may leave out.
_DEFAULT_ROPE_THETA = 10000.0
_DEFAULT_RMS_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class HFModelInfo:
    """What a Hugging Face config.json says about a model, in Megatron's terms.

    ``model`` has ``padded_vocab_size`` set (the Megatron embedding rows); ``vocab_size`` is the
    Hugging Face embedding rows, which the conversion pads to and un-pads from.
    """

    model_type: str
    model: ModelConfig
    vocab_size: int
    dtype: str | None  # "bfloat16", "float16", "float32" or None when the file does not say


def padded_vocab_size(vocab_size: int, make_vocab_size_divisible_by: int, tp: int) -> int:
    """Megatron's padding rule: the next multiple of ``make_vocab_size_divisible_by x TP``."""
    multiple = make_vocab_size_divisible_by * tp
    return -(-vocab_size // multiple) * multiple


def _require(config: dict[str, Any], key: str, source: str) -> Any:
    if key not in config or config[key] is None:
        raise ValueError(f"{source}: missing key {key!r}, which every {config['model_type']} has")
    return config[key]


def _rope(config: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, llama3 scaling parameters or None), from either spelling."""
    params = config.get("rope_parameters")
    scaling = config.get("rope_scaling")
    theta = config.get("rope_theta")
    if isinstance(params, dict):
        theta = params.get("rope_theta", theta)
        scaling = params if scaling is None else scaling
    if isinstance(scaling, dict):
        kind = scaling.get("rope_type", scaling.get("type", "default"))
    else:
        kind = "default"
    if kind in (None, "default"):
        return float(theta if theta is not None else _DEFAULT_ROPE_THETA), None
    if kind != "llama3":
        raise ValueError(
            f"{source}: rope type {kind!r} is not supported; supported: default (plain RoPE) and "
            "llama3 (Llama-3.1 scaling). Remove rope_scaling to convert the base-context model."
        )
    required = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in required if k not in scaling]
    if missing:
        raise ValueError(f"{source}: llama3 rope scaling lacks {missing}")
    return float(theta if theta is not None else _DEFAULT_ROPE_THETA), scaling


def _reject(source: str, key: str, value: Any, why: str) -> None:
    raise ValueError(f"{source}: {key}={value!r} is not supported: {why}")


def model_config_from_hf(
    config: dict[str, Any],
    *,
    make_vocab_size_divisible_by: int = 1,
    tensor_parallel_size: int = 1,
    source: str = "config.json",
) -> HFModelInfo:
    """Translate a Hugging Face config dict into a :class:`ModelConfig` (plus vocab and dtype).

    Raises ValueError naming the key for a model type the registry does not know and for
    features Megatron's GPT model cannot express (o_proj bias, sliding window, dense layers
    between MoE layers, rope types other than default / llama3).
    """
    arch = architecture(config.get("model_type"), source)
    model_type = arch.model_type
    act = config.get("hidden_act", "silu")
    if act != "silu":
        _reject(source, "hidden_act", act, "only SwiGLU (silu) MLPs are supported")
    if config.get("use_sliding_window"):
        _reject(source, "use_sliding_window", True, "Megatron's GPT model attends globally")
    if not arch.qkv_bias and config.get("attention_bias"):
        _reject(source, "attention_bias", True, "it adds an o_proj bias Megatron does not have")
    if config.get("mlp_bias"):
        _reject(source, "mlp_bias", True, "Megatron's SwiGLU MLP has no bias here")

    heads = int(_require(config, "num_attention_heads", source))
    hidden = int(_require(config, "hidden_size", source))
    groups = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim")
    theta, scaling = _rope(config, source)
    vocab = int(_require(config, "vocab_size", source))
    fields: dict[str, Any] = {
        "num_layers": int(_require(config, "num_hidden_layers", source)),
        "hidden_size": hidden,
        "ffn_hidden_size": int(_require(config, "intermediate_size", source)),
        "num_attention_heads": heads,
        "kv_channels": int(head_dim) if head_dim is not None else None,
        "group_query_attention": groups != heads,
        "num_query_groups": int(groups),
        "rotary_base": theta,
        "max_position_embeddings": int(_require(config, "max_position_embeddings", source)),
        "make_vocab_size_divisible_by": make_vocab_size_divisible_by,
        "padded_vocab_size": padded_vocab_size(
            vocab, make_vocab_size_divisible_by, tensor_parallel_size
        ),
        "untie_embeddings_and_output_weights": not config.get("tie_word_embeddings", False),
        "add_qkv_bias": arch.qkv_bias,
        "norm_epsilon": float(config.get("rms_norm_eps", _DEFAULT_RMS_EPS)),
        "qk_layernorm": arch.qk_layernorm,
    }
    if scaling is not None:
        fields.update(
            rope_scaling_type="llama3",
            rope_scaling_factor=float(scaling["factor"]),
            low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
        )
    if arch.moe:
        if config.get("mlp_only_layers"):
            _reject(source, "mlp_only_layers", config["mlp_only_layers"], "every layer must be MoE")
        if config.get("decoder_sparse_step", 1) != 1:
            _reject(
                source, "decoder_sparse_step", config["decoder_sparse_step"], "only 1 is supported"
            )
        experts = config.get("num_experts", config.get("num_local_experts"))
        if experts is None:
            raise ValueError(f"{source}: missing num_experts (or num_local_experts)")
        fields.update(
            num_experts=int(experts),
            moe_router_topk=int(_require(config, "num_experts_per_tok", source)),
            moe_ffn_hidden_size=int(_require(config, "moe_intermediate_size", source)),
            norm_topk_prob=bool(config.get("norm_topk_prob", False)),
            moe_aux_loss_coeff=float(config.get("router_aux_loss_coef", 0.0)),
        )
    dtype = config.get("dtype", config.get("torch_dtype"))
    return HFModelInfo(model_type, ModelConfig(**fields), vocab, dtype)


def read_hf_config(
    hf_dir: str | Path, *, make_vocab_size_divisible_by: int = 1, tensor_parallel_size: int = 1
) -> tuple[HFModelInfo, dict[str, Any]]:
    """Parse ``<hf_dir>/config.json``; returns the translated info and the raw dict."""
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{path}: not found; a Hugging Face model directory holds config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    info = model_config_from_hf(
        raw,
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        tensor_parallel_size=tensor_parallel_size,
        source=str(path),
    )
    return info, raw


def hf_config_dict(
    model_type: str, model: ModelConfig, vocab_size: int, dtype: str = "bfloat16"
) -> dict[str, Any]:
    """A config.json for ``model`` in the Hub spelling (readable by transformers 4.x and 5.x).

    Inverse of :func:`model_config_from_hf` for every field Megatron uses; ``vocab_size`` is the
    Hugging Face (un-padded) vocabulary.
    """
    arch = architecture(model_type, "hf_config_dict")
    for key, value, expected in (
        ("add_qkv_bias", model.add_qkv_bias, arch.qkv_bias),
        ("qk_layernorm", model.qk_layernorm, arch.qk_layernorm),
        ("num_experts", model.num_experts is not None, arch.moe),
    ):
        if value != expected:
            raise ValueError(f"{key}={getattr(model, key)} does not fit model type {model_type}")
    scaling = None
    if model.rope_scaling_type == "llama3":
        scaling = {
            "rope_type": "llama3",
            "factor": model.rope_scaling_factor,
            "low_freq_factor": model.low_freq_factor,
            "high_freq_factor": model.high_freq_factor,
            "original_max_position_embeddings": model.original_max_position_embeddings,
        }
    config: dict[str, Any] = {
        "architectures": [arch.hf_class],
        "model_type": model_type,
        "hidden_act": "silu",
        "hidden_size": model.hidden_size,
        "intermediate_size": model.ffn_hidden_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_key_value_heads": model.num_query_groups or model.num_attention_heads,
        "max_position_embeddings": model.max_position_embeddings,
        "rms_norm_eps": model.norm_epsilon,
        "rope_theta": model.rotary_base,
        "rope_scaling": scaling,
        "tie_word_embeddings": not model.untie_embeddings_and_output_weights,
        "vocab_size": vocab_size,
        "torch_dtype": dtype,
        "attention_dropout": 0.0,
        "use_cache": True,
    }
    if model.kv_channels is not None:
        config["head_dim"] = model.kv_channels
    if not arch.qkv_bias:
        config["attention_bias"] = False
    if model_type != "llama":
        config["use_sliding_window"] = False
    if arch.moe:
        config.update(
            num_experts=model.num_experts,
            num_experts_per_tok=model.moe_router_topk,
            moe_intermediate_size=model.moe_ffn_hidden_size,
            norm_topk_prob=model.norm_topk_prob,
            router_aux_loss_coef=model.moe_aux_loss_coeff,
            decoder_sparse_step=1,
            mlp_only_layers=[],
        )
    return config
