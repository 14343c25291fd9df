"""Prompt dataset: Megatron split arithmetic, samples, batches with left padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mindspeed_rl.data.indexed_io import PackedDatasetWriter
from mindspeed_rl.data.prompt_dataset import (
    PromptBatch,
    PromptDataset,
    PromptSample,
    split_document_ranges,
)


@pytest.mark.parametrize(
    ("split", "n", "expected"),
    [
        ("100,0,0", 10, [(0, 10), (10, 10), (10, 10)]),
        ("80,10,10", 10, [(0, 8), (8, 9), (9, 10)]),
        ("98/1/1", 10, [(0, 10), (10, 10), (10, 10)]),  # round(9.8) = 10, round(0.1) = 0
        ("1,1", 3, [(0, 1), (1, 3), (3, 3)]),  # round(1.5) = 2 twice, shifted back by one
        ("100", 7, [(0, 7), (7, 7), (7, 7)]),
    ],
)
def test_split_ranges_follow_megatron_rounding(split, n, expected) -> None:
    ranges = split_document_ranges(split, n)
    assert [(r.start, r.stop) for r in ranges] == expected


@pytest.mark.parametrize("split", ["", "a,b", "0,0,0", "-1,2,0", "1,1,1,1"])
def test_bad_split_is_rejected(split) -> None:
    with pytest.raises(ValueError, match="split="):
        split_document_ranges(split, 10)


def write_prompts(prefix, tokenizer, prompts, truths) -> None:
    with PackedDatasetWriter(prefix, ["input_ids", "attention_mask", "labels"]) as writer:
        for prompt, truth in zip(prompts, truths):
            ids = np.array(tokenizer.encode(prompt, add_special_tokens=False))
            labels = np.array(tokenizer.encode(truth, add_special_tokens=False))
            writer.add({"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels})
        writer.commit()


def test_valid_split_serves_the_second_part(tokenizer, tmp_path) -> None:
    prompts = [f"question {i}" for i in range(10)]
    truths = [str(i) for i in range(10)]
    write_prompts(tmp_path / "d", tokenizer, prompts, truths)
    train = PromptDataset(tmp_path / "d", "80,10,10", "train", ["labels"], tokenizer)
    valid = PromptDataset(tmp_path / "d", "80,10,10", "valid", ["labels"], tokenizer)
    assert (len(train), len(valid)) == (8, 1)
    sample = valid[0]
    assert sample.index == 8 and sample.ground_truth == "8"
    assert sample.input_ids.tolist() == tokenizer.encode("question 8", add_special_tokens=False)
    batches = list(train.iter_once(3))
    assert [b.indices for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert batches[2].texts("labels") == ["6", "7"]


def test_ids_only_keys_need_a_tokenizer(tokenizer, tmp_path) -> None:
    write_prompts(tmp_path / "d", tokenizer, ["a"], ["1"])
    with pytest.raises(ValueError, match=r"\['labels'\] are stored as token ids only"):
        PromptDataset(tmp_path / "d", additional_keys=["labels"])
    assert len(PromptDataset(tmp_path / "d", additional_keys=[])) == 1


def test_left_padded_prompts() -> None:
    def sample(ids):
        return PromptSample(0, np.array(ids, dtype=np.int64), {}, {})

    prompts, mask = PromptBatch([sample([5, 6, 7]), sample([8])]).left_padded(pad_token_id=0)
    assert torch.equal(prompts, torch.tensor([[5, 6, 7], [0, 0, 8]]))
    assert torch.equal(mask, torch.tensor([[1, 1, 1], [0, 0, 1]]))
    assert prompts.dtype == torch.int64
