"""End-to-end preprocessing: files in the DAPO-Math-17k schema -> Megatron indexed datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mindspeed_rl.data import indexed_io
from mindspeed_rl.data.preprocess import CHUNK_ROWS, preprocess_dataset
from mindspeed_rl.data.preprocess_config import PreprocessConfig
from mindspeed_rl.data.prompt_dataset import PromptDataset

from .conftest import dapo_row, qwen_prompt, write_jsonl, write_parquet

NFD_TRUTH = "cafe\u0301"  # the toy tokenizer NFC-normalizes, like Qwen's: cannot round-trip


def config(
    tokenizer_dir: Path, input_path: Path, prefix: Path, **overrides: Any
) -> PreprocessConfig:
    raw = {
        "input": str(input_path),
        "tokenizer_type": "HuggingFaceTokenizer",
        "tokenizer_name_or_path": str(tokenizer_dir),
        "output_prefix": str(prefix),
        "handler_name": "Math17kAlpacaStyleInstructionHandler",
        "workers": 1,
        "log_interval": 10,
        "prompt_type": "qwen",
        "dataset_additional_keys": ["labels"],
        "map_keys": {"prompt": "prompt", "query": "", "response": "reward_model", "system": ""},
    }
    raw.update(overrides)
    return PreprocessConfig.from_dict(raw)


def read_key(prefix: Path, key: str) -> list[np.ndarray]:
    """Every sequence of one key, read with megatron-core's IndexedDataset directly."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(indexed_io.packed_path_prefix(prefix, key))
    return [np.array(dataset[i]) for i in range(len(dataset))]


def output_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_parquet_round_trip_every_row(tokenizer_dir, tokenizer, tmp_path) -> None:
    rows = [dapo_row(i) for i in range(30)]
    rows[4]["reward_model"] = {"style": "rule", "ground_truth": None}  # rejected
    rows[9]["prompt"] = []  # rejected
    rows[13]["reward_model"]["ground_truth"] = NFD_TRUTH  # kept verbatim
    source = write_parquet(tmp_path / "dapo.parquet", rows)
    prefix = tmp_path / "out" / "data"

    summary = preprocess_dataset(config(tokenizer_dir, source, prefix))

    kept = [i for i in range(30) if i not in (4, 9)]
    assert (summary.read, summary.written, summary.filtered_by_seq_length) == (30, 28, 0)
    assert summary.rejected == {"missing_ground_truth": 1, "missing_prompt": 1}
    assert summary.rejected_rows == {"missing_ground_truth": [4], "missing_prompt": [9]}
    assert summary.verbatim == {"labels": 1} and summary.verbatim_rows == {"labels": [13]}

    input_ids, masks, labels = (
        read_key(prefix, k) for k in ("input_ids", "attention_mask", "labels")
    )
    truths = read_key(prefix, "labels_utf8")
    dataset = PromptDataset(prefix, "100,0,0", "train", ["labels"], tokenizer)
    assert len(input_ids) == len(labels) == len(truths) == len(dataset) == 28
    for position, i in enumerate(kept):
        content = rows[i]["prompt"][0]["content"]
        truth = rows[i]["reward_model"]["ground_truth"]
        expected = tokenizer.encode(qwen_prompt(content), add_special_tokens=False)
        assert input_ids[position].tolist() == expected, f"row {i}"
        assert masks[position].tolist() == [1] * len(expected)
        assert labels[position].tolist() == tokenizer.encode(truth, add_special_tokens=False)
        assert truths[position].tobytes().decode("utf-8") == truth
        sample = dataset[position]
        assert sample.ground_truth == truth and sample.input_ids.tolist() == expected
    assert dataset[kept.index(13)].ground_truth == NFD_TRUTH  # not the NFC "café"


def test_ascend_layout_int32_one_document_per_sample(tokenizer_dir, tmp_path) -> None:
    source = write_parquet(tmp_path / "dapo.parquet", [dapo_row(i) for i in range(5)])
    prefix = tmp_path / "data"
    summary = preprocess_dataset(config(tokenizer_dir, source, prefix))
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("data_"))
    assert names == [
        f"data_packed_{key}_document.{ext}"
        for key in ("attention_mask", "input_ids", "labels")
        for ext in ("bin", "idx")
    ]  # every ground truth round-trips: no labels_utf8 file
    assert summary.verbatim == {}
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    for key in ("input_ids", "attention_mask", "labels"):
        dataset = IndexedDataset(indexed_io.packed_path_prefix(prefix, key))
        assert dataset.index.dtype == np.int32
        assert dataset.document_indices.tolist() == list(range(6))


def test_jsonl_with_mixed_types_and_broken_lines_counts_every_bad_row(
    tokenizer_dir, tokenizer, tmp_path
) -> None:
    rows: list[Any] = [dapo_row(i) for i in range(12)]
    rows[1]["reward_model"]["ground_truth"] = 17  # int among strings: pyarrow cannot type it
    rows[3]["prompt"][0]["content"] = ["not", "a", "string"]
    rows[5] = "{this is not json"
    rows[6] = "[1, 2]"
    rows[8]["prompt"] = None
    rows[10].pop("reward_model")
    source = write_jsonl(tmp_path / "dapo.jsonl", rows)
    prefix = tmp_path / "data"

    longest_ok = len(tokenizer.encode(qwen_prompt(dapo_row(0)["prompt"][0]["content"])))
    lengths = {
        i: len(tokenizer.encode(qwen_prompt(rows[i]["prompt"][0]["content"])))
        for i in (0, 2, 4, 7, 9, 11)
    }
    summary = preprocess_dataset(config(tokenizer_dir, source, prefix, seq_length=longest_ok))

    too_long = [i for i, n in lengths.items() if n > longest_ok]
    assert summary.read == 12
    assert summary.rejected == {
        "non_string_ground_truth": 1,
        "non_string_prompt": 1,
        "invalid_json": 2,
        "missing_prompt": 1,
        "missing_ground_truth": 1,
    }
    assert summary.rejected_rows["invalid_json"] == [5, 6]
    assert summary.filtered_by_seq_length == len(too_long) and summary.filtered_rows == too_long
    assert summary.written == 6 - len(too_long) > 0
    assert "invalid_json (the line is not a JSON object): 2 (rows 5, 6)" in summary.format(
        longest_ok
    )


@pytest.mark.slow
def test_workers_1_and_2_write_byte_identical_files(tokenizer_dir, tmp_path) -> None:
    rows = [dapo_row(i) for i in range(2 * CHUNK_ROWS + 37)]  # several chunks, a short last one
    rows[300]["reward_model"]["ground_truth"] = NFD_TRUTH
    rows[400]["prompt"] = []
    source = write_parquet(tmp_path / "dapo.parquet", rows)
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        preprocess_dataset(config(tokenizer_dir, source, out / "data", workers=workers))
        outputs.append(output_files(out))
    assert len(outputs[0]) == 8  # input_ids, attention_mask, labels, labels_utf8 x (bin, idx)
    assert outputs[0] == outputs[1]


def test_crash_midway_leaves_previous_files_untouched_and_no_temp_files(
    tokenizer_dir, tmp_path, monkeypatch
) -> None:
    source = write_parquet(tmp_path / "dapo.parquet", [dapo_row(i) for i in range(20)])
    out = tmp_path / "out"
    preprocess_dataset(config(tokenizer_dir, source, out / "data"))
    before = output_files(out)

    calls = {"n": 0}
    real_add = indexed_io.PackedDatasetWriter.add

    def crash_after_five(self, sample):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # like Ctrl-C halfway
        real_add(self, sample)

    monkeypatch.setattr(indexed_io.PackedDatasetWriter, "add", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset(config(tokenizer_dir, source, out / "data", prompt_type="empty"))
    assert output_files(out) == before  # no half file, no *.tmp left behind


def test_fresh_run_removes_a_stale_verbatim_file(tokenizer_dir, tmp_path) -> None:
    rows = [dapo_row(i) for i in range(6)]
    rows[2]["reward_model"]["ground_truth"] = NFD_TRUTH
    prefix = tmp_path / "data"
    preprocess_dataset(config(tokenizer_dir, write_parquet(tmp_path / "a.parquet", rows), prefix))
    assert "labels_utf8" in indexed_io.existing_keys(prefix)
    rows[2]["reward_model"]["ground_truth"] = "1"
    preprocess_dataset(config(tokenizer_dir, write_parquet(tmp_path / "b.parquet", rows), prefix))
    assert indexed_io.existing_keys(prefix) == ["attention_mask", "input_ids", "labels"]


def test_alpaca_json_array_with_history(tokenizer_dir, tokenizer, tmp_path) -> None:
    items = [
        {"instruction": "Add 2 and 3.", "input": "", "output": "5", "history": []},
        {
            "instruction": "And times 4?",
            "input": "Use the sum.",
            "output": "20",
            "history": [["Add 2 and 3.", "5"]],
        },
        "not an object",
    ]
    source = tmp_path / "alpaca.json"
    source.write_text(json.dumps(items, indent=1))
    prefix = tmp_path / "data"
    summary = preprocess_dataset(
        config(
            tokenizer_dir,
            source,
            prefix,
            handler_name="AlpacaStyleInstructionHandler",
            prompt_type="chatml",
            map_keys={
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "history": "history",
            },
        )
    )
    assert (summary.written, summary.rejected) == (2, {"invalid_json": 1})
    second = (
        "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"
        "<|im_start|>user\nAnd times 4?\nUse the sum.<|im_end|>\n<|im_start|>assistant\n"
    )
    dataset = PromptDataset(prefix, tokenizer=tokenizer)
    assert dataset[1].input_ids.tolist() == tokenizer.encode(second, add_special_tokens=False)
    assert [dataset[0].ground_truth, dataset[1].ground_truth] == ["5", "20"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"input": "/no/such/file.parquet"}, "input='/no/such/file.parquet' does not exist"),
        ({"handler_name": "Math18kHandler"}, "handler_name='Math18kHandler' is not a known"),
        ({"prompt_type": "qwen4"}, "prompt_type='qwen4' is not a template"),
        ({"tokenizer_name_or_path": "/no/such/tokenizer"}, "tokenizer_name_or_path='/no/such/tok"),
        (
            {"map_keys": {"prompt": "question", "response": "reward_model"}},
            r"no column\(s\) \['question'\]",
        ),
        ({"dataset_additional_keys": ["labels", "source"]}, r"no column\(s\) \['source'\]"),
    ],
)
def test_bad_configuration_fails_before_any_work(
    tokenizer_dir, tmp_path, override, message
) -> None:
    source = write_parquet(tmp_path / "dapo.parquet", [dapo_row(0)])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        preprocess_dataset(config(tokenizer_dir, source, out / "data", **override))
    assert not out.exists()


def test_a_run_that_writes_nothing_fails_without_output(tokenizer_dir, tmp_path) -> None:
    rows = [dapo_row(i) for i in range(3)]
    for row in rows:
        row["reward_model"] = {"style": "rule"}
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no row was written"):
        preprocess_dataset(
            config(tokenizer_dir, write_parquet(tmp_path / "x.parquet", rows), out / "d")
        )
    assert list(out.iterdir()) == []


def test_template_that_renders_nothing_is_rejected_per_row(tokenizer_dir, tmp_path) -> None:
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps([{"name": "blank", "format_user": {"slots": [""]}}]))
    rows = [dapo_row(i) for i in range(3)]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"empty_after_templating .*: 3 \(rows 0, 1, 2\)"):
        preprocess_dataset(
            config(
                tokenizer_dir,
                write_parquet(tmp_path / "x.parquet", rows),
                out / "d",
                prompt_type="blank",
                prompt_type_path=str(templates),
            )
        )
