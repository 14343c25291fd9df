"""Per-token log-probs and entropy from Megatron's vocab-parallel logits, without gathering them.

With TP > 1 each rank holds logits for its slice of the vocabulary ([B, S, V/TP]); gathering a 152k
vocabulary over 20k tokens would take tens of GB in fp32. Log-probs go through megatron-core's
``vocab_parallel_cross_entropy`` (one max and two sum all-reduces, autograd included) and entropy
through the same reductions, in chunks of tokens so that the fp32 copies stay bounded.

Convention (docs/architecture.md): log-probs of ``logits / temperature`` (temperature 0 counts as 1),
exactly as the rollout engines report them, so the importance ratio is 1 when nothing changed.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_TOKENS = 4096


def _vocab_parallel_entropy(scaled: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax over the full vocabulary from this rank's slice [N, V/TP] -> [N]."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region

    local_max = scaled.detach().max(dim=-1, keepdim=True).values
    torch.distributed.all_reduce(
        local_max,
        op=torch.distributed.ReduceOp.MAX,
        group=parallel_state.get_tensor_model_parallel_group(),
    )
    shifted = scaled - local_max
    exp = shifted.exp()
    # reduce_from_...: all-reduce forward, identity backward (d sum / d local part = 1)
    sum_exp = reduce_from_tensor_model_parallel_region(exp.sum(dim=-1))
    sum_exp_shifted = reduce_from_tensor_model_parallel_region((exp * shifted).sum(dim=-1))
    return torch.log(sum_exp) - sum_exp_shifted / sum_exp


def token_log_probs(
    vocab_parallel_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(labels) [B, S] (and entropy [B, S]) from logits [B, S, V/TP]; differentiable."""
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    batch, seq, vocab_slice = vocab_parallel_logits.shape
    flat_logits = vocab_parallel_logits.reshape(batch * seq, vocab_slice)
    flat_labels = labels.reshape(batch * seq)
    scale = temperature if temperature > 0 else 1.0
    log_probs, entropies = [], []
    for start in range(0, batch * seq, chunk_tokens):
        scaled = flat_logits[start : start + chunk_tokens].float() / scale
        if with_entropy:
            entropies.append(_vocab_parallel_entropy(scaled))
        # megatron's cross entropy subtracts the max in place: give it its own copy
        nll = vocab_parallel_cross_entropy(
            scaled.clone(), flat_labels[start : start + chunk_tokens]
        )
        log_probs.append(-nll)
    out = torch.cat(log_probs).reshape(batch, seq)
    entropy = torch.cat(entropies).reshape(batch, seq) if with_entropy else None
    return out, entropy
