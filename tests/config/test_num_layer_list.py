"""``num_layer_list`` and ``noop_layers`` at ``--dry-run`` (docs/parallelism.md)."""

from __future__ import annotations

import pytest

from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.workers.memory_plan import predicted_bytes

RECIPE = "dapo_qwen25_32b_A3"  # Qwen2.5-32B: 64 layers, 16 devices
PP4 = ["actor_config.tensor_model_parallel_size=4", "actor_config.pipeline_model_parallel_size=4"]


def _problems(*overrides: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_run_config(RECIPE, overrides=list(overrides))
    return {p.key: p.message for p in info.value.problems}


def test_the_grpo_32b_split_is_accepted_and_sizes_the_busiest_stage():
    even = load_run_config(RECIPE, overrides=PP4)
    uneven = load_run_config(RECIPE, overrides=[*PP4, "actor_config.num_layer_list='16,17,16,15'"])
    assert uneven.actor.num_layer_list == "16,17,16,15"
    # the memory plan counts the 17-layer stage, not 64 / 4
    ratio = predicted_bytes(uneven)["actor_params"] / predicted_bytes(even)["actor_params"]
    assert 1.0 < ratio < 17 / 16


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'16,17,16'", "3 stages listed but pipeline_model_parallel_size is 4"),
        ("'16,17,16,16'", "sums to 65, the model has num_layers = 64"),
        ("'16,x,16,16'", "not a comma-separated list of layer counts"),
    ],
)
def test_a_list_that_does_not_fit_is_refused_by_name(value, message):
    problems = _problems(*PP4, f"actor_config.num_layer_list={value}")
    assert message in problems["actor_config.num_layer_list"]


def test_a_pp_that_does_not_divide_the_layers_points_to_num_layer_list():
    problems = _problems("actor_config.pipeline_model_parallel_size=3",
                         "actor_config.tensor_model_parallel_size=1")  # fmt: skip
    assert "valid PP" in problems["actor_config.pipeline_model_parallel_size"]
    ok = load_run_config(RECIPE, overrides=[
        "actor_config.pipeline_model_parallel_size=2", "actor_config.tensor_model_parallel_size=8",
        "actor_config.num_layer_list='31,33'"])  # fmt: skip
    assert ok.actor.num_layer_list == "31,33"


def test_noop_layers_are_refused_by_name_with_the_reason():
    problems = _problems("actor_config.noop_layers='5,95'")
    message = problems["actor_config.noop_layers"]
    assert "not supported" in message and "num_layer_list" in message
    load_run_config(RECIPE, overrides=["actor_config.noop_layers=null"])
