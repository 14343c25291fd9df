"""TP 2 with sequence parallelism, and with each activation-recompute setting, equals TP 2
without them (fp32, 3 optimizer steps over gloo); the SP actor syncs into the HF engine."""

import pytest

from tests.distributed_harness import run_distributed
from tests.workers import parallel_settings_case

pytestmark = [pytest.mark.slow, pytest.mark.megatron_smoke]


def test_sequence_parallelism_and_recompute_change_nothing_but_memory():
    result = run_distributed(parallel_settings_case.run, 2)[0]
    assert result["odd_length"], "rows of odd length exercise the sequence-parallel padding"
    base = result["baseline"]
    assert base["grad_scale"] > 0
    for name, settings in parallel_settings_case.VARIANTS.items():
        case = result[name]
        assert case["config"] == settings, (name, case["config"])
        assert case["loss_diff"] <= 1e-5, (name, case["loss_diff"])
        assert case["grad_rel"] <= 1e-5, (name, case["grad_rel"])
    # the settings are not no-ops: SP norms reduce their gradients over TP, recompute re-runs
    assert result["sequence_parallel"]["norms_marked"] and not base["norms_marked"]
    assert base["layer_calls"] == 1 and base["attention_calls"] == 1
    assert result["full_uniform"]["layer_calls"] == 2
    assert result["full_block"]["layer_calls"] == 2
    assert result["selective"]["layer_calls"] == 1
    assert result["selective"]["attention_calls"] == 2
    assert result["sync_logprob_diff"] <= 1e-4
