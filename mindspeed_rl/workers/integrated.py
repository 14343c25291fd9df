"""The integrated worker: one Ray actor per device hosting the Megatron actor and the rollout engine.

SPMD over the worker group: every rank receives the same call; data is split by the driver along
data-parallel ranks (training) or rollout ranks (generation). Results that only some ranks hold
(log-probs on the last pipeline stage) come back as None from the others.
"""

from __future__ import annotations

import logging
import os
import socket

import torch

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.rollout.base import RolloutOutput, RoundShape
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.workers.residency import PHASES, MemoryLedger, enter_phase
from mindspeed_rl.workers.rows import chunk_bounds
from mindspeed_rl.workers.timing import Timer
from mindspeed_rl.workers.worker_info import WorkerInfo

logger = logging.getLogger(__name__)


class IntegratedWorker:
    """Actor + rollout on one device (made a Ray actor by ``WorkerGroup``)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.actor_version = 0  # optimizer updates applied; the engine must run this version
        self.compute = Timer()  # time inside model code, per operation
        self.engine = None
        self.reference = None  # the KL term's ReferenceModel, when one is configured
        self.engine_has_weights = False  # False after a sleep that dropped them: sync first
        self.ledger = MemoryLedger()
        self.phase = "setup"
        self.returns_rollout = True  # False on the TP peers of a rollout engine but its first
        self.device_index = None  # the device this worker runs on (Ray's assignment)

    def address_and_free_port(self) -> tuple[str, int]:
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(
        self,
        config: RunConfig,
        world_size: int,
        local_rank: int,
        master_addr: str,
        master_port: int,
        total_optimizer_steps: int,
        threads: int = 1,
        resume: dict[str, int] | None = None,
    ) -> WorkerInfo:
        """Initialise this rank, phase by phase (``workers/setup_phases.py``). ``resume``:
        {'iteration', 'actor_version'} to restore a training checkpoint from
        ``actor_config.load`` (finetune: false); else ``load`` gives the starting weights only
        (finetune semantics). ``local_rank``: the device without Ray; a Ray worker binds to the
        device Ray assigned it."""
        from mindspeed_rl.rollout.factory import engine_kind
        from mindspeed_rl.workers import setup_phases

        phases = Timer()  # the set-up's phases, for the driver's start-up line
        device = setup_phases.platform(self, config, threads)  # before anything of megatron
        phases.lap("platform")
        setup_phases.distributed(self, world_size, local_rank, master_addr, master_port)
        phases.lap("distributed")
        hf = setup_phases.hf_assets(config)
        self.eos_token_ids, self.pad_token_id = hf.eos_token_ids, hf.pad_token_id
        setup_phases.actor(self, hf, total_optimizer_steps, resume)
        setup_phases.reference(self, hf)
        phases.lap("actor")
        setup_phases.offloader(self)
        self._enter("engine_init")  # the training state off the device while the engine sizes
        kind = engine_kind(config.generate_config, device)
        setup_phases.engine(self, hf, kind, device)
        phases.lap("engine")
        self.sync_weights()
        phases.lap("sync")
        return self._info(local_rank, kind, phases.seconds)

    def _info(self, local_rank: int, kind: str, setup_seconds: dict[str, float]) -> WorkerInfo:
        from megatron.core import parallel_state as ps

        return WorkerInfo(
            rank=self.rank,
            local_rank=local_rank,
            dp_rank=ps.get_data_parallel_rank(),
            dp_size=ps.get_data_parallel_world_size(),
            tp_rank=ps.get_tensor_model_parallel_rank(),
            pp_rank=ps.get_pipeline_model_parallel_rank(),
            last_stage=ps.is_pipeline_last_stage(),
            pid=os.getpid(),
            node_id=_ray_node_id(),
            engine=kind,
            eos_token_ids=tuple(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
            returns_rollout=self.returns_rollout,
            setup_seconds=setup_seconds,
        )

    # --- checkpoints ---------------------------------------------------------------------------

    def _shard_layout(self):
        from mindspeed_rl.checkpoint.mcore_layout import ShardLayout

        return ShardLayout(
            self.layout.tensor_model_parallel_size,
            self.layout.pipeline_model_parallel_size,
            self.layout.expert_model_parallel_size,
            moe_tp_extend_ep=self.layout.moe_tp_extend_ep,
            pipeline_layers=self.layout.pipeline_layers,
        )

    def _shard_position(self) -> tuple[int, int, int]:
        from mindspeed_rl.checkpoint.mcore_layout import rank_position

        return rank_position(self._shard_layout())

    def save_checkpoint(self, root: str, iteration: int) -> str:
        """This rank's part of a checkpoint, into the iteration's temporary directory."""
        from mindspeed_rl.checkpoint.training_state import save_rank

        actor_cfg = self.config.actor
        self._enter("save")
        path = save_rank(
            self.actor, root, iteration, self._shard_layout(), self._shard_position(),
            self.config.model_dump(mode="json"), save_optim=not actor_cfg.no_save_optim,
            save_rng=not actor_cfg.no_save_rng, hf_config=self.hf_config_json,
        )  # fmt: skip
        return str(path)

    def finalize_checkpoint(
        self, root: str, iteration: int, trainer_state: dict, keep_last: int
    ) -> str:
        from mindspeed_rl.checkpoint.training_state import finalize

        return str(finalize(root, iteration, trainer_state, keep_last))

    # --- rollout -------------------------------------------------------------------------------

    def _enter(self, phase: str) -> None:
        """Make the device hold what ``phase`` needs (workers/residency.py), and record it."""
        wanted = PHASES[phase]
        engine = self.engine
        if engine is not None and not engine.awake.issubset(wanted.engine):
            # the engine sleeps whole; an engine that drops its weights asleep needs a sync
            self.engine_has_weights = self.engine_has_weights and engine.keeps_weights_asleep
        enter_phase(wanted, self.offloader, engine, self._reference_offloader())
        self.phase = phase
        self._record(phase)

    def _reference_offloader(self):
        return self.reference.offloader if self.reference is not None else None

    def _record(self, phase: str) -> None:
        self.ledger.record(phase, self.offloader, self.engine, self._reference_offloader())

    def sync_weights(self) -> tuple[int, int]:
        """Actor -> engine (a collective over the whole group); returns (engine version, actor
        version), which the trainer checks are equal. Leaves the engine ready to generate."""
        from mindspeed_rl.workers.weight_sync import iter_synced_blocks, iter_synced_weights

        self._enter("sync")
        load_blocks = getattr(self.engine, "load_weight_blocks", None)
        if load_blocks is not None:  # HF-named parameters: blocks go straight into them
            load_blocks(iter_synced_blocks(self.actor.module, self.mapping, self.tp_gather),
                        self.actor_version)  # fmt: skip
        else:
            pairs = iter_synced_weights(self.actor.module, self.mapping, self.tp_gather)
            self.engine.load_weights(pairs, self.actor_version)
        self.engine_has_weights = True
        self._enter("generate")
        return self.engine.weight_version, self.actor_version

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, shape: RoundShape | None = None
    ) -> RolloutOutput | None:
        # every rank gets this call, so a re-sync (a collective) happens on all of them together
        if not self.engine_has_weights:
            self.sync_weights()
        elif self.phase != "generate":
            self._enter("generate")
        # the engine runs even without prompts: vLLM's data-parallel ranks (infer EP > infer TP)
        # step together, one without requests running dummy batches in its peers' collectives
        # (LLMEngine.has_unfinished_requests_dp); a rank that skipped the call would leave them
        # waiting for it
        with self.compute.phase("gen"):
            out = self.engine.generate(prompts, params, shape)
        self._record("generate")  # with the KV cache's peak
        if not prompts:
            return None
        # the TP peers of an engine all hold its outputs: only the first sends them back
        return out if self.returns_rollout else None

    def memory_ledger(self) -> list[dict]:
        """Bytes resident per phase transition (the last ones; see workers/residency.py)."""
        return self.ledger.as_dicts()

    def memory_metrics(self) -> dict[str, float]:
        return self.ledger.metrics()

    def pop_compute_seconds(self) -> dict[str, float]:
        """Seconds spent in model code since the last call (orchestration = the rest)."""
        return self.compute.pop()

    # --- training ------------------------------------------------------------------------------

    def compute_log_prob(self, rows, micro_batches) -> torch.Tensor | None:
        """Old log-probs [B, R] of this DP rank's ``rows``; ``micro_batches``: rows per
        micro-batch, an int or the planned counts (``workers/batch_plan.py``)."""
        return self._log_prob_pass("log_prob", "old_log_prob", self.actor, rows, micro_batches)

    def compute_ref_log_prob(self, rows, micro_batches) -> torch.Tensor | None:
        """Log-probs of the responses under the reference model (a KL term is configured)."""
        if self.reference is None:
            raise RuntimeError("no reference model: neither use_kl_loss nor use_kl_in_reward is on")
        return self._log_prob_pass(
            "ref_log_prob", "ref_log_prob", self.reference, rows, micro_batches
        )

    def _log_prob_pass(self, phase: str, timed: str, model, rows, micro_batches):
        """[B, R] on the last stage's TP rank 0 (the one copy the driver reads), else None."""
        from megatron.core import parallel_state as ps

        self._enter(phase)
        with self.compute.phase(timed):
            lp = model.compute_log_prob(rows, micro_batches)
        return lp if lp is not None and ps.get_tensor_model_parallel_rank() == 0 else None

    def update(
        self,
        batch,
        micro_batches: list[list[int]],
        epochs: int,
        kl_coef: float | None = None,
    ) -> dict:
        """``epochs`` passes of one optimizer step per mini-batch over this DP rank's rows.
        ``micro_batches``: per mini-batch, the rows of each micro-batch (consecutive slices of
        ``batch``, as ``workers/batch_plan.py`` plans them; ``equal_micro_batches`` for equal
        slices). ``kl_coef``: the KL controller's coefficient of this iteration. Returns metrics
        averaged over the steps (last stage, TP rank 0)."""
        from megatron.core import parallel_state as ps

        self._enter("update")
        bounds = chunk_bounds(len(batch), [sum(sizes) for sizes in micro_batches])
        totals: dict[str, float] = {}
        steps = 0
        grad_norms = []
        for _ in range(epochs):
            for (start, end), sizes in zip(bounds, micro_batches):
                part = batch.slice(start, end)
                with self.compute.phase("update"):
                    self.actor.zero_grad()
                    metrics = self.actor.backward_mini_batch(part, sizes, kl_coef)
                    ok, grad_norm = self.actor.step()
                if not ok:
                    raise RuntimeError("optimizer step failed (non-finite gradients)")
                grad_norms.append(float(grad_norm) if grad_norm is not None else 0.0)
                for key, value in metrics.items():
                    totals[key] = totals.get(key, 0.0) + value
                steps += 1
        self.actor_version += 1
        self._record("update")  # with Adam's state
        if not (ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0):
            return {}
        out = {f"actor/{k}": v / steps for k, v in totals.items()}
        out["actor/grad_norm"] = sum(grad_norms) / len(grad_norms)
        out["actor/lr"] = self.actor.lr
        return out


def _ray_node_id() -> str | None:
    """The Ray node of this worker; None when it runs without Ray (the device check)."""
    import sys

    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None
