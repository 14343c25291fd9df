"""Choose and build the rollout engine for this platform from generate_config."""

from __future__ import annotations

from mindspeed_rl.config.schema import GenerateConfig, SamplingConfig
from mindspeed_rl.rollout.sampling import SamplingParams


def engine_kind(gen: GenerateConfig, device_type: str) -> str:
    """'vllm' or 'hf': ``auto`` means vLLM / vllm-ascend on accelerators, transformers on CPU."""
    if gen.engine != "auto":
        if gen.engine == "vllm" and device_type == "cpu":
            raise ValueError(
                "generate_config.engine: vllm needs an NPU or GPU; use hf or auto on CPU"
            )
        return gen.engine
    return "hf" if device_type == "cpu" else "vllm"


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
