"""Partial rollout's buffer: the samples in flight between generation rounds (docs/partial_rollout.md).

With ``rl_config.partial_rollout_max_split = N`` a round gives each unfinished sample at most
``ceil(rollout_max_tokens / N)`` new tokens. A sample ends at EOS or at ``rollout_max_tokens``;
until then it waits here and is continued first in the next round, with the newest weights, from
prompt + response so far. Its ``N``-th round gives it all its remaining tokens and the round waits
for it, so every sample ends within N rounds (also when ``rollout_threshold_rate`` cuts rounds
short). A group (the n samples of a prompt) is complete when all of its samples have ended; only
complete groups are scored, filtered and trained.

Every token keeps the log-prob the engine gave it and the weight version that sampled it
(``rollout_versions`` beside ``rollout_log_probs`` in the batch): the loss's truncated importance
sampling (``tis_imp_ratio_cap``) corrects for the mixed behaviour policy, and the policy age of a
token is the actor's version at the update minus its own.

The state is plain Python (lists of ints / floats / strings): it is part of the trainer's state in
a checkpoint and loads with ``weights_only=True``, so a resumed run continues the same samples.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Sequence

import torch
from tensordict import TensorDict

from mindspeed_rl.rollout.base import RolloutOutput, RoundShape, pack_responses
from mindspeed_rl.trainer import batch as batch_ops


@dataclasses.dataclass
class Sample:
    """One response in flight: its tokens so far, each token's log-prob and weight version."""

    tokens: list[int] = dataclasses.field(default_factory=list)
    log_probs: list[float] = dataclasses.field(default_factory=list)
    versions: list[int] = dataclasses.field(default_factory=list)
    rounds: int = 0
    finished: bool = False


@dataclasses.dataclass
class Group:
    """The samples of one prompt, admitted together; trained only when all have ended."""

    uid: str
    prompt: list[int]
    truth: str
    index: int  # the prompt's dataset index
    admitted: int  # weight version at admission: every token is at least this new
    samples: list[Sample]

    @property
    def complete(self) -> bool:
        return all(s.finished for s in self.samples)

    @property
    def started(self) -> bool:
        return any(s.rounds for s in self.samples)


@dataclasses.dataclass
class RoundRequest:
    """One round's generate call: contexts, their shape, and which sample each output row fills
    (``slots[row] = (group, sample)``)."""

    contexts: list[list[int]]
    shape: RoundShape
    slots: list[tuple[int, int]]
    continued: int  # contexts that continue a started sample (the first ones)


class PartialRolloutBuffer:
    """Groups in admission order (the oldest first); see the module docstring."""

    def __init__(
        self, max_split: int, max_tokens: int, n: int, eos_token_ids: Sequence[int],
        finish_share: float = 1.0,
    ) -> None:  # fmt: skip
        assert max_split > 1, "partial rollout needs partial_rollout_max_split > 1"
        self.max_split = max_split
        self.max_tokens = max_tokens
        self.round_tokens = math.ceil(max_tokens / max_split)
        self.n = n
        self.eos = set(int(t) for t in eos_token_ids)
        self.finish_share = finish_share
        self.groups: list[Group] = []

    # --- admission and rounds --------------------------------------------------------------------

    def admit(
        self, prompt_ids: Sequence[Sequence[int]], truths: Sequence[str], indices: Sequence[int],
        version: int,
    ) -> None:  # fmt: skip
        for prompt, truth, index in zip(prompt_ids, truths, indices):
            self.groups.append(
                Group(uuid.uuid4().hex, list(map(int, prompt)), str(truth), int(index),
                      int(version), [Sample() for _ in range(self.n)])
            )  # fmt: skip

    def unfinished_groups(self) -> int:
        return sum(not g.complete for g in self.groups)

    def unfinished_samples(self) -> int:
        return sum(not s.finished for g in self.groups for s in g.samples)

    def round_request(self) -> RoundRequest:
        """Started samples first (one context each: prompt + tokens so far), then the groups not
        started yet (one context with n samples: they share a prefill, and their samples are
        those a plain generate call would draw)."""
        contexts, samples, caps, must, slots = [], [], [], [], []
        for g, group in enumerate(self.groups):
            if not group.started:
                continue
            for k, sample in enumerate(group.samples):
                if sample.finished:
                    continue
                last = sample.rounds >= self.max_split - 1
                left = self.max_tokens - len(sample.tokens)
                contexts.append(group.prompt + sample.tokens)
                samples.append(1)
                caps.append(left if last else min(self.round_tokens, left))
                must.append(last)
                slots.append((g, k))
        continued = len(contexts)
        for g, group in enumerate(self.groups):
            if group.started:
                continue
            contexts.append(list(group.prompt))
            samples.append(self.n)
            caps.append(self.round_tokens)
            must.append(False)
            slots += [(g, k) for k in range(self.n)]
        shape = RoundShape(samples, caps, must, self.finish_share)
        return RoundRequest(contexts, shape, slots, continued)

    def absorb(self, request: RoundRequest, out: RolloutOutput, version: int) -> int:
        """Append each output row to its sample; returns the tokens generated."""
        assert len(out.prompt_index) == len(request.slots), "one output row per requested sample"
        lengths = out.response_lengths.tolist()
        generated = 0
        for row, (g, k) in enumerate(request.slots):
            sample = self.groups[g].samples[k]
            length = int(lengths[row])
            tokens = out.responses[row, :length].tolist()
            sample.tokens += tokens
            sample.log_probs += out.rollout_log_probs[row, :length].tolist()
            sample.versions += [int(version)] * length
            sample.rounds += 1
            sample.finished = bool(
                (tokens and tokens[-1] in self.eos) or len(sample.tokens) >= self.max_tokens
            )
            assert sample.finished or sample.rounds < self.max_split, (
                f"a sample is unfinished after {sample.rounds} rounds (max_split "
                f"{self.max_split}): the engine stopped a must-finish row"
            )
            generated += length
        return generated

    def pop_complete(self, limit: int | None = None, must_before: int | None = None):
        """Remove and return complete groups, the oldest first: at most ``limit`` of them (None:
        all); and every complete group admitted at or before version ``must_before`` beyond
        the limit is removed too, as ``expired`` (returns (taken, expired))."""
        complete = [g for g in self.groups if g.complete]
        taken = complete if limit is None else complete[:limit]
        expired = [
            g
            for g in complete[len(taken) :]
            if must_before is not None and g.admitted <= must_before
        ]
        gone = {id(g) for g in taken + expired}
        self.groups = [g for g in self.groups if id(g) not in gone]
        return taken, expired

    # --- the batch of complete groups ----------------------------------------------------------

    @staticmethod
    def batch_of(
        groups: Sequence[Group], *, pad_token_id: int, max_prompt_length: int, max_tokens: int
    ) -> TensorDict:
        """The batch contract's rows of ``groups`` (n consecutive rows each), with
        ``rollout_versions`` int64 [B, R] (0 on padding) beside ``rollout_log_probs``."""
        samples = [s for g in groups for s in g.samples]
        index = [i for i, g in enumerate(groups) for _ in g.samples]
        out = pack_responses(
            [s.tokens for s in samples], [s.log_probs for s in samples],
            ["length"] * len(samples), index, pad_token_id,
        )  # fmt: skip
        batch = batch_ops.generation_batch(
            [g.prompt for g in groups], [g.truth for g in groups], [g.uid for g in groups], out,
            pad_token_id=pad_token_id, max_prompt_length=max_prompt_length,
            max_response_length=max_tokens,
        )  # fmt: skip
        versions = torch.zeros((len(samples), max_tokens), dtype=torch.long)
        for row, s in enumerate(samples):
            versions[row, : len(s.versions)] = torch.tensor(s.versions, dtype=torch.long)
        batch.set("rollout_versions", versions)
        return batch

    # --- checkpoint ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"groups": [dataclasses.asdict(g) for g in self.groups]}

    def load_state_dict(self, state: dict) -> None:
        self.groups = [
            Group(**{**g, "samples": [Sample(**s) for s in g["samples"]]}) for g in state["groups"]
        ]


def policy_age_metrics(
    versions: torch.Tensor, mask: torch.Tensor, actor_version: int
) -> dict[str, float]:
    """Policy age of the trained tokens: the actor's version minus the one that sampled them."""
    valid = mask.bool()
    if not bool(valid.any()):
        return {}
    age = (actor_version - versions)[valid].float()
    return {
        "partial_rollout/age_max": float(age.max()),
        "partial_rollout/age_mean": float(age.mean()),
    }


def log_prob_gap_by_age(
    old: torch.Tensor, rollout: torch.Tensor, versions: torch.Tensor, mask: torch.Tensor,
    actor_version: int,
) -> dict[str, float]:  # fmt: skip
    """Mean |actor - rollout| log-prob per policy age: 0 (engine = actor, up to kernels) grows
    with the age (the tokens' sampler is that many updates behind)."""
    age = actor_version - versions
    out = {}
    for a in sorted(set(age[mask.bool()].tolist())):
        where = mask.bool() & (age == a)
        out[f"partial_rollout/log_prob_gap_age{int(a)}"] = float(
            (old - rollout)[where].abs().mean()
        )
    return out
