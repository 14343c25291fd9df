"""config.json (Hub spelling and transformers 5.x spelling) <-> ModelConfig, and the registry."""

from pathlib import Path

import pytest
import yaml

from mindspeed_rl.config.schema import ModelConfig
from mindspeed_rl.models.hf_config import hf_config_dict, model_config_from_hf
from mindspeed_rl.models.registry import ARCHITECTURES, CLI_NAMES, architecture_for_cli
from tests.models import tiny_hf

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"

# config.json files as published on the Hub (written by transformers 4.x), abridged to the keys
# a loader reads.
HUB_QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
    "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768,
    "max_window_layers": 28, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "use_sliding_window": False, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "vocab_size": 152064,
}  # fmt: skip
HUB_QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": False,
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 12288,
    "max_position_embeddings": 40960, "num_attention_heads": 32, "num_hidden_layers": 36,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "rope_theta": 1000000, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "use_sliding_window": False, "vocab_size": 151936,
}  # fmt: skip
HUB_QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "attention_bias": False,
    "decoder_sparse_step": 1, "head_dim": 128, "hidden_act": "silu", "hidden_size": 2048,
    "intermediate_size": 6144, "max_position_embeddings": 40960, "mlp_only_layers": [],
    "moe_intermediate_size": 768, "norm_topk_prob": True, "num_attention_heads": 32,
    "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "use_sliding_window": False, "vocab_size": 151936,
}  # fmt: skip
HUB_LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
    "max_position_embeddings": 131072, "mlp_bias": False, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3",
    },
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}  # fmt: skip

# fields that describe the network (a YAML's dispatcher / grouped-GEMM choices are training
# choices; the dense ffn size of an all-MoE model is unused)
NETWORK_FIELDS = (
    "num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "rotary_base",
    "max_position_embeddings", "padded_vocab_size", "untie_embeddings_and_output_weights",
    "add_qkv_bias", "norm_epsilon", "qk_layernorm", "num_experts", "moe_router_topk",
    "moe_ffn_hidden_size", "norm_topk_prob", "rope_scaling_type",
)  # fmt: skip


def _yaml_model(name: str) -> ModelConfig:
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    return ModelConfig(**data[name])


def _network(model: ModelConfig) -> dict:
    fields = {f: getattr(model, f) for f in NETWORK_FIELDS}
    head_dim = model.kv_channels or model.hidden_size // model.num_attention_heads
    return fields | {"head_dim": head_dim}


@pytest.mark.parametrize(
    "yaml_name,hub",
    [
        ("qwen25_7b", HUB_QWEN25_7B),
        ("qwen3_8b", HUB_QWEN3_8B),
        ("qwen3_30b_a3b", HUB_QWEN3_30B_A3B),
    ],
)
def test_shipped_model_yaml_describes_the_hub_model(yaml_name, hub):
    assert _network(model_config_from_hf(hub).model) == _network(_yaml_model(yaml_name))


def test_llama31_rope_scaling_from_the_hub_config():
    info = model_config_from_hf(HUB_LLAMA31_8B)
    m = info.model
    assert (m.rope_scaling_type, m.rope_scaling_factor, m.high_freq_factor) == ("llama3", 8.0, 4.0)
    assert (m.original_max_position_embeddings, m.rotary_base) == (8192, 500000.0)
    assert info.dtype == "bfloat16" and info.vocab_size == 128256
    # transformers 4.43 wrote "type" instead of "rope_type"
    old = HUB_LLAMA31_8B | {"rope_scaling": {**HUB_LLAMA31_8B["rope_scaling"], "type": "llama3"}}
    del old["rope_scaling"]["rope_type"]
    assert model_config_from_hf(old).model == m


@pytest.mark.parametrize("name", sorted(tiny_hf.MODELS))
def test_transformers5_spelling_equals_hub_spelling(name):
    written = tiny_hf.hf_config(name).to_dict()  # rope_parameters, dtype, num_local_experts
    assert "rope_parameters" in written and "rope_theta" not in written
    info = model_config_from_hf(written)
    hub = hf_config_dict(info.model_type, info.model, info.vocab_size, dtype="float32")
    assert "rope_theta" in hub and "rope_parameters" not in hub
    assert model_config_from_hf(hub).model == info.model


@pytest.mark.parametrize("yaml_name,model_type", [("qwen25_32b", "qwen2"), ("qwen3_32b", "qwen3")])
def test_hub_config_written_from_a_yaml_loads_in_transformers(yaml_name, model_type):
    import transformers

    model = _yaml_model(yaml_name)
    raw = hf_config_dict(model_type, model, vocab_size=model.padded_vocab_size)
    config = transformers.AutoConfig.for_model(**raw)
    assert config.num_key_value_heads == model.num_query_groups
    assert model_config_from_hf(config.to_dict()).model == model_config_from_hf(raw).model
    assert _network(model_config_from_hf(raw).model) == _network(model)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"model_type": "gemma2"}, "model_type 'gemma2' is not known to the model registry"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn'"),
        ({"attention_bias": True}, "o_proj bias"),
        ({"mlp_only_layers": [0]}, "every layer must be MoE"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"num_experts_per_tok": None}, "missing key 'num_experts_per_tok'"),
    ],
)
def test_what_megatron_cannot_express_is_rejected_by_name(change, message):
    with pytest.raises(ValueError) as err:
        model_config_from_hf(HUB_QWEN3_30B_A3B | change, source="x/config.json")
    assert message in str(err.value) and "x/config.json" in str(err.value)


def test_registry_is_keyed_by_model_type_and_cli_names():
    assert set(ARCHITECTURES) == {"qwen2", "qwen3", "qwen3_moe", "llama"}
    assert sorted(CLI_NAMES) == ["llama3", "qwen2", "qwen3", "qwen3-moe"]
    assert architecture_for_cli("qwen3-moe").moe
    with pytest.raises(ValueError, match="choose one of"):
        architecture_for_cli("qwen25")


def test_vocab_padding_follows_divisible_by_times_tp():
    info = model_config_from_hf(
        HUB_QWEN25_7B | {"vocab_size": 151665}, make_vocab_size_divisible_by=128,
        tensor_parallel_size=8,
    )  # fmt: skip
    assert info.model.padded_vocab_size == 152576  # next multiple of 1024
    assert info.vocab_size == 151665
