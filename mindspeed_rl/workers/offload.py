"""Give the colocated rollout engine the device memory that training holds between phases.

``generate_config.offload_train_param`` / ``offload_train_grad`` / ``offload_train_optimizer``
switch three groups separately:

* ``params``: the storages behind the module's parameters (the DDP param buffers with the
  distributed optimizer, else each parameter's own storage; fp32 shard main params of the
  distributed optimizer are views into these);
* ``grads``: the DDP grad buffers. They hold nothing between updates, so they are released without
  a copy and come back zeroed;
* ``optimizer``: Adam's moments and the fp32 main copies of bf16 parameters (not those that are
  views of the params group).

Storages are emptied and restored in place (``platform/storage_stash.py``), so every view
Megatron holds stays valid. This runs the same way on every platform: on CPU the "device" storage
is host memory and is really released and refilled, so the tests exercise the accelerator path.
The phase order that uses it is in ``workers/residency.py`` and docs/memory.md.
"""

from __future__ import annotations

import torch

from mindspeed_rl.platform.storage_stash import (
    StorageStash,
    resident_bytes,
    storage_key,
    unique_storages,
)

GROUPS = ("params", "grads", "optimizer")


def _inner_optimizers(optimizer) -> list:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def _optimizer_state_tensors(optimizer) -> list[torch.Tensor]:
    tensors = []
    for opt in _inner_optimizers(optimizer):
        torch_opt = getattr(opt, "optimizer", None)
        if torch_opt is None:
            continue
        for state in torch_opt.state.values():
            tensors.extend(v for v in state.values() if torch.is_tensor(v) and v.dim() > 0)
    return tensors


def _main_params(optimizer) -> list[torch.Tensor]:
    params = []
    for opt in _inner_optimizers(optimizer):
        for name in ("shard_fp32_from_float16_groups", "fp32_from_float16_groups"):
            for group in getattr(opt, name, None) or []:
                params.extend(p for p in group if p is not None)
    return params


def _ddp_buffers(ddp_model) -> list:
    return list(getattr(ddp_model, "buffers", [])) + list(
        getattr(ddp_model, "expert_parallel_buffers", [])
    )


class TrainStateOffloader:
    """Release / restore the actor's params, grads and optimizer state, each group on its own."""

    def __init__(
        self,
        ddp_model,
        optimizer,
        *,
        params: bool,
        grads: bool,
        optimizer_state: bool,
        pin_memory: bool | None = None,
    ) -> None:
        from mindspeed_rl.platform.device import is_accelerator

        self.model = ddp_model
        self.optimizer = optimizer
        self.enabled = {"params": params, "grads": grads, "optimizer": optimizer_state}
        self.stash = StorageStash(is_accelerator() if pin_memory is None else pin_memory)
        self.resident = dict.fromkeys(GROUPS, True)
        # fixed once DDP has built its buffers; Adam's state appears at the first step, so the
        # optimizer group is found anew each time
        self._fixed = {
            "params": unique_storages(ddp_model.parameters()),
            "grads": unique_storages(b.grad_data for b in _ddp_buffers(ddp_model)),
        }
        self._fixed_keys = {storage_key(s) for group in self._fixed.values() for s in group}

    # --- which storages belong to which group --------------------------------------------------

    def storages(self, group: str) -> list[torch.UntypedStorage]:
        """The storages of ``group``. A storage belongs to one group only: params first, then
        grads, then the optimizer's (fp32 shard main params of fp32 models are params)."""
        if group in self._fixed:
            return self._fixed[group]
        tensors = _optimizer_state_tensors(self.optimizer) + _main_params(self.optimizer)
        return [s for s in unique_storages(tensors) if storage_key(s) not in self._fixed_keys]

    def resident_bytes(self) -> dict[str, int]:
        """Device bytes each group holds now (0 while released)."""
        return {group: resident_bytes(self.storages(group)) for group in GROUPS}

    # --- moves -----------------------------------------------------------------------------

    def offload(self, groups=GROUPS) -> int:
        """Release the enabled ``groups`` that are resident; returns the device bytes freed."""
        from mindspeed_rl.platform.device import empty_cache

        freed = 0
        for group in groups:
            if self.enabled[group] and self.resident[group]:
                freed += self.stash.release(self.storages(group), keep=group != "grads")
                self.resident[group] = False
        if freed:
            empty_cache()
        return freed

    def reload(self, groups=GROUPS) -> int:
        """Restore the released ``groups``; returns the bytes brought back."""
        restored = 0
        for group in groups:
            if not self.resident[group]:
                restored += self.stash.restore(self.storages(group), zero=group == "grads")
                self.resident[group] = True
        return restored

    def ensure(self, wanted) -> None:
        """Exactly ``wanted`` (a set of groups) resident, of those that may be offloaded;
        releases first so the peak never holds both the old and the new phase's state."""
        self.offload([g for g in GROUPS if g not in wanted])
        self.reload([g for g in GROUPS if g in wanted])


class ModuleOffloader:
    """Release / restore the parameters of a forward-only module (the reference model): always
    enabled, released with a copy (they never change)."""

    def __init__(self, module: torch.nn.Module, pin_memory: bool | None = None) -> None:
        from mindspeed_rl.platform.device import is_accelerator

        self.stash = StorageStash(is_accelerator() if pin_memory is None else pin_memory)
        self._storages = unique_storages(module.parameters())
        self.resident = True

    def resident_bytes(self) -> int:
        return resident_bytes(self._storages)

    def ensure(self, wanted: bool) -> None:
        from mindspeed_rl.platform.device import empty_cache

        if self.resident and not wanted:
            self.stash.release(self._storages)
            empty_cache()
        elif wanted and not self.resident:
            self.stash.restore(self._storages)
        self.resident = wanted
