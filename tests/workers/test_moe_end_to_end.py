"""Qwen3-MoE end to end on CPU over gloo (issue 16, item 4): a tiny Qwen3-30B-A3B-shaped model
converted HF -> mcore with the recipe's grouped-GEMM expert layout at TP 2, EP 2, built with
sequence parallelism (4 ranks), its converted log-probs equal to transformers', trained two steps,
synced into the HF engine (fused experts of transformers 5) with the actor's log-probs, saved and
exported back to Hugging Face with exactly the synced tensors."""

import pytest
import torch

from cli.convert_ckpt import main
from tests.checkpoint.conftest import read_safetensors
from tests.distributed_harness import run_distributed
from tests.models import tiny_hf
from tests.workers import moe_case

pytestmark = pytest.mark.slow


def test_qwen3_moe_tp2_ep2_sp_converts_trains_syncs_and_exports(tmp_path):
    _converts_trains_syncs_and_exports(tmp_path, extend=False)


@pytest.mark.megatron_smoke
def test_moe_tp_extend_ep_tp2_ep2_converts_trains_syncs_and_exports(tmp_path):
    """MindSpeed's moe_tp_extend_ep layout (the Ascend 30B-A3B recipe's): 8 experts, 2 whole ones
    per rank over TP x EP = 4 ranks; megatron-core built with expert TP 1 and EP 4."""
    results = _converts_trains_syncs_and_exports(tmp_path, extend=True, num_experts=8)
    for rank, result in enumerate(results):
        tp_rank, ep_rank = rank % 2, rank // 2
        assert result["position"] == (tp_rank, 0, ep_rank)
        assert result["expert_sizes"] == (1, 4)
        first = 2 * (2 * ep_rank + tp_rank)  # MindSpeed's BaseMoELayer offset
        assert result["local_expert_indices"] == [first, first + 1]


def _converts_trains_syncs_and_exports(tmp_path, extend: bool, **hf) -> list[dict]:
    hf_dir = tiny_hf.save_tiny_model("qwen3_moe", tmp_path / "hf", **hf)
    mg_dir, save_dir, export_dir = tmp_path / "mg", tmp_path / "trained", tmp_path / "export"
    assert moe_case.convert_grouped(hf_dir, mg_dir, extend) == 0

    results = run_distributed(moe_case.run, 4, hf_dir, mg_dir, save_dir, 2, 2, extend)
    for rank in results:
        assert rank["dispatcher"] == "allgather" and rank["sequence_parallel"]
        assert rank["loaded_diff"] <= 1e-4, rank["loaded_diff"]
        assert all(torch.isfinite(torch.tensor(rank["losses"])))
        assert rank["trained_moved"] > 1e-3, "training changed the policy"
        assert rank["sync_diff"] <= 1e-4, rank["sync_diff"]

    assert main([
        "--load-model-type", "mg", "--save-model-type", "hf", "--load-dir", str(save_dir),
        "--save-dir", str(export_dir),
    ]) == 0  # fmt: skip
    exported, synced = read_safetensors(export_dir), results[0]["synced"]
    assert exported.keys() == synced.keys()
    assert any(".mlp.experts.3.down_proj.weight" in name for name in exported)
    for name, tensor in synced.items():
        assert torch.equal(exported[name], tensor.to(exported[name].dtype)), name
    return results
