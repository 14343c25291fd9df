"""YAML numbers read as OmegaConf reads them (the Ascend suite loads its YAMLs through Hydra)."""

import math

import pytest
from omegaconf import OmegaConf

from mindspeed_rl.config.yaml_loader import load_yaml
from mindspeed_rl.data.preprocess_config import load_preprocess_config
from mindspeed_rl.trainer.config_entry import load_run_config
from tests.config.test_config import TINY_MODEL, TINY_RUN, _write

SPELLINGS = [
    "1e-6", "5e-5", "1e-06", "1e-3", "1E3", "+1e3", "-2.5e-3", "1.0e+3", "6.02e23", "5.e3",
    "1_0e3", "1_000e3", ".5", "1.", "2.5", "1_000.5", ".inf", "-.inf",
    # not floats, for OmegaConf either: these must keep what OmegaConf gives them
    ".5e3", "+.5", "-.5e-3", "1e", "e3", "NaN", "_1",
    # ints, bools, nulls, strings
    "1_000", "-1", "+1", "0x10", "010", "1:30", "1__0", "0o10", "7",
    "true", "True", "TRUE", "yes", "on", "off", "no", "false", "null", "~",
    "abc", "'1e-6'", '"5e-5"', "2024-01-01", "2024-01-01 10:00:00",
]  # fmt: skip


def _omegaconf(text: str):
    return OmegaConf.to_container(OmegaConf.create(f"k: {text}"))["k"]


@pytest.mark.parametrize("text", SPELLINGS)
def test_every_spelling_loads_as_omegaconf_loads_it(text):
    ours, theirs = load_yaml(f"k: {text}")["k"], _omegaconf(text)
    assert type(ours) is type(theirs), (text, ours, theirs)
    assert ours == theirs or (math.isnan(ours) and math.isnan(theirs))


def test_scientific_notation_is_a_float_and_other_types_keep_theirs():
    data = load_yaml("a: 1e-6\nb: 5e-5\nc: 1e-06\nd: 8\ne: true\nf: '1e-6'\ng: 2024-01-01\n")
    assert data == {"a": 1e-6, "b": 5e-5, "c": 1e-6, "d": 8, "e": True, "f": "1e-6",
                    "g": "2024-01-01"}  # fmt: skip
    assert [type(data[k]) for k in "abcdefg"] == [float, float, float, int, bool, str, str]


def test_pyyaml_safe_loader_is_left_alone():
    import yaml

    assert yaml.safe_load("k: 1e-6")["k"] == "1e-6"  # YAML 1.1: only our loader changes the rule


def test_user_style_training_yaml_and_overrides_load_floats(tmp_path):
    run = TINY_RUN.replace(
        "  train_iters: 2\n",
        "  train_iters: 2\n  lr: 5e-5\n  min_lr: 1e-06\n  weight_decay: 1e-2\n",
    )
    model = TINY_MODEL + "  norm_epsilon: 1e-06\n"
    config = load_run_config("run", _write(tmp_path, run, model))
    assert (config.actor.lr, config.actor.min_lr, config.actor.weight_decay) == (5e-5, 1e-6, 1e-2)
    assert config.model.norm_epsilon == 1e-6
    config = load_run_config(
        "run", tmp_path, ["actor_config.lr=1e-3", "megatron_training.min_lr=1E-4"]
    )
    assert (config.actor.lr, config.actor.min_lr) == (1e-3, 1e-4)
    assert isinstance(config.actor.train_iters, int)


def test_preprocess_yaml_and_overrides_read_the_same_rules(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text("input: x.jsonl\ntokenizer_name_or_path: t\noutput_prefix: out\n"
                    "handler_name: h\nworkers: 2e0\n")  # fmt: skip
    # read as the number 2.0 (then refused as not an int), not passed on as the string '2e0'
    with pytest.raises(ValueError, match=r"workers=2\.0 must be an integer"):
        load_preprocess_config(str(path))
    path.write_text(path.read_text().replace("workers: 2e0", "workers: 2"))
    with pytest.raises(ValueError, match=r"seq_length=1000\.0 must be an integer"):
        load_preprocess_config(str(path), ["seq_length=1e3"])
