"""The driver's partial-rollout rounds (``DAPOTrainer._collect_partial``) without Ray: a real HF
engine, a prompt loader with state, a scorer. Over many iterations: every iteration trains
global_batch_size whole groups, no trained token is older than N - 1, long samples are continued,
and a trainer rebuilt from a mid-run state_dict collects exactly what the uninterrupted one does."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
import transformers

from mindspeed_rl.algorithms.dynamic_sampling import DynamicSampler
from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.trainer.dapo_trainer import DAPOTrainer
from mindspeed_rl.trainer.rollout_buffer import PartialRolloutBuffer
from mindspeed_rl.workers.timing import Timer
from tests.models import tiny_hf

PAD, N_SAMPLES, GBS, MAX_TOKENS, SPLIT = 0, 4, 3, 16, 3
EOS = list(range(100, 112))  # ~8% of the vocabulary ends a response: lengths 1-16, a long tail


class _Loader:
    """``global_batch_size`` prompts per batch, in order, with a resumable position."""

    def __init__(self) -> None:
        rng = random.Random(0)
        self.prompts = [
            [rng.randrange(1, 99) for _ in range(rng.randrange(2, 7))] for _ in range(500)
        ]
        self.position = 0

    def next_batch(self):
        index = list(range(self.position, self.position + GBS))
        self.position += GBS
        return SimpleNamespace(indices=index, prompt_ids=[torch.tensor(self.prompts[i]) for i in index],
                               texts=lambda key, index=index: [str(i % 2) for i in index])  # fmt: skip

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def _scores(texts, truths, metric):
    # a made-up verifier: a response is "correct" when its token count's parity matches
    acc = [float(len(t.split()) % 2 == int(g)) for t, g in zip(texts, truths)]
    return SimpleNamespace(scores=acc, verifier_scores={metric: acc}, acc={metric: acc}, metrics={})


def _trainer(engine, dynamic: bool) -> DAPOTrainer:
    config = load_run_config(CONFIG_NAME, overrides=[
        f"rl_config.rollout_max_tokens={MAX_TOKENS}", f"generate_config.sampling_config.max_tokens={MAX_TOKENS}",
        "rl_config.overlong_buffer=4", f"rl_config.n_samples_per_prompt={N_SAMPLES}",
        f"megatron_training.global_batch_size={GBS}", f"rl_config.mini_batch_size={GBS}",
        f"rl_config.filter_groups_train_batch_size={GBS}", f"rl_config.filter_groups_enable={str(dynamic).lower()}",
        f"rl_config.partial_rollout_max_split={SPLIT}", "actor_config.micro_batch_size=2",
    ])  # fmt: skip
    rl = config.rl_config
    trainer = DAPOTrainer.__new__(DAPOTrainer)
    trainer.config, trainer.iteration, trainer.actor_version = config, 0, 0
    trainer.n, trainer.pad, trainer.eos, trainer.dp_size = N_SAMPLES, PAD, EOS, 1
    trainer.loader, trainer._iteration_prompts = _Loader(), []
    trainer.rollout = SimpleNamespace(generate=engine.generate)
    trainer.tokenizer = SimpleNamespace(
        batch_decode=lambda rows, skip_special_tokens: [" ".join(map(str, r)) for r in rows]
    )
    trainer.scorer = SimpleNamespace(score=lambda t, g: _scores(t, g, rl.filter_groups_metric))
    trainer.sampler = (
        DynamicSampler(GBS, -1, "error", rl.filter_groups_metric, 1.0, 0.0) if dynamic else None
    )
    trainer.buffer = PartialRolloutBuffer(SPLIT, MAX_TOKENS, N_SAMPLES, EOS)
    return trainer


def _iterate(trainer, iterations: int) -> list:
    out = []
    for _ in range(iterations):
        batch, metrics = trainer._collect_partial(Timer())
        age = trainer.actor_version - batch["rollout_versions"][batch["response_mask"].bool()]
        out.append((batch, metrics, int(age.max())))
        trainer.iteration += 1
        trainer.actor_version += 1  # the update and the sync of this iteration
    return out


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_hf.hf_config("qwen2")).eval()
    return HFRolloutEngine(model, eos_token_ids=EOS, pad_token_id=PAD)


@pytest.mark.parametrize("dynamic", [False, True])
def test_iterations_train_whole_groups_no_older_than_the_split(engine, dynamic):
    runs = _iterate(_trainer(engine, dynamic), 8)
    for batch, metrics, age in runs:
        assert len(batch) == GBS * N_SAMPLES and age <= SPLIT - 1
        lengths = batch["response_mask"].sum(-1)
        last = batch["responses"].gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        ended = (lengths == MAX_TOKENS) | torch.isin(last, torch.tensor(EOS))
        assert bool(ended.all()), "a trained sample had not ended"
        assert metrics["partial_rollout/expired_groups"] == 0
    # stragglers are carried across updates (age >= 1), and the buffer holds at most two
    # iterations' worth of groups, so complete groups do not queue up and age
    assert max(age for *_, age in runs) >= 1
    assert max(m["partial_rollout/buffered_groups"] for _, m, _ in runs) <= 2 * GBS
    assert sum(m["partial_rollout/continued_samples"] for _, m, _ in runs) > 0


def test_a_trainer_resumed_from_its_state_collects_what_the_uninterrupted_one_does(engine):
    straight = _trainer(engine, dynamic=False)
    first = _iterate(straight, 3)
    state = {"data": straight.loader.state_dict(), "partial_rollout": straight.buffer.state_dict()}
    assert any(not s["finished"] for g in state["partial_rollout"]["groups"] for s in g["samples"])
    later = _iterate(straight, 3)
    resumed = _trainer(engine, dynamic=False)
    resumed.iteration = resumed.actor_version = 3
    resumed.loader.load_state_dict(state["data"])
    resumed.buffer.load_state_dict(state["partial_rollout"])
    again = _iterate(resumed, 3)
    for (a, _, _), (b, _, _) in zip(later, again):
        for key in ("responses", "rollout_log_probs", "rollout_versions", "response_mask"):
            assert torch.equal(a[key], b[key]), key
    assert len(first) == 3
