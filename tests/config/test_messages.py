"""Config errors blame the right place and say what would be valid."""

import pytest

from mindspeed_rl.config.loader import COMMAND_LINE
from mindspeed_rl.config.schema import SECTIONS, RLConfig, SamplingConfig
from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.trainer.config_entry import load_run_config
from tests.config.test_config import TINY_MODEL, TINY_RUN, _write

BASE = "dapo_qwen25_32b_A3"


def _problems(*overrides, name=BASE, config_dir=None):
    with pytest.raises(ConfigError) as info:
        load_run_config(name, config_dir, list(overrides))
    return {p.key: p for p in info.value.problems}


@pytest.mark.parametrize(
    ("override", "section", "hint"),
    [("rl_confg.epochs=2", "rl_confg", "did you mean 'rl_config'? "), ("reward.x=1", "reward", "")],
)
def test_unknown_section_on_the_command_line_is_blamed_on_it_and_lists_sections(
    override, section, hint
):
    problem = _problems(override)[section]
    assert problem.where == COMMAND_LINE
    assert problem.message == f"unknown section; {hint}valid sections: model, " + ", ".join(
        SECTIONS
    )


def test_unknown_section_in_the_file_is_blamed_on_the_file(tmp_path):
    config_dir = _write(tmp_path, TINY_RUN + "reward_config:\n  x: 1\n", TINY_MODEL)
    problem = _problems(name="run", config_dir=config_dir)["reward_config"]
    assert problem.where == str(config_dir / "run.yaml") and "valid sections:" in problem.message


def test_override_inside_a_section_of_the_file_is_blamed_on_the_command_line(tmp_path):
    problem = _problems("rl_config.epochs=zero")["rl_config.epochs"]
    assert problem.where == COMMAND_LINE


@pytest.mark.parametrize(
    ("override", "key", "section"),
    [
        ("rl_config.qqqq=1", "rl_config.qqqq", RLConfig),
        ("generate_config.sampling_config.qq=1", "generate_config.sampling_config.qq",
         SamplingConfig),
    ],
)  # fmt: skip
def test_unknown_key_without_a_near_match_lists_the_section_keys(override, key, section):
    message = _problems(override)[key].message
    assert message == "unknown key; valid: " + ", ".join(sorted(section.model_fields))


def test_unknown_key_with_a_near_match_suggests_it_only():
    message = _problems("rl_config.epoch=1")["rl_config.epoch"].message
    assert message == "unknown key; did you mean 'epochs'?"


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [("top_p=0.9", "top_p", "0.9"), ("top_k=20", "top_k", "20"), ("min_p=0.05", "min_p", "0.05")],
)
def test_truncated_sampling_is_refused_for_training_rollouts(override, key, value):
    full_key = f"generate_config.sampling_config.{key}"
    message = _problems(f"generate_config.sampling_config.{override}")[full_key].message
    assert message.startswith(value) and "truncated sampling is refused" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [("kv_cache_memory_bytes=0", "kv_cache_memory_bytes"), ("sleep_level=3", "sleep_level")],
)
def test_engine_memory_keys_are_checked(override, key):
    assert f"generate_config.{key}" in _problems(f"generate_config.{override}")
