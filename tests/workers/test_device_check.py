"""The prepared device check runs in its CPU smoke mode, so it cannot rot between lent GPUs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_device_check_smoke(tmp_path):
    run = subprocess.run(
        [sys.executable, "benchmarks/device_check.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "RESULT: ok" in run.stdout
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["equal_actor"] and report["equal_engine"]
    for name in ("offload on", "offload off"):
        result = report["runs"][name]
        assert result["weights_changed"] and result["changed_params"] == result["params"]
        assert result["generate_tokens_per_s"] > 0 and result["update_tokens_per_s"] > 0
        phases = {entry["phase"] for entry in result["ledger"]}
        assert {"engine_init", "sync", "generate", "log_prob", "update"} <= phases
