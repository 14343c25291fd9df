"""The reference model of a KL term: the actor's architecture and parallel layout, frozen.

Built only when ``use_kl_loss`` or ``use_kl_in_reward`` is on (DAPO builds none). Its weights come
from ``rl_config.integrated_mode_config.ref_model_load_path`` or, when the actor starts from
converted weights, from the actor's ``load`` (the seed's resume procedure points
``ref_model_load_path`` at the original weights while the actor resumes from its own checkpoint).
Forward-only: no DDP, no gradients, no optimizer. Its parameters stay off the device except in
its log-prob pass (``workers/residency.py``'s ``ref_log_prob`` phase).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from mindspeed_rl.config.schema import MegatronConfig, ModelConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout
from mindspeed_rl.workers.forward_pass import forward_log_probs
from mindspeed_rl.workers.offload import ModuleOffloader
from mindspeed_rl.workers.packing import micro_layout
from mindspeed_rl.workers.rows import MegatronRows

logger = logging.getLogger(__name__)


def needs_reference(rl: RLConfig) -> bool:
    return rl.use_kl_loss or rl.use_kl_in_reward


def reference_load_path(actor: MegatronConfig, rl: RLConfig) -> str | None:
    """Where the reference weights come from: ``ref_model_load_path``, else ``load``, as in the
    Ascend suite (config/checks.py refuses ``load`` when it is a run's own checkpoint to resume,
    whose weights are not the original ones). None when neither is set (a config error)."""
    path = rl.integrated_mode_config.ref_model_load_path
    if path is not None:
        return path
    return actor.load


class ReferenceModel:
    def __init__(
        self,
        model_config: ModelConfig,
        actor_config: MegatronConfig,
        rl_config: RLConfig,
        layout: ParallelLayout,
        load_path: str,
        shard_layout,
        position: tuple[int, int, int],
        params_dtype: torch.dtype,
        temperature: float,
        vocab_size: int | None = None,
    ) -> None:
        """``model_config``: the architecture the actor built (e.g. per-expert MLPs on CPU)."""
        from mindspeed_rl.checkpoint.mcore_layout import read_tracker
        from mindspeed_rl.checkpoint.training_state import load_model
        from mindspeed_rl.models.gpt_builder import build_gpt_model
        from mindspeed_rl.platform.device import current_device
        from mindspeed_rl.workers.actor import check_placement, model_build_options

        self.device = current_device()
        self.temperature = temperature
        module = build_gpt_model(
            model_config, layout, params_dtype, perform_initialization=False,
            vocab_size=vocab_size, **model_build_options(actor_config),
        )  # fmt: skip
        self.micro_layout = micro_layout(rl_config, actor_config, module.config)
        module.requires_grad_(False)
        module.to(self.device)
        check_placement(module, self.device)
        iteration = read_tracker(load_path)
        load_model(module, load_path, iteration, shard_layout, position)
        self.module = module.eval()
        self.load_path = str(Path(load_path))
        logger.info("reference model: %s (iteration %s)", load_path, iteration)
        self.offloader = ModuleOffloader(module)

    def compute_log_prob(
        self, rows: MegatronRows, micro_batches: int | Sequence[int]
    ) -> torch.Tensor | None:
        return forward_log_probs(
            self.module, self.device, self.temperature, rows, micro_batches, self.micro_layout
        )
