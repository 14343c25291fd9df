"""Translation from our config to vLLM's engine and sampling arguments (vLLM and vllm-ascend).

Plain functions over our typed config: CPU tests cover them without vLLM installed, against a
fixture of the field names of ``vllm.EngineArgs`` and ``vllm.SamplingParams`` for the pinned vLLM
(``tests/rollout/fixtures/``, produced from the real package by
``tests/rollout/fixtures/dump_vllm_fields.py``). When vLLM's API moves, that test fails here first.
"""

from __future__ import annotations

from typing import Any

from mindspeed_rl.config.schema import GenerateConfig
from mindspeed_rl.rollout.sampling import SamplingParams

PINNED_VLLM = "0.10.2"


def engine_kwargs(
    gen: GenerateConfig, model_path: str, tokenizer_path: str | None, seed: int
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM(...)`` / ``EngineArgs`` for the colocated rollout engine.

    SPMD colocation: every training rank hosts one vLLM worker (``external_launcher``) inside the
    process group that training already initialised; the engine starts with dummy weights and
    receives the actor's weights by sync; sleep mode hands device memory back to training.
    """
    if gen.infer_expert_parallel_size > 1 and (
        gen.infer_expert_parallel_size % gen.infer_tensor_parallel_size
    ):
        raise ValueError(
            f"generate_config.infer_expert_parallel_size = {gen.infer_expert_parallel_size} must "
            f"be a multiple of infer_tensor_parallel_size = {gen.infer_tensor_parallel_size}: "
            "vLLM forms expert-parallel groups from TP x DP ranks"
        )
    kwargs: dict[str, Any] = {
        "model": model_path,
        "tokenizer": tokenizer_path or model_path,
        "trust_remote_code": gen.trust_remote_code,
        "dtype": gen.dtype,
        "tensor_parallel_size": gen.infer_tensor_parallel_size,
        "pipeline_parallel_size": gen.infer_pipeline_parallel_size,
        "gpu_memory_utilization": gen.gpu_memory_utilization,
        "max_num_seqs": gen.max_num_seqs,
        "max_model_len": gen.max_model_len,
        "max_num_batched_tokens": gen.max_num_batched_tokens,
        "enforce_eager": gen.enforce_eager,
        "enable_prefix_caching": gen.enable_prefix_caching,
        "enable_chunked_prefill": gen.max_num_batched_tokens < gen.max_model_len,
        "distributed_executor_backend": "external_launcher",
        "enable_sleep_mode": True,
        "load_format": "dummy",
        "seed": seed,
        "disable_log_stats": True,
        # the sampled token's log-prob of logits / temperature (docs/architecture.md)
        "logprobs_mode": "processed_logprobs",
    }
    if gen.infer_expert_parallel_size > 1:
        kwargs["enable_expert_parallel"] = True
        kwargs["data_parallel_size"] = (
            gen.infer_expert_parallel_size // gen.infer_tensor_parallel_size
        )
    return kwargs


def sampling_kwargs(params: SamplingParams, eos_token_ids: list[int]) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams``: ``logprobs=0`` returns exactly the sampled
    token's log-prob; EOS ends a response and is kept in it."""
    return {
        "n": params.n,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,
        "min_p": params.min_p,
        "seed": params.seed,
        "logprobs": 0,
        "stop_token_ids": list(eos_token_ids),
        "ignore_eos": False,
        "detokenize": False,
        "skip_special_tokens": False,
    }
