"""Online weight sync: the trained actor's shards -> full Hugging Face tensors on every rank.

Through the one parameter mapping (``models/param_mapping.py``), per layer bucket so that peak
memory is one layer of full tensors, without a round trip through disk:

1. the ranks of pipeline stage ``s`` (and expert-parallel rank ``e``) all-gather the bucket's
   shards over their tensor-parallel group and merge them into HF tensors;
2. the result is broadcast over the expert-parallel group (expert weights only) and over the
   pipeline group, so every rank ends up with every layer.

Every rank calls :func:`iter_synced_weights` in the same order (it is a collective) and feeds the
pairs to its colocated rollout engine's ``load_weights``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mindspeed_rl.models.param_mapping import Param, WeightMapping


def _is_expert(param: Param) -> bool:
    return ".mlp.experts." in param.name


def _gather_tp(
    params: list[Param], state: dict[str, torch.Tensor], tp: int, group
) -> list[list[torch.Tensor]]:
    """Every TP rank's shard of each of ``params``: one all-gather per dtype for the bucket."""
    locals_ = [state[p.name].detach() for p in params]
    if tp == 1:
        return [[t] for t in locals_]
    gathered: list[list[torch.Tensor]] = [[] for _ in params]
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(locals_):
        by_dtype.setdefault(t.dtype, []).append(i)
    for indices in by_dtype.values():
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


def iter_synced_weights(
    module: torch.nn.Module, mapping: WeightMapping
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF name, full tensor) for the whole model on every rank (a collective)."""
    from megatron.core import parallel_state as ps

    state = {k: v for k, v in module.state_dict().items() if not k.endswith("_extra_state")}
    device = next(module.parameters()).device
    tp_group = ps.get_tensor_model_parallel_group()
    my_pp = ps.get_pipeline_model_parallel_rank()
    my_ep = ps.get_expert_model_parallel_rank() if mapping.ep > 1 else 0
    pp_ranks = ps.get_pipeline_model_parallel_group()
    pp_global = torch.distributed.get_process_group_ranks(pp_ranks)
    ep_group = ps.get_expert_model_parallel_group() if mapping.ep > 1 else None
    ep_global = torch.distributed.get_process_group_ranks(ep_group) if ep_group else []
    tied = not mapping.model.untie_embeddings_and_output_weights

    for stage in range(mapping.pp):
        stage_buckets = [mapping.buckets(stage, ep_rank) for ep_rank in range(mapping.ep)]
        for bucket_index in range(len(stage_buckets[0])):
            stage_pairs: list[tuple[str, torch.Tensor]] | None = None
            if my_pp == stage:
                stage_pairs = []
                for ep_rank in range(mapping.ep):
                    bucket = stage_buckets[ep_rank][bucket_index]
                    wanted = [p for p in bucket if ep_rank == 0 or _is_expert(p)]
                    pairs = None
                    if my_ep == ep_rank:
                        # a tied output layer's HF tensor is the embedding
                        wanted = [
                            p for p in wanted if not (tied and p.name == "output_layer.weight")
                        ]
                        pairs = []
                        for param, shards in zip(
                            wanted, _gather_tp(wanted, state, mapping.tp, tp_group)
                        ):
                            pairs.extend(mapping.merge(param, shards))
                    if mapping.ep > 1:
                        pairs = _broadcast_pairs(pairs, ep_global[ep_rank], ep_group, device)
                    stage_pairs.extend(pairs)
            if mapping.pp > 1:
                stage_pairs = _broadcast_pairs(stage_pairs, pp_global[stage], pp_ranks, device)
            yield from stage_pairs
