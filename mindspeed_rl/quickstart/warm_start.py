"""Brief supervised warm-start of the tiny model on the task (DAPO starts from an SFT model).

Plain PyTorch over transformers on the CPU: prompts rendered exactly as the preprocessing
pipeline renders them (the tokenizer's chat template), the loss on the response tokens only.
The task's lengths vary tenfold, so each step's examples are sorted by length and run in
``chunks`` micro-batches padded to their own longest (gradient accumulation, each token weighted
as in one batch): a batch padded to its longest example would compute mostly padding.
"""

from __future__ import annotations

import math

import torch

from mindspeed_rl.quickstart.math_task import Problem


def render_prompt(tokenizer, question: str) -> list[int]:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True,
        return_dict=False,
    )  # fmt: skip


def _micro_batch(examples, picks, pad_token_id):
    width = max(len(examples[i][0]) + len(examples[i][1]) for i in picks)
    ids = torch.full((len(picks), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(picks), width), -100, dtype=torch.long)
    mask = torch.zeros((len(picks), width), dtype=torch.long)
    for row, i in enumerate(picks):
        prompt, answer = examples[i]
        seq = prompt + answer
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(prompt) : len(seq)] = torch.tensor(answer)
    return ids, mask, labels


def warm_start(model, tokenizer, problems: list[Problem], steps: int, batch_size: int = 64,
               lr: float = 6e-3, seed: int = 0, chunks: int = 4) -> list[float]:  # fmt: skip
    """``steps`` AdamW steps of next-token loss on the reference solution + eos after each
    prompt; returns the loss of each step (mean over the step's response tokens)."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for p in problems:
        prompt = render_prompt(tokenizer, p.question)
        answer = tokenizer.encode(p.solution, add_special_tokens=False) + [tokenizer.eos_token_id]
        examples.append((prompt, answer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    # a short linear warm-up, then cosine decay to zero: a brief run ends at its lowest loss
    warmup, span = max(1, steps // 20), max(1, steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i, span) / span)),
    )
    model.train()
    losses = []
    for _ in range(steps):
        picks = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        picks.sort(key=lambda i: len(examples[i][0]) + len(examples[i][1]))
        tokens = sum(len(examples[i][1]) for i in picks)
        optimizer.zero_grad()
        total = 0.0
        size = -(-batch_size // chunks)
        for start in range(0, batch_size, size):
            ids, mask, labels = _micro_batch(examples, picks[start : start + size],
                                             tokenizer.pad_token_id)  # fmt: skip
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                ignore_index=-100, reduction="sum",
            ) / tokens  # fmt: skip
            loss.backward()
            total += loss.item()
        optimizer.step()
        schedule.step()
        losses.append(total)
    model.eval()
    return losses
