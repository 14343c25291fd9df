"""The actor loss: clip-higher, clip edges, dual clip, TIS, entropy, KL, metrics (hand values)."""

from __future__ import annotations

import math

import pytest
import torch

from mindspeed_rl.algorithms.policy_loss import (
    clip_bounds,
    clipped_surrogate,
    policy_loss,
    tis_weights,
)

LOW, HIGH = 0.2, 0.28


def _f32_after(x: float, direction: float) -> float:
    return torch.nextafter(torch.tensor(x), torch.tensor(direction)).item()


def test_clip_bounds_follow_clip_higher_enable():
    assert clip_bounds(0.2, False, 0.1, 0.5) == (0.2, 0.2)
    assert clip_bounds(0.2, True, 0.2, 0.28) == (0.2, 0.28)
    with pytest.raises(ValueError, match="clip_ratio_low / clip_ratio_high"):
        clip_bounds(0.2, True, 1.0, 0.28)
    with pytest.raises(ValueError, match="rl_config.clip_ratio:"):
        clip_bounds(-0.1, False, 0.2, 0.28)


def test_ratio_exactly_at_each_clip_edge_is_not_clipped():
    upper, lower = torch.tensor(1 + HIGH).item(), torch.tensor(1 - LOW).item()
    ratio = torch.tensor(
        [upper, _f32_after(upper, 2.0), lower, _f32_after(lower, 0.0), 1.0], requires_grad=True
    )
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0])
    out = clipped_surrogate(ratio, advantages, LOW, HIGH)
    out.loss.sum().backward()
    assert out.loss.tolist() == pytest.approx([-upper, -upper, lower, lower, -2.0])
    # On the edge the full gradient -A flows; one float32 step beyond, none does.
    assert ratio.grad.tolist() == [-1.0, 0.0, 1.0, 0.0, -2.0]
    assert out.clipped_high.tolist() == [False, True, False, False, False]
    assert out.clipped_low.tolist() == [False, False, False, True, False]


def test_clip_higher_is_asymmetric():
    # Positive advantage, ratio 1.25: inside [0.8, 1.28] so not clipped with clip-higher,
    # but clipped at 1.2 with the symmetric 0.2.
    ratio = torch.tensor([1.25])
    advantages = torch.tensor([1.0])
    assert clipped_surrogate(ratio, advantages, 0.2, 0.28).loss.item() == pytest.approx(-1.25)
    assert clipped_surrogate(ratio, advantages, 0.2, 0.2).loss.item() == pytest.approx(-1.2)


def test_dual_clip_bounds_negative_advantage_losses():
    ratio = torch.tensor([2.0, 3.0, 4.0, 4.0], requires_grad=True)
    advantages = torch.tensor([-1.0, -1.0, -1.0, 1.0])
    out = clipped_surrogate(ratio, advantages, LOW, HIGH, clip_ratio_c=3.0)
    out.loss.sum().backward()
    assert out.loss.tolist() == pytest.approx([2.0, 3.0, 3.0, -(1 + HIGH)])
    assert ratio.grad.tolist() == [1.0, 1.0, 0.0, 0.0]  # at r == c the gradient still flows
    assert out.clipped_dual.tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        clipped_surrogate(ratio, advantages, LOW, HIGH, clip_ratio_c=1.0)


def test_tis_weights_are_truncated_and_detached():
    old = torch.zeros(4, requires_grad=True)
    rollout = -torch.tensor([0.0, math.log(2.0), math.log(10.0), math.log(0.5)])
    weights = tis_weights(old, rollout, 5.0)
    assert weights.tolist() == pytest.approx([1.0, 2.0, 5.0, 0.5])
    assert not weights.requires_grad


# One row of four tokens: ratios 1.5, 0.5, 1.0, 1.1 against advantages 1, -1, 1, -1.
RATIOS = [1.5, 0.5, 1.0, 1.1]
ADVANTAGES = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
OLD = torch.zeros(1, 4)
MASK = torch.ones(1, 4)
ENTROPY = torch.tensor([[1.0, 2.0, 3.0, 4.0]])


def _log_probs() -> torch.Tensor:
    return torch.tensor([[math.log(r) for r in RATIOS]], requires_grad=True)


def test_full_loss_and_metrics_by_hand():
    log_probs = _log_probs()
    out = policy_loss(
        log_probs,
        OLD,
        ADVANTAGES,
        MASK,
        loss_agg_mode="token-mean",
        global_denominator=4,
        clip_ratio_low=LOW,
        clip_ratio_high=HIGH,
        entropy=ENTROPY,
        entropy_coeff=0.1,
        use_kl_loss=True,
        ref_log_probs=torch.zeros(1, 4),
        kl_penalty_kind="kl",
        kl_coef=0.5,
    )
    # Per-token pg: max(-A r, -A clip(r)) = [-1.28 (clipped high), 0.8 (clipped low), -1, 1.1].
    pg = (-1.28 + 0.8 - 1.0 + 1.1) / 4
    log_ratio_mean = math.log(1.5 * 0.5 * 1.0 * 1.1) / 4
    m = {k: v.item() for k, v in out.metrics.items()}
    assert m["pg_loss"] == pytest.approx(pg)
    assert (
        m["pg_clipfrac"] == 0.5 and m["pg_clipfrac_high"] == 0.25 and m["pg_clipfrac_low"] == 0.25
    )
    assert m["ppo_kl"] == pytest.approx(-log_ratio_mean)
    assert m["entropy"] == pytest.approx(2.5)
    assert m["kl"] == pytest.approx(log_ratio_mean)  # k1 against a reference of log-prob 0
    assert m["kl_loss"] == pytest.approx(0.5 * log_ratio_mean)
    assert "pg_clipfrac_dual" not in m and "tis_weight" not in m
    assert out.loss.item() == pytest.approx(pg - 0.1 * 2.5 + 0.5 * log_ratio_mean)
    out.loss.backward()
    # d pg / d log p = -A r where not clipped, 0 where clipped; plus kl_coef * 1 / 4 from k1.
    assert log_probs.grad.tolist()[0] == pytest.approx([0.125, 0.125, -0.25 + 0.125, 0.275 + 0.125])


def test_tis_weights_the_policy_gradient_terms():
    rollout = -torch.tensor([[0.0, math.log(2.0), math.log(10.0), math.log(0.5)]])
    out = policy_loss(
        _log_probs(),
        OLD,
        ADVANTAGES,
        MASK,
        loss_agg_mode="token-mean",
        global_denominator=4,
        clip_ratio_low=LOW,
        clip_ratio_high=HIGH,
        rollout_log_probs=rollout,
        tis_imp_ratio_cap=5.0,
    )
    assert out.loss.item() == pytest.approx((-1.28 * 1 + 0.8 * 2 - 1.0 * 5 + 1.1 * 0.5) / 4)
    assert out.metrics["tis_weight"].item() == pytest.approx((1 + 2 + 5 + 0.5) / 4)
    assert out.metrics["tis_capped_frac"].item() == pytest.approx(0.25)


def test_on_policy_ratio_is_one_and_gradient_is_minus_advantage_over_tokens():
    log_probs = torch.tensor([[-0.3, -1.2, -2.0], [-0.1, -0.7, -5.0]], requires_grad=True)
    advantages = torch.tensor([[0.5, 0.5, 0.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    out = policy_loss(
        log_probs,
        log_probs.detach(),
        advantages,
        mask,
        loss_agg_mode="token-mean",
        global_denominator=5,
        clip_ratio_low=LOW,
        clip_ratio_high=HIGH,
        clip_ratio_c=3.0,
    )
    out.loss.backward()
    assert out.loss.item() == pytest.approx(-(0.5 + 0.5 - 3.0) / 5)
    assert torch.allclose(log_probs.grad, torch.tensor([[-0.1, -0.1, 0.0], [0.2, 0.2, 0.2]]))
    assert out.metrics["pg_clipfrac"].item() == 0.0 and out.metrics["ppo_kl"].item() == 0.0
    assert out.metrics["pg_clipfrac_dual"].item() == 0.0


def test_missing_inputs_for_enabled_terms_are_config_errors():
    common = dict(
        loss_agg_mode="token-mean", global_denominator=4, clip_ratio_low=LOW, clip_ratio_high=HIGH
    )
    with pytest.raises(ValueError, match="tis_imp_ratio_cap=2.0 needs the rollout engine"):
        policy_loss(_log_probs(), OLD, ADVANTAGES, MASK, tis_imp_ratio_cap=2.0, **common)
    with pytest.raises(ValueError, match="use_kl_loss is true but no ref_log_probs"):
        policy_loss(_log_probs(), OLD, ADVANTAGES, MASK, use_kl_loss=True, **common)


# Two rows: row 0 as above (4 tokens: clipped high at 1.5, low at 0.5); row 1 has 3 valid tokens
# of ratios 1.5, 1.0, 1.0 and advantage 1 (clipped high once) and a padded fourth.
TWO_ROWS = dict(
    log_probs=torch.tensor([[math.log(r) for r in RATIOS], [math.log(1.5), 0.0, 0.0, 0.0]]),
    advantages=torch.tensor([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, 1.0, 1.0]]),
    mask=torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]]),
    # TIS weights exp(0 - rollout) capped at 2: tokens (0, 1) and (1, 2) reach the cap (and the
    # padded (1, 3), which counts nowhere)
    rollout=-torch.tensor([[0.0, math.log(3.0), 0.0, 0.0], [0.0, 0.0, math.log(3.0), 9.0]]),
)
# per-token pg after dual clip at c = 1.05 (row 0's last token: 1.1 > 1.05) and TIS weights
ROW_SUMS = (-1.28 + 0.8 * 2 - 1.0 + 1.05, -1.28 - 1.0 - 1.0 * 2)
LOSS_BY_MODE = {
    "token-mean": (sum(ROW_SUMS) / 7, 7),
    "seq-mean-token-mean": ((ROW_SUMS[0] / 4 + ROW_SUMS[1] / 3) / 2, 2),
    "seq-mean-token-sum": (sum(ROW_SUMS) / 2, 2),
}


@pytest.mark.parametrize("mode", sorted(LOSS_BY_MODE))
def test_fractions_are_token_means_whatever_the_loss_aggregation(mode):
    expected_loss, denominator = LOSS_BY_MODE[mode]
    out = policy_loss(
        TWO_ROWS["log_probs"], torch.zeros(2, 4), TWO_ROWS["advantages"], TWO_ROWS["mask"],
        loss_agg_mode=mode, global_denominator=denominator, global_tokens=7,
        clip_ratio_low=LOW, clip_ratio_high=HIGH, clip_ratio_c=1.05,
        rollout_log_probs=TWO_ROWS["rollout"], tis_imp_ratio_cap=2.0,
    )  # fmt: skip
    m = {k: v.item() for k, v in out.metrics.items()}
    assert out.loss.item() == pytest.approx(expected_loss)  # the loss follows the mode
    # fractions of the 7 valid tokens (seq-mean-token-sum used to give 3 / 2 sequences = 1.5)
    assert m["pg_clipfrac"] == pytest.approx(3 / 7)
    assert m["pg_clipfrac_high"] == pytest.approx(2 / 7)
    assert m["pg_clipfrac_low"] == pytest.approx(1 / 7)
    assert m["pg_clipfrac_dual"] == pytest.approx(1 / 7)
    assert m["tis_capped_frac"] == pytest.approx(2 / 7)
    assert m["tis_weight"] == pytest.approx((1 + 2 + 1 + 1 + 1 + 1 + 2) / 7)
    log_ratios = [math.log(r) for r in RATIOS] + [math.log(1.5), 0.0, 0.0]
    assert m["ppo_kl"] == pytest.approx(-sum(log_ratios) / 7)


def test_seq_mean_modes_need_the_token_count():
    with pytest.raises(ValueError, match="pass global_tokens"):
        policy_loss(
            _log_probs(), OLD, ADVANTAGES, MASK, loss_agg_mode="seq-mean-token-sum",
            global_denominator=1, clip_ratio_low=LOW, clip_ratio_high=HIGH,
        )  # fmt: skip
