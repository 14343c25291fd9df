"""The one Hugging Face <-> Megatron-core parameter mapping (docs/architecture.md, "One mapping, two uses").

Used by offline conversion (``mindspeed_rl/checkpoint/hf_to_mcore.py``, ``mcore_to_hf.py``) and by
online weight sync from the trained actor into the rollout engine, which takes an iterator of
``(HF name, full tensor)``. A bug found by one is fixed for both.

:class:`WeightMapping` joins three parts: the name table (``models/param_names.py``: which
Megatron parameter is made of which HF tensors), the placement (``models/placement.py``: which
pipeline stage and shard hold it, the default and the ``moe_tp_extend_ep`` expert layouts) and
the split rules (``placement.SplitRules``: how each kind is cut over ranks). Names on the
Megatron side are megatron-core ``GPTModel`` local-spec names, with layer numbers local to the
pipeline stage and expert numbers local to the shard (what Megatron and MindSpeed-LLM write).

A shard is named by its position ``(tp_rank, pp_rank, ep_rank)``, as in the checkpoint's
``mp_rank_*`` directories and in the ranks' Megatron parallel state. Dense parameters are cut
into TP pieces; routed experts into ``expert_tp`` pieces (TP, or 1 with ``moe_tp_extend_ep``).

Pipeline stages hold ``num_layers / PP`` consecutive layers, or the layout's ``pipeline_layers``
(``num_layer_list``, ``pipeline_split.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch

from mindspeed_rl.config.schema import ModelConfig
from mindspeed_rl.models import param_names, pipeline_split
from mindspeed_rl.models import tensor_layouts as tl
from mindspeed_rl.models.param_names import Kind, Param
from mindspeed_rl.models.placement import DictSource, Placement, SplitRules, TensorSource
from mindspeed_rl.platform.distributed import ParallelLayout

__all__ = [
    "DictSource",
    "Kind",
    "Param",
    "TensorSource",
    "WeightMapping",
    "iter_hf_weights",
    "iter_mcore_shard",
]

SINGLE_PROCESS = ParallelLayout()  # TP = PP = EP = 1


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class WeightMapping:
    """Names, shapes and TP/PP/EP placement of every parameter of one model in one layout.

    Args:
        model: the architecture (from a model YAML or ``hf_config.model_config_from_hf``).
        vocab_size: Hugging Face embedding rows (un-padded).
        layout: Megatron's TP / PP / EP sizes and the expert layout (``moe_tp_extend_ep``).
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
        self.moe_tp_extend_ep = layout.moe_tp_extend_ep
        self.grouped_experts = (
            model.moe_grouped_gemm if grouped_experts is None else grouped_experts
        )
        self.heads = model.num_attention_heads
        self.groups = model.num_query_groups or model.num_attention_heads
        self.head_dim = model.kv_channels or model.hidden_size // model.num_attention_heads
        self.num_experts = model.num_experts or 0
        self.placement = Placement(
            self.tp, self.pp, self.ep, model.num_layers, self.num_experts, self.moe_tp_extend_ep,
            self.pipeline_layers,
        )  # fmt: skip
        self.rules = SplitRules(self.groups, self.head_dim, vocab_size, self.padded_vocab_size)
        self._validate()

    @property
    def expert_tp(self) -> int:
        return self.placement.expert_tp

    @property
    def expert_ep(self) -> int:
        return self.placement.expert_ep

    # --- layout checks ---------------------------------------------------------------------

    def _validate(self) -> None:
        m = self.model
        moe_ffn = m.moe_ffn_hidden_size or m.ffn_hidden_size
        # whole experts per rank (moe_tp_extend_ep): TP does not cut the expert MLP
        split_experts = self.num_experts and not self.moe_tp_extend_ep
        tp_sizes = [self.groups, m.ffn_hidden_size] + ([moe_ffn] if split_experts else [])
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
        if self.num_experts == 0 and (self.ep != 1 or self.moe_tp_extend_ep):
            what = f"expert parallel size {self.ep}" if self.ep != 1 else "moe_tp_extend_ep"
            raise ValueError(f"{what} needs a MoE model; this one is dense")
        if self.num_experts and self.num_experts % self.expert_ep:
            if self.moe_tp_extend_ep:
                valid = [d for d in _divisors(self.num_experts) if d % self.tp == 0]
                raise ValueError(
                    f"moe_tp_extend_ep spreads num_experts={self.num_experts} over TP x EP = "
                    f"{self.tp} x {self.ep} ranks, which does not divide it; valid EP sizes at "
                    f"TP {self.tp}: {[d // self.tp for d in valid]}"
                )
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
        return self.placement.layer_range(pp_rank)

    def expert_range(self, ep_rank: int, tp_rank: int = 0) -> range:
        """Global expert numbers held by the shard at ``(tp_rank, ep_rank)``."""
        return self.placement.expert_range(self.placement.expert_rank(tp_rank, ep_rank))

    def buckets(self, pp_rank: int = 0, ep_rank: int = 0, tp_rank: int = 0) -> list[list[Param]]:
        """The parameters of the shard at ``(tp_rank, pp_rank, ep_rank)``, one bucket per layer.

        Order: [embedding] (first stage), one bucket per local layer, [final norm, output layer]
        (last stage; see ``param_names.tail``). ``tp_rank`` matters only with
        ``moe_tp_extend_ep``, where TP ranks hold different experts.
        """
        first, last = pp_rank == 0, pp_rank == self.pp - 1
        experts = list(self.expert_range(ep_rank, tp_rank)) if self.num_experts else []
        result: list[list[Param]] = [[param_names.embedding()]] if first else []
        for local, layer in enumerate(self.layer_range(pp_rank)):
            result.append(
                param_names.layer(self.model, local, layer, experts, self.grouped_experts)
            )
        if last:
            result.append(param_names.tail(self.model, has_embedding=first))
        return result

    def params(self, pp_rank: int = 0, ep_rank: int = 0, tp_rank: int = 0) -> list[Param]:
        return [p for bucket in self.buckets(pp_rank, ep_rank, tp_rank) for p in bucket]

    def hf_order(self, pp_rank: int) -> list[list[tuple[Param, list[tuple[int, int]]]]]:
        """Per layer bucket of one stage: each parameter that yields HF tensors, with the shards
        ``(tp_rank, ep_rank)`` holding its pieces, in piece order.

        Dense parameters come from EP rank 0 (they are replicated over EP); each expert set
        once from its holders; a tied output layer is left out (its HF tensor is the embedding).
        """
        tied = not self.model.untie_embeddings_and_output_weights
        dense_holders = [(t, 0) for t in range(self.tp)]
        expert_sets = [self.placement.expert_holders(r) for r in range(self.expert_ep)]
        per_set = [self.buckets(pp_rank, h[0][1], h[0][0]) for h in expert_sets]
        order = []
        for index, bucket in enumerate(per_set[0]):
            items = [
                (p, dense_holders)
                for p in bucket
                if not p.expert and not (tied and p.name == param_names.OUTPUT_LAYER)
            ]
            for holders, buckets in zip(expert_sets, per_set):
                items += [(p, holders) for p in buckets[index] if p.expert]
            order.append(items)
        return order

    def hf_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every Hugging Face tensor the model needs and its shape (for checking inputs)."""
        return param_names.hf_shapes(self.model, self.vocab_size)

    # --- HF -> this rank's shard -----------------------------------------------------------

    def shard(self, param: Param, source: TensorSource, tp_rank: int) -> torch.Tensor:
        """TP rank ``tp_rank``'s shard of ``param``, read from Hugging Face tensors.

        Reads only the rows / columns this rank needs when the source supports slicing.
        """
        return tl.concat_blocks(self.shard_blocks(param, source, tp_rank))

    def shard_blocks(self, param: Param, source: TensorSource, tp_rank: int) -> list[tl.Block]:
        """:meth:`shard` as row blocks whose concatenation along dim 0 is the shard
        (``SplitRules.shard_blocks``)."""
        parts = self.placement.parts(param)
        return self.rules.shard_blocks(param, source, self.placement.piece(param, tp_rank), parts)

    # --- pieces -> HF ----------------------------------------------------------------------

    def merge(self, param: Param, shards: Sequence[torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """The Hugging Face tensors of ``param`` from all its pieces (TP shards, in TP rank
        order; one whole tensor for an expert of ``moe_tp_extend_ep``), as new tensors: none
        views a shard, so the result never pins a caller's buffer."""
        return [(name, tl.concat_blocks(b)) for name, b in self.merge_blocks(param, shards)]

    def merge_blocks(
        self, param: Param, shards: Sequence[torch.Tensor]
    ) -> list[tuple[str, list[tl.Block]]]:
        """:meth:`merge` as row blocks per Hugging Face tensor, views of the shards where the
        layout allows (everything but row-parallel weights and grouped experts)."""
        parts = self.placement.parts(param)
        assert len(shards) == parts, f"{param.name}: got {len(shards)} pieces, expected {parts}"
        return self.rules.merge_blocks(param, shards)


def iter_mcore_shard(
    mapping: WeightMapping,
    source: TensorSource,
    tp_rank: int = 0,
    pp_rank: int = 0,
    ep_rank: int = 0,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Hugging Face tensors -> the Megatron state dict of the shard ``(tp_rank, pp_rank,
    ep_rank)``, one parameter at a time.

    Yields ``(megatron name local to the stage / shard, tensor)`` in bucket order (embedding,
    layers, final norm / output layer), so a caller can stream one layer at a time.
    """
    for param in mapping.params(pp_rank, ep_rank, tp_rank):
        yield param.name, mapping.shard(param, source, tp_rank)


def iter_hf_weights(
    mapping: WeightMapping,
    tp_shards: Sequence[Mapping[str, torch.Tensor]],
    pp_rank: int = 0,
    ep_rank: int = 0,
) -> Iterator[tuple[str, torch.Tensor]]:
    """The TP shards of one (PP stage, EP rank) -> ``(Hugging Face name, full tensor)``.

    ``tp_shards[r]`` is TP rank ``r``'s state dict, or any part of it (e.g. one layer bucket):
    parameters absent from it are skipped, names that are not model parameters (``_extra_state``)
    are ignored. The tied output layer is not yielded (its HF tensor is the embedding). With
    ``moe_tp_extend_ep`` each TP rank's experts are whole tensors of their own. The online
    weight sync gathers the shards over the TP group first (``mindspeed_rl/workers/weight_sync.py``).
    """
    assert len(tp_shards) == mapping.tp, f"expected {mapping.tp} TP shards, got {len(tp_shards)}"
    tied = not mapping.model.untie_embeddings_and_output_weights
    whole_experts = [mapping.params(pp_rank, ep_rank, t) for t in range(mapping.tp)]
    for index, param in enumerate(whole_experts[0]):
        if param.name not in tp_shards[0]:
            continue
        if tied and param.name == param_names.OUTPUT_LAYER:
            continue
        if param.expert and mapping.expert_tp == 1 and mapping.tp > 1:
            for t, shard in enumerate(tp_shards):
                yield from mapping.merge(whole_experts[t][index], [shard[param.name]])
            continue
        yield from mapping.merge(param, [shard[param.name] for shard in tp_shards])
