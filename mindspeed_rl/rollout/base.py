"""The one interface the trainer sees on every platform, and what a generate call returns.

Rows come out grouped: the ``n`` samples of prompt ``i`` are rows ``i*n .. i*n+n-1``. Tensors follow
the batch contract of docs/architecture.md: ``responses`` [B*n, R] right-padded with ``pad_token_id``,
``response_mask`` [B*n, R] (1 on generated tokens, EOS included), ``rollout_log_probs`` float32
[B*n, R] (0 on padding), where R is the longest response of the call.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, Protocol

import torch

from mindspeed_rl.rollout.sampling import SamplingParams

FinishReason = Literal["stop", "length"]

# What an engine can hold on the device, in the order a colocated step wakes them: the weights
# first (the sync fills them), the KV cache after the actor's parameters have left the device.
ENGINE_TAGS = ("weights", "kv_cache")


def wake_tags(tags: Sequence[str] | None) -> set[str]:
    """The tags of a ``wake_up`` call (None: all), checked."""
    wanted = set(ENGINE_TAGS if tags is None else tags)
    unknown = wanted - set(ENGINE_TAGS)
    if unknown:
        raise ValueError(f"unknown engine memory tags {sorted(unknown)}; valid: {ENGINE_TAGS}")
    return wanted


def eos_token_ids_of(model_dir: str | Path) -> list[int]:
    """Every token that ends a response: ``eos_token_id`` (an int or a list) of the model's
    ``generation_config.json`` and of its ``config.json``, in that order, without repeats (Qwen
    instruct models stop on generation_config.json's list, e.g. ``<|im_end|>`` and
    ``<|endoftext|>``). Empty when neither names one."""
    ids: list[int] = []
    for name in ("generation_config.json", "config.json"):
        path = Path(model_dir) / name
        if not path.is_file():
            continue
        value = json.loads(path.read_text()).get("eos_token_id")
        for token in value if isinstance(value, list) else [value]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
    return ids


@dataclasses.dataclass
class RolloutOutput:
    responses: torch.Tensor
    response_mask: torch.Tensor
    rollout_log_probs: torch.Tensor
    finish_reasons: list[FinishReason]
    prompt_index: list[int]

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=-1)


def pack_responses(
    sequences: Sequence[Sequence[int]],
    log_probs: Sequence[Sequence[float]] | Sequence[torch.Tensor],
    finish_reasons: list[FinishReason],
    prompt_index: list[int],
    pad_token_id: int,
) -> RolloutOutput:
    """Right-pad per-sample token lists and log-probs into the batch contract's tensors."""
    width = max((len(s) for s in sequences), default=0)
    rows = len(sequences)
    responses = torch.full((rows, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    lp = torch.zeros((rows, width), dtype=torch.float32)
    for i, (tokens, token_lp) in enumerate(zip(sequences, log_probs)):
        length = len(tokens)
        responses[i, :length] = torch.as_tensor(list(tokens), dtype=torch.long)
        mask[i, :length] = 1
        lp[i, :length] = torch.as_tensor(token_lp, dtype=torch.float32)
    return RolloutOutput(responses, mask, lp, list(finish_reasons), list(prompt_index))


@dataclasses.dataclass(frozen=True)
class RoundShape:
    """Per-prompt shape of one partial-rollout generate call (``docs/partial_rollout.md``).

    ``samples[i]`` responses of prompt ``i`` (a continued sample is its own prompt: the original
    prompt + its response so far, one sample), each at most ``max_tokens[i]`` new tokens (and
    never more than ``SamplingParams.max_tokens``, which fixes each row's random draws). The call
    may return once a share ``finish_share`` of its rows has finished (EOS or its own cap), but
    not before every row of a prompt with ``must_finish[i]`` has: those are in their last
    allowed round. Rows cut by the threshold come back shorter than their cap, reason
    ``length``; the caller tells them apart by their length and last token."""

    samples: list[int]
    max_tokens: list[int]
    must_finish: list[bool]
    finish_share: float = 1.0

    def __post_init__(self) -> None:
        if not len(self.samples) == len(self.max_tokens) == len(self.must_finish):
            raise ValueError("samples, max_tokens and must_finish need one entry per prompt")
        if any(n < 1 for n in self.samples) or any(t < 1 for t in self.max_tokens):
            raise ValueError("each prompt needs >= 1 sample and >= 1 new token")
        if not 0 < self.finish_share <= 1:
            raise ValueError(f"finish_share = {self.finish_share}: must be in (0, 1]")

    def select(self, index: Sequence[int]) -> RoundShape:
        """The shape of the prompts ``index`` (an engine's share of the call)."""
        return RoundShape(
            [self.samples[i] for i in index],
            [self.max_tokens[i] for i in index],
            [self.must_finish[i] for i in index],
            self.finish_share,
        )


def round_shape_of(prompts: int, params: SamplingParams, shape: RoundShape | None) -> RoundShape:
    """``shape``, or the plain call's: ``params.n`` samples of ``params.max_tokens`` each."""
    if shape is None:
        return RoundShape([params.n] * prompts, [params.max_tokens] * prompts, [False] * prompts)
    if len(shape.samples) != prompts:
        raise ValueError(f"a round shape of {len(shape.samples)} prompts for {prompts} prompts")
    if max(shape.max_tokens, default=0) > params.max_tokens:
        raise ValueError(
            f"a prompt's cap {max(shape.max_tokens)} exceeds max_tokens = {params.max_tokens}"
        )
    return shape


class RolloutEngine(Protocol):
    """Generation colocated with training; weights arrive from the actor under HF names."""

    weight_version: int
    awake: set[str]  # of ENGINE_TAGS
    keeps_weights_asleep: bool  # False: sleep() drops the weights and a sync must follow

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        shape: RoundShape | None = None,
    ) -> RolloutOutput:
        """Sample ``params.n`` responses for each prompt (token ids, no padding); with
        ``shape``, its per-prompt counts and caps (partial rollout)."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], version: int) -> int:
        """Replace weights from (HF name, full tensor) pairs; returns the number loaded."""

    def sleep(self) -> None:
        """Release the engine's device memory (weights and KV cache), keeping the engine."""

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Take back the memory of ``tags`` (of ENGINE_TAGS; None: all)."""

    def resident_bytes(self) -> dict[str, int | None]:
        """Device bytes held now: ``engine_weights``, ``kv_cache`` (None: not known)."""
