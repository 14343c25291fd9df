"""Our config -> vLLM arguments, checked against the pinned vLLM's real field names."""

import importlib.util
import json
from pathlib import Path

import pytest

from mindspeed_rl.config.schema import GenerateConfig
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.rollout.vllm_args import PINNED_VLLM, engine_kwargs, sampling_kwargs

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / f"vllm_{PINNED_VLLM}.json").read_text())


def test_fixture_is_for_the_pinned_version():
    assert FIXTURE["vllm"] == PINNED_VLLM
    constraints = (Path(__file__).parents[2] / "constraints" / "cuda.txt").read_text()
    assert f"vllm=={PINNED_VLLM}" in constraints


def test_engine_kwargs_are_fields_of_engine_args():
    gen = GenerateConfig(infer_tensor_parallel_size=2, infer_expert_parallel_size=4)
    kwargs = engine_kwargs(gen, "/m", None, seed=3)
    assert set(kwargs) <= set(FIXTURE["EngineArgs"]), set(kwargs) - set(FIXTURE["EngineArgs"])
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["tokenizer"] == "/m"
    assert kwargs["enable_expert_parallel"] and kwargs["data_parallel_size"] == 2
    assert kwargs["distributed_executor_backend"] == "external_launcher"
    assert kwargs["enable_sleep_mode"] and kwargs["load_format"] == "dummy"
    assert kwargs["logprobs_mode"] == "processed_logprobs"


def test_every_generate_config_key_is_translated_or_owned_by_the_trainer():
    kwargs = engine_kwargs(GenerateConfig(), "/m", "/t", seed=0)
    translated = {
        "trust_remote_code", "dtype", "gpu_memory_utilization", "max_num_seqs", "max_model_len",
        "max_num_batched_tokens", "enforce_eager", "enable_prefix_caching",
    }  # fmt: skip
    assert translated <= set(kwargs)
    by_name = {
        "infer_tensor_parallel_size": "tensor_parallel_size",
        "infer_pipeline_parallel_size": "pipeline_parallel_size",
    }
    owned_elsewhere = {
        "engine", "offload_train_optimizer", "offload_train_grad", "offload_train_param",
        "infer_expert_parallel_size", "sampling_config",
        "device_memory_gb",  # the --dry-run memory ledger (workers/memory_plan.py)
    }  # fmt: skip
    assert set(GenerateConfig.model_fields) == translated | set(by_name) | owned_elsewhere


def test_expert_parallel_must_be_a_multiple_of_tensor_parallel():
    with pytest.raises(ValueError, match="multiple of infer_tensor_parallel_size"):
        engine_kwargs(
            GenerateConfig(infer_tensor_parallel_size=2, infer_expert_parallel_size=3),
            "/m",
            None,
            0,
        )


def test_sampling_kwargs_are_fields_of_sampling_params():
    params = SamplingParams(n=8, max_tokens=64, temperature=0.7, top_p=0.9, top_k=-1, seed=5)
    kwargs = sampling_kwargs(params, [2, 3])
    assert set(kwargs) <= set(FIXTURE["SamplingParams"])
    assert kwargs["logprobs"] == 0  # the sampled token only
    assert kwargs["stop_token_ids"] == [2, 3] and not kwargs["ignore_eos"]
    assert (kwargs["n"], kwargs["max_tokens"], kwargs["temperature"]) == (8, 64, 0.7)


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed (CPU host): the engine runs on CUDA / Ascend hosts only",
)
def test_vllm_engine_accepts_the_translated_arguments():
    import vllm

    vllm.SamplingParams(**sampling_kwargs(SamplingParams(), [0]))
    vllm.EngineArgs(**engine_kwargs(GenerateConfig(), "/m", None, 0))


def test_engine_choice_and_sampling_params_from_config():
    from mindspeed_rl.config.schema import SamplingConfig
    from mindspeed_rl.rollout.factory import engine_kind, sampling_params

    assert engine_kind(GenerateConfig(), "cpu") == "hf"
    assert engine_kind(GenerateConfig(), "npu") == "vllm"
    assert engine_kind(GenerateConfig(engine="hf"), "cuda") == "hf"
    with pytest.raises(ValueError, match="vllm needs an NPU or GPU"):
        engine_kind(GenerateConfig(engine="vllm"), "cpu")
    params = sampling_params(SamplingConfig(max_tokens=32, temperature=0.7, top_k=5), n=4, seed=9)
    assert (params.n, params.max_tokens, params.temperature, params.top_k, params.seed) == (
        4, 32, 0.7, 5, 9,
    )  # fmt: skip
