"""The one place that picks the decoder's modules per platform (the attention backend seam).

===================== =========================================================================
backend               modules
===================== =========================================================================
``transformer_engine`` CUDA with transformer-engine installed: TE's norm, linears and fused /
                      flash ``TEDotProductAttention`` (context parallelism, THD packing).
``mindspeed``         NPU: megatron-core's local spec as MindSpeed patches it on import of
                      ``mindspeed.megatron_adaptor`` (``PTNorm``, flash attention through
                      ``npu_fusion_attention``, fused SwiGLU / RoPE), switched by the YAML's
                      ``use_flash_attn``, ``use_fused_rmsnorm``, ``use_fused_swiglu`` and
                      ``use_fused_rotary_pos_emb`` (``platform/megatron_setup.py`` hands them over).
``project``           CPU, and CUDA without TE: megatron-core's local modules with the project's
                      :class:`~mindspeed_rl.models.sdpa_attention.SDPAttention` and
                      sequence-parallel :class:`~mindspeed_rl.models.rms_norm.RMSNorm`.
``megatron_local``    megatron-core's local spec unchanged; never chosen automatically: the
                      reference the project backend is tested against.
===================== =========================================================================

Every backend keeps the local spec's *layout* (separate ``input_layernorm`` / ``pre_mlp_layernorm``
modules, ``linear_qkv``, ``linear_proj``, ``linear_fc1`` / ``linear_fc2``), so parameter names are
the checkpoint names of docs/architecture.md for all of them: conversion and weight sync do not
depend on the backend. (TE's own GPT spec fuses the norms into the linears and renames them to
``linear_qkv.layer_norm_weight``; this spec deliberately does not.)
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging

from mindspeed_rl.config.schema import ModelConfig

logger = logging.getLogger(__name__)

TRANSFORMER_ENGINE = "transformer_engine"
MINDSPEED = "mindspeed"
PROJECT = "project"
MEGATRON_LOCAL = "megatron_local"
BACKENDS = (TRANSFORMER_ENGINE, MINDSPEED, PROJECT, MEGATRON_LOCAL)
# the backends whose attention splits sequences over context-parallel ranks
CONTEXT_PARALLEL = (TRANSFORMER_ENGINE, MINDSPEED)


def transformer_engine_available() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


def choose_backend(platform: str, has_transformer_engine: bool) -> str:
    """The backend of ``platform`` ('npu' | 'cuda' | 'cpu')."""
    if platform == "npu":
        return MINDSPEED
    if platform == "cuda":
        if has_transformer_engine:
            return TRANSFORMER_ENGINE
        _warn_no_te()
        return PROJECT
    if platform == "cpu":
        return PROJECT
    raise ValueError(f"platform={platform!r}: expected npu, cuda or cpu")


@functools.cache
def _warn_no_te() -> None:
    logger.warning(
        "transformer-engine is not installed: CUDA runs the project's SDPA attention "
        "(no context parallelism, no fused kernels); install the 'gpu' extra"
    )


def platform_backend() -> str:
    """The backend of this process's platform."""
    from mindspeed_rl.platform.device import device_type

    kind = device_type()
    return choose_backend(kind, kind == "cuda" and transformer_engine_available())


def needs_host_mask(backend: str, use_flash_attn: bool = False) -> bool:
    """Whether the model's forward needs the dense ``[B, 1, L, L]`` causal mask.

    TE and the project attention are causal by construction. megatron-core's local softmax
    builds its default mask on ``cuda`` when none is given: it gets the mask. MindSpeed's flash
    attention given none builds its own compressed causal mask (2048 x 2048, sparse mode 2:
    ``mindspeed/model/transformer.py`` ``get_attention_mask``, 2.3.0_core_r0.12.1), so the host
    mask (0.5 GB per micro-batch at L = 22k) is built for MindSpeed without flash attention
    only."""
    return backend == MEGATRON_LOCAL or (backend == MINDSPEED and not use_flash_attn)


def decoder_spec(model: ModelConfig, config, backend: str):
    """The decoder spec handed to ``GPTModel(transformer_layer_spec=...)``: a layer spec
    (mindspeed, megatron_local) or a whole block spec with the backend's final norm."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    # Grouped experts use the legacy GroupedMLP (mlp.experts.weight1/weight2), the layout
    # MindSpeed-LLM writes with --moe-grouped-gemm. On NPU MindSpeed patched this function.
    local = get_gpt_layer_local_spec(
        num_experts=model.num_experts,
        moe_grouped_gemm=model.moe_grouped_gemm,
        qk_layernorm=model.qk_layernorm,
        moe_use_legacy_grouped_gemm=model.moe_grouped_gemm,
        normalization="RMSNorm",
    )
    if backend in (MINDSPEED, MEGATRON_LOCAL):
        return local
    modules = _te_modules() if backend == TRANSFORMER_ENGINE else _project_modules()
    return _block(config, substitute(local, modules), modules["norm"])


def _local_modules() -> dict[str, type]:
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    return dict(
        norm=WrappedTorchNorm,
        attention=DotProductAttention,
        column=ColumnParallelLinear,
        row=RowParallelLinear,
    )


def _project_modules() -> dict[str, type]:
    from mindspeed_rl.models.rms_norm import RMSNorm
    from mindspeed_rl.models.sdpa_attention import SDPAttention

    local = _local_modules()
    return dict(local, norm=RMSNorm, attention=SDPAttention)


def _te_modules() -> dict[str, type]:
    """Transformer Engine's drop-ins for the local modules (megatron-core's TE extension)."""
    from megatron.core.extensions.transformer_engine import (
        TEColumnParallelLinear,
        TEDotProductAttention,
        TENorm,
        TERowParallelLinear,
    )

    return dict(
        norm=TENorm,
        attention=TEDotProductAttention,
        column=TEColumnParallelLinear,
        row=TERowParallelLinear,
    )


def substitute(spec, modules: dict[str, type]):
    """``spec`` with every local module class replaced by its ``modules`` counterpart (same
    role key), through nested ``ModuleSpec`` / submodule dataclasses."""
    local = _local_modules()
    swap = {local[role]: modules[role] for role in local}

    def walk(node):
        if isinstance(node, type):
            return swap.get(node, node)
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            changes = {f.name: walk(getattr(node, f.name)) for f in dataclasses.fields(node)}
            return dataclasses.replace(node, **changes)
        return node

    return walk(spec)


def _block(config, layer_spec, final_norm: type):
    """This pipeline stage's block: its layers and the backend's final norm (megatron-core
    would build the final norm from its own default, ``WrappedTorchNorm`` without Apex)."""
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_block import (
        TransformerBlock,
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )

    layers = get_num_layers_to_build(config)
    return ModuleSpec(
        module=TransformerBlock,
        submodules=TransformerBlockSubmodules(
            layer_specs=[layer_spec] * layers, layer_norm=final_norm
        ),
    )
