"""Packed sequences and context parallelism as MindSpeed 2.3.0_core_r0.12.1 reads them.

The attention stand-in reads its inputs as MindSpeed's do:
``core/context_parallel/dot_product_attention.py`` hands ``packed_seq_params.cu_seqlens_q.tolist()``
to ``npu_fusion_attention`` as ``actual_seq_qlen`` (TND: the cumulative ends of the sequences,
the last one the token count; MindSpeed's own ``utils.compute_actual_seq_len`` builds them so,
without a leading 0); ``ring_context_parallel.py`` ``AttentionWithCp`` (causal, packed, no
``cu_seqlens_q_padded``) takes ``packed_seq_params.kv_index`` / ``q_index`` and uses the first
half of each local sequence as the KV block of the later ring steps; ``model/transformer.py``
``get_attention_mask`` builds the compressed causal mask itself when given none (flash
attention). ``MINDSPEED_QKV_INDEX`` below is ``compute_qkv_index`` of
``core/transformer/flash_attention/reset_attention_mask/adaptor.py`` step for step.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from mindspeed_rl.models import context_parallel as cp
from mindspeed_rl.models import layer_specs, mindspeed_packing
from mindspeed_rl.workers.forward_pass import model_inputs
from mindspeed_rl.workers.packing import MicroLayout, micro_layout, pack_rows
from mindspeed_rl.workers.rows import to_megatron_rows

STANDINS = Path(__file__).with_name("standins")


def MINDSPEED_QKV_INDEX(seq_lens):
    full_indices = list(range(seq_lens[-1]))
    prev_eod_pos = 0
    kv_indices, q_indices = [], []
    for eod_pos in seq_lens:
        mid = (eod_pos + prev_eod_pos) // 2
        kv_indices.extend(full_indices[prev_eod_pos:mid])
        q_indices.extend(full_indices[mid:eod_pos])
        prev_eod_pos = eod_pos
    return torch.tensor(q_indices), torch.tensor(kv_indices)


class MindSpeedAttentionStandIn(torch.nn.Module):
    """What MindSpeed's attention reads of one forward's inputs, checked as it uses them."""

    def __init__(self, cp_size: int):
        super().__init__()
        self.cp_size = cp_size
        self.seen = []

    def forward(self, tokens, positions, attention_mask, packed_seq_params=None):
        assert attention_mask is None, "MindSpeed's flash attention builds its own mask"
        if packed_seq_params is not None:
            actual_seq_qlen = packed_seq_params.cu_seqlens_q.tolist()
            lengths = [b - a for a, b in zip([0, *actual_seq_qlen[:-1]], actual_seq_qlen)]
            if min(lengths) <= 0 or actual_seq_qlen[-1] != tokens.shape[1]:
                raise ValueError(f"actual_seq_qlen {actual_seq_qlen} for {tokens.shape[1]} tokens")
            if self.cp_size > 1:
                q_index, kv_index = packed_seq_params.q_index, packed_seq_params.kv_index
                self.seen.append((actual_seq_qlen, q_index, kv_index))
            else:
                self.seen.append((actual_seq_qlen, None, None))
        return tokens


def _rows(lengths=(5, 9, 3), prompt=2):
    g = torch.Generator().manual_seed(0)
    n, width = len(lengths), max(lengths) - prompt
    responses = torch.randint(3, 50, (n, width), generator=g)
    mask = (torch.arange(width) < torch.tensor(lengths).unsqueeze(1) - prompt).long()
    prompts = torch.randint(3, 50, (n, prompt), generator=g)
    return to_megatron_rows(prompts, torch.ones_like(prompts), responses, mask, pad_token_id=0)


@pytest.mark.parametrize("cp_size", [1, 2])
def test_packed_rows_reach_mindspeed_in_its_convention(cp_size):
    layout = MicroLayout("packed", 2 * cp_size, False, 2 * cp_size, mindspeed=True)
    shaped = layout.apply(_rows())
    for cp_rank in range(cp_size):
        attention = MindSpeedAttentionStandIn(cp_size)
        args, kwargs = model_inputs(shaped, layout, torch.device("cpu"), cp_size, cp_rank)
        attention(*args, **kwargs)
        (ends, q_index, kv_index), *_ = attention.seen
        global_bounds = shaped.cu_seqlens.tolist()
        assert ends == [b // cp_size for b in global_bounds[1:]]
        if cp_size == 1:
            continue
        expected_q, expected_kv = MINDSPEED_QKV_INDEX(ends)
        assert torch.equal(q_index, expected_q) and torch.equal(kv_index, expected_kv)
        # the KV half of every local sequence is its early zigzag chunk (chunk cp_rank)
        held = cp.packed_zigzag_index(shaped.cu_seqlens, cp_size, cp_rank)
        for start, end in zip(global_bounds, global_bounds[1:]):
            chunk = (end - start) // (2 * cp_size)
            early = set(range(start + cp_rank * chunk, start + (cp_rank + 1) * chunk))
            local = [i for i in kv_index.tolist() if start <= held[i] < end]
            assert {int(held[i]) for i in local} == early
        # RoPE restarts in every sequence: the position ids MindSpeed's THD RoPE reads
        positions = kwargs["packed_seq_params"].position_ids
        assert positions.shape == (args[0].shape[1], 1)
        assert torch.equal(positions[:, 0], args[1][0])


def test_megatron_boundaries_are_refused_by_the_mindspeed_stand_in():
    shaped = pack_rows(_rows(), 4, 4)
    # megatron-core's boundaries (PackedRows.packed_seq_params): a leading 0
    params = types.SimpleNamespace(cu_seqlens_q=shaped.cu_seqlens)
    with pytest.raises(ValueError, match="actual_seq_qlen"):
        MindSpeedAttentionStandIn(1)(shaped.tokens, shaped.position_ids(), None, params)


def test_no_dense_host_mask_for_mindspeed_flash_attention(monkeypatch):
    from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
    from mindspeed_rl.trainer.config_entry import load_run_config

    monkeypatch.setattr(layer_specs, "platform_backend", lambda: layer_specs.MINDSPEED)
    config = load_run_config(CONFIG_NAME, overrides=["megatron_training.use_flash_attn=true"])
    transformer_config = type("C", (), {})()
    layout = micro_layout(config.rl_config, config.actor, transformer_config)
    assert not layout.host_mask and layout.mindspeed
    args, _ = model_inputs(_rows(), layout, torch.device("cpu"))
    assert args[2] is None
    no_flash = config.actor.model_copy(update={"use_flash_attn": False})
    assert micro_layout(config.rl_config, no_flash, transformer_config).host_mask


def test_the_boundaries_are_published_to_mindspeeds_globals(monkeypatch):
    """With --reset-attention-mask MindSpeed's GPTModel.forward wrapper rebuilds the params from
    its globals (both copies at this branch)."""
    monkeypatch.syspath_prepend(str(STANDINS))
    for name in [m for m in sys.modules if m == "mindspeed" or m.startswith("mindspeed.")]:
        monkeypatch.delitem(sys.modules, name)
    shaped = pack_rows(_rows(), 4, 4)
    positions = cp.split_sequence(shaped.position_ids(), 2, 1, cu_seqlens=shaped.cu_seqlens)
    params = mindspeed_packing.seq_params(shaped.cu_seqlens, positions, 2, "cpu")
    mindspeed_packing.publish(params)
    import mindspeed.utils
    from mindspeed.core.context_parallel import get_batch_utils

    assert get_batch_utils.get_actual_seq_len() is params.cu_seqlens_q
    assert mindspeed.utils.get_actual_seq_len() is params.cu_seqlens_q
    assert mindspeed.utils.get_position_ids() is params.position_ids
    for name in [m for m in sys.modules if m == "mindspeed" or m.startswith("mindspeed.")]:
        del sys.modules[name]


def test_packing_switches_mindspeeds_reset_attention_mask_on(monkeypatch):
    import mindspeed_rl.platform.megatron_setup as megatron_setup
    from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
    from mindspeed_rl.trainer.config_entry import load_run_config
    from mindspeed_rl.workers import setup_phases
    from mindspeed_rl.workers.integrated import IntegratedWorker

    seen = []
    monkeypatch.setattr(megatron_setup, "prepare_megatron", seen.append)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    config = load_run_config(CONFIG_NAME, overrides=["rl_config.use_remove_padding=true"])
    setup_phases.platform(IntegratedWorker(0), config, threads=1)
    assert seen[0]["reset_attention_mask"] and seen[0]["variable_seq_lengths"]
