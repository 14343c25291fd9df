"""The integrated workers seen from the driver, as roles: the actor group and the rollout group.

The trainer hands the actor group whole samples (the batch contract's TensorDict: token ids, masks,
advantages, log-probs) and gets whole-batch results back; the group decides how they are cut —
data-parallel shares, mini-batches, micro-batches (``batch_plan.py``) — and sends each rank its
typed share (``UpdateBatch`` / ``MegatronRows`` with its micro-batch sizes). The rollout group
splits prompts over the engines and merges their outputs back into prompt order. Both drive the
same colocated workers (one ``WorkerGroup``).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from tensordict import TensorDict

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.rollout.base import RolloutOutput, RoundShape, pack_responses
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.rollout.seeds import engine_seed
from mindspeed_rl.workers.actor import UpdateBatch
from mindspeed_rl.workers.batch_plan import (
    BatchPlan,
    MicroBatching,
    data_parallel_shares,
    one_group,
    plan_batch,
    plan_metrics,
)
from mindspeed_rl.workers.rows import MegatronRows, to_megatron_rows
from mindspeed_rl.workers.worker_info import WorkerInfo


def megatron_rows(batch: TensorDict, pad_token_id: int) -> MegatronRows:
    """The batch's [valid prompt, response] rows from position 0 (``workers/rows.py``)."""
    prompt_width = batch["prompts"].shape[1]
    return to_megatron_rows(
        batch["prompts"],
        batch["attention_mask"][:, :prompt_width],
        batch["responses"],
        batch["response_mask"],
        pad_token_id,
    )


@dataclasses.dataclass
class PlannedBatch:
    """A batch cut for the actor group: its rows, each row's tokens, the DP shares (per rank, per
    mini-batch), the update's micro-batches and the cut's metrics."""

    rows: MegatronRows
    lengths: torch.Tensor
    shares: list[list[list[int]]]
    update: BatchPlan
    metrics: dict[str, float]


class ActorGroup:
    """Log-prob passes, the update and the weight sync over every rank."""

    def __init__(self, workers, infos: list[WorkerInfo], config: RunConfig) -> None:
        self.workers = workers
        self.infos = infos
        self.config = config
        self.dp_size = infos[0].dp_size
        self.pad_token_id = infos[0].pad_token_id

    def micro_batching(self, phase: str, rows_per_rank: int = 0) -> MicroBatching:
        """``phase``: update, actor (old log-probs) or ref: its token budget and row cap with
        ``use_dynamic_bsz`` (the Ascend suite's per-phase keys, defaulting to the shared ones),
        else its micro-batch rows."""
        actor, rl = self.config.actor, self.config.rl_config
        if rl.use_dynamic_bsz:
            budget, cap = {
                "update": (rl.update_max_packing_token_size, rl.update_dynamic_max_batch_size),
                "actor": (rl.actor_max_packing_token_size, rl.actor_dynamic_max_batch_size),
                "ref": (rl.ref_max_packing_token_size, rl.ref_dynamic_max_batch_size),
            }[phase]
            return MicroBatching(
                token_budget=budget or rl.max_packing_token_size,
                max_rows=cap or rl.dynamic_max_batch_size,
            )
        if phase == "update":
            return MicroBatching(rows=actor.micro_batch_size)
        wanted = {"actor": rl.actor_forward_micro_batch_size,
                  "ref": rl.ref_forward_micro_batch_size}[phase]  # fmt: skip
        # a pipeline schedule needs one micro-batch size: the largest that cuts the rank's rows
        return MicroBatching(rows=math.gcd(wanted or actor.micro_batch_size, rows_per_rank))

    def plan(self, batch: TensorDict, mini_batches: int) -> PlannedBatch:
        """Rows in ``mini_batches`` equal mini-batches (mini-batch m: rows [m*M, (m+1)*M) of
        ``batch``), each split over the DP ranks and into micro-batches."""
        rl = self.config.rl_config
        rows = megatron_rows(batch, self.pad_token_id)
        lengths = rows.lengths
        shares = data_parallel_shares(lengths, mini_batches, self.dp_size, rl.use_dp_batch_balance)
        update = plan_batch(lengths, shares, self.micro_batching("update"))
        metrics = plan_metrics(
            lengths, update, packed=rl.use_remove_padding,
            padded_width=None if rl.use_dynamic_bsz else rows.tokens.shape[1],
        )  # fmt: skip
        return PlannedBatch(rows, lengths, shares, update, metrics)

    def _per_rank(self, plan: BatchPlan, payload) -> list[tuple]:
        return [payload(plan.order[info.dp_rank], info.dp_rank) for info in self.infos]

    def log_probs(
        self, batch: TensorDict, planned: PlannedBatch, reference: bool = False
    ) -> torch.Tensor:
        """[B, R] log-probs of every row, by the actor (old log-probs) or the reference model."""
        groups = one_group(planned.shares)
        micro = self.micro_batching("ref" if reference else "actor", len(groups[0][0]))
        plan = plan_batch(planned.lengths, groups, micro)
        method = "compute_ref_log_prob" if reference else "compute_log_prob"
        results = self.workers.call(
            method,
            per_rank=self._per_rank(
                plan, lambda idx, d: (planned.rows.select(idx), plan.micro_sizes[d][0])
            ),
        )
        out = torch.zeros_like(batch["rollout_log_probs"])
        for info, lp in zip(self.infos, results):
            if lp is not None:
                out[plan.order[info.dp_rank]] = lp
        return out

    def update(self, batch: TensorDict, planned: PlannedBatch, kl_coef: float | None) -> dict:
        """``epochs`` passes of one optimizer step per mini-batch; metrics of the last stage."""
        old, ref = batch.get("old_log_probs", None), batch.get("ref_log_probs", None)

        def payload(index: torch.Tensor, dp_rank: int) -> tuple:
            share = UpdateBatch(
                planned.rows.select(index),
                batch["loss_mask"][index],
                batch["advantages"][index],
                old[index] if old is not None else None,
                batch["rollout_log_probs"][index],
                ref[index] if ref is not None else None,
            )
            epochs = self.config.rl_config.epochs
            return share, planned.update.micro_sizes[dp_rank], epochs, kl_coef

        metrics: dict[str, float] = {}
        calls = self._per_rank(planned.update, payload)
        for result in self.workers.call("update", per_rank=calls):
            metrics.update(result)
        return metrics

    def sync_weights(self) -> int:
        """Actor -> engines; returns the weight version every engine now runs."""
        versions = self.workers.call("sync_weights")
        if any(engine != actor for engine, actor in versions):
            raise RuntimeError(f"rollout engines run other weights than the actor: {versions}")
        return versions[0][1]

    def memory_metrics(self) -> dict[str, float]:
        """``memory/*`` of the busiest rank."""
        metrics: dict[str, float] = {}
        for rank_metrics in self.workers.call("memory_metrics"):
            for key, value in rank_metrics.items():
                metrics[key] = max(metrics.get(key, 0.0), value)
        return metrics


class RolloutGroup:
    """Generation over the rollout engines (one per ``infer_tensor_parallel_size`` ranks)."""

    def __init__(self, workers, infos: list[WorkerInfo], infer_tp: int) -> None:
        self.workers = workers
        self.infos = infos
        self.tp = infer_tp
        self.engines = len(infos) // infer_tp
        self.pad_token_id = infos[0].pad_token_id

    def generate(
        self, prompt_ids: list[list[int]], params: SamplingParams, shape: RoundShape | None = None
    ) -> RolloutOutput:
        """Prompts split over the engines (TP peers of an engine get the same share), outputs
        back in prompt order (the samples of a prompt consecutive); ``shape``: per-prompt
        counts and caps of a partial-rollout round, split the same way."""
        chunks = [prompt_ids[e :: self.engines] for e in range(self.engines)]
        shapes = [
            None if shape is None else shape.select(range(e, len(prompt_ids), self.engines))
            for e in range(self.engines)
        ]
        per_rank = [
            (chunks[r // self.tp], _with_seed(params, r // self.tp))
            + (() if shape is None else (shapes[r // self.tp],))
            for r in range(len(self.infos))
        ]
        outputs = self.workers.call("generate", per_rank=per_rank)
        # one TP peer per engine sends its outputs back (``WorkerInfo.returns_rollout``)
        by_engine: list[RolloutOutput | None] = [None] * self.engines
        for info, out in zip(self.infos, outputs):
            if info.returns_rollout:
                by_engine[info.rank // self.tp] = out
            assert info.returns_rollout or out is None, f"rank {info.rank}: duplicate rollout"
        return _interleave(by_engine, len(prompt_ids), self.pad_token_id)


def _with_seed(params: SamplingParams, engine: int) -> SamplingParams:
    """The engine's share of the call gets its own seed (``rollout/seeds.py``): the streams of
    (engine, prompt, sample) are then all distinct."""
    seed = None if params.seed is None else engine_seed(params.seed, engine)
    return dataclasses.replace(params, seed=seed)


def _interleave(outputs: list, num_prompts: int, pad_token_id: int) -> RolloutOutput:
    """Merge engine outputs (engine e had prompts e, e+E, ...) back into prompt order."""
    engines = len(outputs)
    rows: dict[int, list] = {}
    for e, out in enumerate(outputs):
        if out is None:
            continue
        for row, local in enumerate(out.prompt_index):
            length = int(out.response_mask[row].sum())
            rows.setdefault(local * engines + e, []).append(
                (out.responses[row, :length].tolist(), out.rollout_log_probs[row, :length],
                 out.finish_reasons[row])
            )  # fmt: skip
    sequences, log_probs, reasons, index = [], [], [], []
    for p in range(num_prompts):
        for tokens, lp, why in rows[p]:
            sequences.append(tokens)
            log_probs.append(lp)
            reasons.append(why)
            index.append(p)
    return pack_responses(sequences, log_probs, reasons, index, pad_token_id)
