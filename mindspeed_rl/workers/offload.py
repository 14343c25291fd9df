"""Give the colocated rollout engine the device memory that training holds between updates.

``generate_config.offload_train_param`` / ``offload_train_grad`` / ``offload_train_optimizer``:

* gradients: the DDP grad buffers are freed (``storage().resize_(0)``; every ``main_grad`` view stays
  a valid object) and re-allocated zeroed before the next backward -- they hold nothing between
  updates;
* parameters: the DDP param buffers (distributed optimizer) or each parameter's data move to host
  memory and back; views into a buffer stay views because the buffer's storage is swapped in place;
* optimizer: every tensor of the optimizer state (Adam moments, fp32 main weights) moves to host
  memory and back.

On a CPU-only host there is nothing to free: the host is the device, and every call is a no-op.
"""

from __future__ import annotations

import torch

_HOST = torch.device("cpu")


def _optimizer_states(optimizer) -> list[dict]:
    inner = getattr(optimizer, "chained_optimizers", [optimizer])
    states = []
    for opt in inner:
        torch_opt = getattr(opt, "optimizer", None)
        if torch_opt is not None:
            states.extend(torch_opt.state.values())
    return states


def _main_params(optimizer) -> list[torch.Tensor]:
    params = []
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        for name in ("shard_fp32_from_float16_groups", "fp32_from_float16_groups"):
            for group in getattr(opt, name, None) or []:
                params.extend(p for p in group if p is not None)
    return params


class TrainStateOffloader:
    def __init__(
        self,
        ddp_model,
        optimizer,
        *,
        params: bool,
        grads: bool,
        optimizer_state: bool,
        host: torch.device = _HOST,
        force: bool = False,
    ) -> None:
        self.model = ddp_model
        self.optimizer = optimizer
        self.params, self.grads, self.optimizer_state = params, grads, optimizer_state
        self.host = host
        self.device = next(ddp_model.parameters()).device
        self._grad_sizes: list[int] = []
        self.offloaded = False
        # force: run the bookkeeping on a CPU host too (tests; nothing is freed there)
        self.force = force

    @property
    def active(self) -> bool:
        on_device = self.device.type != "cpu" or self.force
        return on_device and (self.params or self.grads or self.optimizer_state)

    def _buffers(self):
        return list(getattr(self.model, "buffers", [])) + list(
            getattr(self.model, "expert_parallel_buffers", [])
        )

    def offload(self) -> None:
        if not self.active or self.offloaded:
            return
        if self.grads:
            self._grad_sizes = []
            for buffer in self._buffers():
                storage = buffer.grad_data.untyped_storage()
                self._grad_sizes.append(storage.size())
                storage.resize_(0)
        if self.params:
            self._move_params(self.host)
        if self.optimizer_state:
            self._move_optimizer(self.host)
        self.offloaded = True
        from mindspeed_rl.platform.device import empty_cache, synchronize

        synchronize()
        empty_cache()

    def reload(self) -> None:
        if not self.active or not self.offloaded:
            return
        if self.grads:
            for buffer, size in zip(self._buffers(), self._grad_sizes):
                buffer.grad_data.untyped_storage().resize_(size)
                buffer.grad_data.zero_()
        if self.params:
            self._move_params(self.device)
        if self.optimizer_state:
            self._move_optimizer(self.device)
        self.offloaded = False
        from mindspeed_rl.platform.device import synchronize

        synchronize()

    def _move_params(self, to: torch.device) -> None:
        buffers = [b for b in self._buffers() if getattr(b, "param_data", None) is not None]
        in_buffers = set()
        for buffer in buffers:
            buffer.param_data.data = buffer.param_data.data.to(to, non_blocking=True)
            in_buffers.update(id(p) for p in buffer.params)
        # parameters that are views into a moved buffer must be re-pointed at it
        for buffer in buffers:
            for param in buffer.params:
                start, end = buffer.param_index_map[param][:2]
                param.data = buffer.param_data[start:end].view(param.shape)
        for param in self.model.parameters():
            if id(param) not in in_buffers:
                param.data = param.data.to(to, non_blocking=True)

    def _move_optimizer(self, to: torch.device) -> None:
        for state in _optimizer_states(self.optimizer):
            for key, value in state.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    state[key] = value.to(to, non_blocking=True)
        for param in _main_params(self.optimizer):
            param.data = param.data.to(to, non_blocking=True)
