"""The KL coefficient controller, the KL penalty on rewards, and the KL loss's gradients for
every estimator (hand-derived values, docs/kl.md)."""

from __future__ import annotations

import math

import pytest
import torch

from mindspeed_rl.algorithms.kl_control import KLController, batch_kl, kl_penalised_scores
from mindspeed_rl.algorithms.policy_loss import policy_loss


def test_fixed_controller_keeps_its_coefficient():
    ctrl = KLController(0.05)
    ctrl.update(10.0, 1000)
    assert ctrl.value == 0.05


def test_adaptive_controller_moves_by_the_bounded_proportional_error():
    ctrl = KLController(0.1, "adaptive", target=0.05, horizon=100)
    ctrl.update(0.1, 10)  # error clipped from +1.0 to +0.2: x (1 + 0.2 * 10 / 100)
    assert ctrl.value == pytest.approx(0.102)
    ctrl.update(0.045, 50)  # error -0.1: x (1 - 0.1 * 50 / 100)
    assert ctrl.value == pytest.approx(0.102 * 0.95)
    restored = KLController(0.1, "adaptive", target=0.05, horizon=100)
    restored.load_state_dict(ctrl.state_dict())
    assert restored.value == ctrl.value


def test_adaptive_controller_without_target_is_refused():
    with pytest.raises(ValueError, match="adaptive needs kl_target and kl_horizon"):
        KLController(0.1, "adaptive", target=None, horizon=10)


LOGP = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -1.0], [-1.0, -1.0, -1.0]])
REF = torch.tensor([[-1.5, -1.0, -0.5], [-0.3, -0.2, -3.0], [-9.0, -9.0, -9.0]])
# d = logp - ref: [0.5, -1, 0], [0, -0.5, 2], row 2 has no response tokens
MASK = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])


def test_kl_in_reward_subtracts_the_summed_token_kl():
    scores = torch.tensor([1.0, 0.0, 1.0])
    out, metrics = kl_penalised_scores(scores, LOGP, REF, MASK, "kl", coef=0.1)
    # k1 sums over masked tokens: 0.5 - 1 = -0.5; 0 - 0.5 + 2 = 1.5; nothing
    assert out.tolist() == pytest.approx([1.0 + 0.05, 0.0 - 0.15, 1.0])
    assert metrics["rewards/kl_penalty"] == pytest.approx((-0.05 + 0.15 + 0.0) / 3)
    # mean of token-means over responses with tokens: (-0.25 + 0.5) / 2
    assert metrics["rewards/kl"] == pytest.approx(0.125)


def test_batch_kl_of_an_all_masked_batch_is_zero():
    assert batch_kl(torch.zeros(2, 3), torch.zeros(2, 3)) == 0.0


def _k3_grad(d: float) -> float:
    # k3 = exp(-d) - 1 + d; inside the clamps its derivative in log p is 1 - exp(-d)
    return 1.0 - math.exp(-d)


@pytest.mark.parametrize(
    ("kind", "value", "grad"),
    [
        ("kl", lambda d: d, lambda d: 1.0),
        ("abs", abs, lambda d: math.copysign(1.0, d) if d else 0.0),
        ("mse", lambda d: 0.5 * d * d, lambda d: d),
        ("low_var_kl", lambda d: math.exp(-d) - 1 + d, _k3_grad),
    ],
)
def test_kl_loss_value_and_gradient_per_estimator(kind, value, grad):
    logp = LOGP.clone().requires_grad_(True)
    coef = 0.3
    tokens = int(MASK.sum())
    out = policy_loss(
        logp, logp.detach(), torch.zeros_like(LOGP), MASK, loss_agg_mode="token-mean",
        global_denominator=float(tokens), clip_ratio_low=0.2, clip_ratio_high=0.28,
        use_kl_loss=True, ref_log_probs=REF, kl_penalty_kind=kind, kl_coef=coef,
    )  # fmt: skip
    out.loss.backward()
    d = (LOGP - REF).tolist()
    m = MASK.tolist()
    expected_kl = sum(value(d[i][j]) for i in range(3) for j in range(3) if m[i][j]) / tokens
    assert out.metrics["kl"].item() == pytest.approx(expected_kl, rel=1e-6)
    assert out.metrics["kl_loss"].item() == pytest.approx(coef * expected_kl, rel=1e-6)
    expected_grad = [
        [coef * grad(d[i][j]) / tokens if m[i][j] else 0.0 for j in range(3)] for i in range(3)
    ]
    # zero advantages: the policy term contributes no gradient, the KL term all of it
    assert logp.grad.tolist() == [pytest.approx(row, abs=1e-7) for row in expected_grad]


def test_low_var_kl_clamps_at_the_log_ratio_extremes_with_no_gradient():
    logp = torch.tensor([[-30.0, 0.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[0.0, -30.0, -1.0]])
    out = policy_loss(
        logp, logp.detach(), torch.zeros(1, 3), torch.ones(1, 3), loss_agg_mode="token-mean",
        global_denominator=3.0, clip_ratio_low=0.2, clip_ratio_high=0.28, use_kl_loss=True,
        ref_log_probs=ref, kl_penalty_kind="low_var_kl", kl_coef=1.0,
    )  # fmt: skip
    out.loss.backward()
    # d = -30: exp(30) is clamped to the value bound 10; d = +30: 29 - 1 + e^-20 clamped to 10
    assert out.metrics["kl"].item() == pytest.approx((10.0 + 10.0 + 0.0) / 3)
    assert logp.grad.tolist() == [[0.0, 0.0, 0.0]]
