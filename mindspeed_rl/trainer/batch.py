"""Building and splitting the batch of docs/architecture.md's contract on the driver.

One generation batch becomes a ``TensorDict`` [B * n] with fixed widths (prompts left-padded to
``max_prompt_length``, responses right-padded to ``rollout_max_tokens``), so that the batches of one
iteration concatenate under dynamic sampling. Rows of a group (the n samples of one prompt) are
consecutive and share a ``uid``.
"""

from __future__ import annotations

import torch
from tensordict import NonTensorStack, TensorDict

from mindspeed_rl.rollout.base import RolloutOutput


def _pad_right(t: torch.Tensor, width: int, value: float) -> torch.Tensor:
    if t.shape[1] > width:
        raise ValueError(f"responses of {t.shape[1]} tokens exceed rollout_max_tokens={width}")
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)


def generation_batch(
    prompt_ids: list[list[int]],
    ground_truths: list[str],
    uids: list[str],
    out: RolloutOutput,
    *,
    pad_token_id: int,
    max_prompt_length: int,
    max_response_length: int,
) -> TensorDict:
    """The contract's batch for one generation call (rows follow ``out.prompt_index``)."""
    rows = len(out.prompt_index)
    prompts = torch.full((rows, max_prompt_length), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((rows, max_prompt_length), dtype=torch.long)
    for row, p in enumerate(out.prompt_index):
        ids = prompt_ids[p]
        if len(ids) > max_prompt_length:
            raise ValueError(
                f"a prompt has {len(ids)} tokens, more than rl_config.max_prompt_length="
                f"{max_prompt_length}; preprocess with a smaller seq_length or raise the limit"
            )
        prompts[row, max_prompt_length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        prompt_mask[row, max_prompt_length - len(ids) :] = 1
    responses = _pad_right(out.responses, max_response_length, pad_token_id)
    response_mask = _pad_right(out.response_mask, max_response_length, 0)
    batch = TensorDict(
        {
            "prompts": prompts,
            "responses": responses,
            "response_mask": response_mask,
            "attention_mask": torch.cat([prompt_mask, response_mask], dim=1),
            "rollout_log_probs": _pad_right(out.rollout_log_probs, max_response_length, 0.0),
        },
        batch_size=[rows],
    )
    batch.set("uid", NonTensorStack.from_list([uids[p] for p in out.prompt_index]))
    batch.set(
        "ground_truth", NonTensorStack.from_list([ground_truths[p] for p in out.prompt_index])
    )
    return batch


def shuffle_rows(batch: TensorDict, seed: int, iteration: int) -> TensorDict:
    """The rows in a random order (``rl_config.shuffle_mini_batch``), so that a mini-batch mixes
    samples of many prompts instead of holding whole groups. Advantages are computed before, per
    group, so they travel with their rows. Seeded by the run seed and the iteration: the same
    order in a resumed run, and independent of every other random stream."""
    generator = torch.Generator().manual_seed(seed * 1_000_033 + iteration * 7_919 + 17)
    return batch[torch.randperm(len(batch), generator=generator)]
