"""A TP=2 Megatron actor synced into the HF rollout engine: same logits, same log-probs."""

import pytest

from tests.distributed_harness import run_distributed
from tests.workers import weight_sync_case

pytestmark = [pytest.mark.slow, pytest.mark.megatron_smoke]


def test_hf_engine_follows_the_tp2_actor():
    for result in run_distributed(weight_sync_case.run, 2):
        assert result["before"] > 1e-2, "the engine must start from other weights"
        assert result["loaded"] == result["n_hf_params"]
        assert result["synced"] <= 1e-4
        assert result["logprob_mean_abs_diff"] <= 1e-4
        assert result["step_ok"]
        assert result["direction"] > 0, "rows with positive advantages must gain log-prob"
        assert result["stale"] > 1e-4, "the optimizer step must change the logits"
        assert result["resynced"] <= 1e-4
        assert result["version"] == 2
        assert result["shared_memory"], "2 gloo ranks on one host gather through shared memory"
        assert result["paths_equal"], "the shared-memory block path must load the same bytes"
        assert result["padded_vocab_diff"] <= 1e-4, "padding rows must not enter the softmax"
        assert result["unmasked_padded_vocab_diff"] > 1e-2, "the padding rows must matter here"
