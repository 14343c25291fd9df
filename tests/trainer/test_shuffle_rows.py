"""rl_config.shuffle_mini_batch: a seeded permutation of whole rows, the same in a resumed run."""

import torch
from tensordict import NonTensorStack, TensorDict

from mindspeed_rl.trainer.batch import shuffle_rows


def _batch(rows: int = 32) -> TensorDict:
    batch = TensorDict(
        {"x": torch.arange(rows), "y": torch.arange(rows)[:, None].expand(rows, 3) * 10},
        batch_size=[rows],
    )
    batch.set("uid", NonTensorStack.from_list([f"g{i // 4}" for i in range(rows)]))
    return batch


def test_rows_move_whole_and_the_order_is_a_seeded_permutation():
    out = shuffle_rows(_batch(), seed=1234, iteration=3)
    x = out["x"]
    assert sorted(x.tolist()) == list(range(32)) and x.tolist() != list(range(32))
    assert torch.equal(out["y"], x[:, None].expand(32, 3) * 10)  # every key follows its row
    assert out.get("uid").tolist() == [f"g{i // 4}" for i in x.tolist()]
    # the same seed and iteration (a resumed run) give the same order; another iteration not
    assert torch.equal(shuffle_rows(_batch(), 1234, 3)["x"], x)
    assert not torch.equal(shuffle_rows(_batch(), 1234, 4)["x"], x)
    assert not torch.equal(shuffle_rows(_batch(), 99, 3)["x"], x)


def test_the_global_torch_rng_is_untouched():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    shuffle_rows(_batch(), 1234, 0)
    assert torch.equal(torch.rand(3), expected)
