"""The rules that depend on the platform live once (config/platform_rules.py): ``--dry-run``
applies them for this host or ``--platform``, and the workers raise the same text at set-up."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from mindspeed_rl.config.platform_rules import PlatformFacts, platform_problems
from mindspeed_rl.config.schema import GenerateConfig
from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.rollout.vllm_args import engine_kwargs
from mindspeed_rl.trainer.config_entry import load_run_config, platform_facts

REPO = Path(__file__).resolve().parents[2]
CP_RECIPE = "dapo_qwen25_32b_A2_20k"  # CP 2, packed, rollout TP 4
MOE = "dapo_qwen3_30b_a3b_A3"  # rollout TP 1, EP 8


def _main(*args: str) -> int:
    sys.path.insert(0, str(REPO / "cli"))
    try:
        import train_dapo
    finally:
        sys.path.pop(0)
    return train_dapo.main(list(args))


def _keys(name: str, platform: str, *overrides: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_run_config(name, overrides=list(overrides), platform=platform)
    return {p.key: p.message for p in info.value.problems}


def test_the_cpu_rules_refuse_what_the_cpu_workers_would():
    problems = _keys(CP_RECIPE, "cpu")
    assert set(problems) == {"actor_config.context_parallel_size",
                             "generate_config.infer_tensor_parallel_size"}  # fmt: skip
    assert problems["actor_config.context_parallel_size"].startswith(
        "2: context parallelism runs in Transformer Engine's attention"
    )
    assert (
        "4: must be 1 with the hf engine (each rank"
        in (problems["generate_config.infer_tensor_parallel_size"])
    )
    load_run_config(CP_RECIPE, platform="npu")
    load_run_config(CP_RECIPE, platform="cuda")  # TE is the CUDA hosts' attention


def test_mindspeed_context_parallelism_needs_packing():
    """Padded rows under CP need packing only where the host builds the dense mask: MindSpeed
    without flash attention (with it, MindSpeed builds its own causal mask: layer_specs)."""
    padded = ("rl_config.use_remove_padding=false", "rl_config.use_dynamic_bsz=false")
    problems = _keys(CP_RECIPE, "npu", *padded, "megatron_training.use_flash_attn=false")
    assert (
        "needs rl_config.use_remove_padding: true" in problems["actor_config.context_parallel_size"]
    )
    flash = _keys(CP_RECIPE, "npu", *padded, "megatron_training.use_flash_attn=true")
    assert "actor_config.context_parallel_size" not in flash


def test_vllm_on_cpu_rules(tmp_path):
    """vLLM on CPU: EP refused (its MoE kernel ignores the expert map), the KV cache in bytes."""
    config = load_run_config(MOE, platform="npu")
    facts = dataclasses.replace(platform_facts(config, "npu"), device_type="cpu")
    problems = {p.key: p.message for p in platform_problems(config, facts, str)}
    assert problems["generate_config.infer_expert_parallel_size"].startswith("8 on CPU")
    assert problems["generate_config.kv_cache_memory_bytes"].startswith("must be set")


@pytest.mark.parametrize(
    ("tp", "ep", "device", "dp_ok"),
    [(2, 3, "npu", True), (1, 8, "npu", False), (2, 2, "cpu", True)],
)
def test_the_worker_raises_the_text_dry_run_reports(tp, ep, device, dp_ok):
    gen = GenerateConfig(infer_tensor_parallel_size=tp, infer_expert_parallel_size=ep,
                         kv_cache_memory_bytes=1 << 26)  # fmt: skip
    with pytest.raises(ValueError) as worker:
        engine_kwargs(gen, "m", None, 1, device_type=device, sleep_mode=False,
                      external_launcher_dp=dp_ok)  # fmt: skip
    config = load_run_config(MOE, platform="npu")
    config = config.model_copy(update={"generate_config": gen})
    facts = PlatformFacts(device, "vllm", "mindspeed", True, True, dp_ok)
    (problem,) = platform_problems(config, facts, str)
    key = "generate_config.infer_expert_parallel_size"
    assert str(worker.value) == f"{key} = {problem.message.removesuffix(f' [platform: {device}]')}"


def test_dry_run_on_a_cpu_host_says_how_to_check_for_npu(capsys):
    assert _main("--config-name", CP_RECIPE, "--dry-run") == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(
        "checked for this CPU host; --platform npu (or cuda) checks the config for the "
        "accelerator it is meant for"
    )
    assert _main("--config-name", CP_RECIPE, "--platform", "npu") == 2  # a run uses the host's
    assert "--platform applies to --dry-run only" in capsys.readouterr().err


def test_the_installed_vllm_decides_wide_ep_only_on_its_own_platform():
    config = load_run_config(MOE, platform="npu")
    assert platform_facts(config, "npu").vllm_external_launcher_dp is None  # not this host's
    assert platform_facts(config, "cpu").engine == "hf"
