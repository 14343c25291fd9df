"""Indexed-dataset I/O through megatron-core: round trip, atomic commit, Ascend-suite files.

Marked megatron_smoke: CI also runs these against megatron-core 0.12.x (the Ascend pin).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mindspeed_rl.data.indexed_io import (
    PackedDatasetWriter,
    existing_keys,
    open_indexed,
    packed_path_prefix,
)
from mindspeed_rl.data.prompt_dataset import PromptDataset

pytestmark = pytest.mark.megatron_smoke


def test_round_trip_of_ids_and_exact_text(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    texts = ["4", "cafe\u0301", "数学 😀", "x" * 1000]
    samples = []
    for i, text in enumerate(texts):
        ids = rng.integers(0, 2**31 - 1, size=1 + 37 * i, dtype=np.int64)
        samples.append(
            {
                "input_ids": ids,
                "labels": ids[:3],
                "labels_utf8": np.frombuffer(text.encode("utf-8"), dtype=np.uint8),
            }
        )
    prefix = tmp_path / "sub" / "data"
    with PackedDatasetWriter(prefix, ["input_ids", "labels"], ["labels_utf8"]) as writer:
        for sample in samples:
            writer.add(sample)
        written = writer.commit()
    assert written == [
        packed_path_prefix(prefix, k) for k in ("input_ids", "labels", "labels_utf8")
    ]
    assert existing_keys(prefix) == ["input_ids", "labels", "labels_utf8"]
    assert sorted(p.name for p in prefix.parent.iterdir() if p.name.endswith(".tmp")) == []
    input_ids, labels, utf8 = (
        open_indexed(prefix, k) for k in ("input_ids", "labels", "labels_utf8")
    )
    assert len(input_ids) == len(labels) == len(utf8) == 4
    for i, sample in enumerate(samples):
        assert np.array_equal(input_ids[i], sample["input_ids"])
        assert np.array_equal(labels[i], sample["labels"])
        assert utf8[i].tobytes().decode("utf-8") == texts[i]


def test_uncommitted_writer_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with PackedDatasetWriter(tmp_path / "data", ["input_ids"]) as writer:
            writer.add({"input_ids": np.arange(3)})
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_missing_key_error_names_the_files_and_what_exists(tmp_path: Path) -> None:
    with PackedDatasetWriter(tmp_path / "data", ["input_ids"]) as writer:
        writer.add({"input_ids": np.arange(3)})
        writer.commit()
    with pytest.raises(
        ValueError, match=r"data_packed_labels_document.bin/.idx not found.*input_ids"
    ):
        open_indexed(tmp_path / "data", "labels")


def test_files_written_the_ascend_way_load_as_prompts(tokenizer, tmp_path: Path) -> None:
    """The Ascend suite: IndexedDatasetBuilder(int32), add_item(torch.IntTensor) + end_document."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prompts = ["What is 2+2?", "Name a prime."]
    truths = ["4", "7"]
    prefix = tmp_path / "ascend"
    for key in ("input_ids", "attention_mask", "labels"):
        path = packed_path_prefix(prefix, key)
        builder = IndexedDatasetBuilder(path + ".bin")
        for prompt, truth in zip(prompts, truths):
            ids = tokenizer.encode(truth if key == "labels" else prompt, add_special_tokens=False)
            builder.add_item(torch.IntTensor([1] * len(ids) if key == "attention_mask" else ids))
            builder.end_document()
        builder.finalize(path + ".idx")
    dataset = PromptDataset(prefix, "100,0,0", "train", ["labels"], tokenizer)
    assert [dataset[i].ground_truth for i in range(2)] == truths
    assert dataset[1].input_ids.tolist() == tokenizer.encode(prompts[1], add_special_tokens=False)
    assert dataset[1].input_ids.dtype == np.int64


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mindspeed_rl.data.indexed_io import remove_stale_temp_files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    names = {
        "stale": f".data_packed_input_ids_document.{dead}.0123abcd.bin.tmp",
        "stale_idx": f".data_packed_labels_document.{dead}.0123abcd.idx.tmp",
        "running": f".data_packed_input_ids_document.{os.getpid()}.0123abcd.bin.tmp",
        "other_prefix": f".data_packed_x_packed_input_ids_document.{dead}.0123abcd.bin.tmp",
        "final": "data_packed_input_ids_document.bin",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temp_files(tmp_path / "data")
    assert sorted(p.name for p in removed) == sorted([names["stale"], names["stale_idx"]])
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {names["running"], names["other_prefix"], names["final"]}
