"""The dataset YAML: shipped files validate, Ascend-suite quirks load, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mindspeed_rl.data.handlers import build_handler
from mindspeed_rl.data.preprocess_config import (
    DATASET_CONFIGS_DIR,
    PreprocessConfig,
    load_preprocess_config,
)
from mindspeed_rl.data.templates import available_templates

SHIPPED = sorted(p.stem for p in DATASET_CONFIGS_DIR.glob("*.yaml"))
MINIMAL = {
    "input": "x.parquet",
    "tokenizer_name_or_path": "tok",
    "output_prefix": "out/data",
    "handler_name": "Math17kAlpacaStyleInstructionHandler",
}


def test_the_required_configs_ship() -> None:
    assert {"math_17k", "deepscaler", "alpaca"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_validates(name: str) -> None:
    config = load_preprocess_config(name)
    build_handler(config.handler_name, config.map_keys, config.dataset_additional_keys)
    assert config.prompt_type in available_templates()
    assert config.dataset_additional_keys == ("labels",)


def test_math_17k_matches_the_reference_values() -> None:
    config = load_preprocess_config("math_17k")
    assert config.input == Path("./dataset/dapo-math-17k.parquet")
    assert config.output_prefix == Path("./dataset/data")
    assert (config.handler_name, config.prompt_type) == (
        "Math17kAlpacaStyleInstructionHandler",
        "empty",
    )
    assert config.map_keys == {
        "prompt": "prompt",
        "query": "",
        "response": "reward_model",
        "system": "",
    }


def test_ascend_suite_spellings_load(tmp_path: Path) -> None:
    path = tmp_path / "r1.yaml"
    path.write_text(
        "input: ./dataset/orz.json\ntokenizer_name_or_path: /m\noutput_prefix: ./dataset/orz\n"
        "handler_name: R1AlpacaStyleInstructionHandler\ntokenizer_type: HuggingFaceTokenizer\n"
        "workers: 8\nlog_interval: 1000\nprompt_type: qwen_r1\ndataset_additional_keys: labels\n"
        'map_keys: \'{"prompt":"problem", "query":"", "response": "answer", "system":""}\'\n'
        "seed: 1234\npack: false\n"
    )
    config = load_preprocess_config(str(path), ["workers=2", "seq_length=512"])
    assert config.dataset_additional_keys == ("labels",)
    assert config.map_keys == {"prompt": "problem", "query": "", "response": "answer", "system": ""}
    assert (config.workers, config.seq_length) == (2, 512)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"input_file": "x"}, "unknown key 'input_file'"),
        ({"pack": True}, "pack=True is recognised .* not supported yet"),
        ({"workers": 0}, "workers=0 must be an integer >= 1"),
        ({"seq_length": "2k"}, "seq_length='2k'"),
        ({"tokenizer_type": "Llama2Tokenizer"}, "tokenizer_type='Llama2Tokenizer'; supported"),
        ({"handler_name": None}, "handler_name is required"),
        ({"dataset_additional_keys": ["labels", "labels"]}, "lists a key twice"),
        ({"dataset_additional_keys": ["input_ids"]}, "reserves"),
        ({"map_keys": "{not json"}, "not a JSON object"),
    ],
)
def test_mistakes_are_named(change, match) -> None:
    with pytest.raises(ValueError, match=match):
        PreprocessConfig.from_dict({**MINIMAL, **change}, source="my.yaml")


def test_unknown_config_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ValueError, match="math_17k"):
        load_preprocess_config("math_71k")
