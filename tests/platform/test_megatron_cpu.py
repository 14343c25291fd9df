"""Megatron-core trains on CPU over gloo in TP, PP and DP layouts with identical losses."""

import pytest

from tests.distributed_harness import run_distributed
from tests.platform import megatron_train_case as case

pytestmark = [pytest.mark.slow, pytest.mark.megatron_smoke]


def test_layouts_match_single_process_losses():
    reference = run_distributed(case.run_reference, 1)[0]
    losses = reference["losses"]
    assert len(losses) == case.STEPS
    assert losses[-1] < losses[0], "the reference run should learn something in 3 steps"
    results = run_distributed(case.run_layouts, 2, reference["initial"])
    for rank_result in results:
        for layout, layout_losses in rank_result.items():
            assert layout_losses == pytest.approx(losses, abs=1e-5, rel=0), layout
