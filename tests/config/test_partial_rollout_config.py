"""Partial rollout's keys at --dry-run: parsed, checked against the other keys, shown in the plan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mindspeed_rl.config.plan import make_plan
from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.trainer.config_entry import load_run_config

RECIPE = "dapo_qwen25_32b_A2_20k"  # 20k-token responses: the regime the feature is for
REPO = Path(__file__).resolve().parents[2]


def _problems(*overrides: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_run_config(RECIPE, overrides=list(overrides))
    return {p.key: p.message for p in info.value.problems}


def test_the_plan_states_the_round_cap_and_the_age_bound():
    config = load_run_config(RECIPE, overrides=["rl_config.partial_rollout_max_split=4",
                                                "rl_config.rollout_threshold_rate=0.8",
                                                "rl_config.tis_imp_ratio_cap=2.0"])  # fmt: skip
    max_tokens = config.rl_config.rollout_max_tokens
    plan = make_plan(config).as_dict()["partial_rollout"]
    assert plan.startswith(f"on: <= {-(-max_tokens // 4)} new tokens per sample and round")
    assert "policy age <= 3" in plan and "80% of its samples" in plan and "TIS cap 2.0" in plan
    assert make_plan(load_run_config(RECIPE)).as_dict()["partial_rollout"] == "off"


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["rl_config.rollout_threshold_rate=0.8"], "rl_config.rollout_threshold_rate",
         "partial_rollout_max_split >= 2"),
        (["rl_config.partial_rollout_max_split=100000"], "rl_config.partial_rollout_max_split",
         "at least one token"),
    ],
)  # fmt: skip
def test_keys_that_cannot_take_effect_are_refused_by_name(overrides, key, words):
    problems = _problems(*overrides)
    assert key in problems and words in problems[key], problems


@pytest.mark.parametrize(
    "override",
    ["rl_config.partial_rollout_max_split=0", "rl_config.rollout_threshold_rate=0",
     "rl_config.rollout_threshold_rate=1.5", "rl_config.partial_rollout_max_split=two"],
)  # fmt: skip
def test_out_of_range_values_are_refused(override):
    assert override.split("=")[0] in _problems(override)


def test_dry_run_exits_non_zero_naming_the_key():
    done = subprocess.run(
        [sys.executable, str(REPO / "cli" / "train_dapo.py"), "--config-name", RECIPE,
         "--dry-run", "rl_config.rollout_threshold_rate=0.5"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0 and "rl_config.rollout_threshold_rate" in done.stderr + done.stdout


def test_the_threshold_is_refused_with_vllm_data_parallel_engines():
    """Qwen3-30B-A3B's recipe runs infer EP 8 over infer TP 1: vLLM's data-parallel engines step
    together, so one engine cannot stop its round on its own."""
    with pytest.raises(ConfigError) as info:
        load_run_config("dapo_qwen3_30b_a3b_A3", overrides=[
            "rl_config.partial_rollout_max_split=2", "rl_config.rollout_threshold_rate=0.8"])  # fmt: skip
    problems = {p.key: p.message for p in info.value.problems}
    assert "data-parallel engines" in problems["rl_config.rollout_threshold_rate"], problems
    load_run_config("dapo_qwen3_30b_a3b_A3", overrides=["rl_config.partial_rollout_max_split=2"])
