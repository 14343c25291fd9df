"""``stage: ray_grpo`` end to end on CPU: the DAPO loop with GRPO settings trains with a KL loss
against a frozen reference model.

Only the stage is set (as the Ascend suite's GRPO recipes do): ``use_kl_loss`` is not, and the
config must turn it on. The quickstart's DAPO extras (filter groups, clip-higher, overlong shaping)
are switched off, as a GRPO recipe leaves them, and its verifier is named in ``verifier_function``
only, with ``filter_groups_metric`` at a default that is not among them (as in the suite's
``grpo_qwen25_7b_A3.yaml``: ``verifier_function: ["math_17k_acc"]``).
"""

from __future__ import annotations

import math

import pytest

from mindspeed_rl.trainer.launch import run_training
from tests.trainer.run_configs import training_config

pytestmark = pytest.mark.slow

ITERATIONS = 2
KL_COEF = 0.05


def test_grpo_stage_trains_with_the_kl_loss_against_the_reference(assets):
    config = training_config(
        assets, ITERATIONS, "megatron_training.stage=ray_grpo",
        "rl_config.filter_groups_enable=false", "rl_config.clip_higher_enable=false",
        "rl_config.overlong_buffer_enable=false", f"rl_config.init_kl_coef={KL_COEF}",
        "rl_config.filter_groups_metric=format", "rl_config.mini_batch_size=8",
    )  # fmt: skip
    rl = config.rl_config
    assert rl.use_kl_loss and not rl.use_kl_in_reward and not rl.filter_groups_enable
    history = run_training(config).history
    assert len(history) == ITERATIONS
    global_batch = config.actor.global_batch_size * rl.n_samples_per_prompt
    for metrics in history:
        assert all(math.isfinite(v) for v in metrics.values())
        # filter groups off: one generation batch, every group trained (constant ones included)
        assert metrics["dynamic_sampling/num_gen_batches"] == 1
        assert metrics["throughput/trained_samples"] == global_batch
        assert "dynamic_sampling/kept_group_ratio" not in metrics
        # the reference pass ran and the KL term is in the loss with the configured coefficient
        assert metrics["timing/ref_log_prob"] > 0 and metrics["compute/ref_log_prob"] > 0
        assert metrics["actor/kl_coef"] == KL_COEF
        assert metrics["actor/kl_loss"] == pytest.approx(KL_COEF * metrics["actor/kl"], rel=1e-5)
        assert "reward/acc_for_dapo/acc" in metrics and "rewards/kl" not in metrics
    first, second = history
    keys = ("actor/kl", "actor/kl_loss", "actor/ref_log_prob_diff", "rollout/acc", "actor/pg_loss")
    print({i: {k: h[k] for k in keys} for i, h in enumerate(history, start=1)})  # for -s runs
    # iteration 1 starts from the reference's weights: the old policy is the reference exactly
    assert first["actor/ref_log_prob_diff"] == 0.0
    # after step 1 the actor has moved away from the frozen reference: the KL is live
    assert second["actor/ref_log_prob_diff"] > 1e-4
    assert second["actor/kl"] > 1e-6 and second["actor/kl_loss"] > 0
    assert second["rollout/acc"] == second["reward/acc_for_dapo/acc"]
