"""Which prompts each step trains on: a resumable, data-parallel prompt sampler.

The sampler serves an endless stream of dataset positions, ``global_batch_size`` at a time, on
demand: with dynamic sampling the trainer may draw several generation batches in one iteration.
The stream is a pure function of ``(seed, num_prompts, shuffle mode)``:

- ``shuffle=False`` (YAML ``no_shuffle: true``): 0, 1, ..., n-1, 0, 1, ... ;
- ``shuffle=True``: epoch e is a permutation of the n prompts drawn from ``(seed, e)``; a batch
  may span the end of one epoch and the start of the next, so every prompt is served exactly once
  per epoch. More prompts than the dataset holds (``train_iters * global_batch_size > n``) simply
  means more epochs (not to be confused with ``rl_config.epochs``, update passes over one batch);
- ``full_shuffle=True`` (YAML ``full_shuffle_instruction_dataset``): as the Ascend suite, the
  copies of the dataset that ``train_iters`` needs are shuffled together, so a prompt may repeat
  before every other prompt was seen. The block of ``ceil(train_iters * gbs / n)`` epochs is one
  permutation; later blocks (runs extended past train_iters) get their own.

Permutations use NumPy's legacy ``RandomState``, whose stream is frozen across NumPy versions, so a
run resumed after an upgrade sees the same order. The state is the position in the stream
(``epoch``, ``position`` within it) plus what defines the stream; ``load_state_dict`` then makes the
next batch exactly the first unseen one. Nothing depends on the DP layout: a run may resume with
another ``dp_size`` or ``global_batch_size``.

Data parallelism: each global batch (positions p .. p+gbs-1) is cut into ``dp_size`` contiguous
slices; rank r gets slice r (Megatron's pretraining-sampler layout).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

STATE_VERSION = 1


class PromptSampler:
    """Serves this DP rank's dataset positions for each global batch.

    Args:
        num_prompts: size of the dataset split (n).
        global_batch_size: prompts per global batch, across all DP ranks.
        seed: defines the shuffle order.
        shuffle: permute each epoch (False = sequential, YAML ``no_shuffle``).
        full_shuffle: shuffle the epochs ``train_iters`` needs together (needs ``train_iters``).
        train_iters: planned iterations; only used to size the ``full_shuffle`` block.
        dp_rank, dp_size: this rank's data-parallel coordinates.
    """

    def __init__(
        self,
        num_prompts: int,
        global_batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        full_shuffle: bool = False,
        train_iters: int | None = None,
        dp_rank: int = 0,
        dp_size: int = 1,
    ) -> None:
        if num_prompts < 1:
            raise ValueError(f"the dataset split is empty (num_prompts={num_prompts}); check split")
        if global_batch_size < 1:
            raise ValueError(f"global_batch_size={global_batch_size} must be >= 1")
        if dp_size < 1 or not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank={dp_rank}, dp_size={dp_size}: need 0 <= dp_rank < dp_size")
        if global_batch_size % dp_size:
            raise ValueError(
                f"global_batch_size={global_batch_size} must be divisible by the data-parallel "
                f"size {dp_size}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer")
        if full_shuffle and not shuffle:
            raise ValueError(
                "full_shuffle_instruction_dataset and no_shuffle contradict each other"
            )
        if full_shuffle and (train_iters is None or train_iters < 1):
            raise ValueError("full_shuffle_instruction_dataset needs train_iters >= 1")
        self.num_prompts = num_prompts
        self.global_batch_size = global_batch_size
        self.seed = int(seed)
        self.shuffle = shuffle
        self.full_shuffle = full_shuffle
        self.block_epochs = (
            math.ceil(train_iters * global_batch_size / num_prompts) if full_shuffle else 1
        )
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self._consumed = 0  # prompts served so far, all ranks together
        self._orders: dict[int, np.ndarray] = {}

    @property
    def epoch(self) -> int:
        """Completed passes over the dataset (0 during the first)."""
        return self._consumed // self.num_prompts

    @property
    def position(self) -> int:
        """Prompts already served in the current epoch."""
        return self._consumed % self.num_prompts

    @property
    def consumed_prompts(self) -> int:
        return self._consumed

    def next_batch(self) -> list[int]:
        """This rank's ``global_batch_size // dp_size`` positions of the next global batch."""
        share = self.global_batch_size // self.dp_size
        start = self._consumed + self.dp_rank * share
        positions = [self._position_at(p) for p in range(start, start + share)]
        self._consumed += self.global_batch_size
        return positions

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """Plain ints / bools: safe for ``torch.save`` + ``torch.load(weights_only=True)``."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_prompts": self.num_prompts,
            "shuffle": self.shuffle,
            "full_shuffle": self.full_shuffle,
            "block_epochs": self.block_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the last prompt served by the sampler that saved ``state``.

        Raises ``ValueError`` when the stream it describes is not this sampler's (another seed,
        dataset size or shuffle mode): resuming would replay or skip prompts.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"sampler state version {state.get('version')!r} != {STATE_VERSION}")
        for key, mine, hint in (
            ("seed", self.seed, "keep the seed of the run being resumed"),
            ("num_prompts", self.num_prompts, "the dataset or its split changed"),
            ("shuffle", self.shuffle, "keep no_shuffle as in the run being resumed"),
            ("full_shuffle", self.full_shuffle, "keep full_shuffle_instruction_dataset"),
        ):
            if state[key] != mine:
                raise ValueError(
                    f"data sampler state has {key}={state[key]!r} but this run has {mine!r}: "
                    f"resuming would replay or skip prompts; {hint}"
                )
        if not 0 <= state["position"] < self.num_prompts or state["epoch"] < 0:
            raise ValueError(f"data sampler state has an invalid position: {state}")
        # The saved block size wins: train_iters may grow on resume, the order already drawn stays.
        if state["block_epochs"] != self.block_epochs:
            self.block_epochs = int(state["block_epochs"])
            self._orders.clear()
        self._consumed = state["epoch"] * self.num_prompts + state["position"]

    def _position_at(self, stream_index: int) -> int:
        if not self.shuffle:
            return stream_index % self.num_prompts
        block_size = self.block_epochs * self.num_prompts
        block, offset = divmod(stream_index, block_size)
        order = self._orders.get(block)
        if order is None:
            order = _permutation(self.seed, block, block_size)
            # keep the current block and the next (a batch may straddle them)
            self._orders = {b: o for b, o in self._orders.items() if b >= block - 1}
            self._orders[block] = order
        return int(order[offset]) % self.num_prompts


def _permutation(seed: int, block: int, size: int) -> np.ndarray:
    """Permutation of range(size) for ``block`` of the stream of ``seed`` (frozen RNG stream)."""
    state = np.random.SeedSequence([seed, block]).generate_state(1)[0]
    return np.random.RandomState(int(state)).permutation(size)
