"""Megatron's schedule over micro-batches of rows, and the log-prob pass built on it.

Shared by the actor (old log-probs, update) and the reference model (reference log-probs): both
run the same pipeline schedule over the same rows, so the reference's log-probs of the initial
weights equal the actor's bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mindspeed_rl.workers.logprobs import token_log_probs
from mindspeed_rl.workers.packing import MicroLayout, PackedRows
from mindspeed_rl.workers.rows import MegatronRows

PADDED = MicroLayout()  # the rows as built: every row padded to the batch's longest


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
        if isinstance(shaped, PackedRows):
            output = model(
                shaped.tokens.to(device),
                shaped.position_ids().to(device),
                None,
                packed_seq_params=shaped.packed_seq_params(device),
            )
        else:
            mask = shaped.causal_mask().to(device) if layout.host_mask else None
            output = model(shaped.tokens.to(device), shaped.position_ids().to(device), mask)
        return output, loss_func_for(index, shaped)

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
    log-softmax: prompt and padding positions cost nothing beyond the output layer.
    ``entropy_grad``: the entropy is differentiable (``entropy_coeff != 0``); otherwise it is a
    metric without a graph."""
    row, position = (i.to(logits.device) for i in rows.response_positions())
    tokens = rows.tokens.to(logits.device)
    labels = tokens[row, position + 1]
    return token_log_probs(
        logits[row, position], labels, temperature, with_entropy=with_entropy,
        entropy_grad=entropy_grad,
    )  # fmt: skip


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
