"""Megatron's fused layouts, checked against hand-written expected orders (torch.arange inputs)."""

import pytest
import torch

from mindspeed_rl.models import tensor_layouts as tl


def fuse_qkv(q, k, v, num_query_groups):
    return torch.cat(tl.qkv_blocks(q, k, v, num_query_groups))


def split_qkv(qkv, num_query_groups, head_dim):
    return [torch.cat(part) for part in tl.split_qkv_blocks(qkv, num_query_groups, head_dim)]


def test_qkv_is_interleaved_per_query_group():
    # 4 query heads in 2 groups, head_dim 1: q rows 0..3, k rows 10, 11, v rows 20, 21
    q, k, v = torch.arange(4), torch.arange(10, 12), torch.arange(20, 22)
    fused = fuse_qkv(q, k, v, num_query_groups=2)
    assert fused.tolist() == [0, 1, 10, 20, 2, 3, 11, 21]
    back = split_qkv(fused, num_query_groups=2, head_dim=1)
    assert [t.tolist() for t in back] == [[0, 1, 2, 3], [10, 11], [20, 21]]


def test_qkv_weight_rows_keep_head_dim_blocks():
    # 2 heads, 1 group (MQA), head_dim 2, hidden 3
    q = torch.arange(12).reshape(4, 3)
    k = torch.arange(100, 106).reshape(2, 3)
    v = torch.arange(200, 206).reshape(2, 3)
    fused = fuse_qkv(q, k, v, num_query_groups=1)
    assert fused[:, 0].tolist() == [0, 3, 6, 9, 100, 103, 200, 203]
    assert all(torch.equal(a, b) for a, b in zip(split_qkv(fused, 1, 2), (q, k, v)))


def test_qkv_tp_shard_is_fuse_of_sliced_groups():
    """TP rank r's block of the fused tensor == fuse of the r-th slices of q, k, v."""
    q, k, v = torch.arange(8), torch.arange(10, 14), torch.arange(20, 24)  # 4 groups, hd 1
    full = fuse_qkv(q, k, v, 4)
    for r in range(2):
        part = fuse_qkv(q.chunk(2)[r], k.chunk(2)[r], v.chunk(2)[r], 2)
        assert torch.equal(full.chunk(2)[r], part)
    assert full.chunk(2)[1].tolist() == [4, 5, 12, 22, 6, 7, 13, 23]


def test_gate_up_fused_per_rank():
    gate, up = torch.arange(4), torch.arange(10, 14)
    rank1 = tl.fuse_gate_up(gate.chunk(2)[1], up.chunk(2)[1])
    assert rank1.tolist() == [2, 3, 12, 13]
    assert [t.tolist() for t in tl.split_gate_up(rank1)] == [[2, 3], [12, 13]]


def test_grouped_fc1_memory_is_per_expert_transposed_blocks():
    # 2 experts, fc1 [X=2, hidden=3] each
    fc1 = [torch.arange(6).reshape(2, 3), torch.arange(10, 16).reshape(2, 3)]
    weight1 = tl.pack_grouped_fc1(fc1)
    assert weight1.shape == (3, 4)
    # GroupedMLP views weight1 as [E, hidden, X]; block e must be fc1_e.T
    view = weight1.view(2, 3, 2)
    assert torch.equal(view[0], fc1[0].t()) and torch.equal(view[1], fc1[1].t())
    assert weight1.flatten().tolist() == [0, 3, 1, 4, 2, 5, 10, 13, 11, 14, 12, 15]
    assert all(torch.equal(a, b) for a, b in zip(tl.unpack_grouped_fc1(weight1, 2), fc1))


def test_grouped_fc2_memory_is_per_expert_transposed_blocks():
    fc2 = [torch.arange(6).reshape(3, 2), torch.arange(10, 16).reshape(3, 2)]  # [hidden, Y]
    weight2 = tl.pack_grouped_fc2(fc2)
    assert weight2.shape == (4, 3)
    view = weight2.view(2, 2, 3)  # GroupedMLP's [E, Y, hidden]
    assert torch.equal(view[1], fc2[1].t())
    assert all(torch.equal(a, b) for a, b in zip(tl.unpack_grouped_fc2(weight2, 2), fc2))


def test_blocks_are_views_of_their_inputs():
    """What lets a file writer copy them from where they lie, not assemble them."""
    q, k, v = torch.arange(8.0), torch.arange(10.0, 14), torch.arange(20.0, 24)
    blocks = tl.qkv_blocks(q, k, v, 4)
    assert all(b.untyped_storage().data_ptr() in {t.data_ptr() for t in (q, k, v)} for b in blocks)
    fused = tl.concat_blocks(blocks)
    assert torch.equal(fused, fuse_qkv(q, k, v, 4))
    assert fused.untyped_storage().data_ptr() not in {t.data_ptr() for t in (q, k, v)}
    for part, original in zip(tl.split_qkv_blocks(fused, 4, 1), (q, k, v)):
        assert all(b.untyped_storage().data_ptr() == fused.data_ptr() for b in part)
        assert torch.equal(torch.cat(part), original)


def test_column_concat_is_cat_along_columns_row_range_by_row_range():
    parts = (torch.arange(12.0).reshape(4, 3), torch.arange(100.0, 108).reshape(4, 2))
    joined = tl.ColumnConcat(parts)
    assert joined.shape == (4, 5) and joined.dtype == torch.float32
    assert torch.equal(joined.materialize(), torch.cat(parts, dim=1))
    out = torch.empty(2, 5)
    joined.rows_into(1, 3, out)
    assert torch.equal(out, torch.cat(parts, dim=1)[1:3])
    assert tl.blocks_shape([joined, torch.zeros(3, 5)]) == (7, 5)
    assert torch.equal(tl.concat_blocks([joined, torch.zeros(1, 5)])[4], torch.zeros(5))


def test_blocks_of_different_dtypes_or_widths_are_refused():
    with pytest.raises(ValueError, match="do not make one tensor"):
        tl.blocks_shape([torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bfloat16)])
    with pytest.raises(ValueError, match="do not make one tensor"):
        tl.blocks_shape([torch.zeros(2, 3), torch.zeros(2, 4)])


def test_grouped_unpack_views_equal_the_contiguous_unpack():
    weight1, weight2 = torch.arange(24.0).reshape(3, 8), torch.arange(24.0).reshape(8, 3)
    for unpack, weight in ((tl.unpack_grouped_fc1, weight1), (tl.unpack_grouped_fc2, weight2)):
        views = unpack(weight, 2, contiguous=False)
        assert all(v.data_ptr() >= weight.data_ptr() and not v.is_contiguous() for v in views)
        assert all(torch.equal(a, b) for a, b in zip(views, unpack(weight, 2), strict=True))


def test_blocks_into_writes_rows_and_column_joins_converting_dtype():
    a = torch.arange(6.0).reshape(2, 3)
    left, right = torch.arange(4.0).reshape(2, 2), torch.arange(10.0, 14.0).reshape(2, 2)
    out = torch.zeros(4, 4, dtype=torch.bfloat16)
    tl.blocks_into([torch.cat([a, a[:, :1]], dim=1), tl.ColumnConcat((left, right))], out)
    expected = torch.tensor(
        [[0, 1, 2, 0], [3, 4, 5, 3], [0, 1, 10, 11], [2, 3, 12, 13]], dtype=torch.bfloat16
    )
    assert torch.equal(out, expected)
