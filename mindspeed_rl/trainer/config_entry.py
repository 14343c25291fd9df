"""Config loading for the entry points: the registries' checks wired into validation.

``config/`` cannot import the registries that sit above it (verifiers, model types); this module
sits at the top and passes their checks in, so ``--dry-run`` catches an unknown verifier name
exactly like the real run would.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from mindspeed_rl.config.loader import ExtraCheck, load_config
from mindspeed_rl.config.plan import make_plan
from mindspeed_rl.config.schema import RunConfig


def registry_checks() -> list[ExtraCheck]:
    from mindspeed_rl.models.config_check import model_problems
    from mindspeed_rl.platform.worker_env import env_problems
    from mindspeed_rl.rewards.config_check import verifier_problems

    return [verifier_problems, model_problems, env_problems]


def load_run_config(
    config_name: str, config_dir: Path | str | None = None, overrides: Sequence[str] = ()
) -> RunConfig:
    return load_config(config_name, config_dir, overrides, extra_checks=registry_checks())


def print_dry_run(config: RunConfig) -> None:
    print("# resolved config")
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    print("# run plan")
    print(yaml.safe_dump({"plan": make_plan(config).as_dict()}, sort_keys=False), end="")
    from mindspeed_rl.workers.memory_plan import ledger_report

    block, warnings = ledger_report(config)
    print("# memory ledger: device bytes per rank per phase, predicted (docs/memory.md)")
    print(yaml.safe_dump({"memory": block}, sort_keys=False), end="")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
