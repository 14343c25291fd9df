"""Brief supervised warm-start of the tiny model on the task (DAPO starts from an SFT model).

Plain PyTorch over transformers on the CPU: prompts rendered exactly as the preprocessing
pipeline renders them (the tokenizer's chat template), the loss on the response tokens only.
"""

from __future__ import annotations

import torch

from mindspeed_rl.quickstart.math_task import Problem


def render_prompt(tokenizer, question: str) -> list[int]:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True,
        return_dict=False,
    )  # fmt: skip


def warm_start(model, tokenizer, problems: list[Problem], steps: int, batch_size: int = 64,
               lr: float = 3e-3, seed: int = 0) -> list[float]:  # fmt: skip
    """``steps`` AdamW steps of next-token loss on ``Answer: N<eos>`` after each prompt."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for p in problems:
        prompt = render_prompt(tokenizer, p.question)
        answer = tokenizer.encode(p.solution, add_special_tokens=False) + [tokenizer.eos_token_id]
        examples.append((prompt, answer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        picks = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        width = max(len(examples[i][0]) + len(examples[i][1]) for i in picks)
        ids = torch.full((batch_size, width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, i in enumerate(picks):
            prompt, answer = examples[i]
            seq = prompt + answer
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, len(prompt) : len(seq)] = torch.tensor(answer)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
