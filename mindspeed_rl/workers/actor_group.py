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
from mindspeed_rl.rollout.base import RolloutOutput, pack_responses
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.workers.actor import UpdateBatch
from mindspeed_rl.workers.batch_plan import BatchPlan, MicroBatching, plan_batch, plan_metrics
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
    """A batch cut for the actor group: its rows, the plan, and the plan's metrics."""

    rows: MegatronRows
    plan: BatchPlan
    metrics: dict[str, float]


class ActorGroup:
    """Log-prob passes, the update and the weight sync over every rank."""

    def __init__(self, workers, infos: list[WorkerInfo], config: RunConfig) -> None:
        self.workers = workers
        self.infos = infos
        self.config = config
        self.dp_size = infos[0].dp_size
        self.pad_token_id = infos[0].pad_token_id

    def plan(self, batch: TensorDict, mini_batches: int) -> PlannedBatch:
        """Rows in ``mini_batches`` equal mini-batches (mini-batch m: rows [m*M, (m+1)*M) of
        ``batch``), each split over the DP ranks and into micro-batches."""
        rows = megatron_rows(batch, self.pad_token_id)
        lengths = rows.response_start + batch["response_mask"].sum(-1)
        micro = MicroBatching(rows=self.config.actor.micro_batch_size)
        plan = plan_batch(lengths, mini_batches, self.dp_size, micro)
        metrics = plan_metrics(lengths, plan, packed=False, padded_width=rows.tokens.shape[1])
        return PlannedBatch(rows, plan, metrics)

    def _per_rank(self, planned: PlannedBatch, payload) -> list[tuple]:
        return [payload(planned.plan.order[info.dp_rank], info.dp_rank) for info in self.infos]

    def log_probs(
        self, batch: TensorDict, planned: PlannedBatch, reference: bool = False
    ) -> torch.Tensor:
        """[B, R] log-probs of every row, by the actor (old log-probs) or the reference model."""
        rl = self.config.rl_config
        wanted = rl.ref_forward_micro_batch_size if reference else rl.actor_forward_micro_batch_size
        rows_per_rank = len(planned.plan.order[0])
        # a pipeline schedule needs one micro-batch size: the largest that cuts the rank's rows
        size = math.gcd(wanted or self.config.actor.micro_batch_size, rows_per_rank)
        method = "compute_ref_log_prob" if reference else "compute_log_prob"
        results = self.workers.call(
            method,
            per_rank=self._per_rank(planned, lambda idx, _: (planned.rows.select(idx), size)),
        )
        out = torch.zeros_like(batch["rollout_log_probs"])
        for info, lp in zip(self.infos, results):
            if lp is not None:
                out[planned.plan.order[info.dp_rank]] = lp
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
            return share, planned.plan.micro_sizes[dp_rank], self.config.rl_config.epochs, kl_coef

        metrics: dict[str, float] = {}
        for result in self.workers.call("update", per_rank=self._per_rank(planned, payload)):
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

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutOutput:
        """Prompts split over the engines (TP peers of an engine get the same share), outputs
        back in prompt order (the n samples of a prompt consecutive)."""
        chunks = [prompt_ids[e :: self.engines] for e in range(self.engines)]
        per_rank = [
            (chunks[r // self.tp], _with_seed(params, r // self.tp)) for r in range(len(self.infos))
        ]
        outputs = self.workers.call("generate", per_rank=per_rank)
        return _interleave(
            [outputs[e * self.tp] for e in range(self.engines)], len(prompt_ids), self.pad_token_id
        )


def _with_seed(params: SamplingParams, engine: int) -> SamplingParams:
    seed = None if params.seed is None else params.seed * 31 + engine
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
