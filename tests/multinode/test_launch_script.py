"""The launch scripts' decisions without starting anything (``LAUNCH_DRY_RUN=1``), per device kind.

Ray 2.60 refuses ``--resources='{"GPU": N}'`` (``ray/_private/parameter.py``: GPU must be given
with ``--num-gpus``), so on NVIDIA the node declares its GPUs with ``--num-gpus``; NPUs are the
custom resource ``NPU`` and CPU workers ``cpu_slot`` (the real CPU path runs in
``test_two_nodes.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "examples" / "dapo").glob("dapo_trainer_*.sh"))


def _dry_run(tmp_path, script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SOCKET_", "NNODES"))}
    full.update({"PYTHON": sys.executable, "JEMALLOC_OPTIONAL": "1", "LAUNCH_DRY_RUN": "1",
                 "LOG_DIR": str(tmp_path / "logs"), **env})  # fmt: skip
    return subprocess.run(["bash", str(script), *args], env=full, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def _ray_start(out: str) -> str:
    return next(line for line in out.splitlines() if "ray.scripts.scripts start" in line)


@pytest.mark.parametrize(
    ("kind", "flag"),
    [("cuda", "--num-gpus=8"), ("npu", '--resources={"NPU": 8}'),
     ("cpu", '--resources={"cpu_slot": 8}')],
)  # fmt: skip
def test_each_device_kind_is_declared_to_ray_as_ray_expects(tmp_path, kind, flag):
    script = REPO / "examples/dapo/dapo_trainer_qwen25_32b.sh"
    head = _dry_run(tmp_path, script, "--max-restarts", "1", LAUNCH_DEVICE=kind, NNODES="1",
                    NPUS_PER_NODE="8")  # fmt: skip
    assert head.returncode == 0, head.stderr
    line = _ray_start(head.stdout)
    assert "--head" in line and flag in line and "--block" in line
    assert '"GPU"' not in line
    train = next(line for line in head.stdout.splitlines() if "cli/train_dapo.py" in line)
    assert train.endswith("--config-name dapo_qwen25_32b_A3 --max-restarts 1")
    worker = _dry_run(tmp_path, script, LAUNCH_DEVICE=kind, NNODES="2", NPUS_PER_NODE="8",
                      MASTER_ADDR="192.0.2.250")  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    line = _ray_start(worker.stdout)
    assert "--address=192.0.2.250:6766" in line and flag in line and "--head" not in line


def test_the_interface_defaults_to_the_default_route(tmp_path):
    route = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True,
                           text=True).stdout.split()  # fmt: skip
    if "dev" not in route:
        pytest.skip("this host has no IPv4 default route")
    ifname = route[route.index("dev") + 1]
    out = _dry_run(tmp_path, SCRIPTS[0], LAUNCH_DEVICE="cpu", NNODES="1", NPUS_PER_NODE="1")
    assert out.returncode == 0, out.stderr
    assert f"SOCKET_IFNAME={ifname} (the default route's interface)" in out.stdout
    assert f"({ifname}), role head" in out.stdout
    logs = list((tmp_path / "logs").glob("*_head_*.log"))
    assert len(logs) == 1 and "role head" in logs[0].read_text()


@pytest.mark.parametrize(
    ("env", "message"),
    [({"SOCKET_IFNAME": "nosuchif0"}, "no IPv4 address on SOCKET_IFNAME=nosuchif0"),
     ({"NNODES": "2"}, "set MASTER_ADDR to the first node's IP"),
     ({"LAUNCH_DEVICE": "tpu"}, "LAUNCH_DEVICE=tpu: expected npu, cuda or cpu"),
     ({"RAY_AUTH_MODE": "mtls"}, "RAY_AUTH_MODE=mtls: expected token (the default) or disabled")],
)  # fmt: skip
def test_bad_settings_fail_with_one_line_naming_them(tmp_path, env, message):
    full = {"NNODES": "1", "NPUS_PER_NODE": "1", "LAUNCH_DEVICE": "cpu", **env}
    out = _dry_run(tmp_path, SCRIPTS[0], **full)
    assert out.returncode == 2
    assert message in out.stderr


def test_every_recipe_has_a_launch_script(tmp_path):
    for yaml in ("dapo_qwen25_32b_A2_20k", "dapo_qwen25_32b_A3_32k"):
        script = REPO / "examples" / "dapo" / f"dapo_trainer_{yaml.replace('dapo_', '')}.sh"
        out = _dry_run(tmp_path, script, LAUNCH_DEVICE="npu", NNODES="1")
        assert out.returncode == 0, out.stderr
        assert f"--config-name {yaml}" in out.stdout


def test_a_bad_config_stops_the_head_before_ray_starts(tmp_path):
    """Without LAUNCH_DRY_RUN: the config is validated before `ray start` (nothing started)."""
    out = _dry_run(tmp_path, SCRIPTS[0], "no_such_recipe", LAUNCH_DRY_RUN="", LAUNCH_DEVICE="cpu",
                   NNODES="1", NPUS_PER_NODE="1")  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no_such_recipe" in out.stderr and "nothing was started" in out.stderr
    assert "starting Ray's head" not in out.stdout
