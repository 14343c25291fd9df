"""The TRL side of bench_vs_trl.py: GRPOTrainer with ``loss_type="dapo"`` on the same task.

Run by the benchmark with TRL's own virtualenv (never imported by the project):

    .venv-trl/bin/python benchmarks/trl_side/grpo_addition.py SPEC.json RESULT.json

SPEC.json (written by the benchmark): the HF model directory, the train and held-out prompts as
text with their labels, the batch shape and optimizer settings. The reward is the project's
``acc_for_dapo`` verifier (pure Python, imported from the repository) plus TRL's own soft overlong
punishment, i.e. the same score the DAPO side trains on. Held-out accuracy (one answer per
prompt, greedy at ``eval_temperature`` 0, else sampled at it without truncation) is measured every
``eval_every`` steps; the seconds spent
measuring are recorded so that the benchmark can leave them out of time-to-accuracy.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

START = time.time()
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402
from trl.rewards import get_soft_overlong_punishment  # noqa: E402

from mindspeed_rl.rewards.math_dapo import acc_for_dapo  # noqa: E402


def held_out_accuracy(model, tokenizer, prompts: list[str], labels: list[str], spec) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(prompts), 64):
            chunk = prompts[start : start + 64]
            enc = tokenizer(chunk, return_tensors="pt", padding=True)
            t = spec["eval_temperature"]
            sampling = dict(do_sample=True, temperature=t, top_k=0, top_p=1.0) if t > 0 else {
                "do_sample": False}  # fmt: skip
            out = model.generate(
                **enc, **sampling, max_new_tokens=spec["max_new_tokens"],
                pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :],
                                           skip_special_tokens=True)  # fmt: skip
            for text, label in zip(texts, labels[start : start + 64]):
                correct += acc_for_dapo(text, label).acc
    model.train()
    return correct / len(prompts)


class HeldOut(transformers.TrainerCallback):
    def __init__(self, tokenizer, spec) -> None:
        self.tokenizer, self.spec = tokenizer, spec
        self.evals: list[dict] = []
        self.eval_seconds = 0.0

    def _measure(self, model, step: int) -> None:
        start = time.time()
        acc = held_out_accuracy(
            model, self.tokenizer, self.spec["valid_prompts"], self.spec["valid_labels"], self.spec
        )
        self.eval_seconds += time.time() - start
        self.evals.append({"step": step, "acc": acc, "time": time.time(),
                           "eval_seconds_so_far": self.eval_seconds})  # fmt: skip

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._measure(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.spec["eval_every"] == 0:
            self._measure(model, state.global_step)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.manual_seed(spec["seed"])
    torch.set_num_threads(spec["threads"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(spec["hf"])
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = transformers.AutoModelForCausalLM.from_pretrained(spec["hf"], dtype=torch.float32)
    train = Dataset.from_dict({"prompt": spec["train_prompts"], "labels": spec["train_labels"]})

    def accuracy_reward(completions, labels, **kwargs):
        return [acc_for_dapo(c, g).score for c, g in zip(completions, labels)]

    overlong = get_soft_overlong_punishment(spec["max_new_tokens"], spec["overlong_buffer"])
    config = GRPOConfig(
        output_dir=spec["output_dir"], use_cpu=True, seed=spec["seed"], report_to=[],
        max_steps=spec["iterations"], learning_rate=spec["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        per_device_train_batch_size=spec["prompts"] * spec["samples"],
        gradient_accumulation_steps=1, num_generations=spec["samples"],
        max_completion_length=spec["max_new_tokens"], temperature=1.0, top_p=1.0, top_k=0,
        loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, num_iterations=1,
        logging_steps=1, save_strategy="no", dataloader_num_workers=0, bf16=False,
        # truncated responses out of the loss, as our rl_config.overlong_filtering
        mask_truncated_completions=spec.get("mask_truncated_completions", False),
    )  # fmt: skip
    callback = HeldOut(tokenizer, spec)
    trainer = GRPOTrainer(
        model=model, reward_funcs=[accuracy_reward, overlong], args=config, train_dataset=train,
        processing_class=tokenizer, callbacks=[callback],
    )  # fmt: skip
    train_start = time.time()
    trainer.train()
    train_seconds = time.time() - train_start
    Path(sys.argv[2]).write_text(
        json.dumps(
            {
                "start": START,
                "train_seconds": train_seconds,
                "evals": callback.evals,
                "end": time.time(),
            }
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
