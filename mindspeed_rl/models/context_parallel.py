"""Context parallelism (CP): which tokens of each sequence a CP rank holds, and which of the
positions a loss reads. Pure functions of index tensors; no process group here.

Megatron's load-balanced split (``megatron_cp_algo``, what Transformer Engine and MindSpeed's ring
attention expect, and MindSpeed's ``ulysses_cp_algo`` accepts): each sequence of length L is cut
into ``2 * CP`` equal chunks and rank r holds chunks ``r`` and ``2 * CP - 1 - r``. Under a causal
mask the late chunks attend to more keys than the early ones; pairing an early with a late chunk
gives every rank the same attention work. Packed (THD) rows are split sequence by sequence (each
segment a multiple of ``2 * CP`` long, TE's rule), so every rank holds a piece of every sequence.

Only the positions that predict a response token enter the log-softmax, as at CP = 1: the mask of
those positions is split like the tokens (:func:`held_positions`), so each rank scores the ones it
holds, against labels read from the whole rows (the label of position t is token t + 1, which may
sit on another rank). Every wanted position is held by exactly one rank: the ranks' values,
scattered into zero rows and summed over CP, are the whole rows' values bit for bit (x + 0 = x), and
the loss sees exactly the numbers of CP = 1.
"""

from __future__ import annotations

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


def held_positions(
    wanted: torch.Tensor, cp_size: int, cp_rank: int, cu_seqlens=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The True entries of ``wanted`` [B, L] (whole rows; with ``cu_seqlens`` a packed row) that
    CP rank ``cp_rank`` holds, as (row [n], column in the rank's [B, L / CP] part [n], position
    in the whole row [n]), in the rank's row-major order."""
    batch, length = wanted.shape
    local = split_sequence(wanted, cp_size, cp_rank, cu_seqlens=cu_seqlens)
    whole = torch.arange(length, device=wanted.device).expand(batch, length)
    positions = split_sequence(whole, cp_size, cp_rank, cu_seqlens=cu_seqlens)
    rows, columns = local.nonzero(as_tuple=True)
    return rows, columns, positions[rows, columns]
