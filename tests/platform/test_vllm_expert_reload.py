"""A weight sync into a vLLM fused-MoE layer after the platform post-processed it.

Stand-ins follow the pinned sources (read with git show / the release sdists):

* vLLM 0.11.0 ``vllm/model_executor/layers/fused_moe/layer.py``: ``UnquantizedFusedMoEMethod.
  create_weights`` (w13 ``[E, 2I, H]``, w2 ``[E, H, I]``, ``weight_loader`` attached),
  ``FusedMoE.weight_loader`` (expert map, shard dim 0 for w1/w3 and 1 for w2, TP narrow,
  ``return_success``), ``process_weights_after_loading`` (FlashInfer CUTLASS: w13 halves swapped
  in place to [w3; w1]); ``vllm/model_executor/models/qwen3_moe.py`` ``load_weights`` (experts
  through ``param.weight_loader``, an attribute access).
* vllm-ascend v0.11.0 ``vllm_ascend/ops/common_fused_moe.py``: ``AscendUnquantizedFusedMoEMethod.
  process_weights_after_loading`` replaces the two Parameters by transposed contiguous ones
  without a loader (once: its ``transpose`` flag); ``AscendFusedMoE._load_w13 / _load_w2``
  transpose a loaded weight whose both dims differ from the target's.
* vllm-ascend v0.23.0 ``vllm_ascend/ops/fused_moe/fused_moe.py`` (the same replacement, every
  call) and ``vllm_ascend/worker/worker.py`` ``wake_up``: w2 with ``shape[2] == hidden`` and w13
  with ``shape[1] == hidden`` replaced by their transposes (views), without a loader.

Each kernel stand-in computes the experts from the layout its platform's kernel reads; the
reference computes them from the synced Hugging Face tensors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mindspeed_rl.rollout import expert_reload
from mindspeed_rl.rollout.vllm_engine import VLLMRolloutEngine

E, H, INTER = 4, 12, 10  # experts, hidden, moe intermediate size (full)


class FusedMoEStandIn(torch.nn.Module):
    """vLLM 0.11.0 FusedMoE with UnquantizedFusedMoEMethod's parameters and loader."""

    def __init__(self, method, tp_rank=0, tp_size=1, local_experts=None):
        super().__init__()
        self.quant_method = method
        self.tp_rank, self.tp_size = tp_rank, tp_size
        self.hidden_size = H
        self.intermediate_size_per_partition = INTER // tp_size
        local = list(range(E)) if local_experts is None else local_experts
        self.local_num_experts = len(local)
        self.expert_map = torch.full((E,), -1, dtype=torch.long)
        self.expert_map[local] = torch.arange(len(local))
        i = self.intermediate_size_per_partition
        for name, shape in (
            ("w13_weight", (len(local), 2 * i, H)),
            ("w2_weight", (len(local), H, i)),
        ):
            param = torch.nn.Parameter(torch.zeros(shape), requires_grad=False)
            param.weight_loader = self.weight_loader  # set_weight_attrs(..., extra_weight_attrs)
            self.register_parameter(name, param)

    def _load_w13(self, expert_data, shard_dim, shard_id, loaded_weight, tp_rank):
        shard = expert_data.shape[shard_dim] // 2
        loaded_weight = loaded_weight.narrow(shard_dim, shard * tp_rank, shard)
        start = 0 if shard_id == "w1" else shard
        expert_data.narrow(shard_dim, start, shard).copy_(loaded_weight)

    def _load_w2(self, expert_data, shard_dim, loaded_weight, tp_rank):
        shard = expert_data.shape[shard_dim]
        expert_data.copy_(loaded_weight.narrow(shard_dim, shard * tp_rank, shard))

    def weight_loader(self, param, loaded_weight, weight_name, shard_id, expert_id,
                      return_success=False):  # fmt: skip
        expert_id = int(self.expert_map[expert_id])
        if expert_id == -1:
            return False if return_success else None
        if shard_id not in ("w1", "w2", "w3"):
            raise ValueError(f"shard_id must be ['w1','w2','w3'] but got {shard_id}.")
        shard_dim = {"w1": 0, "w2": 1, "w3": 0}[shard_id]
        if getattr(param, "is_transposed", False):
            shard_dim = int(not shard_dim)
        expert_data = param.data[expert_id]
        if shard_id == "w2":
            self._load_w2(expert_data, shard_dim, loaded_weight, self.tp_rank)
        else:
            self._load_w13(expert_data, shard_dim, shard_id, loaded_weight, self.tp_rank)
        return True if return_success else None


class AscendFusedMoEV011(FusedMoEStandIn):
    """vllm-ascend v0.11.0 AscendFusedMoE: its loaders transpose a mismatched loaded weight."""

    @staticmethod
    def _transpose_weight(loaded_weight, expert_data, shard_dim):
        if (loaded_weight.shape[1] != expert_data.shape[1]
                and loaded_weight.shape[0] != expert_data.shape[0]):  # fmt: skip
            return loaded_weight.transpose(0, 1).contiguous(), int(not shard_dim)
        return loaded_weight, shard_dim

    def _load_w13(self, expert_data, shard_dim, shard_id, loaded_weight, tp_rank):
        loaded_weight, shard_dim = self._transpose_weight(loaded_weight, expert_data, shard_dim)
        super()._load_w13(expert_data, shard_dim, shard_id, loaded_weight, tp_rank)

    def _load_w2(self, expert_data, shard_dim, loaded_weight, tp_rank):
        loaded_weight, shard_dim = self._transpose_weight(loaded_weight, expert_data, shard_dim)
        super()._load_w2(expert_data, shard_dim, loaded_weight, tp_rank)


def _swiglu_experts(x, gate_up, down, gate_first=True):
    """Per expert: down(silu(gate(x)) * up(x)); gate_up [E, 2I, H], down [E, H, I]."""
    g, u = gate_up.chunk(2, dim=1)
    if not gate_first:
        g, u = u, g
    return torch.stack([(F.silu(x @ g[e].T) * (x @ u[e].T)) @ down[e].T for e in range(len(g))])


class AscendMethod:
    """``AscendUnquantizedFusedMoEMethod``: v0.11.0 transposes once (``self.transpose``),
    v0.23.0 on every call; the kernel reads w13 ``[E, H, 2I]`` and w2 ``[E, I, H]``."""

    def __init__(self, version: str):
        self.version = version
        self.transpose = True

    def process_weights_after_loading(self, layer):
        if self.version == "v0.23.0" or self.transpose:
            w13 = layer.w13_weight.data.transpose(1, 2).contiguous()
            w2 = layer.w2_weight.data.transpose(1, 2).contiguous()
            self.transpose = False
        else:
            w13, w2 = layer.w13_weight.data, layer.w2_weight.data
        layer.w13_weight = torch.nn.Parameter(w13, requires_grad=False)
        layer.w2_weight = torch.nn.Parameter(w2, requires_grad=False)

    def apply(self, layer, x):
        assert layer.w13_weight.shape[1] == H and layer.w13_weight.is_contiguous()
        return _swiglu_experts(x, layer.w13_weight.transpose(1, 2), layer.w2_weight.transpose(1, 2))


class CudaMethod:
    """vLLM 0.11.0 ``UnquantizedFusedMoEMethod`` with FlashInfer's CUTLASS MoE: w13 halves
    swapped in place to [w3; w1] after loading; the kernel reads that order."""

    def process_weights_after_loading(self, layer):
        w1, w3 = torch.chunk(layer.w13_weight.data, 2, dim=1)
        layer.w13_weight.data = torch.cat([w3, w1], dim=1).contiguous()

    def apply(self, layer, x):
        return _swiglu_experts(x, layer.w13_weight, layer.w2_weight, gate_first=False)


def wake_up_v023(model):
    """vllm-ascend v0.23.0 ``NPUWorker.wake_up`` (tags None or with 'weights')."""
    for name, param in list(model.named_parameters()):
        parts = name.split(".")
        parent = model.get_submodule(".".join(parts[:-1]))
        if ("w2_weight" in name and param.shape[2] == H) or (
            "w13_weight" in name and param.shape[1] == H
        ):
            setattr(
                parent, parts[-1], torch.nn.Parameter(param.transpose(1, 2), requires_grad=False)
            )


class Qwen3MoeStandIn(torch.nn.Module):
    """vLLM 0.11.0 ``Qwen3MoeModel.load_weights`` for the experts of one layer."""

    def __init__(self, experts):
        super().__init__()
        self.experts = experts

    def load_weights(self, weights):
        params_dict = dict(self.named_parameters())
        mapping = [
            (f"experts.{'w2' if proj == 'down' else 'w13'}_", f"experts.{e}.{proj}_proj.",
             e, {"gate": "w1", "up": "w3", "down": "w2"}[proj])
            for e in range(E) for proj in ("gate", "up", "down")
        ]  # fmt: skip
        loaded = set()
        for name, tensor in weights:
            for param_name, weight_name, expert_id, shard_id in mapping:
                if weight_name not in name:
                    continue
                name_mapped = name.replace(weight_name, param_name)
                param = params_dict[name_mapped]
                weight_loader = param.weight_loader
                if weight_loader(param, tensor, name_mapped, shard_id=shard_id,
                                 expert_id=expert_id, return_success=True):  # fmt: skip
                    loaded.add(name_mapped)
                    break
        return loaded


class LLMStandIn:
    """What ``VLLMRolloutEngine.load_weights`` calls on ``vllm.LLM`` (external_launcher: the
    worker, and so ``apply_model``'s function, runs in this process)."""

    def __init__(self, model):
        self.model = model

    def apply_model(self, func):
        return [func(self.model)]

    def reset_prefix_cache(self):
        return True

    def wake_up(self, tags=None):
        """vllm-ascend v0.23.0 ``NPUWorker.wake_up`` (the allocator's part is not modelled)."""
        if tags is None or "weights" in tags:
            wake_up_v023(self.model)


def hf_experts(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        f"experts.{e}.{proj}_proj.weight": torch.randn(shape, generator=g)
        for e in range(E)
        for proj, shape in (("gate", (INTER, H)), ("up", (INTER, H)), ("down", (H, INTER)))
    }


def reference(weights, x, tp_rank, tp_size, local):
    i = INTER // tp_size
    rows = slice(i * tp_rank, i * (tp_rank + 1))
    gate_up = torch.stack([torch.cat([weights[f"experts.{e}.gate_proj.weight"][rows],
                                      weights[f"experts.{e}.up_proj.weight"][rows]]) for e in local])  # fmt: skip
    down = torch.stack([weights[f"experts.{e}.down_proj.weight"][:, rows] for e in local])
    return _swiglu_experts(x, gate_up, down)


def engine_over(model):
    engine = object.__new__(VLLMRolloutEngine)  # the real load_weights, without vllm
    engine._llm, engine._reload, engine.weight_version = LLMStandIn(model), False, 0
    return engine


PLATFORMS = {
    "vllm-ascend v0.11.0": (AscendFusedMoEV011, lambda: AscendMethod("v0.11.0"), False),
    "vllm-ascend v0.23.0 after wake_up": (FusedMoEStandIn, lambda: AscendMethod("v0.23.0"), True),
    "vllm-ascend v0.23.0 without wake_up": (FusedMoEStandIn, lambda: AscendMethod("v0.23.0"), False),
    "vllm 0.11.0 CUDA, FlashInfer CUTLASS MoE": (FusedMoEStandIn, CudaMethod, False),
}  # fmt: skip


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(("tp_rank", "tp_size", "local"), [(0, 1, [0, 1, 2, 3]), (1, 2, [1, 3])])
def test_a_sync_reaches_the_kernel_layout(platform, tp_rank, tp_size, local):
    layer_cls, method, wakes = PLATFORMS[platform]
    model = Qwen3MoeStandIn(layer_cls(method(), tp_rank, tp_size, local))
    first, synced = hf_experts(0), hf_experts(1)
    # start-up: vLLM's loader, then the method's post-processing (model_loader's order)
    model.load_weights(first.items())
    model.experts.quant_method.process_weights_after_loading(model.experts)
    x = torch.randn(3, H, generator=torch.Generator().manual_seed(2))
    kernel = model.experts.quant_method
    torch.testing.assert_close(
        kernel.apply(model.experts, x), reference(first, x, tp_rank, tp_size, local)
    )
    storage = model.experts.w13_weight.data_ptr()
    for _ in range(2):  # two syncs: the second starts from what the first left
        if wakes:
            wake_up_v023(model)
        engine_over(model).load_weights(synced.items(), version=1)
        torch.testing.assert_close(
            kernel.apply(model.experts, x), reference(synced, x, tp_rank, tp_size, local)
        )
        synced = hf_experts(2)
    if isinstance(kernel, AscendMethod):  # in place: the sleep pool's storage, no copy
        assert model.experts.w13_weight.data_ptr() == storage


def test_a_sync_missing_experts_of_a_layer_fails():
    model = Qwen3MoeStandIn(AscendFusedMoEV011(AscendMethod("v0.11.0")))
    model.load_weights(hf_experts(0).items())
    model.experts.quant_method.process_weights_after_loading(model.experts)
    partial = [(k, v) for k, v in hf_experts(1).items() if not k.startswith("experts.3.")]
    with pytest.raises(RuntimeError, match="3 of 4 local experts"):
        engine_over(model).load_weights(partial, version=1)
    # the layer is left as the platform had it: no loader of ours, the kernel layout
    assert not hasattr(model.experts.w13_weight, "weight_loader")
    assert model.experts.w13_weight.shape == (E, H, 2 * INTER)


def test_an_unknown_layout_is_refused():
    layer = FusedMoEStandIn(CudaMethod())
    layer.w2_weight = torch.nn.Parameter(torch.zeros(E, 7, 7), requires_grad=False)
    with pytest.raises(RuntimeError, match="w2_weight: shape"):
        expert_reload.load_weights(Qwen3MoeStandIn(layer), [])


def test_a_wake_up_without_a_sync_leaves_the_kernel_layout():
    """vllm-ascend v0.23.0: the engine woken (weights, then KV cache) generates with the kernel
    layout also when no sync follows (a generate after a sleep that kept the weights)."""
    model = Qwen3MoeStandIn(FusedMoEStandIn(AscendMethod("v0.23.0")))
    weights = hf_experts(0)
    model.load_weights(weights.items())
    model.experts.quant_method.process_weights_after_loading(model.experts)
    engine = engine_over(model)
    engine.has_sleep_mode, engine.awake = True, set()
    engine.wake_up(["weights"])
    engine.wake_up(["kv_cache"])
    x = torch.randn(3, H, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        model.experts.quant_method.apply(model.experts, x), reference(weights, x, 0, 1, range(E))
    )
