"""A run with missing paths fails before Ray starts, naming every key."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_missing_paths_exit_2_naming_each_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "cli/train_dapo.py", "--config-name", "quickstart_cpu",
         f"megatron_training.tokenizer_name_or_path={tmp_path / 'no_model'}",
         f"megatron_training.data_path={tmp_path / 'no_data'}",
         f"actor_config.load={tmp_path / 'no_ckpt'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    for key in ("tokenizer_name_or_path", "actor_config.load", "megatron_training.data_path"):
        assert key in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr
