"""Hugging Face <-> megatron-core parameter names: the table, and nothing about parallelism.

One table of name templates per part of the model, as torchtitan's per-model state-dict adapters
keep theirs (``from_hf_map``): which megatron-core ``GPTModel`` parameter (local-spec names) is
made of which Hugging Face tensors, and how they compose (:class:`Kind`). Where each parameter
lives and how it is cut over ranks is ``models/placement.py``; ``models/param_mapping.py`` joins
the two. Qwen2, Qwen3, Qwen3-MoE and Llama share these names; the
:class:`~mindspeed_rl.config.schema.ModelConfig` switches the optional rows (qkv bias,
qk-layernorm, experts, tied embeddings).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

from mindspeed_rl.config.schema import ModelConfig


class Kind(enum.Enum):
    """How a Megatron parameter is composed of its Hugging Face tensors (and so how it splits).

    =============  ======================================================================
    REPLICATED     one HF tensor, never split (norms, router)
    ROW            one HF tensor, split along dim 1 (``linear_proj``, ``linear_fc2``)
    QKV            q, k, v fused per query group (``tensor_layouts.qkv_blocks``)
    GATE_UP        gate, up fused per rank (``tensor_layouts.fuse_gate_up``)
    VOCAB          embedding / output layer: rows padded to ``padded_vocab_size``
    GROUPED_FC1/2  ``GroupedMLP.weight1/weight2`` (``--moe-grouped-gemm``): all local experts
    =============  ======================================================================
    """

    REPLICATED = "replicated"
    ROW = "row"
    QKV = "qkv"
    GATE_UP = "gate_up"
    VOCAB = "vocab"
    GROUPED_FC1 = "grouped_fc1"
    GROUPED_FC2 = "grouped_fc2"


@dataclasses.dataclass(frozen=True)
class Param:
    """One Megatron parameter of one shard and the HF tensors it is made of.

    ``hf`` order per kind: QKV (q, k, v); GATE_UP (gate, up); GROUPED_FC1 (gate_e, up_e) per
    local expert; GROUPED_FC2 (down_e) per local expert; otherwise one name. ``expert``: a
    routed expert's weight (placed by the expert layout, not the dense one).
    """

    name: str
    kind: Kind
    hf: tuple[str, ...]
    expert: bool = False


EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT_LAYER = "output_layer.weight"
HF_EMBEDDING = "model.embed_tokens.weight"

# Megatron name under decoder.layers.<local>., kind, HF names under model.layers.<layer>.,
# the ModelConfig flag that switches the row on (None: always there)
_ATTENTION: list[tuple[str, Kind, tuple[str, ...], str | None]] = [
    ("input_layernorm.weight", Kind.REPLICATED, ("input_layernorm.weight",), None),
    (
        "self_attention.linear_qkv.weight",
        Kind.QKV,
        tuple(f"self_attn.{p}_proj.weight" for p in "qkv"),
        None,
    ),
    (
        "self_attention.linear_qkv.bias",
        Kind.QKV,
        tuple(f"self_attn.{p}_proj.bias" for p in "qkv"),
        "add_qkv_bias",
    ),
    (
        "self_attention.q_layernorm.weight",
        Kind.REPLICATED,
        ("self_attn.q_norm.weight",),
        "qk_layernorm",
    ),
    (
        "self_attention.k_layernorm.weight",
        Kind.REPLICATED,
        ("self_attn.k_norm.weight",),
        "qk_layernorm",
    ),
    ("self_attention.linear_proj.weight", Kind.ROW, ("self_attn.o_proj.weight",), None),
    ("pre_mlp_layernorm.weight", Kind.REPLICATED, ("post_attention_layernorm.weight",), None),
]
_DENSE_MLP = [
    ("mlp.linear_fc1.weight", Kind.GATE_UP, ("mlp.gate_proj.weight", "mlp.up_proj.weight")),
    ("mlp.linear_fc2.weight", Kind.ROW, ("mlp.down_proj.weight",)),
]
_ROUTER = ("mlp.router.weight", Kind.REPLICATED, ("mlp.gate.weight",))
# one routed expert: Megatron under mlp.experts.local_experts.<local>., HF under mlp.experts.<e>.
_EXPERT = [
    ("linear_fc1.weight", Kind.GATE_UP, ("gate_proj.weight", "up_proj.weight")),
    ("linear_fc2.weight", Kind.ROW, ("down_proj.weight",)),
]


def embedding() -> Param:
    return Param(EMBEDDING, Kind.VOCAB, (HF_EMBEDDING,))


def layer(
    model: ModelConfig, local: int, index: int, experts: Sequence[int], grouped: bool
) -> list[Param]:
    """The parameters of decoder layer ``index`` (``local`` within its pipeline stage) holding
    the routed ``experts`` (global numbers, in local order) of a MoE model."""
    mc, hf = f"decoder.layers.{local}.", f"model.layers.{index}."
    params = [
        Param(mc + name, kind, tuple(hf + n for n in names))
        for name, kind, names, flag in _ATTENTION
        if flag is None or getattr(model, flag)
    ]
    if not model.num_experts:
        return params + [Param(mc + n, k, tuple(hf + h for h in hs)) for n, k, hs in _DENSE_MLP]
    name, kind, names = _ROUTER
    params.append(Param(mc + name, kind, tuple(hf + n for n in names)))
    prefixes = [f"{hf}mlp.experts.{e}." for e in experts]
    if grouped:
        fc1 = tuple(f"{x}{p}_proj.weight" for x in prefixes for p in ("gate", "up"))
        fc2 = tuple(f"{x}down_proj.weight" for x in prefixes)
        return params + [
            Param(mc + "mlp.experts.weight1", Kind.GROUPED_FC1, fc1, expert=True),
            Param(mc + "mlp.experts.weight2", Kind.GROUPED_FC2, fc2, expert=True),
        ]
    for local_expert, x in enumerate(prefixes):
        prefix = f"{mc}mlp.experts.local_experts.{local_expert}."
        params += [
            Param(prefix + n, k, tuple(x + h for h in hs), expert=True) for n, k, hs in _EXPERT
        ]
    return params


def tail(model: ModelConfig, has_embedding: bool) -> list[Param]:
    """Final norm and output layer of the last stage. The output layer is absent when tied to
    the embedding on a stage that holds both (Megatron shares the tensor); on a last stage
    without the embedding it is a copy of the embedding, as Megatron keeps it."""
    params = [Param("decoder.final_layernorm.weight", Kind.REPLICATED, ("model.norm.weight",))]
    if model.untie_embeddings_and_output_weights:
        params.append(Param(OUTPUT_LAYER, Kind.VOCAB, ("lm_head.weight",)))
    elif not has_embedding:
        params.append(Param(OUTPUT_LAYER, Kind.VOCAB, (HF_EMBEDDING,)))
    return params


def hf_shapes(model: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Every Hugging Face tensor the model needs and its shape (for checking inputs)."""
    m, h = model, model.hidden_size
    heads = m.num_attention_heads
    groups = m.num_query_groups or heads
    d = m.kv_channels or h // heads
    shapes: dict[str, tuple[int, ...]] = {HF_EMBEDDING: (vocab_size, h), "model.norm.weight": (h,)}
    if m.untie_embeddings_and_output_weights:
        shapes["lm_head.weight"] = (vocab_size, h)
    ffn, moe_ffn = m.ffn_hidden_size, m.moe_ffn_hidden_size or m.ffn_hidden_size
    for index in range(m.num_layers):
        x = f"model.layers.{index}."
        shapes |= {
            x + "input_layernorm.weight": (h,),
            x + "post_attention_layernorm.weight": (h,),
            x + "self_attn.q_proj.weight": (heads * d, h),
            x + "self_attn.k_proj.weight": (groups * d, h),
            x + "self_attn.v_proj.weight": (groups * d, h),
            x + "self_attn.o_proj.weight": (h, heads * d),
        }
        if m.add_qkv_bias:
            shapes[x + "self_attn.q_proj.bias"] = (heads * d,)
            shapes[x + "self_attn.k_proj.bias"] = (groups * d,)
            shapes[x + "self_attn.v_proj.bias"] = (groups * d,)
        if m.qk_layernorm:
            shapes[x + "self_attn.q_norm.weight"] = (d,)
            shapes[x + "self_attn.k_norm.weight"] = (d,)
        if not m.num_experts:
            shapes[x + "mlp.gate_proj.weight"] = (ffn, h)
            shapes[x + "mlp.up_proj.weight"] = (ffn, h)
            shapes[x + "mlp.down_proj.weight"] = (h, ffn)
            continue
        shapes[x + "mlp.gate.weight"] = (m.num_experts, h)
        for e in range(m.num_experts):
            shapes[f"{x}mlp.experts.{e}.gate_proj.weight"] = (moe_ffn, h)
            shapes[f"{x}mlp.experts.{e}.up_proj.weight"] = (moe_ffn, h)
            shapes[f"{x}mlp.experts.{e}.down_proj.weight"] = (h, moe_ffn)
    return shapes
