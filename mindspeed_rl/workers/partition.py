"""Balanced k-way partitioning of sequence lengths (Karmarkar & Karp's largest differencing method).

Used to form token-budget micro-batches (``use_dynamic_bsz``) and to balance data-parallel ranks by
tokens (``use_dp_batch_balance``). The largest differencing method keeps, for every group of items
merged so far, a k-tuple of subsets; it repeatedly takes the two tuples with the largest spread
(max - min subset sum) and merges them pairing the heaviest subset of one with the lightest of the
other. With ``equal_size`` the items are first dealt into tuples of one item per subset (sorted,
so each tuple holds k neighbours in length), which keeps every subset at the same item count.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


class _State:
    """k subsets (item indices) with their sums, sorted heaviest first."""

    __slots__ = ("items", "sums")

    def __init__(self, items: list[list[int]], sums: list[int]) -> None:
        order = sorted(range(len(sums)), key=lambda i: -sums[i])
        self.items = [items[i] for i in order]
        self.sums = [sums[i] for i in order]

    @property
    def spread(self) -> int:
        return self.sums[0] - self.sums[-1]

    def merge(self, other: _State) -> _State:
        k = len(self.sums)
        items = [self.items[i] + other.items[k - 1 - i] for i in range(k)]
        sums = [self.sums[i] + other.sums[k - 1 - i] for i in range(k)]
        return _State(items, sums)


def karmarkar_karp(weights: Sequence[int], parts: int, equal_size: bool = False) -> list[list[int]]:
    """Indices of ``weights`` in ``parts`` subsets with near-equal sums (each sorted ascending).
    ``equal_size``: every subset gets ``len(weights) / parts`` items (must divide)."""
    n = len(weights)
    if parts < 1 or parts > n:
        raise ValueError(f"cannot split {n} items into {parts} non-empty parts")
    if equal_size and n % parts:
        raise ValueError(f"{n} items do not split into {parts} parts of equal size")
    order = sorted(range(n), key=lambda i: weights[i])
    states: list[_State] = []
    if equal_size:
        for start in range(0, n, parts):
            chunk = order[start : start + parts]
            states.append(_State([[i] for i in chunk], [weights[i] for i in chunk]))
    else:
        for i in order:
            states.append(
                _State([[i]] + [[] for _ in range(parts - 1)], [weights[i]] + [0] * (parts - 1))
            )
    # max-heap on the spread; the counter keeps ties deterministic
    heap = [(-s.spread, c, s) for c, s in enumerate(states)]
    heapq.heapify(heap)
    counter = len(heap)
    while len(heap) > 1:
        _, _, a = heapq.heappop(heap)
        _, _, b = heapq.heappop(heap)
        merged = a.merge(b)
        heapq.heappush(heap, (-merged.spread, counter, merged))
        counter += 1
    subsets = [list(items) for items in heap[0][2].items]
    if equal_size:
        _refine_by_swaps(weights, subsets)
    subsets = [sorted(items) for items in subsets]
    return sorted(subsets, key=lambda s: s[0] if s else n)


def _refine_by_swaps(weights: Sequence[int], subsets: list[list[int]], rounds: int = 64) -> None:
    """Swap one item between the heaviest and the lightest subset while that narrows them (the
    equal-size start can leave a long sequence with too many long neighbours); counts stay."""
    for _ in range(rounds):
        sums = [sum(weights[i] for i in s) for s in subsets]
        heavy, light = (
            max(range(len(sums)), key=sums.__getitem__),
            min(range(len(sums)), key=sums.__getitem__),
        )
        gap = sums[heavy] - sums[light]
        best, pair = 0, None
        for a_pos, a in enumerate(subsets[heavy]):
            for b_pos, b in enumerate(subsets[light]):
                delta = weights[a] - weights[b]
                gain = gap - abs(gap - 2 * delta)  # how much the pair's larger sum drops, x2
                if 0 < delta < gap and gain > best:
                    best, pair = gain, (a_pos, b_pos)
        if pair is None:
            return
        a_pos, b_pos = pair
        subsets[heavy][a_pos], subsets[light][b_pos] = subsets[light][b_pos], subsets[heavy][a_pos]


def parts_within_budget(
    weights: Sequence[int], budget: int, max_items: int | None = None, at_least: int = 1
) -> list[list[int]]:
    """The fewest (>= ``at_least``) balanced parts whose sums stay within ``budget`` and whose
    sizes stay within ``max_items``."""
    n = len(weights)
    if max(weights) > budget:
        raise ValueError(f"a sequence of {max(weights)} tokens exceeds the budget of {budget}")
    k = max(at_least, -(-sum(weights) // budget), -(-n // max_items) if max_items else 1)
    while True:
        parts = karmarkar_karp(weights, min(k, n))
        if all(sum(weights[i] for i in p) <= budget for p in parts) and (
            max_items is None or all(len(p) <= max_items for p in parts)
        ):
            return parts
        k += 1
