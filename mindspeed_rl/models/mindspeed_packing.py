"""Packed sequences for MindSpeed's attention on NPU, in MindSpeed's conventions.

Read at MindSpeed 2.3.0_core_r0.12.1:

* ``mindspeed/utils.py`` ``compute_actual_seq_len`` and ``core/context_parallel/get_batch_utils.py``
  (``_get_batch_on_this_cp_rank_in_megatron_cp_eod_padding``: ``starts = cat([0], ends[:-1])``):
  the packed boundaries are the *cumulative ends* of the sequences, without a leading 0, and under
  ring context parallelism the ends of this rank's local row (the global ends / CP: every
  sequence contributes two chunks of L / 2CP). ``core/context_parallel/dot_product_attention.py``
  hands ``packed_seq_params.cu_seqlens_q.tolist()`` to ``npu_fusion_attention`` as
  ``actual_seq_qlen`` (TND) as is; megatron-core's boundaries (leading 0) would declare an empty
  first sequence.
* ``core/context_parallel/ring_context_parallel/ring_context_parallel.py`` ``AttentionWithCp``
  (causal, packed): reads ``packed_seq_params.kv_index`` / ``q_index`` (set by MindSpeed's
  ``gpt_forward_wrapper`` through ``compute_qkv_index``, never by megatron-core): per local
  sequence, the first half of its positions (the early zigzag chunk, which later ring steps'
  queries attend to) and the second half (the late chunk).
* ``core/transformer/flash_attention/reset_attention_mask/adaptor.py``: with
  ``--reset-attention-mask`` (which the Ascend suite requires for packing with ring CP)
  ``GPTModel.forward`` replaces the given ``packed_seq_params`` by one built from MindSpeed's
  globals (``set_actual_seq_len``, ``set_position_ids``), and its THD RoPE reads the position ids
  from it. So both are published before each forward (:func:`publish`).
* ``model/transformer.py`` ``get_attention_mask``: given no mask, MindSpeed's flash attention
  builds its compressed causal mask itself (2048 x 2048, sparse mode 2): no dense host mask.
"""

from __future__ import annotations

import importlib.util

import torch


def local_ends(cu_seqlens: torch.Tensor, cp_size: int) -> list[int]:
    """MindSpeed's ``actual_seq_len`` of a packed row: the cumulative ends of its sequences,
    no leading 0, in this CP rank's local row (megatron-style ``cu_seqlens`` [n + 1] in)."""
    bounds = cu_seqlens.long().tolist()
    if bounds[0] != 0 or any(b % cp_size for b in bounds):
        raise ValueError(
            f"cu_seqlens {bounds}: must start at 0, every bound a multiple of {cp_size}"
        )
    return [b // cp_size for b in bounds[1:]]


def qkv_index(ends: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(q_index, kv_index) of a local row with sequence ends ``ends``: per sequence its second
    half (late chunk) and its first half (early chunk), as MindSpeed's ``compute_qkv_index``."""
    q, kv, start = [], [], 0
    for end in ends:
        mid = (start + end) // 2
        kv.append(torch.arange(start, mid))
        q.append(torch.arange(mid, end))
        start = end
    return torch.cat(q), torch.cat(kv)


def seq_params(cu_seqlens: torch.Tensor, positions: torch.Tensor, cp_size: int, device):
    """megatron-core's ``PackedSeqParams`` carrying MindSpeed's boundaries, ring indices and
    position ids (``positions``: this rank's [1, T_local])."""
    from megatron.core.packed_seq_params import PackedSeqParams

    ends = local_ends(cu_seqlens, cp_size)
    starts = [0, *ends[:-1]]
    longest = max(e - s for s, e in zip(starts, ends))
    cu = torch.tensor(ends, dtype=torch.int32, device=device)
    params = PackedSeqParams(
        qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=longest,
        max_seqlen_kv=longest,
    )  # fmt: skip
    if cp_size > 1:
        q_index, kv_index = qkv_index(ends)
        params.q_index, params.kv_index = q_index.to(device), kv_index.to(device)
    params.position_ids = positions.transpose(0, 1).contiguous().to(device)  # [s, b]
    return params


def publish(params) -> None:
    """MindSpeed's globals that its ``gpt_forward_wrapper`` builds its own params from (when
    MindSpeed is installed; on NPU it is)."""
    if importlib.util.find_spec("mindspeed") is None:
        return
    import mindspeed.utils
    from mindspeed.core.context_parallel import get_batch_utils

    # two copies of the global at this branch: the reset-attention-mask adaptor reads
    # get_batch_utils', mindspeed/core/models/gpt/gpt_model.py reads mindspeed.utils'
    for module in (get_batch_utils, mindspeed.utils):
        module.set_actual_seq_len(params.cu_seqlens_q)
    mindspeed.utils.set_position_ids(params.position_ids)
