"""How one batch is cut for the actor group: data-parallel shares, mini-batches, micro-batches.

Pure (lengths in, row indices out), so the driver-side actor group plans and every rank only
slices what it is sent. The rules that keep the loss exact and the schedule valid:

* every DP rank holds the same number of rows of each mini-batch (the worker's k-th slice is its
  share of mini-batch k), and the token-level loss divides by one all-reduced denominator, so any
  assignment of rows to ranks and micro-batches gives the same gradient;
* every DP rank runs the same number of micro-batches per mini-batch (DDP's gradient all-reduce and
  the pipeline schedule run in lock step);
* ``use_dp_batch_balance`` assigns the rows of a mini-batch to ranks by tokens (Karmarkar-Karp with
  equal row counts) instead of by position;
* ``use_dynamic_bsz`` forms micro-batches by a token budget (``max_packing_token_size``, rows at
  most ``dynamic_max_batch_size``), balanced, instead of ``micro_batch_size`` rows each.
"""

from __future__ import annotations

import dataclasses

import torch

from mindspeed_rl.workers.partition import karmarkar_karp, parts_within_budget


@dataclasses.dataclass(frozen=True)
class MicroBatching:
    """Fixed rows per micro-batch (``rows``), or a token budget (``token_budget``, with at most
    ``max_rows`` rows each)."""

    rows: int | None = None
    token_budget: int | None = None
    max_rows: int | None = None

    def __post_init__(self) -> None:
        if (self.rows is None) == (self.token_budget is None):
            raise ValueError("give micro-batch rows or a token budget, not both")


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    order: list[torch.Tensor]  # per DP rank: the batch rows it processes, in order
    micro_sizes: list[list[list[int]]]  # per DP rank, per mini-batch: rows of each micro-batch

    @property
    def mini_batches(self) -> int:
        return len(self.micro_sizes[0])

    def sizes_flat(self) -> list[list[int]]:
        """Per DP rank: rows of each micro-batch, over all mini-batches in order."""
        return [[s for mini in rank for s in mini] for rank in self.micro_sizes]


def equal_micro_batches(rows: int, mini_batches: int, rows_per_micro: int) -> list[list[int]]:
    """``rows`` in ``mini_batches`` equal mini-batches of equal micro-batches."""
    per_mini = rows // mini_batches
    if per_mini * mini_batches != rows or per_mini % rows_per_micro:
        raise ValueError(
            f"{rows} rows do not split into {mini_batches} mini-batches of micro-batches of "
            f"{rows_per_micro}"
        )
    return [[rows_per_micro] * (per_mini // rows_per_micro) for _ in range(mini_batches)]


def data_parallel_shares(
    lengths: torch.Tensor, mini_batches: int, dp_size: int, balance: bool
) -> list[list[list[int]]]:
    """Per DP rank, per mini-batch: batch row indices. Mini-batch m is rows [m*M, (m+1)*M); each
    rank gets M / dp_size of them, by position or (``balance``) by tokens."""
    rows = len(lengths)
    per_mini = rows // mini_batches
    share = per_mini // dp_size
    if per_mini * mini_batches != rows or share * dp_size != per_mini:
        raise ValueError(
            f"{rows} rows do not split into {mini_batches} mini-batches over {dp_size} DP ranks"
        )
    shares: list[list[list[int]]] = [[] for _ in range(dp_size)]
    for m in range(mini_batches):
        start = m * per_mini
        if balance and dp_size > 1:
            weights = lengths[start : start + per_mini].tolist()
            parts = karmarkar_karp(weights, dp_size, equal_size=True)
            # heaviest part to rank 0 is arbitrary; keep the partition's own order
            for d, part in enumerate(parts):
                shares[d].append([start + i for i in part])
        else:
            for d in range(dp_size):
                shares[d].append(list(range(start + d * share, start + (d + 1) * share)))
    return shares


def _micro_batches(
    lengths: torch.Tensor, ranks_rows: list[list[int]], how: MicroBatching
) -> list[list[list[int]]]:
    """For one mini-batch: per rank, its rows grouped into micro-batches; the same number of
    micro-batches on every rank."""
    if how.rows is not None:
        return [
            [rows[i : i + how.rows] for i in range(0, len(rows), how.rows)] for rows in ranks_rows
        ]
    weights = [[int(lengths[i]) for i in rows] for rows in ranks_rows]
    count = 1
    while True:
        parts = [
            parts_within_budget(w, how.token_budget, how.max_rows, at_least=count) for w in weights
        ]
        most = max(len(p) for p in parts)
        if all(len(p) == most for p in parts):
            return [[[rows[i] for i in part] for part in p] for rows, p in zip(ranks_rows, parts)]
        count = most


def plan_batch(
    lengths: torch.Tensor, shares: list[list[list[int]]], micro: MicroBatching
) -> BatchPlan:
    """``lengths`` [B]: tokens of each row (prompt + response); ``shares``: per DP rank, its rows
    in groups that are stepped together (the mini-batches of an update, or one group for a
    log-prob pass). Each group is cut into micro-batches, the same number on every rank."""
    dp_size = len(shares)
    order: list[list[int]] = [[] for _ in range(dp_size)]
    sizes: list[list[list[int]]] = [[] for _ in range(dp_size)]
    for m in range(len(shares[0])):
        grouped = _micro_batches(lengths, [shares[d][m] for d in range(dp_size)], micro)
        for d, micros in enumerate(grouped):
            for rows in micros:
                order[d].extend(rows)
            sizes[d].append([len(rows) for rows in micros])
    return BatchPlan([torch.tensor(o, dtype=torch.long) for o in order], sizes)


def one_group(shares: list[list[list[int]]]) -> list[list[list[int]]]:
    """The same rows per rank as a single group (a log-prob pass has no mini-batches)."""
    return [[[row for group in rank for row in group]] for rank in shares]


def plan_metrics(
    lengths: torch.Tensor, plan: BatchPlan, packed: bool, padded_width: int | None
) -> dict[str, float]:
    """``batch/real_token_share`` (real / computed tokens), ``batch/tokens_per_micro_batch``
    (computed, mean) and ``batch/dp_imbalance`` (max / mean real tokens per DP rank). Computed
    tokens: packed micro-batches hold their rows' tokens; padded ones rows x ``padded_width``
    (None: each micro-batch's own longest row)."""
    computed, micro_count, per_rank = 0, 0, []
    for order, minis in zip(plan.order, plan.sizes_flat()):
        start = 0
        for size in minis:
            rows = order[start : start + size]
            start += size
            if packed:
                computed += int(lengths[rows].sum())
            else:
                computed += size * (padded_width or int(lengths[rows].max()))
            micro_count += 1
        per_rank.append(int(lengths[order].sum()))
    real = int(lengths.sum())
    mean = sum(per_rank) / len(per_rank)
    return {
        "batch/real_token_share": real / computed if computed else 1.0,
        "batch/tokens_per_micro_batch": computed / micro_count if micro_count else 0.0,
        "batch/dp_imbalance": max(per_rank) / mean if mean else 1.0,
    }
