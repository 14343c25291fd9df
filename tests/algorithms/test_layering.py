"""algorithms/ and rewards/ stay pure: no Megatron, vLLM, Ray, torch_npu or torch.distributed, and
rewards/ not even torch (its worker processes start in milliseconds).

``import torch`` itself loads torch.distributed, so that one is checked in the source (no import
statement names it) and the rest in a fresh interpreter (nothing pulls them in indirectly).
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import mindspeed_rl.algorithms
import mindspeed_rl.rewards

FORBIDDEN = ("megatron", "vllm", "ray", "torch_npu", "mindspeed")
REPO = Path(__file__).resolve().parents[2]


def _modules(package) -> list[str]:
    return [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


def _offending(loaded: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_algorithms_and_rewards_import_no_framework():
    modules = _modules(mindspeed_rl.algorithms) + _modules(mindspeed_rl.rewards)
    assert len(modules) >= 10
    assert _offending(_loaded_after_import(modules), FORBIDDEN) == []


def test_no_source_file_imports_torch_distributed_or_a_framework():
    for package in (mindspeed_rl.algorithms, mindspeed_rl.rewards):
        for path in Path(package.__path__[0]).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    module = node.module or ""
                    names = [module] + [f"{module}.{alias.name}" for alias in node.names]
                else:
                    continue
                bad = _offending(set(names), (*FORBIDDEN, "torch.distributed"))
                assert not bad, f"{path.name} imports {bad}"


def test_rewards_do_not_import_torch():
    loaded = _loaded_after_import(_modules(mindspeed_rl.rewards))
    assert _offending(loaded, ("torch", "numpy", "tensordict")) == []
