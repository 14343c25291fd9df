"""The KL coefficient and the KL penalty on rewards (``use_kl_in_reward``).

``kl_ctrl_type: fixed`` keeps ``init_kl_coef``. ``adaptive`` is the controller of Ziegler et al.
2019 ("Fine-Tuning Language Models from Human Preferences"), as the Ascend suite and verl run it:
after each iteration, with the measured per-token KL ``kl`` over ``n`` samples,

    error = clip(kl / kl_target - 1, -0.2, 0.2)
    coef *= 1 + error * n / kl_horizon

so the coefficient moves towards keeping the KL at ``kl_target``, by at most 20% per
``kl_horizon`` samples. One coefficient serves both KL terms (loss and reward); its value is part of
the trainer state, so a resumed run continues with it.

The reward penalty follows verl's ``apply_kl_penalty`` for outcome rewards: every response token
carries ``-coef * kl_t``, and the group-norm advantage sees the response's total, i.e. its score
minus ``coef * sum_t kl_t``.
"""

from __future__ import annotations

import torch

from mindspeed_rl.algorithms.kl import kl_penalty

ADAPTIVE_STEP_BOUND = 0.2


class KLController:
    def __init__(
        self,
        init_coef: float,
        kind: str = "fixed",
        target: float | None = None,
        horizon: int | None = None,
    ) -> None:
        if kind not in ("fixed", "adaptive"):
            raise ValueError(f"rl_config.kl_ctrl_type: '{kind}'; valid: fixed, adaptive")
        if kind == "adaptive" and (target is None or horizon is None):
            raise ValueError("rl_config.kl_ctrl_type adaptive needs kl_target and kl_horizon")
        self.kind = kind
        self.value = float(init_coef)
        self.target = target
        self.horizon = horizon

    @classmethod
    def from_config(cls, rl) -> KLController:
        return cls(rl.init_kl_coef, rl.kl_ctrl_type, rl.kl_target, rl.kl_horizon)

    def update(self, current_kl: float, n_samples: int) -> None:
        if self.kind == "fixed":
            return
        error = min(max(current_kl / self.target - 1.0, -ADAPTIVE_STEP_BOUND), ADAPTIVE_STEP_BOUND)
        self.value *= 1.0 + error * n_samples / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


def token_kl(
    log_probs: torch.Tensor, ref_log_probs: torch.Tensor, mask: torch.Tensor, kind: str
) -> torch.Tensor:
    """Per-token KL estimate [B, R], zero outside ``mask``."""
    return kl_penalty(log_probs, ref_log_probs, kind) * mask.to(log_probs.dtype)


def batch_kl(kl: torch.Tensor, mask: torch.Tensor) -> float:
    """The controller's measure: mean over responses of each response's token-mean KL (responses
    without tokens are left out; 0.0 when none has any)."""
    tokens = mask.sum(-1)
    valid = tokens > 0
    if not bool(valid.any()):
        return 0.0
    return float((kl.sum(-1)[valid] / tokens[valid]).mean())


def kl_penalised_scores(
    scores: torch.Tensor,
    log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    mask: torch.Tensor,
    kind: str,
    coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``scores`` [B] minus ``coef`` x each response's summed per-token KL, and the metrics
    ``rewards/kl`` (the controller's measure) and ``rewards/kl_penalty`` (mean subtracted)."""
    kl = token_kl(log_probs, ref_log_probs, mask, kind)
    penalty = coef * kl.sum(-1)
    metrics = {"rewards/kl": batch_kl(kl, mask), "rewards/kl_penalty": float(penalty.mean())}
    return scores - penalty.to(scores.dtype), metrics
