"""The project's core attention: plain ``torch.nn.functional.scaled_dot_product_attention``.

A drop-in ``core_attention`` of megatron-core's ``SelfAttention`` (same constructor and forward
as ``DotProductAttention``; no parameters, so checkpoint names do not change). Why not the local
``DotProductAttention``: it materialises fp32 and bf16 ``[b, h, L, L]`` scores and a dense mask per
layer (quadratic memory, impossible at 20k tokens) and refuses packed sequences. Here causality is
the kernel's ``is_causal`` flag, so no ``[B, 1, L, L]`` mask exists anywhere, and torch's CPU
flash kernel keeps memory linear in L in forward and backward.

It is also the semantic reference for the accelerator kernels (Transformer Engine's fused
attention on CUDA, MindSpeed's ``npu_fusion_attention`` on NPU): same scale, causal from the top
left, grouped-query heads shared by ``num_heads / num_query_groups`` queries, and packed (THD)
sequences given by ``PackedSeqParams.cu_seqlens_q`` that never attend across a boundary.

Sequence parallelism needs nothing here: ``linear_qkv`` all-gathers the sequence before core
attention, and head counts are read from the tensors (this TP rank's heads). Context parallelism
(a sequence split over ranks) is not implemented: it is refused at construction.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# megatron-core's mask types: only causal self-attention is what a GPT layer asks for.
_CAUSAL = "causal"


class SDPAttention(torch.nn.Module):
    """Causal attention over ``[s, b, h, d]`` (or packed ``[t, h, d]``) queries, keys, values."""

    def __init__(
        self,
        config,
        layer_number: int,
        attn_mask_type,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        **process_groups: Any,
    ) -> None:
        """``process_groups``: newer megatron-core passes its process-group collection
        (``pg_collection``); nothing here depends on the TP group (heads come from tensors)."""
        super().__init__()
        if getattr(config, "context_parallel_size", 1) > 1:
            raise ValueError(
                f"context_parallel_size={config.context_parallel_size}: the project's CPU "
                "attention does not split sequences over ranks; context parallelism runs in "
                "Transformer Engine's attention (CUDA) or MindSpeed's (NPU)"
            )
        if attn_mask_type.name != _CAUSAL:
            raise ValueError(f"attn_mask_type={attn_mask_type.name}: only causal is implemented")
        self.config = config
        self.layer_number = layer_number
        head_dim = config.kv_channels
        self.softmax_scale = head_dim**-0.5 if softmax_scale is None else softmax_scale
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type=None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        """``query`` [s, b, h, d], ``key`` / ``value`` [s, b, g, d] -> [s, b, h * d]; packed
        (``packed_seq_params.qkv_format == 'thd'``): [t, h, d] / [t, g, d] -> [t, h * d].

        ``attention_mask`` (Megatron's boolean [b, 1, s, s], True = masked) is optional: None
        means causal. Given, it is applied as is (and costs its [b, 1, s, s] memory)."""
        if attention_bias is not None:
            raise ValueError("attention_bias is not supported by the project's attention")
        if packed_seq_params is not None and packed_seq_params.qkv_format == "thd":
            return self._packed(query, key, value, packed_seq_params)
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        out = self._attend(q, k, v, attention_mask)
        # [b, h, s, d] -> [s, b, h * d]
        return out.permute(2, 0, 1, 3).reshape(query.shape[0], query.shape[1], -1)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """[b, h, s, d] attention; keys / values with g <= h heads serve h / g queries each."""
        dropout = self.dropout if self.training else 0.0
        if dropout > 0 and not self.config.sequence_parallel:
            # as megatron's DotProductAttention: heads differ per TP rank, so their dropout
            # masks come from the model-parallel RNG stream
            from megatron.core import tensor_parallel

            with tensor_parallel.get_cuda_rng_tracker().fork():
                return self._sdpa(q, k, v, mask, dropout)
        return self._sdpa(q, k, v, mask, dropout)

    def _sdpa(self, q, k, v, mask: torch.Tensor | None, dropout: float) -> torch.Tensor:
        if mask is None:
            causality = dict(is_causal=q.shape[-2] > 1)
        else:
            causality = dict(attn_mask=~mask)  # SDPA's boolean mask: True = attend
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, scale=self.softmax_scale,
            enable_gqa=k.shape[1] != q.shape[1], **causality,
        )  # fmt: skip

    def _packed(self, query, key, value, params) -> torch.Tensor:
        """Sequences laid end to end ([t, h, d]), each attending causally within itself.

        ``cu_seqlens_q`` [n + 1] are the boundaries; with ``cu_seqlens_q_padded`` each sequence
        starts at its padded offset and the padding behind it gets zeros (TE's convention)."""
        cu = params.cu_seqlens_q.tolist()
        padded = cu if params.cu_seqlens_q_padded is None else params.cu_seqlens_q_padded.tolist()
        out = query.new_zeros(query.shape[0], query.shape[1], value.shape[-1])
        for i in range(len(cu) - 1):
            start, length = padded[i], cu[i + 1] - cu[i]
            part = slice(start, start + length)
            # [l, h, d] -> [1, h, l, d]
            q, k, v = (t[part].transpose(0, 1).unsqueeze(0) for t in (query, key, value))
            out[part] = self._attend(q, k, v, None)[0].transpose(0, 1)
        return out.reshape(query.shape[0], -1)
