"""Per-expert synced names fill transformers 5's fused Qwen3-MoE experts exactly (arange tensors,
so a wrong gate/up order, expert index or transpose shows), and a partial sync after a sleep is
refused."""

import pytest
import torch
import transformers

from mindspeed_rl.rollout import fused_experts
from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
from tests.models import tiny_hf


def _per_expert_pairs(model) -> list[tuple[str, torch.Tensor]]:
    """The model's weights as the sync sends them: one tensor per expert, arange-valued."""
    pairs = []
    for name, param in model.named_parameters():
        values = torch.arange(param.numel(), dtype=torch.float32).reshape(param.shape)
        values = values / param.numel() + len(pairs)
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix, width = name.removesuffix("gate_up_proj"), param.shape[1] // 2
            for e in range(param.shape[0]):
                pairs.append((f"{prefix}{e}.gate_proj.weight", values[e, :width]))
                pairs.append((f"{prefix}{e}.up_proj.weight", values[e, width:]))
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name.removesuffix("down_proj")
            pairs += [(f"{prefix}{e}.down_proj.weight", values[e]) for e in range(param.shape[0])]
        else:
            pairs.append((name, values))
    return pairs


@pytest.fixture
def engine():
    model = transformers.AutoModelForCausalLM.from_config(tiny_hf.hf_config("qwen3_moe"))
    if "model.layers.0.mlp.experts.gate_up_proj" not in dict(model.named_parameters()):
        pytest.skip("this transformers keeps per-expert modules: nothing is fused")
    return HFRolloutEngine(model, eos_token_ids=[0], pad_token_id=0)


def test_per_expert_names_land_in_the_fused_parameters(engine):
    pairs = _per_expert_pairs(engine.model)
    assert engine.load_weights(pairs, version=1) == len(pairs)
    sent = dict(pairs)
    params = dict(engine.model.named_parameters())
    fused = params["model.layers.1.mlp.experts.gate_up_proj"]
    down = params["model.layers.1.mlp.experts.down_proj"]
    for e in range(fused.shape[0]):
        prefix = f"model.layers.1.mlp.experts.{e}."
        # transformers: gate, up = linear(x, gate_up_proj[e]).chunk(2, dim=-1)
        torch.testing.assert_close(
            fused[e],
            torch.cat([sent[prefix + "gate_proj.weight"], sent[prefix + "up_proj.weight"]]),
        )
        torch.testing.assert_close(down[e], sent[prefix + "down_proj.weight"])
    assert torch.equal(params["model.embed_tokens.weight"], sent["model.embed_tokens.weight"])


def test_a_sync_missing_one_expert_after_a_wake_up_is_refused(engine):
    pairs = _per_expert_pairs(engine.model)
    engine.sleep()
    engine.wake_up(["weights"])
    partial = [(n, t) for n, t in pairs if n != "model.layers.0.mlp.experts.3.up_proj.weight"]
    with pytest.raises(RuntimeError, match="gate_up_proj"):
        engine.load_weights(partial, version=1)
    engine.load_weights(pairs, version=2)  # the full sync is accepted
    assert engine.weight_version == 2


def test_names_outside_a_fused_module_have_no_slot():
    params = {"model.layers.0.mlp.experts.gate_up_proj": torch.zeros(2, 4, 3)}
    assert (
        fused_experts.expert_slot("model.layers.0.mlp.experts.2.gate_proj.weight", params) is None
    )
    assert fused_experts.expert_slot("model.layers.1.mlp.experts.0.up_proj.weight", params) is None
    name, view = fused_experts.expert_slot("model.layers.0.mlp.experts.1.up_proj.weight", params)
    assert name == "model.layers.0.mlp.experts.gate_up_proj" and view.shape == (2, 3)
