"""Pure tensor re-layouts between Hugging Face parameters and Megatron's fused ones.

No names, no process groups: each function maps tensors to tensors, so it is tested with
``torch.arange`` inputs whose expected outputs are written by hand (tests/models/
test_tensor_layouts.py). ``param_mapping.py`` decides which function applies to which parameter.

Megatron's fused layouts (megatron-core ``SelfAttention``, ``MLP``, ``GroupedMLP``):

* ``linear_qkv`` rows are grouped per key/value head: for each query group ``g``, the
  ``heads_per_group`` query heads of ``g``, then the key head of ``g``, then its value head. Rows are
  ``num_query_groups * (heads_per_group + 2) * head_dim``. Because groups are contiguous, a TP
  rank's shard is a contiguous block of whole groups, which is why ``num_query_groups`` must be
  divisible by TP.
* ``linear_fc1`` (SwiGLU) rows are ``[gate; up]`` per TP rank: rank ``r`` holds
  ``[gate_r; up_r]``, *not* a contiguous block of the full ``[gate; up]``.
* ``GroupedMLP`` stores the local experts of one rank in two 2-D parameters that its forward views
  as 3-D: ``weight1 [hidden, E * fc1_out]`` viewed as ``[E, hidden, fc1_out]`` (expert ``e``'s
  block is ``linear_fc1_e.T``), and ``weight2 [E * fc2_in, hidden]`` viewed as
  ``[E, fc2_in, hidden]`` (block ``linear_fc2_e.T``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch


@dataclasses.dataclass(frozen=True)
class ColumnConcat:
    """``torch.cat(parts, dim=1)``, not yet computed: a row-parallel weight joined from its TP
    shards. A file writer computes it a few rows at a time into a reusable buffer
    (:meth:`rows_into`) instead of allocating the whole tensor."""

    parts: tuple[torch.Tensor, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        first = self.parts[0]
        return (first.shape[0], sum(p.shape[1] for p in self.parts), *first.shape[2:])

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0].dtype

    def materialize(self) -> torch.Tensor:
        return torch.cat(self.parts, dim=1)

    def rows_into(self, start: int, stop: int, out: torch.Tensor) -> None:
        torch.cat([p[start:stop] for p in self.parts], dim=1, out=out)


# One piece of a tensor that is the concatenation of its pieces along dim 0.
Block = torch.Tensor | ColumnConcat


def concat_blocks(blocks: Sequence[Block]) -> torch.Tensor:
    """The tensor ``blocks`` stand for, as a new tensor (never a view of a block)."""
    if len(blocks) == 1 and isinstance(blocks[0], ColumnConcat):
        return blocks[0].materialize()
    return torch.cat([b.materialize() if isinstance(b, ColumnConcat) else b for b in blocks])


def blocks_into(blocks: Sequence[Block], out: torch.Tensor) -> None:
    """Write the tensor ``blocks`` stand for into ``out`` (its shape; any dtype or device): one
    copy per piece, converting on the way, and no intermediate tensor."""
    row = 0
    for block in blocks:
        rows = out[row : row + block.shape[0]]
        if isinstance(block, ColumnConcat):
            column = 0
            for part in block.parts:
                rows[:, column : column + part.shape[1]].copy_(part)
                column += part.shape[1]
        else:
            rows.copy_(block)
        row += block.shape[0]


def blocks_shape(blocks: Sequence[Block], name: str = "") -> tuple[int, ...]:
    """The shape of the tensor ``blocks`` stand for.

    Raises ValueError when the blocks differ in dtype or in their shape past dim 0 (e.g. TP
    shards saved in different dtypes): their bytes would not make one tensor.
    """
    first = blocks[0]
    for block in blocks[1:]:
        if block.dtype != first.dtype or tuple(block.shape[1:]) != tuple(first.shape[1:]):
            raise ValueError(
                f"{name or 'row blocks'}: blocks do not make one tensor: "
                f"{first.dtype} {list(first.shape)} and {block.dtype} {list(block.shape)}"
            )
    return (sum(b.shape[0] for b in blocks), *first.shape[1:])


def blocks_nbytes(blocks: Sequence[Block]) -> int:
    return sum(torch.Size(b.shape).numel() * b.dtype.itemsize for b in blocks)


def qkv_blocks(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_query_groups: int
) -> list[torch.Tensor]:
    """Megatron's fused ``linear_qkv`` as row blocks: ``[q_0, k_0, v_0, q_1, ...]``, views of
    q / k / v, one triple per query group.

    Args:
        q: ``[groups * heads_per_group * head_dim, ...]`` (weight ``[.., hidden]`` or bias).
        k, v: ``[groups * head_dim, ...]``.
        num_query_groups: groups present in these tensors (the local count for a TP shard).
    """
    groups = zip(*(t.chunk(num_query_groups) for t in (q, k, v)), strict=True)
    return [block for triple in groups for block in triple]


def split_qkv_blocks(
    qkv: torch.Tensor, num_query_groups: int, head_dim: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Inverse of :func:`qkv_blocks`: per group the q, k and v rows, views of ``qkv``
    (``[G * (hpg + 2) * d, ...]``)."""
    q_rows = qkv.shape[0] // num_query_groups - 2 * head_dim
    q, k, v = [], [], []
    for group in qkv.chunk(num_query_groups):
        for blocks, part in zip((q, k, v), group.split([q_rows, head_dim, head_dim])):
            blocks.append(part)
    return q, k, v


def fuse_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU ``linear_fc1`` of one TP rank: ``[gate_r; up_r]``, ``[2 * ffn / tp, hidden]``."""
    return torch.cat([gate, up], dim=0)


def split_gate_up(fc1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`fuse_gate_up` for one TP shard."""
    gate, up = fc1.chunk(2, dim=0)
    return gate, up


def pack_grouped_fc1(fc1_per_expert: Sequence[torch.Tensor]) -> torch.Tensor:
    """``GroupedMLP.weight1`` from the local experts' ``linear_fc1`` ``[X, hidden]`` shards.

    Returns ``[hidden, E * X]`` whose memory viewed as ``[E, hidden, X]`` holds ``fc1_e.T``.
    """
    hidden = fc1_per_expert[0].shape[1]
    return torch.stack([w.t() for w in fc1_per_expert]).reshape(hidden, -1)


def unpack_grouped_fc1(
    weight1: torch.Tensor, num_local_experts: int, contiguous: bool = True
) -> list[torch.Tensor]:
    """Inverse of :func:`pack_grouped_fc1`: per-expert ``[X, hidden]`` tensors (transposed
    views of ``weight1`` unless ``contiguous``)."""
    hidden = weight1.shape[0]
    blocks = weight1.reshape(num_local_experts, hidden, -1)
    return [block.t().contiguous() if contiguous else block.t() for block in blocks]


def pack_grouped_fc2(fc2_per_expert: Sequence[torch.Tensor]) -> torch.Tensor:
    """``GroupedMLP.weight2`` from the local experts' ``linear_fc2`` ``[hidden, Y]`` shards.

    Returns ``[E * Y, hidden]`` whose memory viewed as ``[E, Y, hidden]`` holds ``fc2_e.T``.
    """
    hidden = fc2_per_expert[0].shape[0]
    return torch.stack([w.t() for w in fc2_per_expert]).reshape(-1, hidden)


def unpack_grouped_fc2(
    weight2: torch.Tensor, num_local_experts: int, contiguous: bool = True
) -> list[torch.Tensor]:
    """Inverse of :func:`pack_grouped_fc2`: per-expert ``[hidden, Y]`` tensors (transposed
    views of ``weight2`` unless ``contiguous``)."""
    hidden = weight2.shape[1]
    blocks = weight2.reshape(num_local_experts, -1, hidden)
    return [block.t().contiguous() if contiguous else block.t() for block in blocks]
