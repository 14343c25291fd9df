"""The DAPO actor loss: clipped surrogate with clip-higher, optional dual clip, TIS, entropy, KL.

    ratio   r = exp(log pi - log pi_old)                                    per token
    pg      = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))               PPO, Schulman 2017
    dual    = min(pg, -A c) where A < 0                                      Ye et al. 2020
    tis     = pg * min(exp(log pi_old - log pi_rollout), cap)                Yao et al. 2025
    loss    = agg(tis) - entropy_coeff * agg(entropy) + kl_coef * agg(kl)

Clip-higher (DAPO, Yu et al. 2025, arXiv:2503.14476, sec. 3.1) sets eps_high > eps_low (0.28 vs
0.2) so low-probability tokens can gain probability and entropy does not collapse. Dual clip bounds
the loss of a negative-advantage token whose ratio exploded. Truncated importance sampling (TIS)
corrects for the rollout engine's log-probs differing from the trainer's (different kernels,
precision): the policy gradient is an expectation under the rollout policy, weighted by the
detached ratio pi_old / pi_rollout, truncated at ``tis_imp_ratio_cap``.

Every term is aggregated with ``loss_aggregation.aggregate_loss`` and the same global denominator,
so the loss of a mini-batch split into micro-batches and data-parallel ranks has exactly the
unsplit gradient. The metrics of loss terms (pg_loss, entropy, kl) are aggregated the same way.
Fractions and per-token diagnostics (the clip fractions, tis_capped_frac, ppo_kl, tis_weight) are
token means over the mini-batch's valid tokens whatever ``loss_agg_mode``: aggregated like a
seq-mean-token-sum loss, a fraction would be "clipped tokens per sequence" and exceed 1. Either
way each metric is this micro-batch's share: sum over micro-batches and data-parallel ranks to get
the mini-batch value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mindspeed_rl.algorithms.kl import kl_penalty
from mindspeed_rl.algorithms.loss_aggregation import aggregate_loss

# exp(20) ~ 5e8: a log-ratio beyond +-20 is numerically meaningless; bound it before exp (verl).
LOG_RATIO_BOUND = 20.0


def clip_bounds(
    clip_ratio: float, clip_higher_enable: bool, clip_ratio_low: float, clip_ratio_high: float
) -> tuple[float, float]:
    """(eps_low, eps_high) from the config: ``clip_ratio`` for both unless clip-higher is enabled."""
    low, high = (
        (clip_ratio_low, clip_ratio_high) if clip_higher_enable else (clip_ratio, clip_ratio)
    )
    keys = "clip_ratio_low / clip_ratio_high" if clip_higher_enable else "clip_ratio"
    if not (0 <= low < 1 and high >= 0):
        raise ValueError(
            f"rl_config.{keys}: need 0 <= low < 1 and high >= 0, got low={low}, high={high}"
        )
    return low, high


@dataclass
class ClippedSurrogate:
    """Per-token clipped policy-gradient loss and where each clip was active (bool [B, R] each)."""

    loss: torch.Tensor
    clipped_high: torch.Tensor  # A > 0 and r > 1 + eps_high: the gradient is cut
    clipped_low: torch.Tensor  # A < 0 and r < 1 - eps_low: the gradient is cut
    clipped_dual: torch.Tensor  # A < 0 and r > c: the loss is bounded at -A c


def clipped_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float | None = None,
) -> ClippedSurrogate:
    """PPO's clipped objective, per token, negated to a loss.

    Args:
        ratio: [B, R] pi / pi_old (differentiable).
        advantages: [B, R].
        clip_ratio_low, clip_ratio_high: eps_low, eps_high; r is clipped to [1 - low, 1 + high].
        clip_ratio_c: dual-clip constant c > 1 for negative advantages (``rl_config.clip_ratio_c``;
            None: no dual clip).

    A ratio exactly on a clip edge is not clipped: the gradient flows (``clamp`` passes it at its
    bounds, and ``maximum`` of two equal terms splits it into halves that add up).
    """
    if clip_ratio_c is not None and not clip_ratio_c > 1:
        raise ValueError(
            f"rl_config.clip_ratio_c must be > 1 (or null for no dual clip), got {clip_ratio_c}"
        )
    neg_advantages = -advantages
    unclipped = neg_advantages * ratio
    clipped = neg_advantages * torch.clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
    loss = torch.maximum(unclipped, clipped)
    negative = advantages < 0
    clipped_high = (advantages > 0) & (ratio > 1 + clip_ratio_high)
    clipped_low = negative & (ratio < 1 - clip_ratio_low)
    if clip_ratio_c is None:
        clipped_dual = torch.zeros_like(negative)
    else:
        bound = neg_advantages * clip_ratio_c
        clipped_dual = negative & (loss > bound)
        # where, not minimum: at r == c exactly the token is not clipped and keeps its full
        # gradient (minimum would split it with the constant bound and halve it).
        loss = torch.where(clipped_dual, bound, loss)
    return ClippedSurrogate(loss, clipped_high, clipped_low, clipped_dual)


def tis_weights(
    old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor, tis_imp_ratio_cap: float
) -> torch.Tensor:
    """Truncated importance weights min(pi_old / pi_rollout, cap), detached, [B, R]."""
    log_ratio = torch.clamp(old_log_probs - rollout_log_probs, -LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    return torch.clamp(torch.exp(log_ratio), max=tis_imp_ratio_cap).detach()


@dataclass
class PolicyLossOutput:
    """``loss``: this micro-batch's contribution (call backward on it). ``metrics``: detached
    scalars, each this micro-batch's contribution; sum over micro-batches and DP ranks."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    loss_agg_mode: str,
    global_denominator: torch.Tensor | float,
    global_tokens: torch.Tensor | float | None = None,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coeff: float = 0.0,
    use_kl_loss: bool = False,
    ref_log_probs: torch.Tensor | None = None,
    kl_penalty_kind: str = "low_var_kl",
    kl_coef: float = 0.0,
    rollout_log_probs: torch.Tensor | None = None,
    tis_imp_ratio_cap: float = 0.0,
) -> PolicyLossOutput:
    """The actor loss of one micro-batch. All tensors [B, R], aligned with ``responses``.

    Args:
        log_probs: current policy log-probs (differentiable).
        old_log_probs: log-probs of the policy that generated the batch, recomputed by the trainer
            (on-policy with one update per batch: pass ``log_probs.detach()``).
        advantages: per-token advantages (``advantages.broadcast_to_tokens``).
        response_mask: loss mask (after overlong filtering, if on).
        loss_agg_mode, global_denominator: see ``loss_aggregation`` (``rl_config.loss_agg_mode`` /
            ``token_level_loss``; the mini-batch's all-reduced ``loss_denominator``).
        global_tokens: valid tokens of the whole mini-batch (all-reduced ``loss_denominator`` in
            token-mean mode), the denominator of the token-mean metrics. None: only with
            token-mean, where it is ``global_denominator``.
        clip_ratio_low, clip_ratio_high: from ``clip_bounds``.
        clip_ratio_c: dual-clip constant (``rl_config.clip_ratio_c``), None for none.
        entropy: per-token entropy of the current policy (differentiable when ``entropy_coeff``
            is not 0); None skips the entropy term and metric.
        entropy_coeff: ``rl_config.entropy_coeff``; the loss subtracts ``coeff * entropy``.
        use_kl_loss: ``rl_config.use_kl_loss``; needs ``ref_log_probs``.
        kl_penalty_kind: ``rl_config.kl_penalty``.
        kl_coef: ``rl_config.init_kl_coef``.
        rollout_log_probs: log-probs reported by the rollout engine, needed when
            ``tis_imp_ratio_cap > 0`` (``rl_config.tis_imp_ratio_cap``; <= 0 disables TIS).

    Metrics (``actor/`` prefix left to the caller), aggregated like the loss: pg_loss, entropy,
    kl and kl_loss (with KL loss). Token means: pg_clipfrac, pg_clipfrac_high, pg_clipfrac_low,
    pg_clipfrac_dual (with dual clip), ppo_kl (mean log pi_old - log pi), tis_weight and
    tis_capped_frac (with TIS).
    """
    valid = response_mask != 0  # once, for every term and metric
    if global_tokens is None:
        if loss_agg_mode != "token-mean":
            raise ValueError(
                f"loss_agg_mode '{loss_agg_mode}' divides by sequences: pass global_tokens (the "
                "mini-batch's valid tokens) for the token-mean metrics"
            )
        global_tokens = global_denominator

    def agg(values: torch.Tensor) -> torch.Tensor:
        return aggregate_loss(values, valid, loss_agg_mode, global_denominator)

    def token_mean(values: torch.Tensor) -> torch.Tensor:
        return aggregate_loss(values, valid, "token-mean", global_tokens)

    log_ratio = torch.clamp(log_probs - old_log_probs, -LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    surrogate = clipped_surrogate(
        torch.exp(log_ratio), advantages, clip_ratio_low, clip_ratio_high, clip_ratio_c
    )
    pg_losses = surrogate.loss
    weights = None
    if tis_imp_ratio_cap > 0:
        if rollout_log_probs is None:
            raise ValueError(
                f"rl_config.tis_imp_ratio_cap={tis_imp_ratio_cap} needs the rollout engine's "
                "log-probs (rollout_log_probs); enable them in the rollout or set the cap to 0"
            )
        weights = tis_weights(old_log_probs, rollout_log_probs, tis_imp_ratio_cap)
        pg_losses = pg_losses * weights
    pg_loss = agg(pg_losses)
    loss = pg_loss
    entropy_term = kl_term = None
    if entropy is not None and entropy_coeff != 0:
        entropy_term = agg(entropy)
        loss = loss - entropy_coeff * entropy_term
    if use_kl_loss:
        if ref_log_probs is None:
            raise ValueError(
                "rl_config.use_kl_loss is true but no ref_log_probs were given: the reference "
                "model must run (not built by this version)"
            )
        kl_term = agg(kl_penalty(log_probs, ref_log_probs, kl_penalty_kind))
        loss = loss + kl_coef * kl_term

    with torch.no_grad():  # metrics hold nothing for backward
        clipfrac_high = token_mean(surrogate.clipped_high)
        clipfrac_low = token_mean(surrogate.clipped_low)
        metrics = {
            "pg_loss": pg_loss.detach(),
            "pg_clipfrac": clipfrac_high + clipfrac_low,  # disjoint: A > 0 vs A < 0
            "pg_clipfrac_high": clipfrac_high,
            "pg_clipfrac_low": clipfrac_low,
            "ppo_kl": -token_mean(log_ratio),
        }
        if clip_ratio_c is not None:
            metrics["pg_clipfrac_dual"] = token_mean(surrogate.clipped_dual)
        if weights is not None:
            metrics["tis_weight"] = token_mean(weights)
            metrics["tis_capped_frac"] = token_mean(weights >= tis_imp_ratio_cap)
        if entropy is not None:
            metrics["entropy"] = agg(entropy) if entropy_term is None else entropy_term.detach()
        if kl_term is not None:
            metrics["kl"] = kl_term.detach()
            metrics["kl_loss"] = kl_coef * metrics["kl"]
    return PolicyLossOutput(loss, metrics)
