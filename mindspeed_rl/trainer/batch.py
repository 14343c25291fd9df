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
from mindspeed_rl.workers.actor import UpdateBatch
from mindspeed_rl.workers.rows import MegatronRows, to_megatron_rows


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


def data_parallel_order(num_rows: int, mini_batches: int, dp_size: int) -> list[torch.Tensor]:
    """Row indices per DP rank: mini-batch m is rows [m*M, (m+1)*M); rank d takes its d-th equal
    slice of every mini-batch, so the worker's k-th local slice is its share of mini-batch k."""
    rows_per_mini = num_rows // mini_batches
    share = rows_per_mini // dp_size
    assert rows_per_mini * mini_batches == num_rows and share * dp_size == rows_per_mini, (
        f"{num_rows} rows do not split into {mini_batches} mini-batches over {dp_size} DP ranks"
    )
    return [
        torch.cat(
            [
                torch.arange(m * rows_per_mini + d * share, m * rows_per_mini + (d + 1) * share)
                for m in range(mini_batches)
            ]
        )
        for d in range(dp_size)
    ]


def megatron_rows(batch: TensorDict, pad_token_id: int) -> MegatronRows:
    prompt_width = batch["prompts"].shape[1]
    return to_megatron_rows(
        batch["prompts"],
        batch["attention_mask"][:, :prompt_width],
        batch["responses"],
        batch["response_mask"],
        pad_token_id,
    )


def update_batch(batch: TensorDict, index: torch.Tensor, rows: MegatronRows) -> UpdateBatch:
    """One DP rank's ``UpdateBatch`` (rows ``index`` of the batch)."""
    old, ref = batch.get("old_log_probs", None), batch.get("ref_log_probs", None)
    return UpdateBatch(
        rows.select(index),
        batch["loss_mask"][index],
        batch["advantages"][index],
        old[index] if old is not None else None,
        batch["rollout_log_probs"][index],
        ref[index] if ref is not None else None,
    )
