"""The context-parallel split and its inverse, on simulated CP ranks: load-balanced chunks, every
token held exactly once, and per-token log-probs / loss / gradients computed rank by rank equal to
the unsplit computation (padded and packed rows)."""

import pytest
import torch

from mindspeed_rl.models import context_parallel as cp


def test_rank_r_holds_chunks_r_and_2cp_minus_1_minus_r():
    assert cp.zigzag_index(8, 2, 0).tolist() == [0, 1, 6, 7]
    assert cp.zigzag_index(8, 2, 1).tolist() == [2, 3, 4, 5]
    assert cp.zigzag_index(4, 1, 0).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("cp_size", [2, 4])
def test_causal_work_is_balanced_and_every_token_is_held_once(cp_size):
    length = 16 * cp_size
    held = [cp.zigzag_index(length, cp_size, r) for r in range(cp_size)]
    assert sorted(torch.cat(held).tolist()) == list(range(length))
    # keys a causal query at position t attends to: t + 1; equal totals per rank
    work = {int((index + 1).sum()) for index in held}
    assert len(work) == 1


def test_a_length_that_does_not_split_is_refused_with_the_rule():
    with pytest.raises(ValueError, match="multiple of 2 \\* CP = 4"):
        cp.zigzag_index(6, 2, 0)


def _log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("cp_size", [1, 2, 4])
@pytest.mark.parametrize("packed", [False, True])
def test_rank_by_rank_log_probs_loss_and_gradients_equal_the_unsplit_ones(cp_size, packed):
    g = torch.Generator().manual_seed(cp_size)
    if packed:  # three sequences end to end, each a multiple of 2 * CP
        lengths = [2 * cp_size, 6 * cp_size, 4 * cp_size]
        cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
        tokens = torch.randint(0, 11, (1, sum(lengths)), generator=g)
    else:
        cu_seqlens = None
        tokens = torch.randint(0, 11, (3, 8 * cp_size), generator=g)
    labels = torch.nn.functional.pad(tokens[:, 1:], (0, 1))  # position t scores token t + 1
    logits = torch.randn(*tokens.shape, 11, generator=g, requires_grad=True)
    wanted = torch.rand(tokens.shape, generator=g) > 0.3  # the positions a loss reads
    wanted[:, -1] = False  # the last position has no label
    weights = torch.randn(tokens.shape, generator=g)

    full = _log_probs(logits, labels)
    loss = (full * weights * wanted).sum() / wanted.sum()
    (expected_grad,) = torch.autograd.grad(loss, logits)

    # each simulated rank scores the wanted positions it holds, from its own logits and the
    # whole rows' labels; the ranks' zero-filled rows summed are the whole rows' values
    restored = torch.zeros(tokens.shape)
    scored = 0
    for r in range(cp_size):
        local_logits = cp.split_sequence(logits, cp_size, r, cu_seqlens=cu_seqlens)
        rows, columns, positions = cp.held_positions(wanted, cp_size, r, cu_seqlens=cu_seqlens)
        assert wanted[rows, positions].all()
        lp = _log_probs(local_logits[rows, columns], labels[rows, positions])
        restored = restored + torch.zeros(tokens.shape).index_put((rows, positions), lp)
        scored += len(rows)
    assert scored == int(wanted.sum())  # every wanted position scored once, nothing else
    torch.testing.assert_close(restored[wanted], full[wanted], rtol=0, atol=0)
    assert not restored[~wanted].any()
    split_loss = (restored * weights * wanted).sum() / wanted.sum()
    torch.testing.assert_close(split_loss, loss)
    (grad,) = torch.autograd.grad(split_loss, logits)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-7)
