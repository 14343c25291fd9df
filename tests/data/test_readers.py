"""Readers return rows exactly as written in the file, in order, with stable row indices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mindspeed_rl.data.handlers import Rejection
from mindspeed_rl.data.readers import materialize, open_rows

from .conftest import dapo_row, write_jsonl, write_parquet


def all_rows(path: Path, chunk_size: int = 2, columns=None) -> list:
    source = open_rows(path)
    rows = []
    for start, chunk in source.iter_chunks(chunk_size, columns):
        assert start == len(rows)
        rows += materialize(chunk)
    assert len(rows) == source.num_rows
    return rows


def test_parquet_rows_keep_nesting_and_projection_drops_other_columns(tmp_path) -> None:
    rows = [dapo_row(i) for i in range(5)]
    path = write_parquet(tmp_path / "d.parquet", rows)
    assert all_rows(path) == rows
    assert all_rows(path, columns=["reward_model"]) == [
        {"reward_model": r["reward_model"]} for r in rows
    ]
    assert open_rows(path).columns == list(rows[0])


def test_jsonl_strings_that_look_like_dates_stay_strings(tmp_path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"answer": "2020-01-01"}, {"answer": "12:30"}])
    assert all_rows(path) == [{"answer": "2020-01-01"}, {"answer": "12:30"}]


def test_jsonl_blank_lines_are_not_rows(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": "1"}\n\n{"a": "2"}\n   \n{"a": "3"}\n')
    assert all_rows(path) == [{"a": "1"}, {"a": "2"}, {"a": "3"}]


def test_json_array_with_bom_and_a_non_object(tmp_path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"a": "x"}, 3]).encode())
    rows = all_rows(path)
    assert rows[0] == {"a": "x"} and isinstance(rows[1], Rejection)
    assert rows[1].reason == "invalid_json"


def test_unsupported_file_type_names_the_key(tmp_path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"input=.*unsupported file type '.csv'"):
        open_rows(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_latin1_file_names_the_file_and_line_and_asks_for_utf8(tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    good = b'{"prompt": "x", "answer": "1"}\n'
    path.write_bytes(good + good + '{"prompt": "café", "answer": "2"}\n'.encode("latin-1"))
    with pytest.raises(ValueError) as info:
        open_rows(path)
    message = str(info.value)
    assert str(path) in message and "line 3 is not UTF-8" in message and "0xe9" in message
    assert "must be UTF-8" in message and "\n" not in message


def test_utf8_split_across_read_chunks_is_accepted(tmp_path):
    from mindspeed_rl.data.readers import _check_utf8

    path = tmp_path / "u.jsonl"
    path.write_bytes('{"p": "é"}\n'.encode())  # "é" is 2 bytes; 8-byte chunks cut through it
    _check_utf8(path, "input", chunk_bytes=8)
    path.write_bytes('{"p": "é"}'.encode()[:-3])  # ends inside the 2-byte character
    with pytest.raises(ValueError, match="line 1 is not UTF-8"):
        _check_utf8(path, "input", chunk_bytes=8)
