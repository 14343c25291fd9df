"""KL estimators: hand values, the Ascend aliases, the k3 clamps."""

from __future__ import annotations

import math

import pytest
import torch

from mindspeed_rl.algorithms.kl import K3_VALUE_BOUND, kl_penalty

LOGP = torch.tensor([[-1.0, -2.0, -0.5]])
REF = torch.tensor([[-1.5, -1.0, -0.5]])  # d = logp - ref = [0.5, -1.0, 0.0]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("k1", [0.5, -1.0, 0.0]),
        ("abs", [0.5, 1.0, 0.0]),
        ("k2", [0.125, 0.5, 0.0]),
        # k3 = exp(-d) - 1 + d
        ("k3", [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0, 0.0]),
    ],
)
def test_estimators(kind, expected):
    assert kl_penalty(LOGP, REF, kind)[0].tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("ascend", "ours"), [("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3")])
def test_ascend_names_map_to_estimators(ascend, ours):
    assert torch.equal(kl_penalty(LOGP, REF, ascend), kl_penalty(LOGP, REF, ours))


def test_k3_is_clamped_and_finite_for_extreme_log_ratios():
    logp = torch.tensor([[-100.0, 0.0]])
    ref = torch.tensor([[0.0, -100.0]])
    out = kl_penalty(logp, ref, "low_var_kl")
    # d = -100: exp(100) would overflow the estimate; it is clamped to the value bound.
    assert out[0, 0].item() == K3_VALUE_BOUND
    # d = +100: exp(-20) - 1 + 20 (log-ratio bound 20) ~ 19, then clamped to 10.
    assert out[0, 1].item() == K3_VALUE_BOUND


def test_gradients_flow_to_the_policy_only():
    logp = LOGP.clone().requires_grad_(True)
    kl_penalty(logp, REF, "k2").sum().backward()
    assert logp.grad.tolist() == [[0.5, -1.0, 0.0]]  # d/d logp of d^2/2 is d


def test_unknown_estimator_lists_the_valid_ones():
    with pytest.raises(ValueError, match="kl_penalty: unknown estimator 'k4'; valid: k1, k2"):
        kl_penalty(LOGP, REF, "k4")
