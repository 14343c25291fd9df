"""Megatron's schedule over micro-batches of rows, and the log-prob pass built on it.

Shared by the actor (old log-probs, update) and the reference model (reference log-probs): both
run the same pipeline schedule over the same rows, so the reference's log-probs of the initial
weights equal the actor's bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mindspeed_rl.models import context_parallel as cp
from mindspeed_rl.workers.logprobs import token_log_probs
from mindspeed_rl.workers.packing import MicroLayout, PackedRows
from mindspeed_rl.workers.rows import MegatronRows

PADDED = MicroLayout()  # the rows as built: every row padded to the batch's longest


def context_parallel_rank() -> tuple[int, int, object]:
    """(CP size, this rank's CP rank, the CP group); (1, 0, None) without context parallelism."""
    from megatron.core import parallel_state

    if not torch.distributed.is_initialized():
        return 1, 0, None
    size = parallel_state.get_context_parallel_world_size()
    if size == 1:
        return 1, 0, None
    return (
        size,
        parallel_state.get_context_parallel_rank(),
        parallel_state.get_context_parallel_group(),
    )


class _SumOverContextParallel(torch.autograd.Function):
    """All-reduce (sum) ``rows`` [B, L] over the CP group: each rank contributes the values of
    the positions it holds, zeros elsewhere. Every CP rank then computes the same loss of the
    whole rows, so backward hands each rank the gradient unchanged (no sum over ranks): a rank's
    positions pick their own entries of it, and megatron's schedule and DDP turn the replicated
    loss into the right gradient (loss x CP, gradients / (DP x CP))."""

    @staticmethod
    def forward(ctx, rows, group):
        total = rows.clone()
        torch.distributed.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def run_schedule(
    model: torch.nn.Module,
    device: torch.device,
    rows: list[MegatronRows],
    loss_func_for,
    forward_only: bool,
    layout: MicroLayout = PADDED,
) -> list[dict]:
    """Run Megatron's schedule over micro-batches ``rows``; ``loss_func_for(i, shaped)`` builds
    the loss function of micro-batch i (called on the last pipeline stage only), ``shaped`` being
    its rows as the model saw them (``layout.apply``: padded or trimmed ``MegatronRows``, or
    ``PackedRows``)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    layouts = [layout.apply(r) for r in rows]

    def forward_step(data_iterator, model):
        index, shaped = next(data_iterator)
        args, kwargs = model_inputs(shaped, layout, device, *context_parallel_rank()[:2])
        return model(*args, **kwargs), loss_func_for(index, shaped)

    return get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter(enumerate(layouts)),
        model=[model],
        num_microbatches=len(layouts),
        # packed micro-batches differ in length: the config's variable_seq_lengths makes the
        # pipeline send shapes first (set where packing is switched on)
        seq_length=max(shaped.tokens.shape[1] for shaped in layouts),
        micro_batch_size=layouts[0].tokens.shape[0],
        forward_only=forward_only,
    )


def model_inputs(shaped, layout: MicroLayout, device, cp_size: int = 1, cp_rank: int = 0):
    """(args, kwargs) of the model's forward for one micro-batch ``shaped`` (padded / trimmed
    ``MegatronRows`` or ``PackedRows``): this CP rank's chunks of every sequence (TE and MindSpeed
    expect them), the dense causal mask only where the backend needs one, packed boundaries in
    the backend's convention (megatron-core's, or MindSpeed's: ``models/mindspeed_packing.py``)."""
    tokens, positions = shaped.tokens, shaped.position_ids()
    if cp_size > 1:
        cu_seqlens = _packed_bounds(shaped)
        tokens = cp.split_sequence(tokens, cp_size, cp_rank, cu_seqlens=cu_seqlens)
        positions = cp.split_sequence(positions, cp_size, cp_rank, cu_seqlens=cu_seqlens)
    args = (tokens.to(device), positions.to(device))
    if not isinstance(shaped, PackedRows):
        mask = shaped.causal_mask().to(device) if layout.host_mask else None
        return (*args, mask), {}
    if layout.mindspeed:
        from mindspeed_rl.models import mindspeed_packing

        params = mindspeed_packing.seq_params(shaped.cu_seqlens, positions, cp_size, device)
        mindspeed_packing.publish(params)
    else:
        params = shaped.packed_seq_params(device)
    return (*args, None), {"packed_seq_params": params}


def response_log_probs(
    logits: torch.Tensor,
    rows: MegatronRows | PackedRows,
    temperature: float,
    with_entropy: bool,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropy) [B, R] of the response tokens of ``rows`` (a micro-batch's
    ``MegatronRows`` or ``PackedRows``) from its ``logits`` [b, S, V/TP].

    Only the B·R positions that predict a response token are gathered and enter the vocab-parallel
    log-softmax: prompt and padding positions cost nothing beyond the output layer, under context
    parallelism too (each CP rank scores the response positions it holds).
    ``entropy_grad``: the entropy is differentiable (``entropy_coeff != 0``); otherwise it is a
    metric without a graph."""
    row, position = (i.to(logits.device) for i in rows.response_positions())
    tokens = rows.tokens.to(logits.device)
    cp_size, cp_rank, cp_group = context_parallel_rank()
    if cp_size > 1:
        return _context_parallel_log_probs(
            logits, tokens, (row, position), temperature, with_entropy, entropy_grad,
            (cp_size, cp_rank, cp_group), _packed_bounds(rows),
        )  # fmt: skip
    labels = tokens[row, position + 1]
    return token_log_probs(
        logits[row, position], labels, temperature, with_entropy=with_entropy,
        entropy_grad=entropy_grad,
    )  # fmt: skip


def _packed_bounds(rows: MegatronRows | PackedRows) -> torch.Tensor | None:
    """The sequence boundaries CP splits by: each packed sequence, or None (each padded row)."""
    return rows.cu_seqlens if isinstance(rows, PackedRows) else None


def _context_parallel_log_probs(
    logits, tokens, response, temperature, with_entropy, entropy_grad, context, cu_seqlens
):
    """``response_log_probs`` from this CP rank's logits [b, L/CP, V/TP] (its zigzag chunks of
    every row or packed sequence): the rank scores the response positions it holds
    (``cp.held_positions``), against labels from the whole rows; the values of all ranks,
    summed over CP into whole rows, are picked at the response positions as at CP = 1. (The
    positions past a row's end, clamped into it, are held and read like any other.)"""
    cp_size, cp_rank, group = context
    row, position = response
    wanted = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    wanted[row, position] = True
    rows, columns, positions = cp.held_positions(wanted, cp_size, cp_rank, cu_seqlens)
    lp, entropy = token_log_probs(
        logits[rows, columns], tokens[rows, positions + 1], temperature,
        with_entropy=with_entropy, entropy_grad=entropy_grad,
    )  # fmt: skip

    def whole(local):
        held = local.new_zeros(tokens.shape).index_put((rows, positions), local)
        return _SumOverContextParallel.apply(held, group)[row, position]

    return whole(lp), whole(entropy) if entropy is not None else None


@torch.no_grad()
def forward_log_probs(
    model: torch.nn.Module,
    device: torch.device,
    temperature: float,
    rows: MegatronRows,
    micro_batches: int | Sequence[int],
    layout: MicroLayout = PADDED,
) -> torch.Tensor | None:
    """Log-probs [B, R] of the responses under ``model``'s weights, on the last pipeline stage
    (None on the others), on the host. ``micro_batches``: rows per micro-batch; ``layout``: how
    they reach the model (``run_schedule``)."""
    from megatron.core import parallel_state

    model.eval()
    micros = rows.split(micro_batches)

    def loss_func_for(index: int, shaped):
        def loss_func(logits):
            lp, _ = response_log_probs(logits, shaped, temperature, with_entropy=False)
            return lp.sum() * 0.0, {"log_probs": lp}

        return loss_func

    outputs = run_schedule(model, device, micros, loss_func_for, forward_only=True, layout=layout)
    if not parallel_state.is_pipeline_last_stage():
        return None
    return torch.cat([o["log_probs"] for o in outputs], dim=0).cpu()
