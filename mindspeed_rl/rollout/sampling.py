"""Sampling semantics shared by the rollout engines' CPU path and the tests.

Order of operations (the one vLLM uses): divide the logits by the temperature, keep the ``top_k``
largest, keep the smallest set whose probability reaches ``top_p`` (the token that crosses the
threshold is kept), then drop tokens whose probability is below ``min_p`` x the largest
probability. Temperature 0 is greedy decoding.

Log-probs returned with a sample follow docs/architecture.md: ``log_softmax(logits / temperature)`` over
the *whole* vocabulary, before top-k / top-p / min-p truncation, so that the trainer recomputes
exactly the same value from its own logits (temperature 0 is treated as 1 for log-probs).
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """What one generate call needs (generate_config.sampling_config plus the group size)."""

    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n = {self.n}: at least one sample per prompt")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens = {self.max_tokens}: must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature = {self.temperature}: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p = {self.top_p}: must be in (0, 1]")
        if self.top_k == 0 or self.top_k < -1:
            raise ValueError(f"top_k = {self.top_k}: -1 (off) or >= 1")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p = {self.min_p}: must be in [0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def scaled_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T in fp32 (T = 0 counts as 1: greedy decoding scores with the plain logits)."""
    logits = logits.float()
    return logits / temperature if temperature > 0 else logits


def truncated_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature-scaled logits [.., V] with the tokens outside top-k / top-p / min-p at -inf."""
    logits = scaled_logits(logits, params.temperature)
    vocab = logits.shape[-1]
    if 0 < params.top_k < vocab:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # mass strictly before each token: a token is kept while that mass is below top_p
        before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = before >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if params.min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)
        threshold = params.min_p * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row from ``logits`` [B, V]; returns (tokens [B], log-probs [B]).

    ``uniforms`` [B] in [0, 1): one draw per row from the row's own stream (inverse CDF), so a row
    samples the same token in any batch; without them ``generator`` draws for the whole batch."""
    if params.greedy:
        tokens = logits.argmax(dim=-1)
    else:
        probs = torch.softmax(truncated_logits(logits, params), dim=-1)
        if uniforms is not None:
            cdf = probs.cumsum(dim=-1)
            # below 1 by one fp32 step at least: u * total then never rounds up to the total,
            # which would land on trailing zero-probability tokens
            u = uniforms.clamp(max=1.0 - 2.0**-23).to(device=cdf.device, dtype=cdf.dtype)
            tokens = torch.searchsorted(cdf, u.unsqueeze(-1) * cdf[:, -1:], right=True)
            tokens = tokens.squeeze(-1).clamp(max=probs.shape[-1] - 1)
        else:
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    log_probs = torch.log_softmax(scaled_logits(logits, params.temperature), dim=-1)
    return tokens, log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
