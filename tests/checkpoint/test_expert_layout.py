"""MoE experts in the grouped-GEMM layout (GroupedMLP weight1/weight2) and per expert, both ways.

Pure re-layouts on tensors of unique values (a wrong transpose or expert order shows), the same
against the HF <-> Megatron mapping in every TP / EP shard, checkpoints through the converter
(bit-identical), expert-count errors, and a grouped EP=2 checkpoint loaded by ``load_model`` into
the per-expert GPTModel on CPU computing transformers' logits.
"""

import logging
import os

import pytest
import torch

from cli.convert_ckpt import main
from mindspeed_rl.checkpoint import mcore_layout
from mindspeed_rl.checkpoint.expert_layout import (
    ExpertLayout,
    ExpertShapes,
    detect_layout,
    to_grouped,
    to_sequential,
)
from mindspeed_rl.models.hf_config import model_config_from_hf
from mindspeed_rl.models.param_mapping import DictSource, WeightMapping, iter_mcore_shard
from mindspeed_rl.platform.distributed import ParallelLayout
from tests.checkpoint.conftest import read_safetensors
from tests.models import tiny_hf

H, F = 3, 4  # hidden size, expert ffn size of the hand-made shards
LAYER = "decoder.layers.0."


def _per_expert_shard(shapes: ExpertShapes, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """A per-expert shard of one layer, every value unique, with non-expert neighbours."""
    state, offset = {LAYER + "mlp.router.weight": torch.zeros(shapes.num_experts, H)}, 100
    for e in range(shapes.local_experts):
        for fc, shape in ((1, (shapes.fc1_rows, H)), (2, (H, shapes.fc2_cols))):
            numel = shape[0] * shape[1]
            state[f"{LAYER}mlp.experts.local_experts.{e}.linear_fc{fc}.weight"] = torch.arange(
                offset, offset + numel, dtype=dtype
            ).reshape(shape)
            offset += numel
    state["decoder.final_layernorm.weight"] = torch.ones(H)
    return state


@pytest.mark.parametrize("tp,ep", [(1, 1), (2, 2)])
def test_grouped_blocks_are_what_megatron_views_and_the_round_trip_is_exact(tp, ep):
    shapes = ExpertShapes(num_experts=4, ffn_hidden_size=F, hidden_size=H, tp=tp, ep=ep)
    sequential = _per_expert_shard(shapes)
    grouped = to_grouped(sequential, shapes)
    assert list(grouped) == [
        LAYER + "mlp.router.weight",
        LAYER + "mlp.experts.weight1",
        LAYER + "mlp.experts.weight2",
        "decoder.final_layernorm.weight",
    ]
    local = 4 // ep
    weight1, weight2 = (
        grouped[LAYER + "mlp.experts.weight1"],
        grouped[LAYER + "mlp.experts.weight2"],
    )
    assert weight1.shape == (H, local * 2 * F // tp) and weight2.shape == (local * F // tp, H)
    # GroupedMLP.forward: w1 = weight1.view(E_l, H, -1), w2 = weight2.view(E_l, -1, H)
    for e in range(local):
        fc1 = sequential[f"{LAYER}mlp.experts.local_experts.{e}.linear_fc1.weight"]
        fc2 = sequential[f"{LAYER}mlp.experts.local_experts.{e}.linear_fc2.weight"]
        assert torch.equal(weight1.view(local, H, -1)[e], fc1.t())
        assert torch.equal(weight2.view(local, -1, H)[e], fc2.t())
    assert grouped["decoder.final_layernorm.weight"] is sequential["decoder.final_layernorm.weight"]
    back = to_sequential(grouped, shapes)
    assert list(back) == list(sequential)  # Megatron's module order: e0 fc1, e0 fc2, e1 fc1...
    for name, tensor in sequential.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    assert detect_layout(grouped) is ExpertLayout.GROUPED
    assert detect_layout(back) is ExpertLayout.SEQUENTIAL
    assert detect_layout(["decoder.final_layernorm.weight"]) is None


def _tiny_moe(grouped: bool):
    info = model_config_from_hf(
        tiny_hf.hf_config("qwen3_moe").to_dict(), make_vocab_size_divisible_by=16
    )
    return info.model.model_copy(update={"moe_grouped_gemm": grouped}), info.vocab_size


def _unique_hf(mapping: WeightMapping) -> DictSource:
    tensors, offset = {}, 0
    for name, shape in sorted(mapping.hf_shapes().items()):
        numel = torch.Size(shape).numel()
        tensors[name] = torch.arange(offset, offset + numel, dtype=torch.float64).reshape(shape)
        offset += numel
    return DictSource(tensors)


@pytest.mark.parametrize("tp,pp,ep", [(1, 1, 1), (2, 1, 2), (1, 2, 4)])
def test_every_shard_of_the_mapping_converts_both_ways_bit_identically(tp, pp, ep):
    layout = ParallelLayout(tp, pp, ep)
    model, vocab = _tiny_moe(grouped=False)
    per_expert = WeightMapping(model, vocab, layout, grouped_experts=False)
    grouped = WeightMapping(model, vocab, layout, grouped_experts=True)
    source = _unique_hf(per_expert)
    shapes = ExpertShapes.from_model(model, tp, ep)
    for pp_rank in range(pp):
        for ep_rank in range(ep):
            for tp_rank in range(tp):
                g = dict(iter_mcore_shard(grouped, source, tp_rank, pp_rank, ep_rank))
                s = dict(iter_mcore_shard(per_expert, source, tp_rank, pp_rank, ep_rank))
                for converted, expected in (
                    (to_sequential(g, shapes), s),
                    (to_grouped(s, shapes), g),
                ):
                    assert list(converted) == list(expected)
                    for name, tensor in expected.items():
                        assert torch.equal(converted[name], tensor), name


def test_a_grouped_shard_of_another_expert_count_names_both():
    shapes = ExpertShapes(num_experts=8, ffn_hidden_size=F, hidden_size=H, ep=2)
    grouped = to_grouped(_per_expert_shard(shapes), shapes)
    config = ExpertShapes(num_experts=4, ffn_hidden_size=F, hidden_size=H, ep=2)
    with pytest.raises(ValueError, match=r"has 8 experts per layer .* num_experts=4"):
        to_sequential(grouped, config, "ckpt")
    del grouped[LAYER + "mlp.router.weight"]  # the grouped shapes alone tell it too
    with pytest.raises(ValueError, match=r"= 4 local experts .* 8 experts at EP=2.*num_experts=4"):
        to_sequential(grouped, config, "ckpt")
    per_expert = _per_expert_shard(shapes)
    del per_expert[LAYER + "mlp.router.weight"]
    with pytest.raises(ValueError, match=r"4 per EP rank = 8 experts at EP=2.*num_experts=4"):
        to_grouped(per_expert, config, "ckpt")


def _hf_to_mg(hf_dir, out, tp, ep, *extra) -> int:
    return main(
        [
            "--load-model-type", "hf", "--save-model-type", "mg", "--load-dir", str(hf_dir),
            "--save-dir", str(out), "--target-tensor-parallel-size", str(tp),
            "--target-expert-parallel-size", str(ep), "--make-vocab-size-divisible-by", "16",
            *extra,
        ]
    )  # fmt: skip


def _mg_to_hf(mg_dir, out, *extra) -> int:
    return main(
        ["--load-model-type", "mg", "--save-model-type", "hf", "--load-dir", str(mg_dir),
         "--save-dir", str(out), *extra]
    )  # fmt: skip


@pytest.mark.parametrize("ep", [1, 2])
def test_hf_to_grouped_mcore_to_hf_is_bit_identical(tiny_models, tmp_path, ep):
    source = tiny_models["qwen3_moe"]
    assert _hf_to_mg(source, tmp_path / "mg", 1, ep, "--moe-grouped-gemm") == 0
    files = mcore_layout.find_checkpoint(tmp_path / "mg")
    for ep_rank in range(ep):
        state = mcore_layout.load_shard(files.path(0, 0, ep_rank))["model"]
        assert detect_layout(state) is ExpertLayout.GROUPED
        assert state["decoder.layers.1.mlp.experts.weight2"].shape == (4 // ep * 16, 32)
    assert _mg_to_hf(tmp_path / "mg", tmp_path / "hf") == 0
    original, restored = read_safetensors(source), read_safetensors(tmp_path / "hf")
    assert restored.keys() == original.keys()
    for name, tensor in original.items():
        assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor), name


def test_mcore_to_hf_with_a_config_of_another_expert_count_fails_naming_both(
    tiny_models, tmp_path, capsys
):
    import json

    assert _hf_to_mg(tiny_models["qwen3_moe"], tmp_path / "mg", 1, 2, "--moe-grouped-gemm") == 0
    config = json.loads((tiny_models["qwen3_moe"] / "config.json").read_text())
    key = "num_experts" if "num_experts" in config else "num_local_experts"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({**config, key: 8}))
    capsys.readouterr()
    code = _mg_to_hf(tmp_path / "mg", tmp_path / "hf", "--hf-config-dir", str(tmp_path / "cfg"))
    assert code == 2 and not (tmp_path / "hf").exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the checkpoint has 4 experts per layer" in err and "num_experts=8" in err


def _module_with(state: dict[str, torch.Tensor], config) -> torch.nn.Module:
    """A module tree holding zero parameters under ``state``'s names: the grouped model's state
    dict (GroupedMLP itself needs the grouped_gemm kernel, absent on CPU)."""
    root = torch.nn.Module()
    for name, tensor in state.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, torch.nn.Parameter(torch.zeros_like(tensor)))
    root.config = config
    return root


def test_load_rank_packs_a_per_expert_checkpoint_into_a_grouped_model(
    tiny_models, tmp_path, caplog
):
    from mindspeed_rl.checkpoint.hf_to_mcore import SafetensorsSource
    from mindspeed_rl.checkpoint.training_state import load_model
    from mindspeed_rl.models.gpt_builder import transformer_config

    assert _hf_to_mg(tiny_models["qwen3_moe"], tmp_path / "mg", 1, 1) == 0
    model, vocab = _tiny_moe(grouped=True)
    model = model.model_copy(update={"padded_vocab_size": 160})
    expected = dict(
        iter_mcore_shard(WeightMapping(model, vocab), SafetensorsSource(tiny_models["qwen3_moe"]))
    )
    module = _module_with(expected, transformer_config(model))
    with caplog.at_level(logging.INFO, logger="mindspeed_rl.checkpoint.expert_layout"):
        load_model(module, tmp_path / "mg", "release", mcore_layout.ShardLayout(), (0, 0, 0))
    lines = [r.getMessage() for r in caplog.records if "converted on load" in r.getMessage()]
    assert len(lines) == 1 and "per-expert" in lines[0] and "grouped" in lines[0]
    loaded = module.state_dict()
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name


# --- grouped checkpoint -> per-expert GPTModel on CPU (load_model) -> logits vs transformers ----


def _load_grouped_and_forward(rank: int, world_size: int, root, model, tokens):
    from megatron.core import parallel_state as ps

    from mindspeed_rl.checkpoint.logits_check import causal_mask
    from mindspeed_rl.checkpoint.training_state import load_model
    from mindspeed_rl.models.gpt_builder import build_gpt_model, with_sequential_experts
    from mindspeed_rl.platform.distributed import destroy_distributed, init_distributed

    layout = ParallelLayout(1, 1, 2)
    init_distributed(
        layout, rank=rank, world_size=world_size, master_port=int(os.environ["MASTER_PORT"])
    )
    try:
        # CPU: the builder picks the allgather dispatcher (models/moe_dispatch.py)
        gpt = build_gpt_model(with_sequential_experts(model), layout)
        position = (0, 0, ps.get_expert_model_parallel_rank())
        load_model(gpt, root, "release", mcore_layout.ShardLayout(1, 1, 2), position)
        gpt.eval()
        batch, seq = tokens.shape
        positions = torch.arange(seq).unsqueeze(0).expand(batch, seq)
        with torch.no_grad():
            return gpt(tokens, positions, causal_mask(batch, seq)).float()
    finally:
        destroy_distributed()


@pytest.mark.slow
def test_grouped_ep2_checkpoint_runs_as_per_expert_model_with_transformers_logits(
    tiny_models, tmp_path
):
    from mindspeed_rl.checkpoint.logits_check import hf_logits
    from mindspeed_rl.checkpoint.mcore_to_hf import plan_mcore_to_hf
    from tests.distributed_harness import run_distributed

    source = tiny_models["qwen3_moe"]
    assert _hf_to_mg(source, tmp_path / "mg", 1, 2, "--moe-grouped-gemm") == 0
    model = plan_mcore_to_hf(tmp_path / "mg").mapping.model
    assert model.moe_grouped_gemm
    tokens = tiny_hf.prompts()
    results = run_distributed(_load_grouped_and_forward, 2, tmp_path / "mg", model, tokens)
    reference = hf_logits(source, tokens)
    assert reference.abs().max() > 1.0  # O(1) logits: a mis-laid expert cannot hide
    for logits in results:  # each EP rank computes the full logits of the same tokens
        diff = (logits[..., : tiny_hf.VOCAB] - reference).abs().max().item()
        assert diff <= 1e-4, f"max abs diff {diff:.3e}"
