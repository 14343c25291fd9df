"""torch.distributed and Megatron parallel-state setup, and its teardown.

Rank and world size come from explicit arguments or the environment (torchrun and our Ray workers
set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Teardown destroys
the parallel state and the process group so that a test can initialise twice in one process.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
import sys

import numpy as np
import torch

from mindspeed_rl.platform import device
from mindspeed_rl.platform.megatron_setup import prepare_megatron


@dataclasses.dataclass(frozen=True)
class ParallelLayout:
    """Megatron's model-parallel layout; DP is what is left of the world size."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    expert_model_parallel_size: int = 1
    context_parallel_size: int = 1
    # MindSpeed's expert layout: whole experts over TP x EP ranks (models/placement.py)
    moe_tp_extend_ep: bool = False

    def expert_sizes(self) -> tuple[int, int]:
        """megatron-core's (expert_tensor_parallel_size, expert_model_parallel_size)."""
        tp, ep = self.tensor_model_parallel_size, self.expert_model_parallel_size
        return (1, tp * ep) if self.moe_tp_extend_ep else (tp, ep)

    # layers per pipeline stage when uneven (num_layer_list); None: num_layers / PP each
    pipeline_layers: tuple[int, ...] | None = None

    def data_parallel_size(self, world_size: int) -> int:
        model_parallel = (
            self.tensor_model_parallel_size
            * self.pipeline_model_parallel_size
            * self.context_parallel_size
        )
        if world_size % model_parallel:
            raise ValueError(
                f"world size {world_size} is not divisible by TP x PP x CP = "
                f"{self.tensor_model_parallel_size} x {self.pipeline_model_parallel_size} x "
                f"{self.context_parallel_size}"
            )
        return world_size // model_parallel


def _env_int(name: str, default: int | None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"{name} is not set and was not passed explicitly")
        return default
    return int(value)


def init_distributed(
    layout: ParallelLayout = ParallelLayout(),
    *,
    rank: int | None = None,
    world_size: int | None = None,
    local_rank: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    seed: int = 1234,
    timeout_minutes: int = 30,
    init_method: str | None = None,
) -> None:
    """Initialise torch.distributed, Megatron's parallel state and all seeds for this rank.

    Seeds follow Megatron's convention: python / numpy / torch get ``seed + 100 * pp_rank`` and
    ``model_parallel_cuda_manual_seed`` sets the tensor-parallel RNG tracker. ``init_method``
    (e.g. ``file:///tmp/rendezvous``) replaces the MASTER_ADDR / MASTER_PORT rendezvous.
    """
    prepare_megatron()
    from megatron.core import parallel_state, tensor_parallel

    rank = _env_int("RANK", 0) if rank is None else rank
    world_size = _env_int("WORLD_SIZE", 1) if world_size is None else world_size
    local_rank = _env_int("LOCAL_RANK", 0) if local_rank is None else local_rank
    layout.data_parallel_size(world_size)  # validates divisibility with a clear message
    os.environ["MASTER_ADDR"] = master_addr or os.environ.get("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(master_port or os.environ.get("MASTER_PORT", "29500"))

    torch_device = device.current_device(local_rank)
    if not torch.distributed.is_initialized():
        kwargs = {}
        if torch_device.type != "cpu":
            kwargs["device_id"] = torch_device
        torch.distributed.init_process_group(
            backend=device.dist_backend(),
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            **kwargs,
        )
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tensor_model_parallel_size,
        pipeline_model_parallel_size=layout.pipeline_model_parallel_size,
        expert_tensor_parallel_size=layout.expert_sizes()[0],
        expert_model_parallel_size=layout.expert_sizes()[1],
        context_parallel_size=layout.context_parallel_size,
    )
    pp_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(pp_seed)
    np.random.seed(pp_seed)
    device.manual_seed(pp_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(pp_seed)


def destroy_distributed() -> None:
    """Undo :func:`init_distributed` (safe to call when nothing was initialised)."""
    if "megatron.core" in sys.modules:
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        # megatron-core 0.12.x leaves most *_GLOBAL_RANKS behind; a second initialisation with
        # another layout would then believe this rank is in its old embedding groups.
        for name in vars(parallel_state):
            if name.startswith("_") and name.endswith("_GLOBAL_RANKS"):
                setattr(parallel_state, name, None)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
