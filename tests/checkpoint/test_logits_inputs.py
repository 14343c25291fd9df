"""The logits check's inputs and arithmetic (no processes spawned)."""

import torch

from mindspeed_rl.checkpoint.logits_check import causal_mask, compare_logits, encode_prompts
from mindspeed_rl.checkpoint.mcore_layout import ShardLayout


def test_prompts_are_right_padded_and_padding_is_masked(tmp_path):
    from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer

    tokenizer_dir = build_toy_tokenizer(tmp_path / "tok")
    tokens, valid = encode_prompts(tokenizer_dir, ["Answer: 42", "Answer: 42 is the answer"])
    lengths = valid.sum(dim=1).tolist()
    assert lengths[0] < lengths[1] == tokens.shape[1]
    assert tokens[0, lengths[0] :].eq(0).all() and not valid[0, lengths[0] :].any()


def test_differences_are_measured_on_real_tokens_only():
    reference = torch.tensor([[[1.0, -4.0], [2.0, 0.0]]])  # [B=1, S=2, V=2]
    logits = torch.tensor([[[1.5, -4.0], [9.0, 9.0]]])  # position 1 is padding
    valid = torch.tensor([[True, False]])
    report = compare_logits(logits, reference, ShardLayout(2, 1, 1), valid)
    assert report.max_abs_diff == 0.5
    assert report.max_rel_diff == 0.5 / 4.0
    assert report.top1_agreement == 1.0
    assert not report.passed(1e-4) and report.passed(0.5)
    assert "TP=2 PP=1 EP=1" in str(report)


def test_causal_mask_blocks_the_future():
    mask = causal_mask(batch=1, seq=3)
    assert mask.shape == (1, 1, 3, 3)
    assert mask[0, 0].tolist() == [[False, True, True], [False, False, True], [False, False, False]]
