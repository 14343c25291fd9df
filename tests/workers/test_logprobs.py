"""Log-probs and entropy of the response positions (padded and packed rows, a row without a
response), from the whole vocabulary at TP 1 and from TP 2 vocab slices, equal a plain
full-vocabulary fp32 computation in value and gradient; entropy has a graph only when asked."""

import pytest

from tests.distributed_harness import run_distributed
from tests.workers import logprobs_case

TOLERANCE = 1e-5


def _check(results: dict) -> None:
    for key, diffs in results.items():
        if key == "chunked":
            assert diffs < 1e-6
            continue
        _, _, (with_entropy, entropy_grad) = key
        assert diffs["lp"] < TOLERANCE, (key, diffs)
        assert diffs["entropy"] < TOLERANCE, (key, diffs)
        assert diffs["grad_scale"] > 0.1, key
        assert diffs["grad"] < TOLERANCE, (key, diffs)
        assert diffs["entropy_requires_grad"] == (with_entropy and entropy_grad), key


def test_tp1_matches_the_full_vocabulary():
    _check(logprobs_case.scenarios(rank=0, world=1))


@pytest.mark.slow
def test_tp2_vocab_slices_match_the_full_vocabulary():
    for rank_result in run_distributed(logprobs_case.run, 2):
        _check(rank_result)


@pytest.mark.slow
def test_context_parallel_ranks_score_their_response_positions_only_and_match_unsplit():
    for rank_result in run_distributed(logprobs_case.run_context_parallel, 2):
        for entropy_grad, diffs in rank_result.items():
            assert diffs["lp"] < TOLERANCE and diffs["entropy"] < TOLERANCE, (entropy_grad, diffs)
            assert diffs["grad_scale"] > 0.1 and diffs["grad"] < TOLERANCE, (entropy_grad, diffs)
            # one log-softmax call, of this rank's response positions only (not its prompt or
            # padding positions)
            assert diffs["scored"] == [diffs["expected_scored"]], (entropy_grad, diffs)
            assert 0 < diffs["expected_scored"] < diffs["local_positions"], diffs
