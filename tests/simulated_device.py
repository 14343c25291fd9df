"""A simulated device for CPU tests: host <-> device moves really copy.

On a real accelerator ``t.to(host)`` / ``t.cpu()`` / ``t.to(device)`` of a tensor on the other
side allocates new storage; on a CPU-only host they return ``t`` itself, so code that moves a
buffer by rebinding ``.data`` (and orphans every view of the old storage) passes CPU tests while
training stops on a device. Inside :func:`simulated_device`, every move that names a device returns
a copy in new storage, as a cross-device move would; dtype-only conversions are untouched.

Residency is measured by the code under test itself (``workers/residency.py``'s ledger sums the
storages of each group, which offload empties in place), so on CPU a released group really holds
zero bytes and a reloaded one its full size.
"""

from __future__ import annotations

import contextlib

import torch

_DEVICE_TYPES = (str, torch.device)


def _names_device(args, kwargs) -> bool:
    if "device" in kwargs:
        return True
    return bool(args) and (isinstance(args[0], _DEVICE_TYPES) or torch.is_tensor(args[0]))


@contextlib.contextmanager
def simulated_device():
    original_to, original_cpu = torch.Tensor.to, torch.Tensor.cpu
    moves = {"copied": 0}

    def to(self, *args, **kwargs):
        out = original_to(self, *args, **kwargs)
        if out is self and _names_device(args, kwargs):
            moves["copied"] += 1
            kwargs.pop("copy", None)
            return original_to(self, *args, copy=True, **kwargs)
        return out

    def cpu(self, *args, **kwargs):
        out = original_cpu(self, *args, **kwargs)
        if out is self:
            moves["copied"] += 1
            return self.clone()
        return out

    torch.Tensor.to, torch.Tensor.cpu = to, cpu
    try:
        yield moves
    finally:
        torch.Tensor.to, torch.Tensor.cpu = original_to, original_cpu
