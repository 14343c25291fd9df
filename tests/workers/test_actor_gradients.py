"""At the Megatron level the update's gradient does not depend on how a mini-batch is split."""

import pytest
import torch

from tests.distributed_harness import run_distributed
from tests.workers import actor_case

pytestmark = [pytest.mark.slow, pytest.mark.megatron_smoke]


def _max_rel(a: dict, b: dict) -> float:
    worst = 0.0
    for name in a:
        scale = b[name].abs().max().clamp(min=1e-12)
        worst = max(worst, float((a[name] - b[name]).abs().max() / scale))
    return worst


def test_gradient_is_invariant_to_micro_batch_size_and_data_parallel_size():
    dp1 = run_distributed(actor_case.run_dp1, 1)[0]
    dp2 = run_distributed(actor_case.run_dp2, 2)
    reference = dp1["whole"]["grads"]
    assert sum(float(g.abs().sum()) for g in reference.values()) > 0
    assert _max_rel(dp1["mbs1"]["grads"], reference) <= 1e-5
    assert _max_rel(dp1["uneven"]["grads"], reference) <= 1e-5
    for rank in dp2:
        assert _max_rel(rank["whole"]["grads"], reference) <= 1e-5
        assert _max_rel(rank["mbs1"]["grads"], reference) <= 1e-5
        assert _max_rel(rank["planned"]["grads"], reference) <= 1e-5
    # metrics are mini-batch values whatever the split
    for key in ("pg_loss", "pg_clipfrac", "entropy"):
        value = dp1["whole"]["metrics"][key]
        assert dp1["mbs1"]["metrics"][key] == pytest.approx(value, rel=1e-5)
        assert dp2[0]["mbs1"]["metrics"][key] == pytest.approx(value, rel=1e-5)
    assert 0 < dp1["whole"]["metrics"]["pg_clipfrac"] < 1, "the data should exercise clipping"
    torch.testing.assert_close(dp2[0]["mbs1"]["grads"], dp2[1]["mbs1"]["grads"])


def test_offload_and_reload_keep_the_training_state():
    result = run_distributed(actor_case.run_offload, 1)[0]
    assert result["freed"] and all(size == 0 for size in result["freed"])
    assert all(size > 0 for size in result["grad_restored"])
    assert result["same"] and result["step_ok"]


def test_bf16_actor_keeps_loaded_weights_without_optimizer_state():
    result = run_distributed(actor_case.run_bf16_weights_survive_a_step, 1)[0]
    assert result["ok"] and result["kept"]
