"""Online weight sync: the trained actor's shards -> full Hugging Face tensors on every rank.

Through the one parameter mapping (``models/param_mapping.py``), per layer bucket so that peak
memory is one layer of full tensors, without a round trip through disk:

1. the ranks of pipeline stage ``s`` all-gather the bucket's dense shards over their
   tensor-parallel group and merge them into HF tensors (through shared memory when the group is
   gloo on one host: ``platform/host_gather.py``); the ranks of expert-parallel rank ``e`` do the
   same with their experts over the expert tensor-parallel group (the TP group, or none with
   ``moe_tp_extend_ep``: each rank holds whole experts of its own);
2. the experts are broadcast over the expert-parallel group and everything over the pipeline
   group, so every rank ends up with every layer.

Every rank calls :func:`iter_synced_blocks` in the same order (it is a collective) and feeds the
items to its colocated rollout engine: ``load_weight_blocks`` where the engine holds HF-named
parameters (the HF engine: the blocks are copied straight into them, one copy per byte), else
``load_weights`` with whole tensors (:func:`iter_synced_weights`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mindspeed_rl.models import tensor_layouts as tl
from mindspeed_rl.models.param_mapping import Param, WeightMapping
from mindspeed_rl.models.tensor_layouts import Block
from mindspeed_rl.platform.host_gather import HostSharedGather


def _gather_tp(
    params: list[Param],
    state: dict[str, torch.Tensor],
    tp: int,
    group,
    host_gather: HostSharedGather | None,
) -> list[list[torch.Tensor]]:
    """Every TP rank's shard of each of ``params``: one all-gather per dtype for the bucket (the
    pieces may view a reused buffer: merge them before the next call)."""
    locals_ = [state[p.name].detach() for p in params]
    if tp == 1:
        return [[t] for t in locals_]
    gathered: list[list[torch.Tensor]] = [[] for _ in params]
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(locals_):
        by_dtype.setdefault(t.dtype, []).append(i)
    for indices in by_dtype.values():
        if host_gather is not None:
            buffers = host_gather.all_gather([locals_[i] for i in indices])
        else:
            flat = torch.cat([locals_[i].reshape(-1) for i in indices])
            buffers = [torch.empty_like(flat) for _ in range(tp)]
            torch.distributed.all_gather(buffers, flat, group=group)
        sizes = [locals_[i].numel() for i in indices]
        for buffer in buffers:
            for i, piece in zip(indices, buffer.split(sizes)):
                gathered[i].append(piece.view_as(locals_[i]))
    return gathered


def _broadcast_pairs(
    pairs: list[tuple[str, torch.Tensor]] | None, src: int, group, device: torch.device
) -> list[tuple[str, torch.Tensor]]:
    """Share ``pairs`` held by global rank ``src`` with every rank of ``group``."""
    header = [[(n, tuple(t.shape), t.dtype) for n, t in pairs] if pairs is not None else None]
    torch.distributed.broadcast_object_list(header, src=src, group=group)
    out = []
    for i, (name, shape, dtype) in enumerate(header[0]):
        tensor = (
            pairs[i][1].contiguous()
            if pairs is not None
            else torch.empty(shape, dtype=dtype, device=device)
        )
        torch.distributed.broadcast(tensor, src=src, group=group)
        out.append((name, tensor))
    return out


def iter_synced_blocks(
    module: torch.nn.Module,
    mapping: WeightMapping,
    tp_gather: HostSharedGather | None = None,
) -> Iterator[tuple[str, list[Block]]]:
    """Yield (HF name, row blocks of the full tensor) for the whole model on every rank (a
    collective). The blocks may view buffers reused for the next item: write them where they go
    (``tensor_layouts.blocks_into``) before asking for it. ``tp_gather``: the TP group's
    shared-memory gather (``host_gather_for``), kept by the caller so that its buffers are mapped
    once per run, not once per sync.

    Per layer: every TP group gathers and merges the dense parameters; the routed experts of
    each expert-parallel rank are gathered over its expert-TP group (the TP group; nobody with
    ``moe_tp_extend_ep``, whose experts are whole) and broadcast over the expert-parallel group
    (``models/placement.py``)."""
    from megatron.core import parallel_state as ps

    state = {k: v for k, v in module.state_dict().items() if not k.endswith("_extra_state")}
    device = next(module.parameters()).device
    tp_group = ps.get_tensor_model_parallel_group()
    my_pp = ps.get_pipeline_model_parallel_rank()
    pp_ranks = ps.get_pipeline_model_parallel_group()
    pp_global = torch.distributed.get_process_group_ranks(pp_ranks)
    expert_ep, expert_tp = mapping.expert_ep, mapping.expert_tp
    my_expert = ps.get_expert_model_parallel_rank() if expert_ep > 1 else 0
    ep_group = ps.get_expert_model_parallel_group() if expert_ep > 1 else None
    ep_global = torch.distributed.get_process_group_ranks(ep_group) if ep_group else []
    etp_group = ps.get_expert_tensor_parallel_group() if expert_tp > 1 else None
    tied = not mapping.model.untie_embeddings_and_output_weights

    def materialized(items: list[tuple[str, list[Block]]]) -> list[tuple[str, torch.Tensor]]:
        return [(name, tl.concat_blocks(blocks)) for name, blocks in items]

    def merged(params, parts, group, gather) -> list[list[tuple[str, list[Block]]]]:
        """Per parameter, its HF tensors as blocks (one gather per dtype for all of them: a
        second gather may reuse the first's buffers, which the blocks view)."""
        gathered = _gather_tp(params, state, parts, group, gather)
        return [mapping.merge_blocks(p, shards) for p, shards in zip(params, gathered)]

    def flat(per_param: list[list[tuple[str, list[Block]]]]) -> list[tuple[str, list[Block]]]:
        return [item for items in per_param for item in items]

    holders = [mapping.placement.expert_holders(r)[0] for r in range(expert_ep)]
    for stage in range(mapping.pp):
        # the parameters of each expert rank, named as the shard (tp_rank, ep_rank) holds them
        stage_buckets = [mapping.buckets(stage, e, t) for t, e in holders]
        for bucket_index in range(len(stage_buckets[0])):
            stage_items: list[tuple[str, list[Block]]] | None = None
            if my_pp == stage:
                # a tied output layer's HF tensor is the embedding
                dense = [
                    p
                    for p in stage_buckets[0][bucket_index]
                    if not p.expert and not (tied and p.name == "output_layer.weight")
                ]
                mine = [p for p in stage_buckets[my_expert][bucket_index] if p.expert]
                if expert_tp == mapping.tp:  # one group: one gather for the whole bucket
                    both = merged(dense + mine, mapping.tp, tp_group, tp_gather)
                    stage_items, my_items = flat(both[: len(dense)]), flat(both[len(dense) :])
                else:
                    stage_items = flat(merged(dense, mapping.tp, tp_group, tp_gather))
                    my_items = flat(merged(mine, expert_tp, etp_group, None))
                for expert_rank in range(expert_ep):
                    items = my_items if my_expert == expert_rank else None
                    if expert_ep > 1:
                        pairs = materialized(items) if items is not None else None
                        pairs = _broadcast_pairs(pairs, ep_global[expert_rank], ep_group, device)
                        items = [(name, [tensor]) for name, tensor in pairs]
                    stage_items.extend(items)
            if mapping.pp > 1:
                pairs = materialized(stage_items) if stage_items is not None else None
                pairs = _broadcast_pairs(pairs, pp_global[stage], pp_ranks, device)
                stage_items = [(name, [tensor]) for name, tensor in pairs]
            yield from stage_items


def iter_synced_weights(
    module: torch.nn.Module,
    mapping: WeightMapping,
    tp_gather: HostSharedGather | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """:func:`iter_synced_blocks` as (HF name, full tensor) pairs, each a new tensor: for engines
    that take whole tensors (vLLM's loaders)."""
    for name, blocks in iter_synced_blocks(module, mapping, tp_gather):
        yield name, tl.concat_blocks(blocks)
