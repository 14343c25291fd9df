"""The quickstart's supervised warm start: it learns the task's responses (the loss falls) with
the tokenizer the run uses, and zero steps leave the model as built."""

from __future__ import annotations

import torch

from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer
from mindspeed_rl.quickstart import math_task
from mindspeed_rl.quickstart.tiny_model import build_tiny_hf_model
from mindspeed_rl.quickstart.warm_start import warm_start
from mindspeed_rl.trainer.config_entry import load_run_config


def test_the_loss_falls_and_zero_steps_change_nothing(tmp_path):
    problems = math_task.make_problems(200, seed=0)
    path = build_toy_tokenizer(tmp_path / "tok", math_task.corpus(problems[:100]), vocab_size=400)
    model, tokenizer = build_tiny_hf_model(load_run_config("quickstart_cpu").model, path,
                                           tmp_path / "hf")  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert warm_start(model, tokenizer, problems, steps=0) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    losses = warm_start(model, tokenizer, problems, steps=40, batch_size=16)
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
