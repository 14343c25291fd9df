"""Dynamic sampling (DAPO, Yu et al. 2025, arXiv:2503.14476, sec. 3.2).

A group whose samples all score the same (all correct or all wrong) has zero advantage everywhere:
it costs a forward and backward pass and teaches nothing, and it shrinks the effective batch. DAPO
drops such groups and generates more until ``filter_groups_train_batch_size`` prompts with mixed
outcomes are collected, then trims to exactly that many (surplus groups are dropped, not carried
over: they would be off-policy next step).

The filter metric is the named verifier's own score (``filter_groups_metric``, e.g.
``acc_for_dapo``), before overlong shaping: the length penalty would make an all-wrong group look
mixed. A group of one has no variance to measure and is kept.

``DynamicSampler`` works on the batch contract's ``tensordict.TensorDict`` with a non-tensor
``uid`` entry; its interface is ``add`` a generation batch, check ``ready``, ``take`` the training
batch, plus ``state_dict`` / ``load_state_dict`` for checkpoints taken between generation batches.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import NonTensorStack, TensorDict, is_non_tensor

from mindspeed_rl.algorithms.advantages import group_ids

logger = logging.getLogger(__name__)

ON_MAX_BATCHES = ("error", "train")
_STATE_VERSION = 1


class DynamicSamplingError(RuntimeError):
    """Dynamic sampling could not collect a training batch; the message says why and what to do."""


@dataclass
class GroupFilterResult:
    """Which samples survive the zero-variance filter, and what was dropped.

    Attributes:
        keep: bool [B], True for every sample of a kept group.
        num_groups: distinct uids in the batch.
        num_kept_groups: groups with at least two distinct metric values, plus groups of one.
        constant_groups: metric value -> number of dropped groups whose samples all had it.
    """

    keep: torch.Tensor
    num_groups: int
    num_kept_groups: int
    constant_groups: dict[float, int]


def filter_zero_variance_groups(
    metric_values: torch.Tensor, uids: Sequence[Hashable]
) -> GroupFilterResult:
    """Keep the groups whose metric varies (exactly: max != min), and groups of one.

    Args:
        metric_values: [B] the filter metric per sample (a verifier's raw score).
        uids: B group ids.

    The test is max != min rather than std > 0: the float std of equal values such as
    [0.1, 0.1, 0.1] comes out as ~1e-17, which would keep a group with no signal.
    """
    if metric_values.dim() != 1 or metric_values.shape[0] != len(uids):
        raise ValueError(
            f"metric_values must be [B] with one uid per sample, got {tuple(metric_values.shape)} "
            f"and {len(uids)} uids"
        )
    ids, num_groups = group_ids(uids)
    values = metric_values.detach().to("cpu", torch.float64)
    inf = torch.full((num_groups,), float("inf"), dtype=torch.float64)
    group_max = (-inf).scatter_reduce(0, ids, values, reduce="amax")
    group_min = inf.scatter_reduce(0, ids, values, reduce="amin")
    sizes = torch.bincount(ids, minlength=num_groups)
    kept = (group_max != group_min) | (sizes == 1)
    constant: dict[float, int] = {}
    for value in group_min[~kept].tolist():
        constant[value] = constant.get(value, 0) + 1
    return GroupFilterResult(
        keep=kept[ids].to(metric_values.device),
        num_groups=num_groups,
        num_kept_groups=int(kept.sum()),
        constant_groups=constant,
    )


def _uids_of(batch: TensorDict, uid_key: str) -> list[Hashable]:
    entry = batch.get(uid_key, None)
    if entry is None or not is_non_tensor(entry):
        raise ValueError(
            f"the batch has no non-tensor '{uid_key}' entry (one group id per row): set it with "
            f"batch.set('{uid_key}', NonTensorStack.from_list(uids))"
        )
    return list(entry.tolist())


class DynamicSampler:
    """Accumulates groups with mixed outcomes across generation batches.

    Args:
        train_batch_size: prompts (groups) per training step (``filter_groups_train_batch_size``).
        max_gen_batches: generation batches allowed per step, -1 for no limit
            (``filter_groups_max_batches``).
        on_max_batches: when that limit is reached short of the target: ``"error"`` raises
            ``DynamicSamplingError`` explaining why; ``"train"`` trains on the groups collected
            so far (``filter_groups_on_max_batches``).
        metric_name: the filter metric's name, for messages (``filter_groups_metric``).
        correct_score, incorrect_score: the metric's scores for a right and a wrong answer (the
            verifier's), so messages can say "all correct" / "all wrong".
        uid_key: the batch's non-tensor group-id entry.

    Usage per training step::

        while not sampler.ready:
            sampler.add(generate_and_score(next_prompts()), scores[filter_groups_metric])
        batch, metrics = sampler.take(divisor=dp_size * ...)
    """

    def __init__(
        self,
        train_batch_size: int,
        max_gen_batches: int = -1,
        on_max_batches: str = "error",
        metric_name: str = "acc_for_dapo",
        correct_score: float | None = 1.0,
        incorrect_score: float | None = -1.0,
        uid_key: str = "uid",
    ) -> None:
        if train_batch_size < 1:
            raise ValueError(
                f"rl_config.filter_groups_train_batch_size must be >= 1, got {train_batch_size}"
            )
        if max_gen_batches == 0 or max_gen_batches < -1:
            raise ValueError(
                "rl_config.filter_groups_max_batches must be >= 1, or -1 for no limit; got "
                f"{max_gen_batches}"
            )
        if on_max_batches not in ON_MAX_BATCHES:
            raise ValueError(
                f"rl_config.filter_groups_on_max_batches must be one of {ON_MAX_BATCHES}, got "
                f"'{on_max_batches}'"
            )
        self.train_batch_size = train_batch_size
        self.max_gen_batches = max_gen_batches
        self.on_max_batches = on_max_batches
        self.metric_name = metric_name
        self.correct_score = correct_score
        self.incorrect_score = incorrect_score
        self.uid_key = uid_key
        self._reset()

    def _reset(self) -> None:
        self._kept: list[TensorDict] = []
        self._kept_uids: set[Hashable] = set()
        self.num_gen_batches = 0
        self.num_generated_groups = 0
        self.num_kept_groups = 0
        self.constant_groups: dict[float, int] = {}

    @property
    def limit_reached(self) -> bool:
        return 0 < self.max_gen_batches <= self.num_gen_batches

    @property
    def ready(self) -> bool:
        """A training batch can be taken: the target is met, or the limit is hit in train mode."""
        return self.num_kept_groups >= self.train_batch_size or (
            self.limit_reached and self.on_max_batches == "train"
        )

    def add(self, batch: TensorDict, metric_values: torch.Tensor) -> GroupFilterResult:
        """Filter one generation batch and keep its mixed-outcome groups.

        Args:
            batch: TensorDict [B] with a non-tensor uid entry; every generation batch of a step
                must have the same padded widths (pad responses to ``rollout_max_tokens``).
            metric_values: [B] the filter metric per row.

        Raises:
            DynamicSamplingError: the generation-batch limit is reached short of the target and
                ``on_max_batches`` is ``"error"``.
        """
        assert not self.ready, "take() the ready batch before adding more"
        uids = _uids_of(batch, self.uid_key)
        result = filter_zero_variance_groups(metric_values, uids)
        kept_uids = {uid for uid, keep in zip(uids, result.keep.tolist()) if keep}
        repeated = kept_uids & self._kept_uids
        if repeated:
            raise ValueError(
                f"group ids {sorted(map(str, repeated))[:3]} appear in two generation batches of "
                "one step; give every prompt of a step its own uid (e.g. uuid4)"
            )
        self.num_gen_batches += 1
        self.num_generated_groups += result.num_groups
        self.num_kept_groups += result.num_kept_groups
        for value, count in result.constant_groups.items():
            self.constant_groups[value] = self.constant_groups.get(value, 0) + count
        if result.num_kept_groups:
            self._kept.append(batch[result.keep.to(batch.device or "cpu")])
            self._kept_uids |= kept_uids
        if self.limit_reached and not self.ready:
            raise DynamicSamplingError(self._shortfall_message())
        return result

    def take(self, divisor: int = 1) -> tuple[TensorDict, dict[str, float]]:
        """The training batch: the first ``train_batch_size`` kept groups, whole groups only.

        Args:
            divisor: the batch's row count must be a multiple of it (what the parallel layout can
                split evenly, e.g. data-parallel size times micro-batch size). Groups are dropped
                from the end until it is; advantages are computed on whole groups afterwards, and
                loss denominators count the rows actually kept, so normalization stays exact.

        Returns:
            (batch, metrics). Metrics: ``dynamic_sampling/{num_gen_batches, generated_groups,
            kept_groups, trained_groups, dropped_constant_groups, partial_batch}``. The sampler is
            empty again afterwards.
        """
        assert self.ready, "take() before ready: add more generation batches"
        if divisor < 1:
            raise ValueError(f"divisor must be >= 1, got {divisor}")
        batch = torch.cat(self._checked_widths(self._kept)) if self._kept else None
        uids = _uids_of(batch, self.uid_key) if batch is not None else []
        ids, _ = group_ids(uids)
        sizes = torch.bincount(ids).tolist() if uids else []
        num_groups = min(len(sizes), self.train_batch_size)
        rows = sum(sizes[:num_groups])
        while num_groups > 0 and rows % divisor:
            num_groups -= 1
            rows -= sizes[num_groups]
        partial = self.num_kept_groups < self.train_batch_size
        if num_groups == 0:
            no_fit = (
                f"No prefix of the {len(sizes)} kept groups (sizes {sizes[:8]}) fills a multiple "
                f"of {divisor} rows, so there is nothing to train on."
            )
            if partial:
                raise DynamicSamplingError(f"{self._shortfall_message()} {no_fit}")
            raise DynamicSamplingError(
                f"{no_fit} Make filter_groups_train_batch_size * n_samples_per_prompt a multiple "
                f"of {divisor}."
            )
        if partial or num_groups < self.train_batch_size:
            logger.warning(
                "dynamic sampling: %d generation batches gave %d of filter_groups_train_batch_size="
                "%d groups; training on %d groups (%d rows, a multiple of %d)%s",
                self.num_gen_batches,
                self.num_kept_groups,
                self.train_batch_size,
                num_groups,
                rows,
                divisor,
                " as filter_groups_on_max_batches=train" if partial else "",
            )
        metrics = {
            "dynamic_sampling/num_gen_batches": float(self.num_gen_batches),
            "dynamic_sampling/generated_groups": float(self.num_generated_groups),
            "dynamic_sampling/kept_groups": float(self.num_kept_groups),
            "dynamic_sampling/trained_groups": float(num_groups),
            "dynamic_sampling/dropped_constant_groups": float(sum(self.constant_groups.values())),
            "dynamic_sampling/partial_batch": float(partial),
        }
        selected = batch[(ids < num_groups).to(batch.device or "cpu")]
        self._reset()
        return selected, metrics

    @staticmethod
    def _checked_widths(batches: list[TensorDict]) -> list[TensorDict]:
        first = batches[0]
        for other in batches[1:]:
            if set(other.keys()) != set(first.keys()):
                raise ValueError(
                    f"generation batches of one step have different keys: {sorted(first.keys())} "
                    f"vs {sorted(other.keys())}"
                )
            for key, value in first.items():
                if is_non_tensor(value):
                    continue
                if other.get(key).shape[1:] != value.shape[1:]:
                    raise ValueError(
                        f"generation batches of one step have different widths for '{key}': "
                        f"{tuple(value.shape[1:])} vs {tuple(other.get(key).shape[1:])}; pad every "
                        "generation batch to the same lengths (responses to rollout_max_tokens)"
                    )
        return batches

    def _shortfall_message(self) -> str:
        def constant_at(score: float | None) -> int:
            return self.constant_groups.get(score, 0) if score is not None else 0

        correct, wrong = constant_at(self.correct_score), constant_at(self.incorrect_score)
        other = sum(self.constant_groups.values()) - correct - wrong
        parts = [
            f"dynamic sampling reached filter_groups_max_batches={self.max_gen_batches} generation "
            f"batches with {self.num_kept_groups} of filter_groups_train_batch_size="
            f"{self.train_batch_size} groups kept.",
            f"Of {self.num_generated_groups} groups generated, {correct} were all correct "
            f"({self.metric_name}={self.correct_score} on every sample), {wrong} all wrong "
            f"({self.metric_name}={self.incorrect_score}) and {other} constant at another value.",
        ]
        if correct > wrong:
            parts.append("Most dropped groups were all correct: the prompts are too easy.")
        elif wrong > correct:
            parts.append("Most dropped groups were all wrong: the prompts are too hard.")
        parts.append(
            "To go on: raise filter_groups_max_batches (-1 = no limit), raise "
            "n_samples_per_prompt (more chances of mixed outcomes), filter the dataset by "
            "difficulty, lower filter_groups_train_batch_size, or set "
            "filter_groups_on_max_batches: train to train on the groups collected so far."
        )
        return " ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        """Counters and kept groups as plain tensors, lists and numbers (``torch.load`` with
        ``weights_only=True`` reads it back)."""
        kept = []
        for batch in self._kept:
            tensors, non_tensors = {}, {}
            for key, value in batch.items():
                if is_non_tensor(value):
                    non_tensors[key] = list(value.tolist())
                else:
                    tensors[key] = value.cpu()
            kept.append(
                {"size": batch.batch_size[0], "tensors": tensors, "non_tensors": non_tensors}
            )
        return {
            "version": _STATE_VERSION,
            "num_gen_batches": self.num_gen_batches,
            "num_generated_groups": self.num_generated_groups,
            "num_kept_groups": self.num_kept_groups,
            "constant_groups": [[value, count] for value, count in self.constant_groups.items()],
            "kept": kept,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"dynamic sampling state has version {state.get('version')}, this code reads "
                f"version {_STATE_VERSION}"
            )
        self._reset()
        self.num_gen_batches = int(state["num_gen_batches"])
        self.num_generated_groups = int(state["num_generated_groups"])
        self.num_kept_groups = int(state["num_kept_groups"])
        self.constant_groups = {float(v): int(c) for v, c in state["constant_groups"]}
        for entry in state["kept"]:
            batch = TensorDict(entry["tensors"], batch_size=[entry["size"]])
            for key, values in entry["non_tensors"].items():
                batch.set(key, NonTensorStack.from_list(values))
            self._kept.append(batch)
            self._kept_uids |= set(_uids_of(batch, self.uid_key))
