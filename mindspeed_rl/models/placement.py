"""Where each Megatron parameter lives (pipeline stage, expert rank) and how it is cut over ranks.

The names come from ``models/param_names.py``; this module holds the placement rules and the
split rules per :class:`~mindspeed_rl.models.param_names.Kind`.

Placement. Pipeline stage ``s`` holds layers ``[s * L / PP, (s + 1) * L / PP)``. Routed experts
follow one of two expert layouts, named by the shard ``mp_rank_<tp>[_<pp>]_<ep>`` that holds them:

==================  ===========================================  ==============================
layout              shard (tp_rank t, ep_rank e) holds experts   each expert's weights
==================  ===========================================  ==============================
default             ``[e * E / EP, (e + 1) * E / EP)``           split over TP like dense MLPs
moe_tp_extend_ep    ``[(e * TP + t) * n, (e * TP + t + 1) * n)``  whole (not split),
                    with ``n = E / (TP * EP)``
==================  ===========================================  ==============================

The second is MindSpeed's ``--moe-tp-extend-ep`` (``BaseMoELayer`` in MindSpeed 2.3.0 for core
0.12.1: ``local_expert_indices_offset = ep_rank * n * TP + tp_rank * n``; MindSpeed-LLM's
``convert_hf2mg.py`` writes ``gemm_fc1_ep[ep_rank * TP + tp_rank]`` unsplit). In megatron-core
terms it is an expert tensor-parallel size (ETP) of 1 with expert parallelism over ``TP x EP``
ranks: with the rank order ``tp-cp-ep-dp-pp`` the expert-parallel rank of global rank ``r`` is
``r mod (TP * EP) = e * TP + t`` (``parallel_state.initialize_model_parallel``, 0.12.3 and
0.16.1), the same experts MindSpeed gives that rank. :class:`Placement` speaks both languages:
``expert_tp`` / ``expert_ep`` are megatron-core's sizes, ``expert_rank(t, e)`` turns a shard's
position into megatron-core's expert-parallel rank.

Split rules. A parameter cut into ``parts`` pieces (TP for dense parameters, the expert TP for
experts) is rebuilt from them by :meth:`SplitRules.merge_blocks`, and piece ``rank`` is read
from Hugging Face tensors by :meth:`SplitRules.shard_blocks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from mindspeed_rl.models import pipeline_split
from mindspeed_rl.models import tensor_layouts as tl
from mindspeed_rl.models.param_names import Kind, Param


@dataclasses.dataclass(frozen=True)
class Placement:
    """TP / PP / EP sizes of a layout and the expert layout (``moe_tp_extend_ep``)."""

    tp: int
    pp: int
    ep: int
    num_layers: int
    num_experts: int = 0
    moe_tp_extend_ep: bool = False
    pipeline_layers: tuple[int, ...] | None = None  # num_layer_list; None: num_layers / PP each

    @property
    def expert_tp(self) -> int:
        """megatron-core's expert tensor-parallel size."""
        return 1 if self.moe_tp_extend_ep else self.tp

    @property
    def expert_ep(self) -> int:
        """megatron-core's expert-parallel size: the number of distinct expert sets."""
        return self.tp * self.ep if self.moe_tp_extend_ep else self.ep

    def layer_range(self, pp_rank: int) -> range:
        return pipeline_split.stage_range(self.num_layers, self.pp, self.pipeline_layers, pp_rank)

    def expert_range(self, expert_rank: int) -> range:
        """Global expert numbers of megatron-core expert-parallel rank ``expert_rank``."""
        per_rank = self.num_experts // self.expert_ep
        return range(expert_rank * per_rank, (expert_rank + 1) * per_rank)

    def expert_rank(self, tp_rank: int, ep_rank: int) -> int:
        """The expert-parallel rank whose experts the shard ``(tp_rank, ep_rank)`` holds."""
        return ep_rank * self.tp + tp_rank if self.moe_tp_extend_ep else ep_rank

    def expert_holders(self, expert_rank: int) -> list[tuple[int, int]]:
        """The shards ``(tp_rank, ep_rank)`` holding expert rank ``expert_rank``'s experts, one
        per expert-TP piece, in piece order."""
        if self.moe_tp_extend_ep:
            return [(expert_rank % self.tp, expert_rank // self.tp)]
        return [(t, expert_rank) for t in range(self.tp)]

    def parts(self, param: Param) -> int:
        """How many pieces ``param`` is cut into."""
        return self.expert_tp if param.expert else self.tp

    def piece(self, param: Param, tp_rank: int) -> int:
        """Which piece of ``param`` TP rank ``tp_rank`` holds."""
        return tp_rank % self.parts(param)


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


def _join_columns(shards: Sequence[torch.Tensor]) -> tl.Block:
    """Row-parallel shards joined along dim 1 (one shard: itself, which may lie in a file)."""
    return shards[0] if len(shards) == 1 else tl.ColumnConcat(tuple(shards))


def _chunk(length: int, parts: int, index: int) -> slice:
    size = length // parts
    return slice(index * size, (index + 1) * size)


@dataclasses.dataclass(frozen=True)
class SplitRules:
    """How each :class:`Kind` is cut into pieces and put back together."""

    groups: int  # query groups
    head_dim: int
    vocab_size: int  # Hugging Face embedding rows
    padded_vocab_size: int

    def shard_blocks(
        self, param: Param, source: TensorSource, rank: int, parts: int
    ) -> list[tl.Block]:
        """Piece ``rank`` of ``parts`` of ``param``, read from Hugging Face tensors, as row blocks
        whose concatenation along dim 0 is the piece.

        Reads only the rows / columns the piece needs. Where the layout allows (a rank's rows of
        q / k / v, gate / up, the vocabulary) the blocks are what ``source.read`` returned, or
        views of it: nothing is assembled, so a file writer can copy each block from where it
        already lies.
        """
        kind, names = param.kind, param.hf
        if kind is Kind.REPLICATED:
            return [source.read(names[0])]
        if kind is Kind.ROW:
            return [source.read(names[0], cols=_chunk(source.shape(names[0])[1], parts, rank))]
        if kind is Kind.QKV:
            q, k, v = (source.read(n, rows=_chunk(source.shape(n)[0], parts, rank)) for n in names)
            return tl.qkv_blocks(q, k, v, self.groups // parts)
        if kind is Kind.GATE_UP:
            return list(self._gate_up_blocks(source, names[0], names[1], rank, parts))
        if kind is Kind.VOCAB:
            rows = self.padded_vocab_size // parts
            start = rank * rows
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
            fc1 = [
                tl.fuse_gate_up(*self._gate_up_blocks(source, g, u, rank, parts)) for g, u in pairs
            ]
            return [tl.pack_grouped_fc1(fc1)]
        if kind is Kind.GROUPED_FC2:
            return [
                tl.pack_grouped_fc2(
                    [source.read(n, cols=_chunk(source.shape(n)[1], parts, rank)) for n in names]
                )
            ]
        raise AssertionError(f"unhandled kind {kind}")

    @staticmethod
    def _gate_up_blocks(source: TensorSource, gate: str, up: str, rank: int, parts: int):
        rows = _chunk(source.shape(gate)[0], parts, rank)
        return source.read(gate, rows=rows), source.read(up, rows=rows)

    def merge_blocks(
        self, param: Param, shards: Sequence[torch.Tensor]
    ) -> list[tuple[str, list[tl.Block]]]:
        """The Hugging Face tensors of ``param`` from all its pieces (in piece order) as row
        blocks per tensor, views of the pieces where the layout allows (everything but
        row-parallel weights split in several pieces and grouped experts)."""
        parts, kind, names = len(shards), param.kind, param.hf
        if kind is Kind.REPLICATED:
            return [(names[0], [shards[0]])]
        if kind is Kind.ROW:
            return [(names[0], [_join_columns(shards)])]
        if kind is Kind.QKV:
            split = [tl.split_qkv_blocks(s, self.groups // parts, self.head_dim) for s in shards]
            return [(n, [b for p in split for b in p[i]]) for i, n in enumerate(names)]
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
