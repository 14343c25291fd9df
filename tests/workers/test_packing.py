"""The packed layout of a micro-batch: tokens, boundaries, positions, response picking."""

from __future__ import annotations

import torch

from mindspeed_rl.workers.packing import pack_rows
from mindspeed_rl.workers.rows import to_megatron_rows


def _rows():
    # left-padded prompts (pad 0), right-padded responses, as in the batch contract
    prompts = torch.tensor([[0, 5, 6], [7, 8, 9]])
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    responses = torch.tensor([[11, 12, 0], [13, 0, 0]])
    response_mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    return to_megatron_rows(prompts, prompt_mask, responses, response_mask, pad_token_id=0)


def test_rows_end_to_end_with_a_separate_padding_segment():
    packed = pack_rows(_rows(), multiple=4)
    assert packed.tokens.tolist() == [[5, 6, 11, 12, 7, 8, 9, 13]]
    assert packed.cu_seqlens.tolist() == [0, 4, 8]  # 8 is a multiple of 4: no padding
    packed = pack_rows(_rows(), multiple=3)
    assert packed.tokens.tolist() == [[5, 6, 11, 12, 7, 8, 9, 13, 0]]
    assert packed.cu_seqlens.tolist() == [0, 4, 8, 9]
    assert packed.real_tokens == 8
    assert packed.position_ids().tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 0]]


def test_response_values_pick_what_the_padded_layout_picks():
    rows = _rows()
    packed = pack_rows(rows, multiple=3)
    # a per-position score that names the token it predicts: padded [B, L-1], packed [1, T-1]
    padded_scores = rows.tokens[:, 1:].float()
    packed_scores = packed.tokens[:, 1:].float()
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert torch.equal(
        packed.response_values(packed_scores)[mask], rows.response_values(padded_scores)[mask]
    )
    assert packed.response_values(packed_scores)[mask].tolist() == [11.0, 12.0, 13.0]
