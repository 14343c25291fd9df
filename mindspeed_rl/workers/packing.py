"""Packed sequences (``rl_config.use_remove_padding``): a micro-batch's rows laid end to end.

Instead of ``[b, L]`` rows right-padded to the longest row, the valid tokens of every row go into
one ``[1, T]`` sequence (megatron-core's THD layout): ``cu_seqlens`` marks the boundaries, the
attention never crosses them (``PackedSeqParams``; the project attention on CPU, Transformer
Engine on CUDA, MindSpeed on NPU) and RoPE restarts at position 0 in each row, so every token sees
exactly what it sees in the padded layout. ``T`` is rounded up to a multiple of ``multiple``
(the TP size under sequence parallelism, which splits the sequence over TP ranks) with a last,
separate segment of padding that no row reads.
"""

from __future__ import annotations

import dataclasses

import torch

from mindspeed_rl.config.platform_rules import context_parallel_problem
from mindspeed_rl.workers.rows import MegatronRows


@dataclasses.dataclass
class PackedRows:
    tokens: torch.Tensor  # [1, T] int64
    cu_seqlens: torch.Tensor  # [segments + 1] int32: the rows, then the padding (if any)
    row_offsets: torch.Tensor  # [n] where each row starts in T
    response_start: torch.Tensor  # [n] the first response token, within its row
    response_width: int  # R of the contract's [n, R] tensors

    @property
    def real_tokens(self) -> int:
        return int(self.cu_seqlens[len(self.row_offsets)])

    def position_ids(self) -> torch.Tensor:
        """[1, T]: 0, 1, ... within each segment."""
        lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()
        starts = torch.repeat_interleave(self.cu_seqlens[:-1].long(), lengths)
        return (torch.arange(self.tokens.shape[1]) - starts).unsqueeze(0)

    def packed_seq_params(self, device: torch.device):
        """megatron-core's ``PackedSeqParams`` (THD) for this layout, on ``device``."""
        from megatron.core import parallel_state
        from megatron.core.packed_seq_params import PackedSeqParams

        cu = self.cu_seqlens.to(device=device, dtype=torch.int32)
        longest = int((self.cu_seqlens[1:] - self.cu_seqlens[:-1]).max())
        kwargs = dict(
            qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=longest,
            max_seqlen_kv=longest,
        )  # fmt: skip
        if "cp_group" in {f.name for f in dataclasses.fields(PackedSeqParams)}:
            # megatron-core >= 0.14 applies THD RoPE per context-parallel rank
            kwargs["cp_group"] = parallel_state.get_context_parallel_group()
        return PackedSeqParams(**kwargs)

    def response_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``MegatronRows.response_positions``, in the one packed row: (row [n, 1] = 0,
        position [n, R])."""
        offsets = torch.arange(self.response_width)
        first = (self.row_offsets + self.response_start).long() - 1
        position = (first.unsqueeze(1) + offsets).clamp(max=self.tokens.shape[1] - 2)
        return torch.zeros((len(self.row_offsets), 1), dtype=torch.long), position

    def response_values(self, per_position: torch.Tensor) -> torch.Tensor:
        """As ``MegatronRows.response_values``: ``per_position`` [1, T-1] (entry t scores token
        t + 1) -> [n, R]; entries past a row's response are garbage (mask them)."""
        row, position = (i.to(per_position.device) for i in self.response_positions())
        return per_position[row, position]


def pack_rows(rows: MegatronRows, multiple: int = 1, segment_multiple: int = 1) -> PackedRows:
    """The valid tokens of ``rows`` (``rows.lengths``) end to end, padded to ``multiple``.
    ``segment_multiple``: each row's segment is padded to a multiple of it (2 * CP: context
    parallelism cuts every sequence into 2 * CP chunks); the padding follows the row's tokens
    inside its segment, where causal attention never lets a real token see it."""
    if rows.lengths is None:
        raise ValueError("packing needs the rows' lengths (to_megatron_rows records them)")
    lengths = rows.lengths.long()
    segments = -(-lengths // segment_multiple) * segment_multiple
    real = int(segments.sum())
    total = -(-real // multiple) * multiple
    keep = torch.arange(rows.tokens.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(segments, 0)])
    within = torch.arange(int(lengths.max()) if len(lengths) else 0).unsqueeze(0)
    at = (bounds[:-1].unsqueeze(1) + within)[within < lengths.unsqueeze(1)]
    tokens = torch.zeros((1, total), dtype=torch.long)  # padding is never read
    tokens[0, at] = rows.tokens[keep]
    if total > real:
        bounds = torch.cat([bounds, torch.tensor([total])])
    return PackedRows(
        tokens=tokens,
        cu_seqlens=bounds.to(torch.int32),
        row_offsets=bounds[: len(lengths)].clone(),
        response_start=rows.response_start.long(),
        response_width=rows.response_width,
    )


@dataclasses.dataclass(frozen=True)
class MicroLayout:
    """How a micro-batch's rows reach the model.

    * ``padded``: as the batch built them, every row right-padded to the batch's longest row;
    * ``trimmed`` (``use_dynamic_bsz`` without packing): cut to the micro-batch's own longest row,
      so a token-budget micro-batch of short rows does not pay for the batch's longest;
    * ``packed`` (``use_remove_padding``): end to end (``pack_rows``).

    ``multiple``: the sequence length is rounded up to it (the TP size under sequence
    parallelism, which splits the sequence evenly over TP ranks). ``host_mask``: the attention
    backend needs Megatron's dense causal mask (the local spec); the others are causal by
    construction.
    """

    mode: str = "padded"
    multiple: int = 1
    host_mask: bool = True
    segment_multiple: int = 1  # packed rows: each sequence padded to it (2 * CP)
    mindspeed: bool = False  # MindSpeed's attention: its packed-sequence conventions

    def apply(self, rows: MegatronRows) -> MegatronRows | PackedRows:
        if self.mode == "packed":
            return pack_rows(rows, self.multiple, self.segment_multiple)
        width = rows.tokens.shape[1]
        if self.mode == "trimmed" and rows.lengths is not None:
            width = int(rows.lengths.max())
        width = -(-width // self.multiple) * self.multiple
        if width == rows.tokens.shape[1]:
            return rows
        if width < rows.tokens.shape[1]:
            tokens = rows.tokens[:, :width]
        else:
            # padding after every row's end: causal attention never lets a real position see it
            tokens = torch.nn.functional.pad(rows.tokens, (0, width - rows.tokens.shape[1]))
        return dataclasses.replace(rows, tokens=tokens)


def micro_layout(rl_config, actor_config, transformer_config) -> MicroLayout:
    """The actor's (and the reference model's) layout from the config and the platform's
    attention backend. Micro-batches of varying length (trimmed, packed) need a pipeline that
    sends shapes first: ``variable_seq_lengths`` is switched on in ``transformer_config`` then."""
    from mindspeed_rl.models import layer_specs

    mode = (
        "packed"
        if rl_config.use_remove_padding
        else "trimmed"
        if rl_config.use_dynamic_bsz
        else "padded"
    )
    if mode != "padded" and actor_config.pipeline_model_parallel_size > 1:
        transformer_config.variable_seq_lengths = True
    multiple = actor_config.tensor_model_parallel_size if actor_config.sequence_parallel else 1
    segment = 1
    if actor_config.context_parallel_size > 1:
        # every sequence cut into 2 * CP equal chunks, each rank's part split again by SP
        segment = 2 * actor_config.context_parallel_size
        multiple *= segment
    backend = layer_specs.platform_backend()
    host_mask = layer_specs.needs_host_mask(backend, actor_config.use_flash_attn)
    problem = context_parallel_problem(
        actor_config.context_parallel_size, mode == "packed", backend,
        backend in layer_specs.CONTEXT_PARALLEL, host_mask,
    )  # fmt: skip
    if problem:  # config/platform_rules.py, which --dry-run applies too
        raise ValueError(problem)
    return MicroLayout(mode, multiple, host_mask, segment, backend == layer_specs.MINDSPEED)
