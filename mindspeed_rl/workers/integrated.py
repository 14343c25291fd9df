"""The integrated worker: one Ray actor per device hosting the Megatron actor and the rollout engine.

SPMD over the worker group: every rank receives the same call; data is split by the driver along
data-parallel ranks (training) or rollout ranks (generation). Results that only some ranks hold
(log-probs on the last pipeline stage) come back as None from the others.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.models.pipeline_split import parse_num_layer_list
from mindspeed_rl.platform.distributed import ParallelLayout, init_distributed
from mindspeed_rl.rollout.base import RolloutOutput
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.workers.offload import TrainStateOffloader
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
        """Initialise this rank. ``resume``: {'iteration', 'actor_version'} to restore a training
        checkpoint from ``actor_config.load`` (finetune: false); else ``load`` gives the starting
        weights only (finetune semantics)."""
        phases = Timer()  # the set-up's phases, for the driver's start-up line
        import transformers
        from megatron.core import parallel_state as ps

        from mindspeed_rl.models.param_mapping import WeightMapping
        from mindspeed_rl.platform.device import current_device, device_type
        from mindspeed_rl.platform.megatron_setup import prepare_megatron
        from mindspeed_rl.rollout.base import eos_token_ids_of
        from mindspeed_rl.rollout.factory import engine_kind, hf_engine_dtype
        from mindspeed_rl.workers.actor import MegatronActor
        from mindspeed_rl.workers.reference import (
            ReferenceModel,
            needs_reference,
            reference_load_path,
        )

        phases.lap("imports")
        torch.set_num_threads(threads)
        actor_cfg, rl, gen = config.actor, config.rl_config, config.generate_config
        self.config = config
        prepare_megatron({**config.model.model_dump(), **actor_cfg.model_dump()})
        self.layout = ParallelLayout(
            actor_cfg.tensor_model_parallel_size,
            actor_cfg.pipeline_model_parallel_size,
            actor_cfg.expert_model_parallel_size,
            actor_cfg.context_parallel_size,
            pipeline_layers=parse_num_layer_list(actor_cfg.num_layer_list),
        )
        init_distributed(
            self.layout, rank=self.rank, world_size=world_size, local_rank=local_rank,
            master_addr=master_addr, master_port=master_port, seed=actor_cfg.seed,
        )  # fmt: skip
        phases.lap("distributed")
        hf_dir = actor_cfg.tokenizer_name_or_path
        if hf_dir is None or not (Path(hf_dir) / "config.json").is_file():
            raise ValueError(
                f"megatron_training.tokenizer_name_or_path={hf_dir!r}: the rollout engine needs "
                "the Hugging Face model directory (config.json and tokenizer files)"
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
        hf_config = transformers.AutoConfig.from_pretrained(hf_dir)
        self.eos_token_ids = eos_token_ids_of(hf_dir) or [tokenizer.eos_token_id]
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        )
        dtype = torch.bfloat16 if actor_cfg.bf16 else torch.float32
        self.actor = MegatronActor(
            config.model, actor_cfg, rl, self.layout, total_optimizer_steps, dtype,
            temperature=gen.sampling_config.temperature, initialize=actor_cfg.load is None,
            vocab_size=hf_config.vocab_size,
        )  # fmt: skip
        recorded = None  # the loaded checkpoint's hf_config record, carried into every save
        if actor_cfg.load is not None:
            # finetune: the weights of the latest checkpoint (or 'release'), iteration 0;
            # resume: everything of the given iteration (docs/resume.md)
            from mindspeed_rl.checkpoint.mcore_layout import read_tracker
            from mindspeed_rl.checkpoint.training_state import load_rank

            full = resume is not None
            recorded = load_rank(
                self.actor, actor_cfg.load,
                resume["iteration"] if full else read_tracker(actor_cfg.load),
                self._shard_layout(), self._shard_position(),
                load_optim=full and not actor_cfg.no_load_optim,
                load_rng=full and not actor_cfg.no_load_rng,
            )["hf_config"]  # fmt: skip
            if full:
                self.actor_version = resume["actor_version"]
        from mindspeed_rl.checkpoint.training_state import hf_config_record

        # what every checkpoint of this run records, so that mg -> hf needs no --hf-config-dir
        self.hf_config_json = hf_config_record(recorded, hf_dir)
        self.mapping = WeightMapping(self.actor.model_config, hf_config.vocab_size, self.layout)
        self.tp_gather = None
        if self.layout.tensor_model_parallel_size > 1:
            from megatron.core import parallel_state

            from mindspeed_rl.platform.host_gather import host_gather_for

            self.tp_gather = host_gather_for(parallel_state.get_tensor_model_parallel_group())
        self.reference = None
        if needs_reference(rl):
            self.reference = ReferenceModel(
                self.actor.model_config, actor_cfg, rl, self.layout,
                reference_load_path(actor_cfg, rl), self._shard_layout(), self._shard_position(),
                dtype, temperature=gen.sampling_config.temperature,
                vocab_size=hf_config.vocab_size,
            )  # fmt: skip
        phases.lap("actor")
        self.offloader = TrainStateOffloader(
            self.actor.model,
            self.actor.optimizer,
            params=gen.offload_train_param,
            grads=gen.offload_train_grad,
            optimizer_state=gen.offload_train_optimizer,
        )
        # the engine sizes its KV cache from the free device memory: create it with the
        # training state off the device
        self._enter("engine_init")
        kind = engine_kind(gen, device_type())
        if kind == "hf":
            from mindspeed_rl.rollout.hf_engine import HFRolloutEngine

            if gen.infer_tensor_parallel_size != 1:
                raise ValueError(
                    "generate_config.infer_tensor_parallel_size must be 1 with the hf engine "
                    "(each rank generates with a whole model)"
                )
            model = transformers.AutoModelForCausalLM.from_config(
                hf_config, dtype=hf_engine_dtype(gen, device_type())
            )
            model.to(current_device())
            self.engine = HFRolloutEngine(
                model, self.eos_token_ids, self.pad_token_id, max_num_seqs=gen.max_num_seqs
            )
        else:
            from mindspeed_rl.rollout.vllm_engine import VLLMRolloutEngine

            self.engine = VLLMRolloutEngine(
                gen, hf_dir, hf_dir, self.eos_token_ids, self.pad_token_id, actor_cfg.seed,
                device_type(), local_rank=local_rank,
            )  # fmt: skip
        # vLLM's TP groups under external_launcher are consecutive ranks
        self.returns_rollout = self.rank % gen.infer_tensor_parallel_size == 0
        phases.lap("engine")
        self.sync_weights()
        phases.lap("sync")
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
            setup_seconds=phases.seconds,
        )

    # --- checkpoints ---------------------------------------------------------------------------

    def _shard_layout(self):
        from mindspeed_rl.checkpoint.mcore_layout import ShardLayout

        return ShardLayout(
            self.layout.tensor_model_parallel_size,
            self.layout.pipeline_model_parallel_size,
            self.layout.expert_model_parallel_size,
            pipeline_layers=self.layout.pipeline_layers,
        )

    def _shard_position(self) -> tuple[int, int, int]:
        from megatron.core import parallel_state as ps

        ep = (
            ps.get_expert_model_parallel_rank() if self.layout.expert_model_parallel_size > 1 else 0
        )
        return ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank(), ep

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

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutOutput | None:
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
            out = self.engine.generate(prompts, params)
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
