"""Rank body for test_logprobs.py: vocab-parallel log-probs / entropy of the response positions
(padded and packed rows) vs a plain full-vocabulary fp32 reference, values and gradients."""

from __future__ import annotations

import torch

from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed

VOCAB = 22
# (with_entropy, entropy_grad): log-probs only, entropy as a metric, entropy in the loss
ENTROPY_MODES = ((False, False), (True, False), (True, True))


def _rows():
    from mindspeed_rl.workers.rows import MegatronRows

    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, VOCAB, (3, 7), generator=g)
    # row 0: prompt 2 + response 5; row 1: prompt 3 + response 2; row 2: prompt 4, no response
    starts, lengths = torch.tensor([2, 3, 4]), torch.tensor([7, 5, 4])
    return MegatronRows(tokens, starts, response_width=5, lengths=lengths)


def _reference(full: torch.Tensor, rows, temperature: float):
    """Loops over the valid response tokens: {(row, j): (log p, entropy)} of softmax(full / t)."""
    logp = torch.log_softmax(full.float() / temperature, dim=-1)
    out = {}
    for i in range(rows.tokens.shape[0]):
        start, end = int(rows.response_start[i]), int(rows.lengths[i])
        for j in range(end - start):
            at = logp[i, start + j - 1]
            out[i, j] = (at[rows.tokens[i, start + j]], -(at.exp() * at).sum())
    return out


def _compare(rank: int, world: int, packed: bool, temperature: float, mode) -> dict:
    from mindspeed_rl.workers.forward_pass import response_log_probs
    from mindspeed_rl.workers.packing import pack_rows

    with_entropy, entropy_grad = mode
    rows = _rows()
    g = torch.Generator().manual_seed(5)
    full = torch.randn(3, 7, VOCAB, generator=g) * 3
    weights = torch.randn(3, 5, generator=g)
    ent_weights = torch.randn(3, 5, generator=g)

    ref_full = full.clone().requires_grad_(True)
    ref = _reference(ref_full, rows, temperature)
    ref_loss = sum(weights[i, j] * lp for (i, j), (lp, _) in ref.items())
    if entropy_grad:
        ref_loss = ref_loss + sum(ent_weights[i, j] * e for (i, j), (_, e) in ref.items())
    ref_loss.backward()
    ref = {key: (lp.detach(), e.detach()) for key, (lp, e) in ref.items()}

    local_full = full.chunk(world, dim=-1)[rank].clone().requires_grad_(True)
    shaped, logits = rows, local_full
    if packed:
        shaped = pack_rows(rows)
        keep = torch.arange(7).unsqueeze(0) < rows.lengths.unsqueeze(1)
        logits = local_full[keep].unsqueeze(0)  # [1, T, V/TP], T = the real tokens
    lp, ent = response_log_probs(logits, shaped, temperature, with_entropy, entropy_grad)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    for i, j in ref:
        mask[i, j] = True
    loss = (lp * weights * mask).sum()
    if entropy_grad:
        loss = loss + (ent * ent_weights * mask).sum()
    loss.backward()
    entropy_requires_grad = bool(with_entropy and ent.requires_grad)
    lp, ent = lp.detach(), ent.detach() if with_entropy else None
    got = {key: (lp[key], ent[key] if with_entropy else None) for key in ref}
    return {
        "lp": max(abs(float(got[k][0] - ref[k][0])) for k in ref),
        "entropy": max(abs(float(got[k][1] - ref[k][1])) for k in ref) if with_entropy else 0.0,
        "entropy_requires_grad": entropy_requires_grad,
        "grad": float((local_full.grad - ref_full.grad.chunk(world, -1)[rank]).abs().max()),
        "grad_scale": float(ref_full.grad.abs().max()),
    }


def scenarios(rank: int, world: int) -> dict:
    from mindspeed_rl.workers.logprobs import token_log_probs

    out = {}
    for packed in (False, True):
        for temperature in (1.0, 0.7):
            for mode in ENTROPY_MODES:
                out[("packed" if packed else "padded", temperature, mode)] = _compare(
                    rank, world, packed, temperature, mode
                )
    # chunking: several chunks, the last one short, give the one-chunk values and gradients
    g = torch.Generator().manual_seed(7)
    full = torch.randn(13, VOCAB, generator=g) * 2
    labels = torch.randint(0, VOCAB, (13,), generator=g)
    results = []
    for chunk in (4, 4096):
        local = full.chunk(world, -1)[rank].clone().requires_grad_(True)
        lp, ent = token_log_probs(local, labels, 0.7, True, True, chunk_tokens=chunk)
        (lp.sum() + (ent * torch.arange(13.0)).sum()).backward()
        results.append((lp.detach(), ent.detach(), local.grad))
    out["chunked"] = max(float((a - b).abs().max()) for a, b in zip(results[0], results[1]))
    return out


def run(rank: int, world_size: int) -> dict:
    init_distributed(ParallelLayout(tensor_model_parallel_size=world_size), seed=1)
    try:
        return scenarios(rank, world_size)
    finally:
        destroy_distributed()


def run_context_parallel(rank: int, world_size: int) -> dict:
    """CP = world_size: each rank holds its zigzag chunks of the logits (of every padded row, or
    of every packed sequence) and scores only the response positions among them; the response
    log-probs / entropy summed over CP and each rank's gradient equal the unsplit computation's."""
    from mindspeed_rl.models import context_parallel as cp
    from mindspeed_rl.workers import forward_pass
    from mindspeed_rl.workers.logprobs import token_log_probs
    from mindspeed_rl.workers.packing import pack_rows
    from mindspeed_rl.workers.rows import MegatronRows

    scored = []  # positions (logit rows) each call hands to the log-softmax

    def counting(logits, *args, **kwargs):
        scored.append(logits.numel() // logits.shape[-1])
        return token_log_probs(logits, *args, **kwargs)

    forward_pass.token_log_probs = counting
    init_distributed(ParallelLayout(context_parallel_size=world_size), seed=1)
    try:
        g = torch.Generator().manual_seed(9)
        length = 4 * world_size  # padded rows: a multiple of 2 * CP
        rows = MegatronRows(
            torch.randint(0, VOCAB, (3, length), generator=g), torch.tensor([2, 3, length]),
            response_width=length - 2, lengths=torch.tensor([length, length - 3, length]),
        )  # fmt: skip
        packed = pack_rows(rows, multiple=4 * world_size, segment_multiple=2 * world_size)
        out = {}
        for name, shaped, bounds in (("padded", rows, None), ("packed", packed, packed.cu_seqlens)):
            full = torch.randn(*shaped.tokens.shape, VOCAB, generator=g) * 3
            weights = torch.randn(3, length - 2, generator=g)
            for entropy_grad in (False, True):
                ref_full = full.clone().requires_grad_(True)
                row, position = shaped.response_positions()
                ref_lp, ref_ent = token_log_probs(
                    ref_full[row, position], shaped.tokens[row, position + 1], 0.7, True,
                    entropy_grad,
                )  # fmt: skip
                local = cp.split_sequence(full, world_size, rank, cu_seqlens=bounds)
                local.requires_grad_(True)
                scored.clear()
                lp, ent = forward_pass.response_log_probs(local, shaped, 0.7, True, entropy_grad)
                # the distinct response positions among those this rank holds, and only them
                held = set(
                    cp.zigzag_index(shaped.tokens.shape[1], world_size, rank).tolist()
                    if bounds is None
                    else cp.packed_zigzag_index(bounds, world_size, rank).tolist()
                )
                wanted = set(
                    zip(row.expand_as(position).flatten().tolist(), position.flatten().tolist())
                )
                expected_scored = sum(p in held for _, p in wanted)
                for values, entropy in ((ref_lp, ref_ent), (lp, ent)):
                    loss = (values * weights).sum()
                    if entropy_grad:
                        loss = loss + (entropy * weights).sum()
                    loss.backward()
                expected = cp.split_sequence(ref_full.grad, world_size, rank, cu_seqlens=bounds)
                out[name, entropy_grad] = {
                    "lp": float((lp - ref_lp).abs().max()),
                    "entropy": float((ent - ref_ent).abs().max()),
                    "grad": float((local.grad - expected).abs().max()),
                    "grad_scale": float(expected.abs().max()),
                    "scored": list(scored),
                    "expected_scored": expected_scored,
                    "local_positions": local.shape[0] * local.shape[1],
                }
        return out
    finally:
        destroy_distributed()
