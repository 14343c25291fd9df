"""Release device storages and restore them in place, keeping every view of them valid.

Megatron's training state is mostly *views*: a DDP bucket's ``param_data``, each parameter's
``.data``, the distributed optimizer's shard of a parameter and every ``main_grad`` point into a
few large buffers. Moving a buffer by rebinding ``.data`` to a new tensor (``t.data = t.to(host)``)
leaves those views on the old storage, so the optimizer updates memory nobody reads. Here the
storage object itself is emptied (``untyped_storage().resize_(0)``) and later re-grown and refilled:
every tensor that views it sees the restored bytes, and the device bytes really go back to the
allocator while it is empty.

Host copies live in buffers allocated once per storage (pinned on accelerators, so the copies are
DMA transfers) and are reused on every cycle, so a long run does not allocate host memory per step.
A storage may be released without a copy (``keep=False``) when its contents are not needed again
(gradients between updates, rollout weights that the next sync overwrites).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def storage_key(storage: torch.UntypedStorage) -> int:
    """Identity of a storage object (stable across ``resize_``, unlike ``data_ptr``)."""
    return storage._cdata


def _byte_view(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def unique_storages(tensors: Iterable[torch.Tensor]) -> list[torch.UntypedStorage]:
    """The distinct storages behind ``tensors`` (views of one buffer count once), in order."""
    seen: dict[int, torch.UntypedStorage] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen.setdefault(storage_key(storage), storage)
    return list(seen.values())


class StorageStash:
    """Host copies of released device storages; see the module docstring."""

    def __init__(self, pin_memory: bool) -> None:
        self.pin_memory = pin_memory
        self._host: dict[int, torch.Tensor] = {}  # storage key -> host bytes (allocated once)
        self._sizes: dict[int, int] = {}  # storage key -> bytes to restore
        self._kept: set[int] = set()  # released storages whose bytes are in _host

    def _host_buffer(self, key: int, nbytes: int) -> torch.Tensor:
        buffer = self._host.get(key)
        if buffer is None or buffer.numel() != nbytes:
            buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin_memory)
            self._host[key] = buffer
        return buffer

    def release(self, storages: Iterable[torch.UntypedStorage], keep: bool = True) -> int:
        """Copy ``storages`` to the host (``keep``) and empty them; returns the bytes freed."""
        from mindspeed_rl.platform.device import synchronize

        todo = [s for s in storages if s.nbytes() > 0]
        for storage in todo:
            key = storage_key(storage)
            self._sizes[key] = storage.nbytes()
            if keep:
                host = self._host_buffer(key, storage.nbytes())
                host.copy_(_byte_view(storage), non_blocking=self.pin_memory)
                self._kept.add(key)
            else:
                self._kept.discard(key)
        synchronize()  # the copies must land before the device bytes go away
        freed = 0
        for storage in todo:
            freed += storage.nbytes()
            storage.resize_(0)
        return freed

    def restore(self, storages: Iterable[torch.UntypedStorage], zero: bool = False) -> int:
        """Re-grow released ``storages`` in place and refill them from their host copies (or
        zeros with ``zero``; unspecified bytes if released without a copy). Returns the bytes."""
        from mindspeed_rl.platform.device import synchronize

        restored = 0
        for storage in storages:
            key = storage_key(storage)
            size = self._sizes.get(key)
            if size is None or storage.nbytes() == size:
                continue  # never released, or already back
            storage.resize_(size)
            device_bytes = _byte_view(storage)
            if zero:
                device_bytes.zero_()
            elif key in self._kept:
                device_bytes.copy_(self._host[key], non_blocking=self.pin_memory)
            restored += size
        synchronize()  # the host buffers are reused by the next release
        return restored

    @property
    def host_bytes(self) -> int:
        """Host memory held for copies (allocated once, reused every cycle)."""
        return sum(buffer.numel() for buffer in self._host.values())


def resident_bytes(storages: Iterable[torch.UntypedStorage]) -> int:
    return sum(storage.nbytes() for storage in storages)
