"""KL keys at --dry-run: refused by name when they cannot take effect (docs/kl.md)."""

from __future__ import annotations

import pytest

from mindspeed_rl.config.plan import make_plan
from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.trainer.config_entry import load_run_config

RECIPE = "dapo_qwen25_32b_A3"


def _problems(*overrides: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_run_config(RECIPE, overrides=list(overrides))
    return {p.key: p.message for p in info.value.problems}


def test_kl_loss_from_the_actors_converted_weights_is_valid(tmp_path):
    config = load_run_config(
        RECIPE, overrides=["rl_config.use_kl_loss=true", f"actor_config.load={tmp_path}"]
    )
    plan = make_plan(config).as_dict()
    assert plan["kl_loss"] and not plan["kl_in_reward"]
    assert plan["reference_model"].startswith(f"{tmp_path}, low_var_kl, coefficient 0.01 (fixed")


def test_dapo_builds_no_reference_and_accepts_the_seeds_ref_path():
    # the seed's resume procedure sets ref_model_load_path for DAPO too
    config = load_run_config(
        RECIPE, overrides=["rl_config.integrated_mode_config={ref_model_load_path: /nowhere}"]
    )
    assert make_plan(config).as_dict()["reference_model"] == "not built (no KL term)"


@pytest.mark.parametrize(
    "override",
    ["rl_config.kl_target=0.1", "rl_config.kl_horizon=100", "rl_config.kl_ctrl_type=adaptive"],
)  # fmt: skip
def test_kl_only_keys_without_a_kl_term_are_refused_by_name(override):
    key = override.split("=")[0]
    assert "neither use_kl_loss nor use_kl_in_reward is on" in _problems(override)[key]


def test_a_reference_micro_batch_without_kl_is_a_warning():
    """The Ascend suite's DAPO recipes carry it (their loss has no KL): harmless, so told, not
    refused."""
    config = load_run_config(RECIPE, overrides=["rl_config.ref_forward_micro_batch_size=2"])
    (warning,) = [m for level, m in config.notices if level == "warning"]
    assert warning.startswith("rl_config.ref_forward_micro_batch_size = 2 has no effect")


def test_adaptive_control_needs_target_and_horizon(tmp_path):
    problems = _problems(
        "rl_config.use_kl_in_reward=true", "rl_config.kl_ctrl_type=adaptive",
        f"actor_config.load={tmp_path}",
    )  # fmt: skip
    assert problems == {
        "rl_config.kl_target": "required with kl_ctrl_type: adaptive",
        "rl_config.kl_horizon": "required with kl_ctrl_type: adaptive",
    }


def test_fixed_control_refuses_adaptive_keys_and_a_zero_coefficient(tmp_path):
    problems = _problems(
        "rl_config.use_kl_loss=true", "rl_config.kl_target=0.1", "rl_config.init_kl_coef=0.0",
        f"actor_config.load={tmp_path}",
    )  # fmt: skip
    assert problems["rl_config.kl_target"] == "is read only with kl_ctrl_type: adaptive"
    assert problems["rl_config.init_kl_coef"].startswith("0 makes the KL term zero")


def test_resume_with_kl_needs_the_original_weights(tmp_path):
    key = "rl_config.integrated_mode_config.ref_model_load_path"
    tracker = tmp_path / "latest_checkpointed_iteration.txt"
    tracker.write_text("7\n")  # a run's own checkpoint
    resume = ("rl_config.use_kl_loss=true", "actor_config.finetune=false",
              f"actor_config.load={tmp_path}")  # fmt: skip
    problems = _problems(*resume)
    assert "required to resume (finetune: false) with a KL term" in problems[key]
    # converted weights: Megatron starts from them, and they are the reference (the suite's GRPO
    # recipes say finetune: false on converted weights)
    tracker.write_text("release\n")
    assert load_run_config(RECIPE, overrides=list(resume)).rl_config.use_kl_loss
    missing = _problems(
        "rl_config.use_kl_loss=true",
        f"rl_config.integrated_mode_config={{ref_model_load_path: {tmp_path / 'gone'}}}",
    )
    assert missing[key] == f"{tmp_path / 'gone'}: directory not found"
    no_weights = _problems("rl_config.use_kl_loss=true", "actor_config.load=null")
    assert "needs reference weights" in no_weights[key]
