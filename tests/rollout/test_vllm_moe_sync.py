"""Qwen3-MoE weight sync into the real vLLM engine on CPU (issue 16): a tiny Qwen3-30B-A3B-shaped
model converted HF -> mcore with the recipe's grouped-GEMM expert layout, an actor at TP 2, EP 2
with sequence parallelism (4 gloo ranks), synced into vLLM engines of infer TP 2 with expert
parallelism; vLLM's log-probs equal the actor's and transformers' after the converted weights'
push and after two optimizer steps' push, and a stale engine does not."""

import pytest

from tests.distributed_harness import run_distributed
from tests.rollout import vllm_case, vllm_moe_sync_case
from tests.workers import moe_case

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOLERANCE = 1e-4


@pytest.mark.parametrize("extend", [False, True], ids=["default", "moe_tp_extend_ep"])
def test_qwen3_moe_ep2_sp_actor_syncs_into_vllm(tmp_path, extend):
    """``moe_tp_extend_ep``: the actor holds whole experts over TP x EP = 4 ranks (expert TP 1)."""
    vllm_case.require_vllm()
    hf_dir = vllm_case.build_model_dir(tmp_path / "hf", seed=0, moe=True)
    mg_dir = tmp_path / "mg"
    assert moe_case.convert_grouped(hf_dir, mg_dir, extend) == 0

    results = run_distributed(vllm_moe_sync_case.run, 4, hf_dir, mg_dir, extend)
    for rank in results:
        assert rank["dispatcher"] == "allgather"
        assert rank["loaded"] == rank["n_pairs"] and rank["version"] == 2
        for push in ("converted", "trained"):
            scores = rank[push]
            assert scores["tokens"] > 0, push
            assert scores["actor_diff"] <= TOLERANCE, (push, scores)
            assert scores["hf_diff"] <= TOLERANCE, (push, scores)
        # the trained actor no longer matches the engine it has not synced into
        assert rank["stale"]["actor_diff"] > 100 * TOLERANCE, rank["stale"]
