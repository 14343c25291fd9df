"""Spawn N CPU processes over gloo and collect what rank 0 returns.

A spawned case costs a few seconds on a 2-core machine, so tests run several scenarios inside one
spawn instead of one spawn per scenario.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendezvous(name: str) -> str:
    """A file rendezvous for one (re-)initialisation inside a spawned test: unlike a TCP port it
    cannot collide with sockets of an earlier process group."""
    return f"file://{os.path.join(os.environ['TEST_RENDEZVOUS_DIR'], name)}"


def _entry(local_rank: int, fn: Callable, world_size: int, port: int, out_dir: str, args: tuple):
    os.environ.update(
        TEST_RENDEZVOUS_DIR=out_dir,
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    result = fn(local_rank, world_size, *args)
    torch.save(result, os.path.join(out_dir, f"rank{local_rank}.pt"))


def run_distributed(fn: Callable, world_size: int, *args: Any) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` spawned processes; return each
    rank's return value (which must be picklable by torch.save)."""
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(
            _entry,
            args=(fn, world_size, free_port(), out_dir, args),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        return [
            torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True)
            for r in range(world_size)
        ]
