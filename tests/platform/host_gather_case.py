"""Two gloo ranks: the shared-memory gather returns what torch.distributed's all-gather does."""

from __future__ import annotations

import os

import torch

from mindspeed_rl.platform import host_gather
from mindspeed_rl.platform.host_gather import _SHM_DIR, host_gather_for


def run(rank: int, world_size: int) -> dict:
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        gather = host_gather_for(torch.distributed.group.WORLD)
        result = {"available": gather is not None, "equal": [], "reused_ok": True}
        # growing sizes (new buffers), a smaller one (reused buffer), two dtypes
        for step, (numel, dtype) in enumerate(
            [(5, torch.float32), (1000, torch.float32), (7, torch.float32), (9, torch.bfloat16)]
        ):
            parts = [
                torch.arange(numel, dtype=dtype) + 100 * rank + step,
                torch.full((2, 3), float(rank), dtype=dtype),
            ]
            expected = [torch.empty(numel + 6, dtype=dtype) for _ in range(world_size)]
            flat = torch.cat([p.reshape(-1) for p in parts])
            torch.distributed.all_gather(expected, flat)
            got = gather.all_gather(parts)
            result["equal"].append(all(torch.equal(g, e) for g, e in zip(got, expected)))
            # the next call may overwrite these views: copy what is checked later
            if step == 1:
                kept = [g.clone() for g in got]
        result["reused_ok"] = all(
            torch.equal(k[:5], torch.arange(5, dtype=torch.float32) + 100 * r + 1)
            for r, k in enumerate(kept)
        )
        # rank 1's /dev/shm is full: both ranks take gloo for a buffer that would have to grow
        if rank == 1:
            host_gather._reserve = lambda fd, nbytes: False
        parts = [torch.arange(5000.0) + rank]
        got = gather.all_gather(parts)
        result["full_shm_equal"] = all(
            torch.equal(g, torch.arange(5000.0) + r) for r, g in enumerate(got)
        )
        result["full_shm_buffer_kept"] = gather._views[torch.float32][0].numel() == 1006
        torch.distributed.barrier()
        result["left_in_shm"] = [n for n in os.listdir(_SHM_DIR) if "mindspeed_rl-gather" in n]
        return result
    finally:
        torch.distributed.destroy_process_group()
