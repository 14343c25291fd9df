"""The user-facing command: examples/data/preprocess_data.sh -> cli/preprocess_data.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import dapo_row, write_parquet

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "data" / "preprocess_data.sh"


def write_yaml(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{key}: {value}\n" for key, value in values.items()))
    return path


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.slow
def test_script_preprocesses_a_parquet_file(tokenizer_dir, tmp_path: Path) -> None:
    source = write_parquet(tmp_path / "dapo-math-17k.parquet", [dapo_row(i) for i in range(8)])
    yaml = write_yaml(
        tmp_path / "math.yaml",
        input=str(source),
        tokenizer_name_or_path=str(tokenizer_dir),
        output_prefix=str(tmp_path / "dataset" / "data"),
        handler_name="Math17kAlpacaStyleInstructionHandler",
        prompt_type="empty",
        dataset_additional_keys="[labels]",
        log_interval="4",
    )
    result = run_script(str(yaml), "workers=2")
    assert result.returncode == 0, result.stderr
    assert "rows written: 8" in result.stderr and "rejected: 0" in result.stderr
    assert "processed 8/8 rows" in result.stderr
    assert "Apex" not in result.stderr  # megatron-core import noise filtered
    for key in ("input_ids", "attention_mask", "labels"):
        assert (tmp_path / "dataset" / f"data_packed_{key}_document.idx").is_file()


def test_script_fails_with_one_clear_message(tmp_path: Path) -> None:
    yaml = write_yaml(
        tmp_path / "bad.yaml",
        input=str(tmp_path / "missing.parquet"),
        tokenizer_name_or_path="unused",
        output_prefix=str(tmp_path / "out" / "data"),
        handler_name="Math17kAlpacaStyleInstructionHandler",
    )
    result = run_script(str(yaml))
    assert result.returncode == 2
    assert "preprocess_data: error: input=" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert run_script().returncode == 2  # no argument: usage


@pytest.mark.slow
def test_killed_run_leaves_no_file_under_the_final_names(tokenizer_dir, tmp_path: Path) -> None:
    source = write_parquet(tmp_path / "big.parquet", [dapo_row(i) for i in range(20_000)])
    out = tmp_path / "out"
    yaml = write_yaml(
        tmp_path / "big.yaml",
        input=str(source),
        tokenizer_name_or_path=str(tokenizer_dir),
        output_prefix=str(out / "data"),
        handler_name="Math17kAlpacaStyleInstructionHandler",
        dataset_additional_keys="[labels]",
        log_interval="256",
    )
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli" / "preprocess_data.py"), str(yaml)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    for line in process.stderr:  # wait until rows are being written, then kill -9
        if "processed 256/20000" in line:
            process.kill()
            break
    process.wait(timeout=60)
    assert process.returncode == -9
    names = [p.name for p in out.iterdir()]
    assert names and all(name.startswith(".") and name.endswith(".tmp") for name in names)
    # the next run into the same prefix removes the killed run's temporary files and says so
    small = write_parquet(tmp_path / "small.parquet", [dapo_row(i) for i in range(20)])
    again = subprocess.run(
        [sys.executable, str(ROOT / "cli" / "preprocess_data.py"), str(yaml), f"input={small}"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    said = [
        line for line in again.stderr.splitlines() if "temporary file(s) of an interrupted" in line
    ]
    assert len(said) == 1 and all(name in said[0] for name in names), again.stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
