"""From the batch contract's left-padded prompts to rows that Megatron can score.

megatron-core's GPTModel computes RoPE from positions 0..S-1 and ignores ``position_ids``, so a
left-padded row would see shifted positions and its log-probs would not match the rollout engine's.
Each row is therefore rebuilt as [valid prompt tokens, response tokens] starting at position 0 and
right-padded; ``response_start`` remembers where its response begins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch


def chunk_bounds(total: int, sizes: int | Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of consecutive chunks of ``total`` rows: ``sizes`` rows each (an int), or the
    given counts (a sequence adding up to ``total``)."""
    if isinstance(sizes, int):
        return [(i, min(i + sizes, total)) for i in range(0, total, sizes)]
    if sum(sizes) != total or min(sizes, default=1) < 1:
        raise ValueError(f"micro-batch sizes {list(sizes)} do not cut {total} rows")
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


@dataclasses.dataclass
class MegatronRows:
    tokens: torch.Tensor  # [B, L] int64, right-padded
    response_start: torch.Tensor  # [B] index of the first response token in ``tokens``
    response_width: int  # R of the contract's [B, R] tensors
    lengths: torch.Tensor | None = None  # [B] valid tokens per row (prompt + response)

    def causal_mask(self) -> torch.Tensor:
        """Megatron's boolean mask [B, 1, L, L] (True = masked): causal; padding comes last, so
        no valid token ever attends to it."""
        length = self.tokens.shape[1]
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        return causal.expand(self.tokens.shape[0], 1, length, length)

    def select(self, index: slice | torch.Tensor) -> MegatronRows:
        """The rows at ``index`` (a slice or an index tensor)."""
        lengths = None if self.lengths is None else self.lengths[index]
        return MegatronRows(
            self.tokens[index], self.response_start[index], self.response_width, lengths
        )

    def split(self, sizes: int | Sequence[int]) -> list[MegatronRows]:
        """Consecutive chunks: of ``sizes`` rows each (an int; the last may be smaller), or of
        the given row counts (a sequence that adds up to the rows)."""
        bounds = chunk_bounds(self.tokens.shape[0], sizes)
        return [self.select(slice(a, b)) for a, b in bounds]

    def position_ids(self) -> torch.Tensor:
        batch, length = self.tokens.shape
        return torch.arange(length).unsqueeze(0).expand(batch, length)

    def response_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row [B, 1], position [B, R]) of the positions predicting each response token:
        position t scores tokens[:, t + 1]. Positions past a row's end are clamped into the row
        (garbage: mask them with the response mask)."""
        offsets = torch.arange(self.response_width)
        position = (self.response_start.long().unsqueeze(1) - 1 + offsets).clamp(
            max=self.tokens.shape[1] - 2
        )
        return torch.arange(self.tokens.shape[0]).unsqueeze(1), position

    def response_values(self, per_position: torch.Tensor) -> torch.Tensor:
        """Pick the values predicting each response token out of ``per_position`` [B, L-1], where
        entry t scores tokens[:, t + 1]; returns [B, R] (entries past a row's end are garbage:
        mask them with the response mask)."""
        row, position = (i.to(per_position.device) for i in self.response_positions())
        return per_position[row, position]


def to_megatron_rows(
    prompts: torch.Tensor,
    prompt_mask: torch.Tensor,
    responses: torch.Tensor,
    response_mask: torch.Tensor,
    pad_token_id: int,
    length: int | None = None,
) -> MegatronRows:
    """Rows [valid prompt, response] right-padded to ``length`` (default: the longest row)."""
    batch, width = responses.shape
    prompt_lengths = prompt_mask.sum(dim=1)
    row_lengths = prompt_lengths + response_mask.sum(dim=1)
    length = int(row_lengths.max()) if length is None else length
    if int(row_lengths.max()) > length:
        raise ValueError(f"a row has {int(row_lengths.max())} tokens, more than length={length}")
    tokens = torch.full((batch, length), pad_token_id, dtype=torch.long)
    for i in range(batch):
        prompt = prompts[i][prompt_mask[i].bool()]
        response = responses[i][response_mask[i].bool()]
        row = torch.cat([prompt, response])
        tokens[i, : row.numel()] = row
    return MegatronRows(
        tokens=tokens,
        response_start=prompt_lengths.long(),
        response_width=width,
        lengths=row_lengths.long(),
    )
