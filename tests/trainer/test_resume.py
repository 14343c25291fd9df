"""Exact resume: 4 iterations in one run equal 2 + (stop, resume) + 2, bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mindspeed_rl.checkpoint import mcore_layout
from mindspeed_rl.checkpoint.training_state import load_trainer_state, resolve_iteration
from mindspeed_rl.trainer.launch import run_training
from tests.trainer.run_configs import training_config

pytestmark = pytest.mark.slow

COMPARED = ("actor/pg_loss", "actor/entropy", "actor/grad_norm", "rollout/score_mean",
            "rollout/acc", "dynamic_sampling/num_gen_batches", "actor/weight_version")  # fmt: skip


def _weights(root: Path, iteration: int) -> dict[str, torch.Tensor]:
    path = mcore_layout.shard_path(root, iteration, 0, 0, 0, mcore_layout.ShardLayout())
    return mcore_layout.load_shard(path, mmap=False)["model"]


def _common(save: Path) -> list[str]:
    # filter groups need 2-3 generation batches per iteration here: the data position is not
    # iteration x global_batch_size; mini_batch_size 4 gives 2 optimizer steps per iteration
    return [f"actor_config.save={save}", "rl_config.filter_groups_train_batch_size=12",
            "rl_config.mini_batch_size=4", "megatron_training.save_interval=2"]  # fmt: skip


def _straight_and_resumed(assets, tmp_path, *extra: str, resume_extra: tuple[str, ...] = ()):
    """4 iterations straight; 2, then a resume from that run's checkpoint for 2 more."""
    straight = run_training(training_config(assets, 4, *_common(tmp_path / "a"), *extra))
    first = run_training(training_config(assets, 2, *_common(tmp_path / "b"), *extra))
    assert mcore_layout.read_tracker(tmp_path / "b") == 2
    resumed = run_training(
        training_config(
            assets,
            4,
            *_common(tmp_path / "b"),
            *extra,
            "actor_config.finetune=false",
            f"actor_config.load={tmp_path / 'b'}",
            "actor_config.no_load_optim=false",
            "actor_config.no_load_rng=false",
            *resume_extra,
        )  # fmt: skip
    )
    history = first.history + resumed.history
    assert [h["iteration"] for h in history] == [1.0, 2.0, 3.0, 4.0]
    return straight, first, resumed, history


def _assert_same(straight_history, history, keys) -> None:
    for expected, got in zip(straight_history, history):
        for key in keys:
            assert got[key] == expected[key], (expected["iteration"], key)


def test_resumed_run_is_bit_identical(assets, tmp_path):
    straight, first, resumed, history = _straight_and_resumed(assets, tmp_path)
    _assert_same(straight.history, history, COMPARED)
    # DAPO is KL-free: no reference pass, no KL metrics
    assert not [k for k in straight.history[0] if "ref_log_prob" in k or "kl_coef" in k]
    assert first.prompt_log + resumed.prompt_log == straight.prompt_log
    assert any(len(p) > 16 for p in straight.prompt_log), "some iteration needs 2+ gen batches"
    a, b = _weights(tmp_path / "a", 4), _weights(tmp_path / "b", 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = load_trainer_state(tmp_path / "b", 4)
    assert state["iteration"] == 4 and state["actor_version"] == 4


_KILL_DURING_SAVE = r"""
import sys, time, torch
from pathlib import Path
from mindspeed_rl.checkpoint import training_state
root = Path(sys.argv[1])
tmp = training_state.tmp_iteration_dir(root, 4)
(tmp / "mp_rank_00").mkdir(parents=True)
print("writing", flush=True)
torch.save({"model": {"w": torch.zeros(64 * 2**20 // 4)}}, tmp / "mp_rank_00" / "model_optim_rng.pt")
time.sleep(30)  # killed before the rename and the tracker
training_state.finalize(root, 4, {"iteration": 4}, 0)
"""


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path):
    root = tmp_path / "ckpt"
    (root / "iter_0000002" / "mp_rank_00").mkdir(parents=True)
    mcore_layout.save_shard(
        root / "iter_0000002" / "mp_rank_00" / "model_optim_rng.pt",
        {"w": torch.ones(3)}, mcore_layout.ShardLayout(), 2,
    )  # fmt: skip
    torch.save({"iteration": 2}, root / "iter_0000002" / "trainer_state.pt")
    mcore_layout.write_tracker(root, 2)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_DURING_SAVE, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert resolve_iteration(root, None) == 2
    assert load_trainer_state(root, 2)["iteration"] == 2
    files = mcore_layout.find_checkpoint(root)
    assert torch.equal(mcore_layout.load_shard(files.path(0, 0, 0))["model"]["w"], torch.ones(3))


def test_broken_checkpoints_fail_with_one_clear_message(tmp_path):
    with pytest.raises(ValueError, match="latest_checkpointed_iteration.txt: not found"):
        resolve_iteration(tmp_path, None)
    root = tmp_path / "ckpt"
    shard = root / "iter_0000002" / "mp_rank_00" / "model_optim_rng.pt"
    shard.parent.mkdir(parents=True)
    mcore_layout.save_shard(shard, {"w": torch.ones(1000)}, mcore_layout.ShardLayout(tp=2), 2)
    mcore_layout.write_tracker(root, 2)
    with pytest.raises(ValueError, match="shard\\(s\\) are missing"):
        mcore_layout.find_checkpoint(root)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=str(shard.name)):
        mcore_layout.load_shard(shard, mmap=False)
    with pytest.raises(ValueError, match="trainer_state.pt: not found"):
        load_trainer_state(root, 2)
    with pytest.raises(ValueError, match="iteration 7 not found"):
        resolve_iteration(root, 7)


KL_COMPARED = COMPARED + ("actor/kl", "actor/kl_loss", "actor/kl_coef", "rewards/kl",
                          "rewards/kl_penalty", "actor/ref_log_prob_diff")  # fmt: skip


def test_resumed_run_with_kl_is_bit_identical(assets, tmp_path):
    """GRPO-style KL in the loss and in the reward, adaptive coefficient: the actor resumes from
    its checkpoint, the reference from the original weights (the seed's procedure)."""
    paths, _ = assets
    kl = ("rl_config.use_kl_loss=true", "rl_config.use_kl_in_reward=true",
          "rl_config.kl_ctrl_type=adaptive", "rl_config.init_kl_coef=0.2",
          "rl_config.kl_target=0.001", "rl_config.kl_horizon=50")  # fmt: skip
    straight, first, resumed, history = _straight_and_resumed(
        assets, tmp_path, *kl,
        resume_extra=(f"rl_config.integrated_mode_config={{ref_model_load_path: {paths['mcore']}}}",),
    )  # fmt: skip
    _assert_same(straight.history, history, KL_COMPARED)
    h = straight.history
    # iteration 1: old log-probs of the initial actor = the reference's
    assert h[0]["actor/ref_log_prob_diff"] <= 1e-6 and abs(h[0]["rewards/kl"]) <= 1e-6
    # from iteration 2 the actor has moved off the reference (the size of the drift depends on the
    # task's dynamics, so only its presence is asserted)
    assert min(x["rewards/kl"] for x in h[1:]) > 1e-5, [x["rewards/kl"] for x in h]
    # the adaptive coefficient moved every iteration, and the resume continued from its value
    coefs = [x["actor/kl_coef"] for x in h]
    assert coefs[0] == 0.2 and len(set(coefs)) == 4, coefs
    assert load_trainer_state(tmp_path / "b", 4)["kl_ctrl"]["value"] != 0.2
    assert h[0]["timing/ref_log_prob"] > 0 and h[0]["compute/ref_log_prob"] > 0


def test_resumed_run_packed_with_token_budget_micro_batches_is_bit_identical(assets, tmp_path):
    """use_remove_padding + use_dynamic_bsz + use_dp_batch_balance: trains and resumes exactly;
    the budget (2 x the longest possible row) cuts each rank's mini-batch share in several."""
    packed = ("rl_config.use_remove_padding=true", "rl_config.use_dynamic_bsz=true",
              "rl_config.max_packing_token_size=184", "rl_config.use_dp_batch_balance=true")  # fmt: skip
    straight, _, _, history = _straight_and_resumed(assets, tmp_path, *packed)
    keys = COMPARED + ("batch/real_token_share", "batch/dp_imbalance")
    _assert_same(straight.history, history, keys)
    for h in straight.history:
        assert h["batch/real_token_share"] == 1.0  # packed: no padding is computed
        assert h["batch/tokens_per_micro_batch"] <= 184
        assert h["batch/dp_imbalance"] < 1.05
