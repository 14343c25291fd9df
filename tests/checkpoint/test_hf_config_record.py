"""What a training checkpoint records as ``hf_config`` (training_state.hf_config_record)."""

import json

import pytest

from mindspeed_rl.checkpoint.training_state import hf_config_record


def test_the_loaded_record_wins_else_the_hf_directory_config(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "model_type": "qwen2", "num_hidden_layers": 2\n}')
    assert hf_config_record('{"model_type": "llama"}', tmp_path) == '{"model_type": "llama"}'
    assert json.loads(hf_config_record(None, tmp_path)) == {
        "model_type": "qwen2",
        "num_hidden_layers": 2,
    }


def test_an_unreadable_config_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"config\.json: cannot be read as JSON"):
        hf_config_record(None, tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=str(tmp_path / "config.json")):
        hf_config_record(None, tmp_path)
