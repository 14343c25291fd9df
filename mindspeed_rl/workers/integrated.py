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
from typing import Any

import torch

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.platform.distributed import ParallelLayout, init_distributed
from mindspeed_rl.rollout.base import RolloutOutput
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.workers.offload import TrainStateOffloader
from mindspeed_rl.workers.residency import PHASES, MemoryLedger, enter_phase
from mindspeed_rl.workers.timing import Timer

logger = logging.getLogger(__name__)


class IntegratedWorker:
    """Actor + rollout on one device (made a Ray actor by ``WorkerGroup``)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.actor_version = 0  # optimizer updates applied; the engine must run this version
        self.compute = Timer()  # time inside model code, per operation
        self.engine = None
        self.engine_has_weights = False  # False after a sleep that dropped them: sync first
        self.ledger = MemoryLedger()
        self.phase = "setup"

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
    ) -> dict[str, Any]:
        """Initialise this rank. ``resume``: {'iteration', 'actor_version'} to restore a training
        checkpoint from ``actor_config.load`` (finetune: false); else ``load`` gives the starting
        weights only (finetune semantics)."""
        import transformers
        from megatron.core import parallel_state as ps

        from mindspeed_rl.models.param_mapping import WeightMapping
        from mindspeed_rl.platform.device import current_device, device_type
        from mindspeed_rl.platform.megatron_setup import prepare_megatron
        from mindspeed_rl.rollout.factory import engine_kind
        from mindspeed_rl.workers.actor import MegatronActor

        torch.set_num_threads(threads)
        actor_cfg, rl, gen = config.actor, config.rl_config, config.generate_config
        self.config = config
        prepare_megatron({**config.model.model_dump(), **actor_cfg.model_dump()})
        self.layout = ParallelLayout(
            actor_cfg.tensor_model_parallel_size,
            actor_cfg.pipeline_model_parallel_size,
            actor_cfg.expert_model_parallel_size,
        )
        init_distributed(
            self.layout, rank=self.rank, world_size=world_size, local_rank=local_rank,
            master_addr=master_addr, master_port=master_port, seed=actor_cfg.seed,
        )  # fmt: skip
        hf_dir = actor_cfg.tokenizer_name_or_path
        if hf_dir is None or not (Path(hf_dir) / "config.json").is_file():
            raise ValueError(
                f"megatron_training.tokenizer_name_or_path={hf_dir!r}: the rollout engine needs "
                "the Hugging Face model directory (config.json and tokenizer files)"
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
        hf_config = transformers.AutoConfig.from_pretrained(hf_dir)
        eos = (
            hf_config.eos_token_id if hf_config.eos_token_id is not None else tokenizer.eos_token_id
        )
        self.eos_token_ids = eos if isinstance(eos, list) else [eos]
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        )
        dtype = torch.bfloat16 if actor_cfg.bf16 else torch.float32
        self.actor = MegatronActor(
            config.model, actor_cfg, rl, self.layout, total_optimizer_steps, dtype,
            temperature=gen.sampling_config.temperature, initialize=actor_cfg.load is None,
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
            model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
            model.to(current_device())
            self.engine = HFRolloutEngine(
                model, self.eos_token_ids, self.pad_token_id, max_num_seqs=gen.max_num_seqs
            )
        else:
            from mindspeed_rl.rollout.vllm_engine import VLLMRolloutEngine

            self.engine = VLLMRolloutEngine(
                gen, hf_dir, hf_dir, self.eos_token_ids, self.pad_token_id, actor_cfg.seed
            )
        self.sync_weights()
        return {
            "rank": self.rank,
            "dp_rank": ps.get_data_parallel_rank(),
            "dp_size": ps.get_data_parallel_world_size(),
            "tp_rank": ps.get_tensor_model_parallel_rank(),
            "pp_rank": ps.get_pipeline_model_parallel_rank(),
            "last_stage": ps.is_pipeline_last_stage(),
            "pid": os.getpid(),
            "node_id": _ray_node_id(),
            "engine": kind,
            "eos_token_ids": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
        }

    # --- checkpoints ---------------------------------------------------------------------------

    def _shard_layout(self):
        from mindspeed_rl.checkpoint.mcore_layout import ShardLayout

        return ShardLayout(
            self.layout.tensor_model_parallel_size,
            self.layout.pipeline_model_parallel_size,
            self.layout.expert_model_parallel_size,
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
        enter_phase(wanted, self.offloader, engine)
        self.phase = phase
        self.ledger.record(phase, self.offloader, engine)

    def sync_weights(self) -> tuple[int, int]:
        """Actor -> engine (a collective over the whole group); returns (engine version, actor
        version), which the trainer checks are equal. Leaves the engine ready to generate."""
        from mindspeed_rl.workers.weight_sync import iter_synced_weights

        self._enter("sync")
        pairs = iter_synced_weights(self.actor.module, self.mapping)
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
        if not prompts:
            return None
        with self.compute.phase("gen"):
            out = self.engine.generate(prompts, params)
        self.ledger.record("generate", self.offloader, self.engine)  # with the KV cache's peak
        return out

    def memory_ledger(self) -> list[dict]:
        """Bytes resident per phase transition (the last ones; see workers/residency.py)."""
        return self.ledger.as_dicts()

    def memory_metrics(self) -> dict[str, float]:
        return self.ledger.metrics()

    def pop_compute_seconds(self) -> dict[str, float]:
        """Seconds spent in model code since the last call (orchestration = the rest)."""
        return self.compute.pop()

    # --- training ------------------------------------------------------------------------------

    def compute_log_prob(self, rows, micro_batch_size: int) -> torch.Tensor | None:
        from megatron.core import parallel_state as ps

        self._enter("log_prob")
        with self.compute.phase("old_log_prob"):
            lp = self.actor.compute_log_prob(rows, micro_batch_size)
        return lp if lp is not None and ps.get_tensor_model_parallel_rank() == 0 else None

    def update(self, batch, mini_batches: int, epochs: int, micro_batch_size: int) -> dict:
        """``mini_batches`` x ``epochs`` optimizer steps over this DP rank's rows (mini-batch m is
        the m-th equal slice). Returns metrics averaged over the steps (last stage, TP rank 0)."""
        from megatron.core import parallel_state as ps

        self._enter("update")
        rows_per_mini = len(batch) // mini_batches
        totals: dict[str, float] = {}
        steps = 0
        grad_norms = []
        for _ in range(epochs):
            for m in range(mini_batches):
                part = batch.slice(m * rows_per_mini, (m + 1) * rows_per_mini)
                with self.compute.phase("update"):
                    self.actor.zero_grad()
                    metrics = self.actor.backward_mini_batch(part, micro_batch_size)
                    ok, grad_norm = self.actor.step()
                if not ok:
                    raise RuntimeError("optimizer step failed (non-finite gradients)")
                grad_norms.append(float(grad_norm) if grad_norm is not None else 0.0)
                for key, value in metrics.items():
                    totals[key] = totals.get(key, 0.0) + value
                steps += 1
        self.actor_version += 1
        self.ledger.record("update", self.offloader, self.engine)  # with Adam's state
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
