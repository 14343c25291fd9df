"""Activation recompute keys: consistent combinations load, the others are refused by name
before any worker starts (megatron-core would otherwise raise, or ignore a key, later)."""

import pytest

from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.workers.actor import parallel_and_memory_fields

RECIPE = "dapo_qwen25_32b_A3"  # 64 layers, PP 1


def test_full_and_selective_recompute_reach_the_transformer_config():
    full = load_run_config(RECIPE, overrides=[
        "actor_config.recompute_granularity=full", "actor_config.recompute_method=block",
        "actor_config.recompute_num_layers=8",
    ])  # fmt: skip
    assert parallel_and_memory_fields(full.actor) == {
        "sequence_parallel": True,
        "context_parallel_size": 1,
        "recompute_granularity": "full",
        "recompute_method": "block",
        "recompute_num_layers": 8,
    }
    selective = load_run_config(RECIPE, overrides=["actor_config.recompute_granularity=selective"])
    assert parallel_and_memory_fields(selective.actor)["recompute_granularity"] == "selective"


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (["recompute_granularity=full"], "recompute_granularity", "needs recompute_method"),
        (["recompute_granularity=selective", "recompute_num_layers=2"], "recompute_num_layers",
         "full only"),
        (["recompute_method=uniform"], "recompute_method", "full only"),
        (["recompute_granularity=full", "recompute_method=uniform", "recompute_num_layers=65"],
         "recompute_num_layers", "exceeds the 64 layers"),
        (["recompute_granularity=some"], "recompute_granularity", "'full' or 'selective'"),
    ],
)  # fmt: skip
def test_inconsistent_recompute_keys_are_refused_by_name(overrides, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_run_config(RECIPE, overrides=[f"actor_config.{o}" for o in overrides])
    text = str(info.value)
    assert f"actor_config.{key}" in text and fragment in text, text
