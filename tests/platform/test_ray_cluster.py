"""The run's own Ray cluster: joined through RAY_ADDRESS, and gone with a SIGKILLed driver."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mindspeed_rl.platform import ray_reaper

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CASE = str(ROOT / "tests" / "platform" / "ray_cluster_case.py")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_join_by_ray_address_and_no_process_outlives_a_killed_driver():
    driver = subprocess.Popen(
        [sys.executable, CASE, "local"], env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        started = driver.stdout.readline()
        address = driver.stdout.readline().strip().removeprefix("address=")
        assert started.startswith("started=True"), driver.stderr.read()
        node = started.split("node=")[1].strip()

        joined = subprocess.run(
            [sys.executable, CASE, "join"], env=_env(RAY_ADDRESS=address),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert joined.returncode == 0, joined.stderr[-2000:]
        assert joined.stdout.strip() == f"started=False node={node}"
        assert f"Ray: joined the cluster at RAY_ADDRESS={address}" in joined.stderr

        recorded = ray_reaper.snapshot([driver.pid])
        titles = {Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0] for p in recorded}
        assert {b"ray::DashboardAgent", b"ray::RuntimeEnvAgent"} <= titles
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    # Ray's own fate sharing leaves the two agents ~60 s; the reaper takes them at once
    deadline = time.time() + 10
    alive = recorded
    while alive and time.time() < deadline:
        time.sleep(0.5)
        alive = {p: s for p, s in recorded.items() if ray_reaper._start_time(p) == s}
    assert not alive, [Path(f"/proc/{p}/cmdline").read_bytes()[:60] for p in alive]
    session = re.search(r"logs in (\S+)\)", driver.stderr.read())
    assert session and f"ray_{os.getuid()}" in session.group(1)
