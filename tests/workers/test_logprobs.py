"""Log-probs, entropy and their gradients from TP=2 vocab slices equal the full-vocabulary math."""

import pytest

from tests.distributed_harness import run_distributed
from tests.workers import logprobs_case

pytestmark = pytest.mark.slow


def test_vocab_parallel_log_probs_entropy_and_grads_match_full_vocab():
    for rank_result in run_distributed(logprobs_case.run, 2):
        for temperature, diffs in rank_result.items():
            assert diffs["lp"] < 1e-5, (temperature, diffs)
            assert diffs["entropy"] < 1e-5, (temperature, diffs)
            assert diffs["grad"] < 1e-5, (temperature, diffs)
