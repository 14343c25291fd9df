"""Which Ray cluster a run uses: the one asked for, else a private local one.

* ``ray.init`` already called by the caller (tests, notebooks): that cluster;
* ``RAY_ADDRESS`` set (``examples/dapo/launch_common.sh`` exports it after ``ray start``): that
  cluster, e.g. ``10.0.0.1:6766``;
* otherwise a new local cluster, never ``address="auto"``: on a shared machine "auto" joins
  whatever cluster another user started, whose placement groups and shutdown are not ours. The
  local one lives in a per-user temp dir (another user's ``/tmp/ray`` may not be writable), takes
  OS-assigned ports, and is reaped with the driver (``ray_reaper``).

One INFO line says which.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import ray

logger = logging.getLogger(__name__)

ADDRESS_ENV = "RAY_ADDRESS"
_REAPER = Path(__file__).with_name("ray_reaper.py")
_reaper: subprocess.Popen | None = None


def local_temp_dir() -> str:
    """``$RAY_TMPDIR`` when set, else ``<tmp>/ray_<uid>``: short (Unix socket paths are capped at
    107 bytes) and not shared with other users."""
    if os.environ.get("RAY_TMPDIR"):
        return os.environ["RAY_TMPDIR"]
    return os.path.join(tempfile.gettempdir(), f"ray_{os.getuid()}")


def init_ray(runtime_env: dict, num_cpus: int, resources: dict | None) -> bool:
    """Join the cluster the user chose or start a local one; True if this call started it."""
    if ray.is_initialized():
        logger.info("Ray: using the cluster this process already joined")
        return False
    address = os.environ.get(ADDRESS_ENV)
    if address:
        _use_token_if_available()
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        logger.info("Ray: joined the cluster at %s=%s", ADDRESS_ENV, address)
        return False
    temp_dir = local_temp_dir()
    ray.init(
        address="local", num_cpus=num_cpus, resources=resources, runtime_env=runtime_env,
        include_dashboard=False, log_to_driver=True, _temp_dir=temp_dir,
    )  # fmt: skip
    _start_reaper()
    logger.info(
        "Ray: started a local cluster (logs in %s); set %s=<host:port> to join a running one",
        ray._private.worker._global_node.get_session_dir_path(),
        ADDRESS_ENV,
    )
    return True


def _use_token_if_available() -> None:
    """Ray (2.60 here) enables token auth for ``address="auto"`` when this user has a token
    (``~/.ray/auth_token``, which ``ray start`` then also uses), but never for an explicit address:
    joining the launch scripts' ``ray start`` cluster by address would fail authentication. Do
    what "auto" did; a token is harmless against a cluster without auth."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token auth
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def shutdown_local() -> None:
    """``ray.shutdown()`` of a cluster ``init_ray`` started; the reaper is told not to act."""
    global _reaper
    ray.shutdown()
    if _reaper is not None:
        try:
            _reaper.stdin.write(b"stop\n")
            _reaper.stdin.close()
            _reaper.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            _reaper.kill()
        _reaper = None


def _start_reaper() -> None:
    global _reaper
    if not sys.platform.startswith("linux"):
        return
    node = ray._private.worker._global_node
    pids = [
        str(info.process.pid)
        for infos in node.all_processes.values()
        for info in infos
        if info.process is not None
    ]
    # own session: a Ctrl-C of the run's process group must not reach it before the run is gone
    _reaper = subprocess.Popen(
        [sys.executable, str(_REAPER), *pids], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
