"""Partial rollout through the whole DAPO loop on CPU (Ray, 2 workers, the HF engine).

- samples in flight at a checkpoint: 4 iterations straight equal 2 + (stop, resume) + 2, bit for
  bit, with dynamic sampling, packing and token-budget micro-batches;
- policy age never exceeds N - 1, and the rollout-vs-actor gap is logged per age (no dynamic
  sampling, KL loss against the reference, TIS, tensor parallelism 2 (the hf engine: infer TP 1, two engines), a threshold);
The task is the quickstart's chain-of-thought sums (responses of 20-140 tokens), capped at 64
tokens here: the long ones are cut into rounds, a share ends within the first. That a round no
response outgrows trains exactly the plain run's batch is tested at the batch level
(``test_rollout_buffer.py``).
"""

from __future__ import annotations

import math

import pytest
import torch

from mindspeed_rl.checkpoint.training_state import load_trainer_state
from mindspeed_rl.trainer.launch import run_training
from tests.trainer.run_configs import training_config
from tests.trainer.test_resume import COMPARED, _assert_same, _straight_and_resumed, _weights

pytestmark = pytest.mark.slow

CAP = ("rl_config.rollout_max_tokens=64", "generate_config.sampling_config.max_tokens=64",
       "rl_config.overlong_buffer=16")  # fmt: skip
SPLIT = (*CAP, "rl_config.partial_rollout_max_split=3")


def test_resume_with_samples_in_flight_is_bit_identical(assets, tmp_path):
    packed = ("rl_config.use_remove_padding=true", "rl_config.use_dynamic_bsz=true",
              "rl_config.max_packing_token_size=400", "rl_config.filter_groups_max_batches=3",
              "rl_config.filter_groups_on_max_batches=train")  # fmt: skip
    straight, first, resumed, history = _straight_and_resumed(assets, tmp_path, *SPLIT, *packed)
    keys = COMPARED + ("partial_rollout/age_max", "partial_rollout/age_mean",
                       "partial_rollout/continued_samples", "partial_rollout/buffered_samples")  # fmt: skip
    _assert_same(straight.history, history, keys)
    assert first.prompt_log + resumed.prompt_log == straight.prompt_log
    # the checkpoint at iteration 2 held samples in flight, and the resume continued them
    state = load_trainer_state(tmp_path / "b", 2)
    in_flight = [s for g in state["partial_rollout"]["groups"] for s in g["samples"]]
    assert any(not s["finished"] and s["tokens"] for s in in_flight)
    a, b = _weights(tmp_path / "a", 4), _weights(tmp_path / "b", 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for h in straight.history:
        assert h["partial_rollout/age_max"] <= 2  # N - 1
    assert max(h["partial_rollout/age_max"] for h in straight.history) >= 1


def _tp2_checkpoint(assets, tmp_path):
    """The assets' HF model converted to TP 2 shards with the real converter."""
    from mindspeed_rl.checkpoint import mcore_layout
    from mindspeed_rl.checkpoint.hf_to_mcore import HfToMcoreOptions, convert_hf_to_mcore

    paths, _ = assets
    base = training_config(assets, 1)
    convert_hf_to_mcore(
        HfToMcoreOptions(hf_dir=paths["hf"], save_dir=tmp_path / "mcore_tp2",
                         layout=mcore_layout.ShardLayout(tp=2),
                         padded_vocab_size=base.model.padded_vocab_size, force=True)
    )  # fmt: skip
    return tmp_path / "mcore_tp2"


def test_policy_age_stays_below_the_split_with_kl_tis_tp2_and_a_threshold(assets, tmp_path):
    config = training_config(
        assets, 4, *CAP, f"actor_config.load={_tp2_checkpoint(assets, tmp_path)}", "rl_config.partial_rollout_max_split=2", "rl_config.rollout_threshold_rate=0.9",
        "rl_config.filter_groups_enable=false", "megatron_training.global_batch_size=8",
        "rl_config.mini_batch_size=8", "actor_config.micro_batch_size=8",
        "rl_config.use_kl_loss=true", "rl_config.kl_penalty=low_var_kl", "rl_config.init_kl_coef=0.1",
        "rl_config.tis_imp_ratio_cap=2.0", "actor_config.tensor_model_parallel_size=2",
    )  # fmt: skip
    history = run_training(config, log_dir=str(tmp_path / "logs")).history
    aged = [h for h in history if h["partial_rollout/age_max"] >= 1]
    assert aged, "no iteration trained tokens of older weights"
    for h in history:
        assert h["partial_rollout/age_max"] <= 1 and h["partial_rollout/expired_groups"] == 0
        assert h["throughput/trained_samples"] == 8 * 8  # global_batch_size groups of n
        assert math.isfinite(h["actor/pg_loss"]) and h["actor/grad_norm"] > 0
        assert "actor/kl_loss" in h and "actor/tis_weight" in h
    for h in aged:
        # the old log-prob pass ran for the off-policy tokens: the gap of age 0 (when the batch
        # holds such tokens: a batch of groups left over from the last iteration may not) is
        # kernel noise, the gap of age 1 is one update's change of the policy
        noise = h.get("partial_rollout/log_prob_gap_age0", 0.0)
        assert noise < 1e-4
        assert h["partial_rollout/log_prob_gap_age1"] > max(10 * noise, 1e-4)
