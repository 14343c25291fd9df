"""Prompt batches for the trainer: a :class:`PromptDataset` read through a :class:`PromptSampler`.

Built from the training YAML's flat values by the caller::

    dataset = PromptDataset(data_path, split, "train", dataset_additional_keys, tokenizer)
    loader = PromptDataLoader(dataset, global_batch_size, seed=seed, shuffle=not no_shuffle,
                              full_shuffle=full_shuffle_instruction_dataset,
                              train_iters=train_iters, dp_rank=rank, dp_size=size)
    batch = loader.next_batch()          # as often as dynamic sampling needs
    checkpoint["data_sampler"] = loader.state_dict()
    ...
    loader.load_state_dict(checkpoint["data_sampler"])   # next_batch() = first unseen prompts
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mindspeed_rl.data.prompt_dataset import PromptBatch, PromptDataset
from mindspeed_rl.data.prompt_sampler import PromptSampler


class PromptDataLoader:
    """Serves this DP rank's share of each global batch of prompts; resumable.

    Arguments after ``global_batch_size`` are those of :class:`PromptSampler`.
    """

    def __init__(
        self,
        dataset: PromptDataset,
        global_batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        full_shuffle: bool = False,
        train_iters: int | None = None,
        dp_rank: int = 0,
        dp_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.sampler = PromptSampler(
            len(dataset),
            global_batch_size,
            seed=seed,
            shuffle=shuffle,
            full_shuffle=full_shuffle,
            train_iters=train_iters,
            dp_rank=dp_rank,
            dp_size=dp_size,
        )

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def next_batch(self) -> PromptBatch:
        """The next ``global_batch_size // dp_size`` prompts of this rank."""
        return self.dataset.batch(self.sampler.next_batch())

    def __iter__(self) -> Iterator[PromptBatch]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
