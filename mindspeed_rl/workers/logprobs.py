"""Per-token log-probs and entropy from Megatron's vocab-parallel logits, without gathering them.

With TP > 1 each rank holds logits for its slice of the vocabulary ([N, V/TP]); gathering a 152k
vocabulary over 20k tokens would take tens of GB in fp32. The reductions are those of
megatron-core's ``vocab_parallel_cross_entropy`` (a max all-reduce, then one sum all-reduce of the
partition function, the label's logit and, for entropy, ``sum p * logit``), done in chunks of
tokens by a custom autograd function that keeps none of the fp32 chunks for backward: it saves the
input logits (the caller's tensor, in its dtype) and two or three floats per token, and recomputes
each chunk's softmax in backward. Forward and backward memory are therefore bounded by one chunk of
fp32 ``[chunk, V/TP]`` temporaries, whatever the number of tokens (docs/parallelism.md,
"Log-prob memory").

Convention (docs/architecture.md): log-probs of ``logits / temperature`` (temperature 0 counts as 1),
exactly as the rollout engines report them, so the importance ratio is 1 when nothing changed.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_TOKENS = 4096


def _tp_group_and_vocab_start(vocab_slice: int):
    """(TP group or None at TP 1, first vocabulary id of this rank's slice)."""
    from megatron.core import parallel_state

    if not torch.distributed.is_initialized():
        return None, 0
    size = parallel_state.get_tensor_model_parallel_world_size()
    if size == 1:
        return None, 0
    rank = parallel_state.get_tensor_model_parallel_rank()
    return parallel_state.get_tensor_model_parallel_group(), rank * vocab_slice


class _VocabParallelLogProbs(torch.autograd.Function):
    """log p(label) [N] (and entropy [N]) of ``softmax(logits / scale)`` over the full vocabulary,
    from this rank's slice ``logits`` [N, V/TP]; chunked in forward and in backward."""

    @staticmethod
    def forward(ctx, logits, labels, scale, with_entropy, entropy_grad, chunk, group, vocab_start):
        count, vocab_slice = logits.shape
        shift = logits.new_empty(count, dtype=torch.float32)  # max of logits / scale
        log_z = logits.new_empty(count, dtype=torch.float32)  # log sum exp(x - shift)
        log_probs = logits.new_empty(count, dtype=torch.float32)
        entropy = logits.new_empty(count, dtype=torch.float32) if with_entropy else None
        local = labels - vocab_start
        outside = (local < 0) | (local >= vocab_slice)
        local = local.masked_fill(outside, 0)
        for start in range(0, count, chunk):
            end = min(start + chunk, count)
            x = logits[start:end].float() / scale
            peak = x.max(dim=-1).values
            if group is not None:
                torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX, group=group)
            x -= peak.unsqueeze(-1)
            label_logit = x.gather(-1, local[start:end].unsqueeze(-1)).squeeze(-1)
            label_logit = label_logit.masked_fill(outside[start:end], 0.0)
            sums = [label_logit]
            exp = x.exp()
            sums.append(exp.sum(dim=-1))
            if with_entropy:
                sums.append((exp * x).sum(dim=-1))
            del exp, x
            sums = torch.stack(sums)
            if group is not None:
                torch.distributed.all_reduce(sums, group=group)
            shift[start:end] = peak
            log_z[start:end] = sums[1].log()
            log_probs[start:end] = sums[0] - log_z[start:end]
            if with_entropy:
                entropy[start:end] = log_z[start:end] - sums[2] / sums[1]
        ctx.scale, ctx.chunk, ctx.vocab_start = scale, chunk, vocab_start
        ctx.entropy_grad = with_entropy and entropy_grad
        saved = [logits, labels, shift, log_z]
        if ctx.entropy_grad:
            saved.append(entropy)
        ctx.save_for_backward(*saved)
        if with_entropy and not entropy_grad:
            ctx.mark_non_differentiable(entropy)
        return log_probs, entropy

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy):
        logits, labels, shift, log_z, *rest = ctx.saved_tensors
        entropy = rest[0] if rest else None
        count, vocab_slice = logits.shape
        grad = torch.empty_like(logits)
        local = labels - ctx.vocab_start
        inside = (local >= 0) & (local < vocab_slice)
        rows = torch.arange(count, device=logits.device)
        if grad_log_probs is None:
            grad_log_probs = torch.zeros_like(log_z)
        for start in range(0, count, ctx.chunk):
            end = min(start + ctx.chunk, count)
            # log softmax of the chunk, recomputed: d log p_y / dx = onehot(y) - p
            log_p = logits[start:end].float() / ctx.scale
            log_p -= (shift[start:end] + log_z[start:end]).unsqueeze(-1)
            p = log_p.exp()
            g = p * -grad_log_probs[start:end].unsqueeze(-1)
            if ctx.entropy_grad and grad_entropy is not None:
                # H = -sum p log p: dH/dx_j = -p_j (log p_j + H)
                log_p += entropy[start:end].unsqueeze(-1)
                g -= grad_entropy[start:end].unsqueeze(-1) * p * log_p
            del p, log_p
            hit = inside[start:end]
            g[rows[: end - start][hit], local[start:end][hit]] += grad_log_probs[start:end][hit]
            grad[start:end] = g / ctx.scale
        return grad, None, None, None, None, None, None, None


def token_log_probs(
    vocab_parallel_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(labels) [...] (and entropy [...]) from logits [..., V/TP]; the log-probs are
    differentiable, the entropy only with ``entropy_grad`` (``entropy_coeff != 0``): otherwise it
    is a metric and backward neither keeps nor computes anything for it."""
    *lead, vocab_slice = vocab_parallel_logits.shape
    flat = vocab_parallel_logits.reshape(-1, vocab_slice)
    group, vocab_start = _tp_group_and_vocab_start(vocab_slice)
    scale = temperature if temperature > 0 else 1.0
    lp, entropy = _VocabParallelLogProbs.apply(
        flat, labels.reshape(-1), scale, with_entropy, entropy_grad, chunk_tokens, group,
        vocab_start,
    )  # fmt: skip
    return lp.reshape(lead), entropy.reshape(lead) if with_entropy else None
