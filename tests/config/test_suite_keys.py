"""How the Ascend suite's keys are read (config/unsupported.py, docs/coming_from_mindspeed_rl.md):
accepted at the value we behave as, accepted without effect with one INFO line, or refused by
name; and every problem of a config reported in one run."""

from __future__ import annotations

from pathlib import Path

import pytest

from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.trainer.config_entry import load_run_config

RECIPE = "dapo_qwen25_32b_A3"
RECIPES = Path(__file__).resolve().parents[1] / "fixtures" / "mindspeed_rl_recipes"


def _problems(*overrides: str, name: str = RECIPE) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_run_config(name, overrides=list(overrides))
    return {p.key: p.message for p in info.value.problems}


@pytest.mark.parametrize(
    "override",
    ["rl_config.num_cpus_for_local_task=1.0", "rl_config.num_cpus_for_local_task=1",
     "rl_config.gamma=1", "rl_config.gamma=1.0",
     "megatron_training.no_pad_to_seq_lengths=true", "megatron_training.reset_attention_mask=true",
     "actor_config.attention_mask_type=causal", "rl_config.guarantee_order=true",
     "rl_config.guarantee_order=false", "rl_config.zmq_communication=false",
     "megatron_training.use_rotary_position_embeddings=true",
     "generate_config.enable_expert_parallel=false"],
)  # fmt: skip
def test_values_we_behave_as_are_accepted(override):
    load_run_config(RECIPE, overrides=[override])


@pytest.mark.parametrize(
    ("override", "accepted"),
    [("rl_config.num_cpus_for_local_task=2.0", "null or 1"),
     ("rl_config.num_cpus_for_local_task=true", "null or 1"),  # a bool is not the number 1
     ("megatron_training.no_pad_to_seq_lengths=false", "null or true"),
     ("megatron_training.reset_attention_mask=false", "null or true"),
     ("actor_config.attention_mask_type=general", 'null or "causal"'),
     ("rl_config.zmq_communication=true", "null or false"),
     ("generate_config.enable_expert_parallel=true", "infer_expert_parallel_size > 1")],
)  # fmt: skip
def test_other_values_are_refused_naming_the_accepted_one(override, accepted):
    key = override.split("=")[0]
    message = _problems(override)[key]
    assert "recognised, not supported yet" in message and accepted in message, message


def test_enable_expert_parallel_follows_the_rollout_ep():
    """vLLM's expert parallelism is derived from infer_expert_parallel_size; the suite's key is
    accepted where it says the same (the 30B-A3B recipe: EP 8 and true)."""
    on = [
        "generate_config.infer_expert_parallel_size=8",
        "generate_config.enable_expert_parallel=true",
    ]
    load_run_config("dapo_qwen3_30b_a3b_A3", overrides=on)
    problems = _problems(
        "generate_config.enable_expert_parallel=false", name="dapo_qwen3_30b_a3b_A3"
    )
    assert "generate_config.enable_expert_parallel" in problems


def test_model_keys_we_behave_as(tmp_path):
    config = load_run_config(
        RECIPE,
        overrides=["model.qwen25_32b.no_gradient_accumulation_fusion=true",
                   "model.qwen25_32b.use_rotary_position_embeddings=true"],
    )  # fmt: skip
    assert config.model.add_qkv_bias
    problems = _problems("model.qwen25_32b.attention_bias=true")
    assert "QKV bias is add_qkv_bias" in problems["model.qwen25_32b.attention_bias"]


def test_performance_switches_are_named_in_one_info_line():
    config = load_run_config(
        RECIPE,
        overrides=["megatron_training.moe_alltoall_overlap_comm=true",
                   "actor_config.gemm_gradient_accumulation_fusion=true",
                   "rl_config.log_max_throughput=false", "rl_config.adv_dispatch_size=64",
                   "generate_config.ascend_scheduler_config_enabled=false",
                   "generate_config.num_scheduler_steps=1",
                   "model.qwen25_32b.spec=[mindspeed_llm.tasks.models.spec.qwen3_spec,layer_spec]"],
    )  # fmt: skip
    (info,) = [message for level, message in config.notices if level == "info"]
    for key in ("megatron_training.moe_alltoall_overlap_comm", "rl_config.adv_dispatch_size",
                "generate_config.num_scheduler_steps", "model.qwen25_32b.spec"):  # fmt: skip
        assert key in info
    assert not [m for level, m in load_run_config(RECIPE).notices if level == "info"]


def test_hccl_buffersize_reaches_the_run_plan():
    from mindspeed_rl.config.plan import make_plan

    config = load_run_config(RECIPE, overrides=["rl_config.hccl_buffersize=64"])
    assert make_plan(config).hccl_buffsize_mb == 64
    assert make_plan(load_run_config(RECIPE)).hccl_buffsize_mb == "platform default"


def test_multi_turn_is_refused_alone_by_name():
    """One line, whatever else the YAML holds: a kind of run this project does not do."""
    problems = _problems(
        "rl_config.multi_turn_enable=true", "rl_config.tool_config_path=tools.yaml",
        "rl_config.mini_batch_size=5",
    )  # fmt: skip
    assert list(problems) == ["rl_config.multi_turn_enable"]
    assert "docs/coming_from_mindspeed_rl.md" in problems["rl_config.multi_turn_enable"]
    # at the suite's defaults the multi-turn keys are inert
    load_run_config(RECIPE, overrides=["rl_config.multi_turn_enable=false",
                                       "rl_config.max_tool_calls=0"])  # fmt: skip


def test_a_type_error_does_not_hide_the_cross_field_problems():
    problems = _problems("megatron_training.stage=ray_ppo", "rl_config.mini_batch_size=5",
                         "rl_config.clip_ratio_high=1.2")  # fmt: skip
    assert "'ray_dapo' or 'ray_grpo'" in problems["megatron_training.stage"]
    assert "does not divide the 32" in problems["rl_config.mini_batch_size"]
    assert "must be in (0, 1)" in problems["rl_config.clip_ratio_high"]


def test_rules_resting_on_a_refused_value_are_not_reported():
    """TP 'x' is refused; TP's default standing in must not produce problems about TP or the
    DP it implies (sequence_parallel needs TP > 1, micro-batches over DP 16)."""
    problems = _problems("actor_config.tensor_model_parallel_size=x", "rl_config.mini_batch_size=5")
    assert set(problems) == {"actor_config.tensor_model_parallel_size", "rl_config.mini_batch_size"}


def test_per_phase_token_budgets_replace_the_unset_default():
    """The 20k recipe sets actor_ / update_max_packing_token_size and leaves
    max_packing_token_size at 4096, which no pass uses; the reference pass runs only with KL."""
    overrides = ["rl_config.use_dynamic_bsz=true", "rl_config.actor_max_packing_token_size=8192",
                 "rl_config.update_max_packing_token_size=4096"]  # fmt: skip
    small_default = "rl_config.max_packing_token_size=3000"  # < 2048 + 2048
    load_run_config(RECIPE, overrides=[*overrides, small_default])
    # with KL the reference pass runs on max_packing_token_size: now it is used, and too small
    kl = ["rl_config.use_kl_loss=true", "actor_config.load=/tmp"]
    problems = _problems(*overrides, small_default, *kl)
    assert "cannot hold one sample" in problems["rl_config.max_packing_token_size"]
    problems = _problems(*overrides, "rl_config.update_max_packing_token_size=1000")
    assert "cannot hold one sample" in problems["rl_config.update_max_packing_token_size"]


def test_seq_length_takes_the_suites_meaning():
    """seq_length is the longest prompt there (preprocessing filters longer ones) and the engine
    must hold it; prompt + response may exceed it (every long-response recipe does)."""
    load_run_config(RECIPE, overrides=["generate_config.sampling_config.max_tokens=8192",
                                       "rl_config.rollout_max_tokens=8192",
                                       "generate_config.max_model_len=10240"])  # fmt: skip
    problems = _problems("megatron_training.seq_length=8192")
    assert problems["megatron_training.seq_length"].startswith(
        "8192 exceeds generate_config.max_model_len = 4096"
    )
    config = load_run_config(RECIPE, overrides=["megatron_training.seq_length=1024"])
    (warning,) = [m for level, m in config.notices if level == "warning"]
    assert warning.startswith("megatron_training.seq_length = 1024 < rl_config.max_prompt_length")


def test_grpo_without_a_response_cap_takes_the_sampling_one():
    """The suite's GRPO recipes set sampling_config.max_tokens only (rollout_max_tokens is the
    overlong penalty's there): here it is the response width, so it follows max_tokens."""
    from mindspeed_rl.config.loader import load_config

    config = load_config("grpo_qwen3_8b_A3", RECIPES)  # the verifier registry is not asked here
    assert config.rl_config.rollout_max_tokens == 8192
    assert config.rl_config.use_kl_loss  # stage: ray_grpo


def test_a_refused_model_key_does_not_stop_the_other_rules():
    problems = _problems("model.qwen25_32b.rotary_base=x", "rl_config.mini_batch_size=5")
    assert set(problems) == {"model.qwen25_32b.rotary_base", "rl_config.mini_batch_size"}
