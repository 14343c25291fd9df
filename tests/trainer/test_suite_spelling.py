"""The CPU quickstart written the Ascend suite's way trains.

tests/fixtures/mindspeed_rl_recipes/suite_spelling/quickstart_cpu.yaml is configs/quickstart_cpu.yaml
in the sections, key spellings and switches of MindSpeed-RL's own recipes (its
configs/dapo_qwen25_32b_A3.yaml at 05a90d7 as the model): fused-kernel and performance switches,
``num_cpus_for_local_task: 1.0``, ``guarantee_order``, dispatch sizes, ``seq_length`` as the
longest prompt, ``ref_forward_micro_batch_size`` without KL, ``hccl_buffersize``. It must mean the
same run as ours (checked field by field) and train.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
from mindspeed_rl.trainer.config_entry import load_run_config

SUITE_DIR = (
    Path(__file__).resolve().parents[1] / "fixtures" / "mindspeed_rl_recipes" / "suite_spelling"
)

# field -> why the suite's spelling resolves to another value, with no effect on this CPU run
EXPECTED_DIFFERENCES = {
    "actor.seq_length": "the suite's meaning: the longest prompt (96), not prompt + response",
    "actor.use_flash_attn": "MindSpeed fusions: NPU only, logged as ignored elsewhere",
    "actor.use_fused_rmsnorm": "MindSpeed fusions: NPU only",
    "actor.use_fused_swiglu": "MindSpeed fusions: NPU only",
    "actor.use_fused_rotary_pos_emb": "MindSpeed fusions: NPU only",
    "actor.no_load_optim": "finetune: true loads weights only",
    "actor.no_load_rng": "finetune: true loads weights only",
    "rl_config.init_kl_coef": "no KL term in DAPO",
    "rl_config.ref_forward_micro_batch_size": "no reference model without KL (a warning)",
    "rl_config.actor_forward_micro_batch_size": "16 = micro_batch_size, the default it replaces",
    "rl_config.hccl_buffersize": "HCCL_BUFFSIZE: read by HCCL only",
}


def _flat(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _suite_config(*overrides: str):
    return load_run_config(CONFIG_NAME, SUITE_DIR, list(overrides), platform="cpu")


def test_the_suite_spelling_means_the_same_run():
    ours = _flat(load_run_config(CONFIG_NAME, platform="cpu").model_dump())
    suite_config = _suite_config()
    suite = _flat(suite_config.model_dump())
    differing = {key for key in ours if ours[key] != suite[key]}
    assert differing == set(EXPECTED_DIFFERENCES), sorted(differing ^ set(EXPECTED_DIFFERENCES))
    (info,) = [m for level, m in suite_config.notices if level == "info"]
    assert "rl_config.reward_dispatch_size" in info and "megatron_training.shape_order" in info


@pytest.mark.slow
def test_the_suite_spelling_trains(assets, tmp_path):
    from mindspeed_rl.trainer.launch import run_training

    paths, _ = assets
    config = _suite_config(
        f"megatron_training.tokenizer_name_or_path={paths['hf']}",
        f"megatron_training.data_path={paths['data']}",
        f"actor_config.load={paths['mcore']}",
        "megatron_training.train_iters=2",
        "rl_config.validate_before_train=false",
        "rl_config.validation_interval=0",
        "rl_config.filter_groups_train_batch_size=8",
        "rl_config.mini_batch_size=4",
        "rl_config.filter_groups_max_batches=-1",
    )
    result = run_training(config, log_dir=str(tmp_path / "logs"))
    assert [h["iteration"] for h in result.history] == [1.0, 2.0]
    for row in result.history:
        assert math.isfinite(row["actor/pg_loss"]) and math.isfinite(row["actor/grad_norm"])
