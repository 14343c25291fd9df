"""Reloading a vLLM model's fused-MoE experts after the platform post-processed them.

A weight sync without vLLM's iterator reload (vLLM 0.11.0 on CUDA; vllm-ascend, whose
``NPUWorker`` has no ``reload_weights``) calls the model's own ``load_weights``, which hands
every expert tensor to ``params_dict[name].weight_loader`` (``vllm/model_executor/models/
qwen3_moe.py``), i.e. ``FusedMoE.weight_loader``: it writes the checkpoint layout, w13
``[E, 2I, H]`` (gate rows then up rows) and w2 ``[E, H, I]``. After the first load the platform
has changed that (read at the pinned versions):

* vllm-ascend v0.11.0 ``ops/common_fused_moe.py`` and v0.23.0 ``ops/fused_moe/fused_moe.py``,
  ``AscendUnquantizedFusedMoEMethod.process_weights_after_loading``: replaces ``w13_weight`` /
  ``w2_weight`` by new Parameters, transposed to ``[E, H, 2I]`` / ``[E, I, H]``, contiguous,
  without ``weight_loader`` (``load_weights`` then raises AttributeError).
* vllm-ascend v0.23.0 ``worker/worker.py`` ``wake_up`` (weights): replaces them again by
  transposed views, i.e. checkpoint-shaped views of the kernel's storage, also without loader;
  its example ``examples/offline_weight_load.py`` re-attaches ``experts.weight_loader``, loads,
  and runs ``process_weights_after_loading`` over the model (a contiguous copy: new memory
  outside the sleep pool on every sync).
* vLLM 0.11.0 ``fused_moe/layer.py`` ``UnquantizedFusedMoEMethod.process_weights_after_loading``
  keeps the Parameters and their loaders but rewrites their data in place: with FlashInfer's
  CUTLASS MoE (``VLLM_USE_FLASHINFER_MOE_FP16``, EP, SM >= 9) w13's halves are swapped to
  ``[up; gate]``; on ROCm AITER shuffles them.

So, per MoE layer: a replaced Parameter gets a loader that is the layer's own, writing through
a checkpoint-layout view of the kernel's storage (no copy, no transposed duplicate); the layer's
attributes are put back to the kernel layout over that same storage. A Parameter that kept its
loader is reloaded as the first load did and then post-processed again by its method (what the
first load did next). Every layer must receive all of its local experts, or the reload fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch

WEIGHTS = ("w13_weight", "w2_weight")


class KernelViewLoader:
    """``weight_loader`` of a replaced expert Parameter: the layer's own loader, given a
    checkpoint-layout Parameter over the kernel's storage."""

    def __init__(self, layer, view: torch.Tensor, written: set) -> None:
        self.layer = layer
        self.view = torch.nn.Parameter(view, requires_grad=False)  # an alias: same storage
        self.written = written

    def __call__(
        self, param, loaded_weight, weight_name, shard_id, expert_id, return_success=False
    ):
        ok = self.layer.weight_loader(
            self.view, loaded_weight, weight_name, shard_id=shard_id, expert_id=expert_id,
            return_success=True,
        )  # fmt: skip
        if ok:
            self.written.add((expert_id, shard_id))
        return ok if return_success else None


class CountingLoader:
    """The Parameter's own loader, recording what it wrote."""

    def __init__(self, original, written: set) -> None:
        self.original = original
        self.written = written

    def __call__(
        self, param, loaded_weight, weight_name, shard_id, expert_id, return_success=False
    ):
        ok = self.original(
            param, loaded_weight, weight_name, shard_id=shard_id, expert_id=expert_id,
            return_success=True,
        )  # fmt: skip
        if ok:
            self.written.add((expert_id, shard_id))
        return ok if return_success else None


@dataclasses.dataclass
class _Layer:
    name: str
    module: torch.nn.Module
    written: set
    restore: dict[str, torch.Tensor]  # attribute -> kernel-layout data to put back
    counted: dict[str, object]  # attribute -> the Parameter's own loader, to put back
    post_process: bool  # the method post-processes in place: run it again after the reload


def expert_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """vLLM's FusedMoE layers (and subclasses such as vllm-ascend's) of ``model``."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if all(isinstance(getattr(m, w, None), torch.Tensor) for w in WEIGHTS)
        and callable(getattr(m, "weight_loader", None))
        and getattr(m, "quant_method", None) is not None
    ]


def _checkpoint_shape(layer, attr: str) -> tuple[int, int, int]:
    experts, hidden = layer.local_num_experts, layer.hidden_size
    inter = layer.intermediate_size_per_partition
    return (experts, 2 * inter, hidden) if attr == "w13_weight" else (experts, hidden, inter)


def _is_wake_up_view(layer, attr: str, data: torch.Tensor) -> bool:
    """A checkpoint-shaped transposed view of the kernel's contiguous storage (what vllm-ascend
    v0.23.0's ``wake_up`` leaves)."""
    return (
        data.shape == _checkpoint_shape(layer, attr)
        and not data.is_contiguous()
        and data.transpose(1, 2).is_contiguous()
        and not hasattr(getattr(layer, attr), "weight_loader")
    )


def restore_kernel_layout(model: torch.nn.Module) -> int:
    """After a wake-up of the weights: every expert weight that vllm-ascend v0.23.0's ``wake_up``
    left as a checkpoint-shaped view goes back to the kernel's layout over the same storage
    (its kernel reads ``[E, H, 2I]`` / ``[E, I, H]``: a generate without a sync in between would
    otherwise run on transposed experts). Returns how many were put back."""
    restored = 0
    for _, layer in expert_layers(model):
        for attr in WEIGHTS:
            data = getattr(layer, attr).data
            if _is_wake_up_view(layer, attr, data):
                setattr(layer, attr, torch.nn.Parameter(data.transpose(1, 2), requires_grad=False))
                restored += 1
    return restored


def _prepare(name: str, layer) -> _Layer:
    state = _Layer(name, layer, set(), {}, {}, post_process=False)
    for attr in WEIGHTS:
        param = getattr(layer, attr)
        loader = getattr(param, "weight_loader", None)
        if loader is not None and not isinstance(loader, KernelViewLoader):
            state.counted[attr] = loader
            param.weight_loader = CountingLoader(loader, state.written)
            state.post_process = True
            continue
        expected = _checkpoint_shape(layer, attr)
        data = param.data
        if data.is_contiguous() and data.transpose(1, 2).shape == expected:
            view = data.transpose(1, 2)  # the kernel's transposed layout
        elif data.shape == expected and data.transpose(1, 2).is_contiguous():
            view = data  # a checkpoint-shaped view of the kernel's storage (v0.23.0 wake_up)
            state.restore[attr] = data.transpose(1, 2)
        else:
            raise RuntimeError(
                f"{name}.{attr}: shape {tuple(data.shape)}, strides {data.stride()} is neither "
                f"the checkpoint layout {expected} nor its transpose: a reload cannot place it"
            )
        param.weight_loader = KernelViewLoader(layer, view, state.written)
    return state


def _restore(state: _Layer) -> None:
    """The layer's own loaders back, and its attributes in the kernel's layout."""
    layer = state.module
    for attr in WEIGHTS:
        param = getattr(layer, attr)
        if attr in state.counted:
            param.weight_loader = state.counted[attr]
        elif isinstance(getattr(param, "weight_loader", None), KernelViewLoader):
            del param.weight_loader
    for attr, data in state.restore.items():
        setattr(layer, attr, torch.nn.Parameter(data, requires_grad=False))


def _complete(state: _Layer) -> None:
    layer = state.module
    experts = {e for e, _ in state.written}
    shards = {s for _, s in state.written}
    complete = len(state.written) == len(experts) * len(shards) and "w2" in shards
    if len(experts) != layer.local_num_experts or not complete:
        raise RuntimeError(
            f"{state.name}: the weight sync wrote {len(state.written)} expert tensors "
            f"({len(experts)} of {layer.local_num_experts} local experts, shards "
            f"{sorted(shards)}): some experts kept old weights"
        )
    if state.post_process:
        layer.quant_method.process_weights_after_loading(layer)


def load_weights(model: torch.nn.Module, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """``model.load_weights(weights)`` with every MoE layer's experts placed in the layout its
    kernel reads (runs inside the vLLM worker, through ``LLM.apply_model``)."""
    layers = [_prepare(name, layer) for name, layer in expert_layers(model)]
    try:
        model.load_weights(weights)
    finally:
        for state in layers:
            _restore(state)
    for state in layers:
        _complete(state)
