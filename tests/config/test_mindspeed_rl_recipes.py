"""The Ascend suite's own recipes, unchanged, through ``cli/train_dapo.py --dry-run``.

The YAMLs are MindSpeed-RL's at commit 05a90d7 (2026-04-22), copied byte for byte with their
``configs/model/*.yaml`` into tests/fixtures/mindspeed_rl_recipes/ (README there). They are
Atlas A2 / A3 recipes, so the platform rules are those of ``--platform npu``. Every key they hold
is also listed in docs/coming_from_mindspeed_rl.md with what it does here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "tests" / "fixtures" / "mindspeed_rl_recipes"
DAPO = ["dapo_qwen25_32b_A3", "dapo_qwen25_32b_A2_20k", "dapo_qwen25_32b_A3_32k",
        "dapo_qwen3_32b_A3", "dapo_qwen3_30b_a3b_A3"]  # fmt: skip
GRPO = ["grpo_qwen25_7b_A3", "grpo_qwen3_8b_A3", "grpo_qwen25_32b_A3", "grpo_qwen25_32b_A2"]
MULTI_TURN = "dapo_qwen25_7b_A2_multi_turn"


def _dry_run(*args: str) -> int:
    sys.path.insert(0, str(REPO / "cli"))
    try:
        import train_dapo
    finally:
        sys.path.pop(0)
    return train_dapo.main(["--dry-run", "--config-path", str(RECIPES), *args])


@pytest.mark.parametrize("name", DAPO + GRPO)
def test_the_suites_recipe_dry_runs_unchanged(name, capsys):
    assert _dry_run("--config-name", name, "--platform", "npu") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    resolved, plan = out.split("# run plan\n")[0], out.split("# run plan\n")[1].split("# memory")[0]
    plan = yaml.safe_load(plan)["plan"]
    recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    assert plan["devices"] == recipe["rl_config"]["actor_resource"]["num_npus"]
    assert plan["tensor_parallel"] == recipe["actor_config"]["tensor_model_parallel_size"]
    assert plan["platform_checked"] == "npu"
    stage = yaml.safe_load(resolved)["actor"]["stage"]
    assert stage == recipe["megatron_training"]["stage"]
    # GRPO: the KL loss against the reference, at the recipe's coefficient
    assert plan["kl_loss"] == (stage == "ray_grpo")
    if stage == "ray_grpo":
        assert (
            f"coefficient {recipe['rl_config']['init_kl_coef']} (fixed)"
            in (plan["reference_model"])
        )


def test_the_multi_turn_recipe_is_refused_with_one_line():
    run = subprocess.run(
        [sys.executable, "cli/train_dapo.py", "--config-path", str(RECIPES), "--config-name",
         MULTI_TURN, "--dry-run", "--platform", "npu"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert "rl_config.multi_turn_enable: multi-turn rollouts with tool calls are not supported" in (
        line
    )
    assert "docs/coming_from_mindspeed_rl.md" in line


def _keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(f"{prefix}{key}")
        if isinstance(value, dict) and key in ("sampling_config", "actor_resource"):
            keys |= _keys(value, f"{prefix}{key}.")
    return keys


def test_every_key_of_the_recipes_is_documented():
    """docs/coming_from_mindspeed_rl.md has a row for every key of the copied recipes and model
    files (`section` + `key` in backticks), so a user finds what each one does here."""
    doc = (REPO / "docs" / "coming_from_mindspeed_rl.md").read_text()
    rows: dict[str, set[str]] = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1].startswith("`"):
            section = cells[1].strip("`")
            rows.setdefault(section, set()).update(re.findall(r"`([\w.]+)`", cells[2]))
    missing = []
    for path in sorted(RECIPES.glob("*.yaml")) + sorted((RECIPES / "model").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        sections = {"model": next(iter(data.values()))} if path.parent.name == "model" else data
        for section, body in sections.items():
            if not isinstance(body, dict):
                continue
            for key in _keys(body):
                if key not in rows.get(section, set()):
                    missing.append(f"{path.name}: {section}.{key}")
    assert not missing, missing
