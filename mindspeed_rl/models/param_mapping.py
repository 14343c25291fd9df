"""The one Hugging Face <-> Megatron-core parameter mapping (docs/architecture.md, "One mapping, two uses").

Used by offline conversion (``mindspeed_rl/checkpoint/hf_to_mcore.py``, ``mcore_to_hf.py``) and by
online weight sync from the trained actor into the rollout engine, which takes an iterator of
``(HF name, full tensor)``. A bug found by one is fixed for both.

Names on the Megatron side are megatron-core ``GPTModel`` local-spec names, with layer numbers
local to the pipeline stage and expert numbers local to the expert-parallel rank (what Megatron
and MindSpeed-LLM write). Qwen2, Qwen3, Qwen3-MoE and Llama share the Hugging Face names below;
the :class:`~mindspeed_rl.config.schema.ModelConfig` decides which rules apply (qkv bias,
qk-layernorm, experts, tied embeddings).

How each Megatron parameter is split over tensor-parallel (TP) ranks (``Kind``):

=============  ==========================================================================
REPLICATED     norms, router: every TP rank holds the full tensor
ROW            split along dim 1 (input features): ``linear_proj``, ``linear_fc2``
QKV            q/k/v fused per query group (``tensor_layouts.qkv_blocks``), split along dim 0
GATE_UP        gate/up fused per TP rank (``tensor_layouts.fuse_gate_up``)
VOCAB          embedding / output layer: rows padded to ``padded_vocab_size``, split on dim 0
GROUPED_FC1/2  ``GroupedMLP.weight1/weight2`` (``--moe-grouped-gemm``): all local experts
=============  ==========================================================================

Pipeline stages hold ``num_layers / PP`` consecutive layers, or the layout's ``pipeline_layers``
(``num_layer_list``, ``pipeline_split.py``); expert-parallel (EP) rank ``r`` holds experts ``[r * E / EP, (r + 1) * E / EP)``.
Experts are split over TP like dense MLPs (Megatron's default expert TP = TP).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import torch

from mindspeed_rl.config.schema import ModelConfig
from mindspeed_rl.models import pipeline_split
from mindspeed_rl.models import tensor_layouts as tl
from mindspeed_rl.platform.distributed import ParallelLayout

SINGLE_PROCESS = ParallelLayout()  # TP = PP = EP = 1


class Kind(enum.Enum):
    REPLICATED = "replicated"
    ROW = "row"
    QKV = "qkv"
    GATE_UP = "gate_up"
    VOCAB = "vocab"
    GROUPED_FC1 = "grouped_fc1"
    GROUPED_FC2 = "grouped_fc2"


@dataclasses.dataclass(frozen=True)
class Param:
    """One Megatron parameter of one (PP stage, EP rank) and the HF tensors it is made of.

    ``hf`` order per kind: QKV (q, k, v); GATE_UP (gate, up); GROUPED_FC1 (gate_e, up_e) per
    local expert; GROUPED_FC2 (down_e) per local expert; otherwise one name.
    """

    name: str
    kind: Kind
    hf: tuple[str, ...]


class TensorSource(Protocol):
    """Read access to Hugging Face tensors by name; slices let a reader fetch only a TP shard."""

    def shape(self, name: str) -> tuple[int, ...]: ...

    def dtype(self, name: str) -> torch.dtype: ...

    def read(self, name: str, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        """``tensor[rows, cols]`` (None = everything); may be a view of the source's memory,
        which callers never modify."""
        ...


class DictSource:
    """A :class:`TensorSource` over tensors already in memory (online sync, tests)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._tensors = tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].shape)

    def dtype(self, name: str) -> torch.dtype:
        return self._tensors[name].dtype

    def read(self, name: str, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        tensor = self._tensors[name]
        if rows is not None:
            tensor = tensor[rows]
        if cols is not None:
            tensor = tensor[:, cols]
        return tensor.clone()


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _join_columns(shards: Sequence[torch.Tensor]) -> tl.Block:
    """Row-parallel TP shards joined along dim 1 (one shard: itself, which may lie in a file)."""
    return shards[0] if len(shards) == 1 else tl.ColumnConcat(tuple(shards))


def _chunk(length: int, parts: int, index: int) -> slice:
    size = length // parts
    return slice(index * size, (index + 1) * size)


class WeightMapping:
    """Names, shapes and TP/PP/EP placement of every parameter of one model in one layout.

    Args:
        model: the architecture (from a model YAML or ``hf_config.model_config_from_hf``).
        vocab_size: Hugging Face embedding rows (un-padded).
        layout: Megatron's TP / PP / EP sizes.
        grouped_experts: experts as ``GroupedMLP.weight1/weight2`` (``moe_grouped_gemm``) instead
            of ``SequentialMLP``'s ``local_experts.N.linear_fc1/2``. Defaults to the model's flag.
    Raises:
        ValueError: a size that does not divide (naming the valid choices), or a padded
            vocabulary smaller than the vocabulary / not divisible by TP.
    """

    def __init__(
        self,
        model: ModelConfig,
        vocab_size: int,
        layout: ParallelLayout = SINGLE_PROCESS,
        grouped_experts: bool | None = None,
    ) -> None:
        self.model = model
        self.vocab_size = vocab_size
        self.padded_vocab_size = model.padded_vocab_size or vocab_size
        self.tp = layout.tensor_model_parallel_size
        self.pp = layout.pipeline_model_parallel_size
        self.pipeline_layers = layout.pipeline_layers
        self.ep = layout.expert_model_parallel_size
        self.grouped_experts = (
            model.moe_grouped_gemm if grouped_experts is None else grouped_experts
        )
        self.heads = model.num_attention_heads
        self.groups = model.num_query_groups or model.num_attention_heads
        self.head_dim = model.kv_channels or model.hidden_size // model.num_attention_heads
        self.num_experts = model.num_experts or 0
        self._validate()

    # --- layout checks ---------------------------------------------------------------------

    def _validate(self) -> None:
        m = self.model
        tp_sizes = [self.groups, m.ffn_hidden_size] + (
            [m.moe_ffn_hidden_size or m.ffn_hidden_size] if self.num_experts else []
        )
        tp_limit = math.gcd(*tp_sizes)
        if tp_limit % self.tp:
            raise ValueError(
                f"tensor parallel size {self.tp} does not divide num_query_groups={self.groups}"
                f" and the MLP sizes {tp_sizes[1:]}; valid TP sizes: {_divisors(tp_limit)}"
            )
        if self.heads % self.groups:
            raise ValueError(
                f"num_query_groups={self.groups} does not divide num_attention_heads={self.heads}"
            )
        split = pipeline_split.split_problem(m.num_layers, self.pp, self.pipeline_layers)
        if split is not None:
            raise ValueError(f"pipeline parallel size {self.pp}: {split}")
        if self.num_experts == 0 and self.ep != 1:
            raise ValueError(f"expert parallel size {self.ep} needs a MoE model; this one is dense")
        if self.num_experts and self.num_experts % self.ep:
            raise ValueError(
                f"expert parallel size {self.ep} does not divide num_experts={self.num_experts}; "
                f"valid EP sizes: {_divisors(self.num_experts)}"
            )
        if self.padded_vocab_size < self.vocab_size:
            raise ValueError(
                f"padded_vocab_size={self.padded_vocab_size} is smaller than the vocabulary "
                f"({self.vocab_size} rows in the Hugging Face embedding)"
            )
        if self.padded_vocab_size % self.tp:
            raise ValueError(
                f"padded_vocab_size={self.padded_vocab_size} is not divisible by tensor parallel "
                f"size {self.tp}; set make_vocab_size_divisible_by or padded_vocab_size"
            )

    # --- placement -------------------------------------------------------------------------

    def layer_range(self, pp_rank: int) -> range:
        return pipeline_split.stage_range(
            self.model.num_layers, self.pp, self.pipeline_layers, pp_rank
        )

    def expert_range(self, ep_rank: int) -> range:
        per_rank = self.num_experts // self.ep
        return range(ep_rank * per_rank, (ep_rank + 1) * per_rank)

    def _layer_params(self, local: int, layer: int, ep_rank: int) -> list[Param]:
        m = self.model
        mc, hf = f"decoder.layers.{local}.", f"model.layers.{layer}."
        attn = hf + "self_attn."
        params = [
            Param(mc + "input_layernorm.weight", Kind.REPLICATED, (hf + "input_layernorm.weight",)),
            Param(
                mc + "self_attention.linear_qkv.weight",
                Kind.QKV,
                tuple(f"{attn}{p}_proj.weight" for p in "qkv"),
            ),
        ]
        if m.add_qkv_bias:
            qkv_bias = tuple(f"{attn}{p}_proj.bias" for p in "qkv")
            params.append(Param(mc + "self_attention.linear_qkv.bias", Kind.QKV, qkv_bias))
        if m.qk_layernorm:
            for p in "qk":
                params.append(
                    Param(
                        f"{mc}self_attention.{p}_layernorm.weight",
                        Kind.REPLICATED,
                        (f"{attn}{p}_norm.weight",),
                    )
                )
        params += [
            Param(mc + "self_attention.linear_proj.weight", Kind.ROW, (attn + "o_proj.weight",)),
            Param(
                mc + "pre_mlp_layernorm.weight",
                Kind.REPLICATED,
                (hf + "post_attention_layernorm.weight",),
            ),
        ]
        if not self.num_experts:
            return params + [
                Param(
                    mc + "mlp.linear_fc1.weight",
                    Kind.GATE_UP,
                    (hf + "mlp.gate_proj.weight", hf + "mlp.up_proj.weight"),
                ),
                Param(mc + "mlp.linear_fc2.weight", Kind.ROW, (hf + "mlp.down_proj.weight",)),
            ]
        params.append(Param(mc + "mlp.router.weight", Kind.REPLICATED, (hf + "mlp.gate.weight",)))
        experts = [f"{hf}mlp.experts.{e}." for e in self.expert_range(ep_rank)]
        if self.grouped_experts:
            fc1 = tuple(f"{x}{p}_proj.weight" for x in experts for p in ("gate", "up"))
            fc2 = tuple(f"{x}down_proj.weight" for x in experts)
            return params + [
                Param(mc + "mlp.experts.weight1", Kind.GROUPED_FC1, fc1),
                Param(mc + "mlp.experts.weight2", Kind.GROUPED_FC2, fc2),
            ]
        for local_expert, x in enumerate(experts):
            prefix = f"{mc}mlp.experts.local_experts.{local_expert}."
            params += [
                Param(
                    prefix + "linear_fc1.weight",
                    Kind.GATE_UP,
                    (x + "gate_proj.weight", x + "up_proj.weight"),
                ),
                Param(prefix + "linear_fc2.weight", Kind.ROW, (x + "down_proj.weight",)),
            ]
        return params

    def buckets(self, pp_rank: int = 0, ep_rank: int = 0) -> list[list[Param]]:
        """The parameters of one (PP stage, EP rank), one bucket per layer.

        Order: [embedding] (first stage), one bucket per local layer, [final norm, output layer]
        (last stage). The output layer is absent when tied to the embedding on a stage that
        holds both (Megatron shares the tensor); on a last stage without the embedding it is a
        copy of the embedding, as Megatron keeps it.
        """
        first, last = pp_rank == 0, pp_rank == self.pp - 1
        tied = not self.model.untie_embeddings_and_output_weights
        result: list[list[Param]] = []
        if first:
            embedding = ("model.embed_tokens.weight",)
            result.append([Param("embedding.word_embeddings.weight", Kind.VOCAB, embedding)])
        for local, layer in enumerate(self.layer_range(pp_rank)):
            result.append(self._layer_params(local, layer, ep_rank))
        if last:
            tail = [
                Param("decoder.final_layernorm.weight", Kind.REPLICATED, ("model.norm.weight",))
            ]
            if not tied:
                tail.append(Param("output_layer.weight", Kind.VOCAB, ("lm_head.weight",)))
            elif not first:
                tail.append(
                    Param("output_layer.weight", Kind.VOCAB, ("model.embed_tokens.weight",))
                )
            result.append(tail)
        return result

    def params(self, pp_rank: int = 0, ep_rank: int = 0) -> list[Param]:
        return [p for bucket in self.buckets(pp_rank, ep_rank) for p in bucket]

    def hf_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every Hugging Face tensor the model needs and its shape (for checking inputs)."""
        m, h, d = self.model, self.model.hidden_size, self.head_dim
        shapes: dict[str, tuple[int, ...]] = {
            "model.embed_tokens.weight": (self.vocab_size, h),
            "model.norm.weight": (h,),
        }
        if m.untie_embeddings_and_output_weights:
            shapes["lm_head.weight"] = (self.vocab_size, h)
        ffn, moe_ffn = m.ffn_hidden_size, m.moe_ffn_hidden_size or m.ffn_hidden_size
        for layer in range(m.num_layers):
            x = f"model.layers.{layer}."
            shapes |= {
                x + "input_layernorm.weight": (h,),
                x + "post_attention_layernorm.weight": (h,),
                x + "self_attn.q_proj.weight": (self.heads * d, h),
                x + "self_attn.k_proj.weight": (self.groups * d, h),
                x + "self_attn.v_proj.weight": (self.groups * d, h),
                x + "self_attn.o_proj.weight": (h, self.heads * d),
            }
            if m.add_qkv_bias:
                shapes[x + "self_attn.q_proj.bias"] = (self.heads * d,)
                shapes[x + "self_attn.k_proj.bias"] = (self.groups * d,)
                shapes[x + "self_attn.v_proj.bias"] = (self.groups * d,)
            if m.qk_layernorm:
                shapes[x + "self_attn.q_norm.weight"] = (d,)
                shapes[x + "self_attn.k_norm.weight"] = (d,)
            if not self.num_experts:
                shapes[x + "mlp.gate_proj.weight"] = (ffn, h)
                shapes[x + "mlp.up_proj.weight"] = (ffn, h)
                shapes[x + "mlp.down_proj.weight"] = (h, ffn)
                continue
            shapes[x + "mlp.gate.weight"] = (self.num_experts, h)
            for e in range(self.num_experts):
                shapes[f"{x}mlp.experts.{e}.gate_proj.weight"] = (moe_ffn, h)
                shapes[f"{x}mlp.experts.{e}.up_proj.weight"] = (moe_ffn, h)
                shapes[f"{x}mlp.experts.{e}.down_proj.weight"] = (h, moe_ffn)
        return shapes

    # --- HF -> this rank's shard -----------------------------------------------------------

    def shard(self, param: Param, source: TensorSource, tp_rank: int) -> torch.Tensor:
        """The TP rank ``tp_rank`` shard of ``param``, read from Hugging Face tensors.

        Reads only the rows / columns this rank needs when the source supports slicing.
        """
        return tl.concat_blocks(self.shard_blocks(param, source, tp_rank))

    def shard_blocks(self, param: Param, source: TensorSource, tp_rank: int) -> list[tl.Block]:
        """:meth:`shard` as row blocks whose concatenation along dim 0 is the shard.

        Where the layout allows (a rank's rows of q / k / v, gate / up, the vocabulary) the
        blocks are what ``source.read`` returned, or views of it: nothing is assembled, so a
        file writer can copy each block from where it already lies.
        """
        tp, kind, names = self.tp, param.kind, param.hf
        if kind is Kind.REPLICATED:
            return [source.read(names[0])]
        if kind is Kind.ROW:
            return [source.read(names[0], cols=_chunk(source.shape(names[0])[1], tp, tp_rank))]
        if kind is Kind.QKV:
            q, k, v = (source.read(n, rows=_chunk(source.shape(n)[0], tp, tp_rank)) for n in names)
            return tl.qkv_blocks(q, k, v, self.groups // tp)
        if kind is Kind.GATE_UP:
            return list(self._gate_up_blocks(source, names[0], names[1], tp_rank))
        if kind is Kind.VOCAB:
            rows = self.padded_vocab_size // tp
            start = tp_rank * rows
            stop = max(start, min(start + rows, self.vocab_size))
            blocks = [source.read(names[0], rows=slice(start, stop))] if stop > start else []
            if stop - start < rows:  # padding rows (a shard may be made only of them)
                hidden = source.shape(names[0])[1]
                blocks.append(
                    torch.zeros(rows - (stop - start), hidden, dtype=source.dtype(names[0]))
                )
            return blocks
        if kind is Kind.GROUPED_FC1:
            pairs = zip(names[0::2], names[1::2], strict=True)
            fc1 = [tl.fuse_gate_up(*self._gate_up_blocks(source, g, u, tp_rank)) for g, u in pairs]
            return [tl.pack_grouped_fc1(fc1)]
        if kind is Kind.GROUPED_FC2:
            return [
                tl.pack_grouped_fc2(
                    [source.read(n, cols=_chunk(source.shape(n)[1], tp, tp_rank)) for n in names]
                )
            ]
        raise AssertionError(f"unhandled kind {kind}")

    def _gate_up_blocks(self, source: TensorSource, gate: str, up: str, tp_rank: int):
        rows = _chunk(source.shape(gate)[0], self.tp, tp_rank)
        return source.read(gate, rows=rows), source.read(up, rows=rows)

    # --- TP shards -> HF ---------------------------------------------------------------------

    def merge(self, param: Param, shards: Sequence[torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """The Hugging Face tensors of ``param`` from its ``tp`` shards (in TP rank order), as
        new tensors: none views a shard, so the result never pins a caller's buffer."""
        return [(name, tl.concat_blocks(b)) for name, b in self.merge_blocks(param, shards)]

    def merge_blocks(
        self, param: Param, shards: Sequence[torch.Tensor]
    ) -> list[tuple[str, list[tl.Block]]]:
        """:meth:`merge` as row blocks per Hugging Face tensor, views of the shards where the
        layout allows (everything but row-parallel weights and grouped experts)."""
        assert len(shards) == self.tp, f"{param.name}: got {len(shards)} shards for TP {self.tp}"
        kind, names = param.kind, param.hf
        if kind is Kind.REPLICATED:
            return [(names[0], [shards[0]])]
        if kind is Kind.ROW:
            return [(names[0], [_join_columns(shards)])]
        if kind is Kind.QKV:
            parts = [tl.split_qkv_blocks(s, self.groups // self.tp, self.head_dim) for s in shards]
            return [(n, [b for p in parts for b in p[i]]) for i, n in enumerate(names)]
        if kind is Kind.GATE_UP:
            halves = [tl.split_gate_up(s) for s in shards]
            return [(names[0], [h[0] for h in halves]), (names[1], [h[1] for h in halves])]
        if kind is Kind.VOCAB:  # only the real rows: padding is never copied
            blocks, left = [], self.vocab_size
            for shard in shards:
                blocks.append(shard[: max(0, min(left, shard.shape[0]))])
                left -= blocks[-1].shape[0]
            return [(names[0], [b for b in blocks if b.shape[0]])]
        experts = len(names) // (2 if kind is Kind.GROUPED_FC1 else 1)
        if kind is Kind.GROUPED_FC1:
            per_rank = [tl.unpack_grouped_fc1(s, experts, contiguous=False) for s in shards]
            result = []
            for e in range(experts):
                halves = [tl.split_gate_up(rank[e]) for rank in per_rank]
                result += [
                    (names[2 * e], [h[0] for h in halves]),
                    (names[2 * e + 1], [h[1] for h in halves]),
                ]
            return result
        if kind is Kind.GROUPED_FC2:
            per_rank = [tl.unpack_grouped_fc2(s, experts, contiguous=False) for s in shards]
            return [
                (names[e], [_join_columns([rank[e] for rank in per_rank])]) for e in range(experts)
            ]
        raise AssertionError(f"unhandled kind {kind}")


def iter_mcore_shard(
    mapping: WeightMapping,
    source: TensorSource,
    tp_rank: int = 0,
    pp_rank: int = 0,
    ep_rank: int = 0,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Hugging Face tensors -> this rank's Megatron state dict, one parameter at a time.

    Yields ``(megatron name local to the stage / EP rank, shard)`` in bucket order (embedding,
    layers, final norm / output layer), so a caller can stream one layer at a time.
    """
    for param in mapping.params(pp_rank, ep_rank):
        yield param.name, mapping.shard(param, source, tp_rank)


def iter_hf_weights(
    mapping: WeightMapping,
    tp_shards: Sequence[Mapping[str, torch.Tensor]],
    pp_rank: int = 0,
    ep_rank: int = 0,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Megatron TP shards of one (PP stage, EP rank) -> ``(Hugging Face name, full tensor)``.

    ``tp_shards[r]`` is TP rank ``r``'s state dict, or any part of it (e.g. one layer bucket):
    parameters absent from it are skipped, names that are not model parameters (``_extra_state``)
    are ignored. The tied output layer is not yielded (its HF tensor is the embedding). The
    online weight sync gathers the shards over the TP group first
    (``mindspeed_rl/workers/weight_sync.py``).
    """
    assert len(tp_shards) == mapping.tp, f"expected {mapping.tp} TP shards, got {len(tp_shards)}"
    tied = not mapping.model.untie_embeddings_and_output_weights
    for param in mapping.params(pp_rank, ep_rank):
        if param.name not in tp_shards[0]:
            continue
        if tied and param.name == "output_layer.weight":
            continue
        yield from mapping.merge(param, [shard[param.name] for shard in tp_shards])
