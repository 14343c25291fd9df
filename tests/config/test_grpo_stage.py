"""``stage: ray_grpo``: the DAPO loop with GRPO's defaults (docs/dapo.md, "GRPO")."""

from __future__ import annotations

from mindspeed_rl.config.plan import make_plan
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.trainer.dapo_trainer import accuracy_verifier

RECIPE = "dapo_qwen25_32b_A3"
GRPO = ["megatron_training.stage=ray_grpo", "rl_config.filter_groups_enable=false"]


def test_grpo_turns_the_kl_loss_on_when_the_yaml_leaves_it_unset(tmp_path):
    config = load_run_config(RECIPE, overrides=[*GRPO, f"actor_config.load={tmp_path}"])
    assert config.rl_config.use_kl_loss and not config.rl_config.use_kl_in_reward
    assert make_plan(config).as_dict()["kl_loss"]


def test_an_explicit_use_kl_loss_wins_over_the_stage():
    config = load_run_config(RECIPE, overrides=[*GRPO, "rl_config.use_kl_loss=false"])
    assert not config.rl_config.use_kl_loss
    assert not load_run_config(RECIPE).rl_config.use_kl_loss  # DAPO: KL-free


def test_a_grpo_recipe_reports_accuracy_from_its_own_verifier(tmp_path):
    # the suite's GRPO recipes name one verifier and leave filter_groups_metric at its default
    config = load_run_config(
        RECIPE, overrides=[*GRPO, f"actor_config.load={tmp_path}",
                           "rl_config.verifier_function=[math_17k_acc]"],
    )  # fmt: skip
    assert config.rl_config.filter_groups_metric == "acc_for_dapo"
    assert accuracy_verifier(config.rl_config) == "math_17k_acc"
    dapo = load_run_config(RECIPE).rl_config
    assert accuracy_verifier(dapo) == dapo.filter_groups_metric == "acc_for_dapo"


def test_every_stage_has_a_name_in_the_logs():
    import typing

    from mindspeed_rl.config.schema import STAGE_RL_DEFAULTS, MegatronConfig
    from mindspeed_rl.trainer.dapo_trainer import STAGE_NAMES

    stages = set(typing.get_args(MegatronConfig.model_fields["stage"].annotation))
    assert stages == set(STAGE_NAMES) == set(STAGE_RL_DEFAULTS)
