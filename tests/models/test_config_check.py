"""The model registry's config checks, run by training-config validation (and --dry-run)."""

import pytest

from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.trainer.config_entry import load_run_config


@pytest.mark.parametrize(
    "config_name", ["dapo_qwen25_32b_A3", "dapo_qwen3_32b_A3", "dapo_qwen3_30b_a3b_A3"]
)
def test_shipped_recipes_pass_the_model_checks(config_name):
    load_run_config(config_name)


def test_mlp_size_not_divisible_by_tp_is_reported_with_its_origin():
    with pytest.raises(ConfigError) as err:
        load_run_config("dapo_qwen25_32b_A3", overrides=["model.qwen25_32b.ffn_hidden_size=27650"])
    messages = [str(p) for p in err.value.problems]
    assert any(
        m.startswith("command line:")
        and "model.qwen25_32b.ffn_hidden_size" in m
        and "not divisible by tensor_model_parallel_size = 8" in m
        for m in messages
    ), messages
