"""The prompt sampler: order, epochs, data-parallel shards and exact resumption."""

from __future__ import annotations

import io
from collections import Counter

import pytest
import torch

from mindspeed_rl.data.prompt_sampler import PromptSampler


def batches(sampler: PromptSampler, steps: int) -> list[list[int]]:
    return [sampler.next_batch() for _ in range(steps)]


def test_no_shuffle_is_sequential_and_wraps_into_the_next_epoch() -> None:
    sampler = PromptSampler(10, 4, seed=1, shuffle=False)
    assert batches(sampler, 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert (sampler.epoch, sampler.position) == (1, 2)


def test_each_epoch_is_a_permutation_and_epochs_differ() -> None:
    sampler = PromptSampler(10, 5, seed=3)
    stream = [p for batch in batches(sampler, 6) for p in batch]  # 3 epochs
    epochs = [stream[i * 10 : (i + 1) * 10] for i in range(3)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert stream == [p for b in batches(PromptSampler(10, 5, seed=3), 6) for p in b]
    assert stream != [p for b in batches(PromptSampler(10, 5, seed=4), 6) for p in b]


@pytest.mark.parametrize("shuffle", ["none", "epoch", "full"])
@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 8])  # n=10, gbs=4: steps 2 and 5 straddle epochs
def test_restored_sampler_continues_exactly(shuffle: str, k: int) -> None:
    def make() -> PromptSampler:
        return PromptSampler(
            10, 4, seed=7, shuffle=shuffle != "none", full_shuffle=shuffle == "full", train_iters=5
        )

    reference = batches(make(), 12)
    first = make()
    batches(first, k)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # as in a checkpoint
    buffer.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert batches(resumed, 12 - k) == reference[k:]


def test_state_names_epoch_position_and_seed() -> None:
    sampler = PromptSampler(10, 4, seed=7)
    batches(sampler, 3)
    state = sampler.state_dict()
    assert (state["epoch"], state["position"], state["seed"]) == (1, 2, 7)


def test_data_parallel_shards_are_contiguous_slices_of_the_global_batch() -> None:
    global_batches = batches(PromptSampler(10, 6, seed=2), 4)
    shards = [batches(PromptSampler(10, 6, seed=2, dp_rank=r, dp_size=3), 4) for r in range(3)]
    for step, global_batch in enumerate(global_batches):
        assert shards[0][step] + shards[1][step] + shards[2][step] == global_batch


def test_resume_with_another_dp_size_continues_the_global_stream() -> None:
    reference = batches(PromptSampler(10, 4, seed=5), 4)
    saved = PromptSampler(10, 4, seed=5, dp_rank=1, dp_size=2)
    batches(saved, 2)
    resumed = PromptSampler(10, 4, seed=5)
    resumed.load_state_dict(saved.state_dict())
    assert batches(resumed, 2) == reference[2:]


def test_full_shuffle_mixes_the_epochs_train_iters_needs() -> None:
    # 5 iters x 4 = 20 prompts over n=10: one block of 2 epochs, each prompt twice in it.
    sampler = PromptSampler(10, 4, seed=0, full_shuffle=True, train_iters=5)
    stream = [p for b in batches(sampler, 5) for p in b]
    assert sampler.block_epochs == 2
    assert Counter(stream) == {i: 2 for i in range(10)}
    assert sorted(stream[:10]) != list(range(10))  # not epoch by epoch (fixed seed)


def test_resume_with_more_train_iters_keeps_the_drawn_full_shuffle_order() -> None:
    reference = batches(PromptSampler(10, 4, seed=0, full_shuffle=True, train_iters=5), 8)
    saved = PromptSampler(10, 4, seed=0, full_shuffle=True, train_iters=5)
    batches(saved, 3)
    extended = PromptSampler(10, 4, seed=0, full_shuffle=True, train_iters=50)
    extended.load_state_dict(saved.state_dict())
    assert batches(extended, 5) == reference[3:]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": 8}, "seed=7 but this run has 8"),
        ({"num_prompts": 11}, "num_prompts=10 but this run has 11"),
        ({"shuffle": False}, "shuffle=True but this run has False"),
    ],
)
def test_resuming_a_different_stream_is_refused(kwargs, match) -> None:
    saved = PromptSampler(10, 4, seed=7)
    batches(saved, 1)
    args = {"num_prompts": 10, "seed": 7, "shuffle": True, **kwargs}
    other = PromptSampler(args.pop("num_prompts"), 4, **args)
    with pytest.raises(ValueError, match=match):
        other.load_state_dict(saved.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"global_batch_size": 5, "dp_size": 2}, "divisible"),
        ({"num_prompts": 0}, "empty"),
        ({"full_shuffle": True}, "needs train_iters"),
        ({"seed": -1}, "non-negative"),
        ({"dp_rank": 2, "dp_size": 2}, "dp_rank"),
    ],
)
def test_invalid_arguments(kwargs, match) -> None:
    args = {"num_prompts": 10, "global_batch_size": 4, "seed": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        PromptSampler(args.pop("num_prompts"), args.pop("global_batch_size"), **args)
