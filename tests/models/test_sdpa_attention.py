"""The project attention against a hand-written softmax(QK^T)V, in padded and packed layouts."""

import math
import types

import pytest
import torch

from mindspeed_rl.platform.megatron_setup import prepare_megatron

prepare_megatron()

from megatron.core.packed_seq_params import PackedSeqParams  # noqa: E402
from megatron.core.transformer.enums import AttnMaskType  # noqa: E402

from mindspeed_rl.models.sdpa_attention import SDPAttention  # noqa: E402

HEADS, GROUPS, DIM = 4, 2, 8


def _attention(**config) -> SDPAttention:
    fields = dict(
        context_parallel_size=1, kv_channels=DIM, attention_dropout=0.0, sequence_parallel=False
    )
    fields.update(config)
    return SDPAttention(types.SimpleNamespace(**fields), 1, AttnMaskType.causal, "self")


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[s, h, d] queries, [s, g, d] keys / values -> [s, h * d], causal, explicit scores."""
    share = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(share, dim=1), v.repeat_interleave(share, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    length = q.shape[0]
    future = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    probs = scores.masked_fill(future, float("-inf")).softmax(-1)
    return torch.einsum("hqk,khd->qhd", probs, v).reshape(length, -1)


def _qkv(length: int, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(length, batch, HEADS, DIM, generator=g),
        torch.randn(length, batch, GROUPS, DIM, generator=g),
        torch.randn(length, batch, GROUPS, DIM, generator=g),
    )


def test_padded_batch_is_causal_grouped_query_attention():
    q, k, v = _qkv(11, batch=2)
    out = _attention()(q, k, v, attention_mask=None)
    assert out.shape == (11, 2, HEADS * DIM)
    for b in range(2):
        torch.testing.assert_close(out[:, b], _reference(q[:, b], k[:, b], v[:, b]))


def test_packed_sequences_never_attend_across_a_boundary():
    lengths = [5, 1, 7]
    parts = [_qkv(n, seed=i) for i, n in enumerate(lengths)]
    q, k, v = (torch.cat([p[j][:, 0] for p in parts]) for j in range(3))  # [t, h|g, d]
    cu = torch.tensor([0, 5, 6, 13], dtype=torch.int32)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu)
    out = _attention()(q, k, v, attention_mask=None, packed_seq_params=params)
    expected = torch.cat([_reference(p[0][:, 0], p[1][:, 0], p[2][:, 0]) for p in parts])
    torch.testing.assert_close(out, expected)


def test_packed_sequences_with_padded_offsets_leave_the_padding_zero():
    a, b = _qkv(3, seed=1), _qkv(4, seed=2)
    pad = [torch.zeros(1, t.shape[2], DIM) for t in a]
    q, k, v = (torch.cat([a[j][:, 0], pad[j], b[j][:, 0]]) for j in range(3))
    params = PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=torch.tensor([0, 3, 7]),
        cu_seqlens_kv=torch.tensor([0, 3, 7]),
        cu_seqlens_q_padded=torch.tensor([0, 4, 8]),
        cu_seqlens_kv_padded=torch.tensor([0, 4, 8]),
    )
    out = _attention()(q, k, v, attention_mask=None, packed_seq_params=params)
    torch.testing.assert_close(out[:3], _reference(a[0][:, 0], a[1][:, 0], a[2][:, 0]))
    assert torch.equal(out[3], torch.zeros(HEADS * DIM))
    torch.testing.assert_close(out[4:], _reference(b[0][:, 0], b[1][:, 0], b[2][:, 0]))


def test_context_parallelism_is_refused_by_name():
    with pytest.raises(ValueError, match="context_parallel_size=2"):
        _attention(context_parallel_size=2)
