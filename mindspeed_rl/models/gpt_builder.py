"""ModelConfig -> megatron-core ``TransformerConfig``, the platform's layer spec and ``GPTModel``.

The one builder for every path: a model YAML (``configs/model/*.yaml``) and a Hugging Face
``config.json`` (through ``hf_config.model_config_from_hf``) both arrive as a
:class:`ModelConfig`. Call ``mindspeed_rl.platform.megatron_setup.prepare_megatron()`` and
initialise Megatron's parallel state before :func:`build_gpt_model`.

Choices that matter for matching Hugging Face numerics:

* RMSNorm everywhere (also for qk-layernorm), SwiGLU, no linear bias but the optional qkv bias;
* Qwen3-MoE's router: ``softmax -> top-k -> renormalise`` (``norm_topk_prob``) equals Megatron's
  ``top-k on logits -> softmax`` (``moe_router_pre_softmax=False``); without renormalisation it is
  ``softmax -> top-k`` (``moe_router_pre_softmax=True``). No token dropping (no capacity factor);
* Llama-3 RoPE scaling: megatron-core only passes ``factor`` to its scaling function and keeps
  the Llama-3.1 defaults for the other three parameters, so the builder recomputes the inverse
  frequencies with all four from the config.
"""

from __future__ import annotations

from typing import Any

import torch

from mindspeed_rl.config.schema import ModelConfig
from mindspeed_rl.models import pipeline_split
from mindspeed_rl.platform.distributed import ParallelLayout

SINGLE_PROCESS = ParallelLayout()  # TP = PP = EP = 1


def _megatron_version() -> tuple[int, int]:
    from megatron.core import package_info

    major, minor = package_info.__version__.split(".")[:2]
    return int(major), int(minor)


def transformer_config(
    model: ModelConfig,
    layout: ParallelLayout = SINGLE_PROCESS,
    params_dtype: torch.dtype = torch.float32,
    **overrides: Any,
):
    """The ``TransformerConfig`` of ``model`` in ``layout``.

    Kernel fusions, sequence parallelism and recompute are off and parameters are created on
    the host (``use_cpu_initialization``); a training worker passes what its YAML and platform
    ask for as ``overrides`` (any ``TransformerConfig`` field, e.g. ``sequence_parallel``,
    ``recompute_granularity``) and moves the model to its device.
    """
    import torch.nn.functional as F
    from megatron.core.transformer import TransformerConfig

    moe: dict[str, Any] = {}
    if model.num_experts:
        from mindspeed_rl.models.moe_dispatch import token_dispatcher
        from mindspeed_rl.platform.device import device_type

        dispatcher = token_dispatcher(
            model.moe_token_dispatcher_type, _megatron_version(), device_type()
        )
        moe = dict(
            num_moe_experts=model.num_experts,
            moe_router_topk=model.moe_router_topk,
            moe_ffn_hidden_size=model.moe_ffn_hidden_size or model.ffn_hidden_size,
            moe_router_pre_softmax=not model.norm_topk_prob,
            moe_router_load_balancing_type=model.moe_router_load_balancing_type,
            moe_aux_loss_coeff=model.moe_aux_loss_coeff,
            moe_grouped_gemm=model.moe_grouped_gemm,
            moe_token_dispatcher_type=dispatcher,
        )
    fields: dict[str, Any] = dict(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups or model.num_attention_heads,
        kv_channels=model.kv_channels,
        normalization="RMSNorm",
        layernorm_epsilon=model.norm_epsilon,
        gated_linear_unit=model.swiglu,
        activation_func=F.silu,
        add_bias_linear=not model.disable_bias_linear,
        add_qkv_bias=model.add_qkv_bias,
        qk_layernorm=model.qk_layernorm,
        attention_softmax_in_fp32=model.attention_softmax_in_fp32,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=layout.tensor_model_parallel_size,
        pipeline_model_parallel_size=layout.pipeline_model_parallel_size,
        expert_tensor_parallel_size=layout.expert_sizes()[0],
        expert_model_parallel_size=layout.expert_sizes()[1],
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        use_cpu_initialization=True,
        bias_dropout_fusion=False,
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        **moe,
        **pipeline_split.megatron_fields(layout.pipeline_layers, _megatron_version()),
    )
    fields.update(overrides)
    return TransformerConfig(**fields)


def build_gpt_model(
    model: ModelConfig,
    layout: ParallelLayout = SINGLE_PROCESS,
    params_dtype: torch.dtype = torch.float32,
    backend: str | None = None,
    vocab_size: int | None = None,
    **overrides: Any,
):
    """This rank's ``GPTModel`` (its pipeline stage, TP / EP shard) for ``model``.

    ``model.padded_vocab_size`` must be set (the embedding rows of the checkpoint). ``backend``
    (``layer_specs.BACKENDS``) defaults to this platform's (``layer_specs.platform_backend``).
    ``vocab_size``: the Hugging Face vocabulary; logits of the padding rows beyond it are masked
    out of every softmax (``padded_vocab.py``).
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    from mindspeed_rl.models import layer_specs

    if model.padded_vocab_size is None:
        raise ValueError("padded_vocab_size is not set: it fixes the embedding rows of the model")
    config = transformer_config(model, layout, params_dtype, **overrides)
    llama3 = model.rope_scaling_type == "llama3"
    with pipeline_split.building(layout.pipeline_layers, _megatron_version()):
        gpt = GPTModel(
            config=config,
            transformer_layer_spec=layer_specs.decoder_spec(
                model, config, backend or layer_specs.platform_backend()
            ),
            vocab_size=model.padded_vocab_size,
            max_sequence_length=model.max_position_embeddings,
            pre_process=parallel_state.is_pipeline_first_stage(),
            post_process=parallel_state.is_pipeline_last_stage(),
            share_embeddings_and_output_weights=not model.untie_embeddings_and_output_weights,
            position_embedding_type=model.position_embedding_type,
            rotary_base=model.rotary_base,
            rope_scaling=llama3,
            rope_scaling_factor=model.rope_scaling_factor,
        )
    if llama3:
        _set_llama3_inv_freq(gpt.rotary_pos_emb, model)
    _cast_parameters(gpt, params_dtype)
    if vocab_size is not None:
        from mindspeed_rl.models.padded_vocab import mask_padded_vocab

        mask_padded_vocab(gpt, vocab_size, model.padded_vocab_size)
    return gpt


def _cast_parameters(gpt: torch.nn.Module, dtype: torch.dtype) -> None:
    """Every parameter in ``dtype``, as Megatron-LM's ``Float16Module`` leaves them: megatron-core's
    local torch norms are created in fp32, and a bf16 model with fp32 norms breaks the
    distributed optimizer's checkpoint (its parameter-state map assumes one dtype per group:
    main params and shard ranges came out paired with the wrong tensors). Runs before DDP, when
    nothing views the parameters yet."""
    for param in gpt.parameters():
        if param.dtype != dtype and param.is_floating_point():
            param.data = param.data.to(dtype)


def _set_llama3_inv_freq(rotary, model: ModelConfig) -> None:
    """Recompute Llama-3 scaled inverse frequencies with the config's four parameters."""
    dim = rotary.inv_freq.shape[0] * 2
    plain = 1.0 / (model.rotary_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    rotary.inv_freq = rotary._apply_scaling(
        plain.to(rotary.inv_freq.device),
        factor=model.rope_scaling_factor,
        low_freq_factor=model.low_freq_factor,
        high_freq_factor=model.high_freq_factor,
        original_max_position_embeddings=model.original_max_position_embeddings,
    )


def with_sequential_experts(model: ModelConfig) -> ModelConfig:
    """The same model with ``SequentialMLP`` experts (no grouped GEMM kernel needed, e.g. CPU)."""
    return model.model_copy(update={"moe_grouped_gemm": False}) if model.moe_grouped_gemm else model
