"""The one place that knows which accelerator this process runs on.

Everything else in the project asks this module for the device, the collective backend, the Ray
resource name, memory statistics and the device RNG; ``torch_npu`` is imported here (lazily) and in
``megatron_setup`` only. Order of preference: npu > cuda > cpu, overridable with the environment
variable ``MINDSPEED_RL_DEVICE`` (``npu`` | ``cuda`` | ``cpu``), e.g. to debug on CPU on a GPU host.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

logger = logging.getLogger(__name__)

DEVICE_ENV = "MINDSPEED_RL_DEVICE"
DEVICE_TYPES = ("npu", "cuda", "cpu")

_BACKENDS = {"npu": "hccl", "cuda": "nccl", "cpu": "gloo"}
# Ray resource that a worker asks for, one per device. On CPU workers ask for a custom resource so
# that they never compete with reward tasks and the driver for Ray's own CPU slots.
_RAY_RESOURCES = {"npu": "NPU", "cuda": "GPU", "cpu": "cpu_slot"}
_VISIBLE_DEVICES_ENV = {"npu": "ASCEND_RT_VISIBLE_DEVICES", "cuda": "CUDA_VISIBLE_DEVICES"}


def _npu_available() -> bool:
    if importlib.util.find_spec("torch_npu") is None:
        return False
    import torch_npu  # noqa: F401  (registers torch.npu)

    return bool(torch.npu.is_available())


@functools.lru_cache(maxsize=1)
def device_type() -> str:
    """'npu', 'cuda' or 'cpu' for this process (cached; see module docstring for the override)."""
    forced = os.environ.get(DEVICE_ENV, "").strip().lower()
    if forced:
        if forced not in DEVICE_TYPES:
            raise ValueError(f"{DEVICE_ENV}={forced!r}: expected one of {', '.join(DEVICE_TYPES)}")
        if forced == "npu" and not _npu_available():
            raise ValueError(f"{DEVICE_ENV}=npu but torch_npu is not importable or sees no NPU")
        if forced == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}=cuda but torch.cuda.is_available() is False")
        return forced
    if _npu_available():
        return "npu"
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def is_accelerator() -> bool:
    return device_type() != "cpu"


def _device_module():
    """torch.npu / torch.cuda; None on CPU."""
    kind = device_type()
    return getattr(torch, kind) if kind != "cpu" else None


def dist_backend() -> str:
    """torch.distributed backend for this platform: hccl, nccl or gloo."""
    return _BACKENDS[device_type()]


def ray_resource_name(platform: str | None = None) -> str:
    """The Ray resource one training worker reserves per device (NPU, GPU, or cpu_slot on CPU);
    ``platform``: the cluster's (``ray_resources.cluster_platform``), default this process's."""
    return _RAY_RESOURCES[platform or device_type()]


def visible_devices_env(platform: str | None = None) -> str | None:
    """The environment variable that narrows visible devices (None on CPU)."""
    return _VISIBLE_DEVICES_ENV.get(platform or device_type())


def device_count() -> int:
    """Devices this process can use; on CPU, 1 (one process = one logical device)."""
    mod = _device_module()
    return mod.device_count() if mod is not None else 1


def current_device(local_rank: int | None = None) -> torch.device:
    """The torch.device for this rank; binds the process to ``local_rank`` on accelerators."""
    kind = device_type()
    if kind == "cpu":
        return torch.device("cpu")
    mod = _device_module()
    if local_rank is not None:
        mod.set_device(local_rank)
    return torch.device(kind, mod.current_device())


def synchronize() -> None:
    mod = _device_module()
    if mod is not None:
        mod.synchronize()


def empty_cache() -> None:
    mod = _device_module()
    if mod is not None:
        mod.empty_cache()


def memory_stats() -> dict[str, float]:
    """Allocated / reserved / peak device memory in GiB (all zero on CPU: see host memory)."""
    mod = _device_module()
    if mod is None:
        return {"allocated_gb": 0.0, "reserved_gb": 0.0, "max_allocated_gb": 0.0}
    gib = float(1 << 30)
    return {
        "allocated_gb": mod.memory_allocated() / gib,
        "reserved_gb": mod.memory_reserved() / gib,
        "max_allocated_gb": mod.max_memory_allocated() / gib,
    }


def get_rng_state() -> torch.Tensor | None:
    """The device generator's state (None on CPU, where torch.get_rng_state covers it)."""
    mod = _device_module()
    return mod.get_rng_state() if mod is not None else None


def set_rng_state(state: torch.Tensor | None) -> None:
    mod = _device_module()
    if mod is None:
        if state is not None:
            raise ValueError("a device RNG state was given but this process runs on CPU")
        return
    mod.set_rng_state(state)


def manual_seed(seed: int) -> None:
    """Seed the host generator and, on accelerators, the device generator of every device."""
    torch.manual_seed(seed)
    mod = _device_module()
    if mod is not None:
        mod.manual_seed_all(seed)
