"""Weight sync from a real Megatron actor into a real vLLM engine of infer TP 2 (2 gloo processes,
external_launcher), at actor TP 1 and TP 2: after each push vLLM runs the actor's weights."""

import pytest

from tests.distributed_harness import run_distributed
from tests.rollout import vllm_case, vllm_sync_case

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    vllm_case.require_vllm()
    return str(vllm_case.build_model_dir(tmp_path_factory.mktemp("sync"), seed=0))


@pytest.mark.parametrize("actor_tp", [1, 2])
def test_vllm_tp2_follows_the_actor(model_dir, actor_tp):
    results = run_distributed(vllm_sync_case.run, 2, model_dir, actor_tp)
    for result in results:
        assert result["loaded"] == result["n_pairs"] and result["version"] == 2
        for push in ("first", "second"):
            assert result[push]["greedy_equal"], push
            assert result[push]["log_prob_diff"] <= 1e-4, (push, result[push]["log_prob_diff"])
        assert result["first"]["rows"] != result["second"]["rows"]
    assert results[0]["second"]["rows"] == results[1]["second"]["rows"]  # TP peers agree
