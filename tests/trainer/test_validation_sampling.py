"""``rl_config.validation_temperature``: validation decodes at that temperature (0: greedy, the
same answers whatever the iteration's seed), else at the training sampling temperature."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers

from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.trainer.dapo_trainer import DAPOTrainer
from tests.models import tiny_hf
from tests.models.tiny_hf import VOCAB

PAD = 0
PROMPTS = [[5, 9, 13, 2, 7, 31], [4, 8], [17, 3, 3, 40], [6, 6, 1]]


class _Recording:
    """The rollout facade's ``generate`` on a real HF engine, remembering the params."""

    def __init__(self, engine):
        self.engine, self.params = engine, []

    def generate(self, ids, params):
        self.params.append(params)
        return self.engine.generate(ids, params)


def _trainer(temperature: float | None, answers: list[str]) -> DAPOTrainer:
    extra = [] if temperature is None else [f"rl_config.validation_temperature={temperature}"]
    short = ["generate_config.sampling_config.max_tokens=6", "rl_config.rollout_max_tokens=6",
             "rl_config.overlong_buffer=2"]  # fmt: skip
    config = load_run_config(CONFIG_NAME, overrides=[*short, *extra])
    torch.manual_seed(0)
    engine = HFRolloutEngine(
        transformers.AutoModelForCausalLM.from_config(tiny_hf.hf_config("qwen2")).eval(),
        eos_token_ids=[VOCAB - 1],
        pad_token_id=PAD,
    )
    trainer = DAPOTrainer.__new__(DAPOTrainer)  # validate() needs only these parts
    trainer.config, trainer.iteration = config, 0
    trainer.validation_prompts = SimpleNamespace(
        prompt_ids=[torch.tensor(p) for p in PROMPTS], texts=lambda key: answers
    )
    trainer.rollout = _Recording(engine)
    trainer.tokenizer = SimpleNamespace(
        batch_decode=lambda rows, skip_special_tokens: [" ".join(map(str, r)) for r in rows]
    )
    trainer.scorer = SimpleNamespace(
        score=lambda texts, truths: SimpleNamespace(
            acc={config.rl_config.filter_groups_metric: [float(t == g) for t, g in zip(texts, truths)]}
        )
    )  # fmt: skip
    trainer.workers = SimpleNamespace(call=lambda *args: None)
    return trainer


def _answers_at(trainer, iterations) -> list[str]:
    seen = []
    for it in iterations:
        trainer.iteration = it
        texts = []
        trainer.tokenizer.batch_decode = lambda rows, skip_special_tokens, out=texts: (
            out.extend(" ".join(map(str, r)) for r in rows) or list(out)
        )
        trainer.validate()
        seen.append(tuple(texts))
    return seen


def test_temperature_zero_is_greedy_whatever_the_seed():
    trainer = _trainer(0.0, ["x"] * len(PROMPTS))
    answers = _answers_at(trainer, [0, 5, 10])
    assert all(p.greedy and p.temperature == 0.0 for p in trainer.rollout.params)
    assert len(set(answers)) == 1, answers  # three iterations, three seeds: one answer set


def test_unset_validates_at_the_training_temperature():
    trainer = _trainer(None, ["x"] * len(PROMPTS))
    answers = _answers_at(trainer, [0, 5, 10])
    train_t = trainer.config.generate_config.sampling_config.temperature
    assert all(p.temperature == train_t == 1.0 for p in trainer.rollout.params)
    assert len(set(answers)) > 1, "sampled validation differs between iterations' seeds"


def test_accuracy_counts_the_greedy_answers():
    probe = _trainer(0.0, ["x"] * len(PROMPTS))
    (greedy,) = _answers_at(probe, [0])
    half = [greedy[0], "no", greedy[2], "no"]
    trainer = _trainer(0.0, half)
    assert trainer.validate()["val/acc"] == pytest.approx(0.5)
