"""Dynamic sampling: the zero-variance filter, accumulation, trimming, the limit, checkpoints."""

from __future__ import annotations

import io
import logging

import pytest
import torch
from tensordict import NonTensorStack, TensorDict

from mindspeed_rl.algorithms.dynamic_sampling import (
    DynamicSampler,
    DynamicSamplingError,
    filter_zero_variance_groups,
)

N = 4  # samples per prompt
R = 6  # padded response width


def gen_batch(prefix: str, group_scores: list[list[float]]) -> tuple[TensorDict, torch.Tensor]:
    """A generation batch: one group per entry of group_scores, rows carry their group index."""
    uids = [f"{prefix}{g}" for g, scores in enumerate(group_scores) for _ in scores]
    rows = len(uids)
    batch = TensorDict(
        {
            "responses": torch.arange(rows * R).view(rows, R),
            "response_mask": torch.ones(rows, R),
            "token_level_scores": torch.zeros(rows, R),
        },
        batch_size=[rows],
    )
    batch.set("uid", NonTensorStack.from_list(uids))
    batch.set("ground_truth", NonTensorStack.from_list([f"gt-{u}" for u in uids]))
    return batch, torch.tensor([s for scores in group_scores for s in scores])


MIXED = [1.0, -1.0, -1.0, -1.0]
ALL_RIGHT = [1.0] * N
ALL_WRONG = [-1.0] * N


def test_filter_drops_constant_groups_and_keeps_groups_of_one():
    metric = torch.tensor(
        [1.0, 1.0, 1.0, -1.0, 1.0, 0.5, 0.1, 0.1, 0.1, -1.0, -1.0], dtype=torch.float64
    )
    uids = ["a", "a", "a", "b", "b", "solo", "c", "c", "c", "d", "d"]
    out = filter_zero_variance_groups(metric, uids)
    assert out.keep.tolist() == [False] * 3 + [True, True, True] + [False] * 5
    assert (out.num_groups, out.num_kept_groups) == (5, 2)
    # [0.1, 0.1, 0.1] has a float std of ~1e-17; it is still a constant group.
    assert out.constant_groups == {1.0: 1, 0.1: 1, -1.0: 1}


def test_accumulates_across_generation_batches_and_trims_to_exactly_the_target():
    sampler = DynamicSampler(train_batch_size=3)
    sampler.add(*gen_batch("x", [MIXED, ALL_RIGHT, ALL_WRONG, MIXED]))  # keeps x0, x3
    assert not sampler.ready and sampler.num_kept_groups == 2
    sampler.add(*gen_batch("y", [ALL_RIGHT, MIXED, MIXED]))  # keeps y1, y2: 4 >= 3
    assert sampler.ready
    batch, metrics = sampler.take()
    uids = batch.get("uid").tolist()
    assert uids == ["x0"] * N + ["x3"] * N + ["y1"] * N  # y2 is surplus and dropped
    assert batch.batch_size == torch.Size([3 * N])
    assert batch.get("ground_truth").tolist() == [f"gt-{u}" for u in uids]
    # Rows travel with their tensors: x3's rows are rows 12..15 of the first generation batch.
    assert torch.equal(batch["responses"][N : 2 * N], torch.arange(12 * R, 16 * R).view(N, R))
    assert metrics == {
        "dynamic_sampling/num_gen_batches": 2.0,
        "dynamic_sampling/generated_groups": 7.0,
        "dynamic_sampling/kept_groups": 4.0,
        "dynamic_sampling/trained_groups": 3.0,
        "dynamic_sampling/dropped_constant_groups": 3.0,
        "dynamic_sampling/partial_batch": 0.0,
    }
    assert not sampler.ready and sampler.num_gen_batches == 0  # empty for the next step


def test_limit_reached_fails_with_counts_and_what_to_change():
    sampler = DynamicSampler(train_batch_size=4, max_gen_batches=2)
    sampler.add(*gen_batch("x", [ALL_RIGHT, ALL_RIGHT, MIXED]))
    with pytest.raises(DynamicSamplingError) as info:
        sampler.add(*gen_batch("y", [ALL_RIGHT, ALL_WRONG, ALL_RIGHT]))
    message = str(info.value)
    assert "filter_groups_max_batches=2" in message
    assert "1 of filter_groups_train_batch_size=4 groups kept" in message
    assert "Of 6 groups generated, 4 were all correct" in message
    assert "1 all wrong" in message
    assert "too easy" in message
    assert "filter_groups_on_max_batches: train" in message


def test_limit_reached_in_train_mode_trains_on_whole_groups_fitting_the_divisor(caplog):
    sampler = DynamicSampler(train_batch_size=8, max_gen_batches=2, on_max_batches="train")
    sampler.add(*gen_batch("x", [MIXED, ALL_WRONG, MIXED]))
    assert not sampler.ready
    sampler.add(*gen_batch("y", [MIXED, ALL_WRONG]))
    assert sampler.ready  # 3 groups of 8, limit reached
    with caplog.at_level(logging.WARNING):
        batch, metrics = sampler.take(divisor=8)  # 12 rows -> 8 rows: 2 whole groups
    assert batch.get("uid").tolist() == ["x0"] * N + ["x2"] * N
    assert metrics["dynamic_sampling/partial_batch"] == 1.0
    assert metrics["dynamic_sampling/trained_groups"] == 2.0
    assert "training on 2 groups (8 rows, a multiple of 8)" in caplog.text
    assert "filter_groups_on_max_batches=train" in caplog.text


def test_train_mode_with_nothing_that_fits_is_an_error():
    sampler = DynamicSampler(train_batch_size=8, max_gen_batches=1, on_max_batches="train")
    sampler.add(*gen_batch("x", [MIXED]))
    with pytest.raises(DynamicSamplingError, match="fills a multiple of 16 rows") as info:
        sampler.take(divisor=16)
    assert "filter_groups_max_batches=1" in str(info.value)
    full = DynamicSampler(train_batch_size=1)
    full.add(*gen_batch("y", [MIXED]))
    with pytest.raises(DynamicSamplingError, match="n_samples_per_prompt a multiple of 3"):
        full.take(divisor=3)


def test_state_survives_a_checkpoint_between_generation_batches():
    uninterrupted = DynamicSampler(train_batch_size=3)
    uninterrupted.add(*gen_batch("x", [MIXED, ALL_RIGHT, MIXED]))
    uninterrupted.add(*gen_batch("y", [ALL_WRONG, MIXED]))
    expected, expected_metrics = uninterrupted.take()

    before = DynamicSampler(train_batch_size=3)
    before.add(*gen_batch("x", [MIXED, ALL_RIGHT, MIXED]))
    buffer = io.BytesIO()
    torch.save(before.state_dict(), buffer)
    buffer.seek(0)
    after = DynamicSampler(train_batch_size=3)
    after.load_state_dict(torch.load(buffer, weights_only=True))
    assert after.num_gen_batches == 1 and after.num_kept_groups == 2
    after.add(*gen_batch("y", [ALL_WRONG, MIXED]))
    batch, metrics = after.take()
    assert metrics == expected_metrics
    assert batch.get("uid").tolist() == expected.get("uid").tolist()
    assert batch.get("ground_truth").tolist() == expected.get("ground_truth").tolist()
    for key in ("responses", "response_mask", "token_level_scores"):
        assert torch.equal(batch[key], expected[key])


def test_contract_violations_are_reported():
    sampler = DynamicSampler(train_batch_size=5)
    sampler.add(*gen_batch("x", [MIXED]))
    with pytest.raises(ValueError, match="appear in two generation batches"):
        sampler.add(*gen_batch("x", [MIXED]))
    wide, metric = gen_batch("w", [MIXED])
    wide = TensorDict(
        {
            k: torch.cat([v, v[:, :1]], dim=1)
            for k, v in wide.items()
            if k not in ("uid", "ground_truth")
        },
        batch_size=wide.batch_size,
    )
    wide.set("uid", NonTensorStack.from_list(["w0"] * N))
    wide.set("ground_truth", NonTensorStack.from_list(["g"] * N))
    train = DynamicSampler(train_batch_size=2)
    train.add(*gen_batch("a", [MIXED]))
    train.add(wide, metric)
    with pytest.raises(ValueError, match="different widths for 'responses'"):
        train.take()
    no_uid = TensorDict({"responses": torch.zeros(2, R)}, batch_size=[2])
    with pytest.raises(ValueError, match="no non-tensor 'uid' entry"):
        DynamicSampler(train_batch_size=1).add(no_uid, torch.zeros(2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_batch_size": 0}, "filter_groups_train_batch_size must be >= 1"),
        ({"train_batch_size": 2, "max_gen_batches": 0}, "filter_groups_max_batches must be >= 1"),
        ({"train_batch_size": 2, "on_max_batches": "skip"}, "filter_groups_on_max_batches"),
    ],
)
def test_bad_settings_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DynamicSampler(**kwargs)
