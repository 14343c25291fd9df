"""Per-token KL estimators between the policy and the reference model (``rl_config.kl_penalty``).

Schulman, "Approximating KL divergence" (2020): with d = log pi(x) - log pi_ref(x), x ~ pi,

    k1 = d                          unbiased, high variance, can be negative
    k2 = d^2 / 2                    biased, low variance
    k3 = exp(-d) - 1 + d            unbiased, low variance, >= 0 ("low_var_kl")

The Ascend suite's names map as kl -> k1, mse -> k2, low_var_kl -> k3, abs -> |d|. k3 is clamped
as in verl (the exponent to +-20, the value to +-10): one token whose reference probability is far
below the policy's would otherwise dominate the loss. DAPO itself uses no KL term; these apply only
when ``use_kl_loss`` is set.
"""

from __future__ import annotations

import torch

KL_PENALTIES = ("k1", "k2", "k3", "kl", "mse", "low_var_kl", "abs")
_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}
K3_LOG_RATIO_BOUND = 20.0  # exp(20) ~ 5e8: beyond this the estimate is meaningless anyway
K3_VALUE_BOUND = 10.0


def kl_penalty(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate.

    Args:
        log_probs: [B, R] policy log-probs of the sampled tokens (differentiable).
        ref_log_probs: [B, R] reference-model log-probs of the same tokens.
        kind: one of ``KL_PENALTIES``.

    Returns:
        [B, R], unmasked: aggregate it with ``loss_aggregation.aggregate_loss``.
    """
    estimator = _ALIASES.get(kind, kind)
    diff = log_probs - ref_log_probs
    if estimator == "k1":
        return diff
    if estimator == "abs":
        return diff.abs()
    if estimator == "k2":
        return 0.5 * diff.square()
    if estimator == "k3":
        neg = torch.clamp(-diff, min=-K3_LOG_RATIO_BOUND, max=K3_LOG_RATIO_BOUND)
        return torch.clamp(torch.exp(neg) - neg - 1, min=-K3_VALUE_BOUND, max=K3_VALUE_BOUND)
    raise ValueError(
        f"rl_config.kl_penalty: unknown estimator '{kind}'; valid: {', '.join(KL_PENALTIES)}"
    )
