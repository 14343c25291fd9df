"""Context parallelism (CP): which tokens of each sequence a CP rank holds, and how per-token
values come back together. Pure functions of index tensors; no process group here.

Megatron's load-balanced split (``megatron_cp_algo``, what Transformer Engine and MindSpeed's ring
attention expect, and MindSpeed's ``ulysses_cp_algo`` accepts): each sequence of length L is cut
into ``2 * CP`` equal chunks and rank r holds chunks ``r`` and ``2 * CP - 1 - r``. Under a causal
mask the late chunks attend to more keys than the early ones; pairing an early with a late chunk
gives every rank the same attention work. Packed (THD) rows are split sequence by sequence (each
segment a multiple of ``2 * CP`` long, TE's rule), so every rank holds a piece of every sequence.

Labels travel with their positions: the label of position t is token t + 1, so the caller shifts
the labels *before* the split (:func:`next_token_labels`) and every rank scores its own positions
without a neighbour's token. The per-token log-probs of the ranks are then put back in sequence
order (:func:`restore_sequence`, the inverse of :func:`split_sequence`) and the loss sees whole
rows, exactly the numbers of CP = 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check(length: int, cp_size: int) -> int:
    if cp_size < 1 or length % (2 * cp_size):
        raise ValueError(
            f"a sequence of {length} tokens cannot be split over context_parallel_size={cp_size}: "
            f"its length must be a multiple of 2 * CP = {2 * cp_size}"
        )
    return length // (2 * cp_size)


def zigzag_index(length: int, cp_size: int, cp_rank: int) -> torch.Tensor:
    """Positions [L / CP] of a length-L sequence that CP rank ``cp_rank`` holds, in its order:
    chunk ``cp_rank`` then chunk ``2 * CP - 1 - cp_rank``."""
    chunk = _check(length, cp_size)
    early = torch.arange(cp_rank * chunk, (cp_rank + 1) * chunk)
    late_start = (2 * cp_size - 1 - cp_rank) * chunk
    return torch.cat([early, torch.arange(late_start, late_start + chunk)])


def packed_zigzag_index(cu_seqlens: torch.Tensor, cp_size: int, cp_rank: int) -> torch.Tensor:
    """Positions in a packed ``[1, T]`` row that CP rank ``cp_rank`` holds: the zigzag split of
    each segment of ``cu_seqlens`` [segments + 1], segment after segment."""
    bounds = cu_seqlens.long().tolist()
    return torch.cat(
        [
            start + zigzag_index(end - start, cp_size, cp_rank)
            for start, end in zip(bounds, bounds[1:])
        ]
    )


def split_sequence(
    values: torch.Tensor, cp_size: int, cp_rank: int, dim: int = 1, cu_seqlens=None
) -> torch.Tensor:
    """This CP rank's part of ``values`` along the sequence dimension ``dim`` (padded rows; with
    ``cu_seqlens`` a packed row)."""
    length = values.shape[dim]
    index = (
        zigzag_index(length, cp_size, cp_rank)
        if cu_seqlens is None
        else packed_zigzag_index(cu_seqlens, cp_size, cp_rank)
    )
    return values.index_select(dim, index.to(values.device))


def restore_sequence(pieces: Sequence[torch.Tensor], dim: int = 1, cu_seqlens=None) -> torch.Tensor:
    """The inverse of :func:`split_sequence`: every CP rank's part (in rank order) -> the values
    in sequence order. Differentiable (a concatenation and a gather)."""
    cp_size = len(pieces)
    length = sum(p.shape[dim] for p in pieces)
    held = torch.cat(
        [
            zigzag_index(length, cp_size, r)
            if cu_seqlens is None
            else packed_zigzag_index(cu_seqlens, cp_size, r)
            for r in range(cp_size)
        ]
    )
    inverse = torch.empty_like(held)
    inverse[held] = torch.arange(length)
    return torch.cat(list(pieces), dim=dim).index_select(dim, inverse.to(pieces[0].device))


def next_token_labels(tokens: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """[B, L]: entry t is ``tokens[:, t + 1]`` (the last one ``fill``, scored by nobody), so that
    labels split with their positions."""
    return torch.nn.functional.pad(tokens[:, 1:], (0, 1), value=fill)
