"""The Megatron actor of one rank: log-prob passes and the DAPO update.

Exact token-level loss under Megatron's own scaling: the pipeline schedule divides every
micro-batch loss by the number of micro-batches and DDP averages gradients over data-parallel
ranks. The loss function undoes both factors, so that the gradient of a mini-batch is the sum of
per-token losses divided by the mini-batch's *global* denominator (all valid tokens over every
micro-batch and DP rank: one all-reduce per mini-batch), whatever the split.
tests/workers/test_actor_gradients.py checks this at the Megatron level.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence

import torch

from mindspeed_rl.algorithms.loss_aggregation import loss_denominator, resolve_loss_agg_mode
from mindspeed_rl.algorithms.policy_loss import clip_bounds, policy_loss
from mindspeed_rl.config.platform_rules import context_parallel_problem
from mindspeed_rl.config.schema import MegatronConfig, ModelConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout
from mindspeed_rl.workers.forward_pass import forward_log_probs, response_log_probs, run_schedule
from mindspeed_rl.workers.packing import micro_layout
from mindspeed_rl.workers.rows import MegatronRows, chunk_bounds

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class UpdateBatch:
    """This DP rank's share of one mini-batch, in Megatron rows. Tensors [B, R] unless noted."""

    rows: MegatronRows
    loss_mask: torch.Tensor  # response mask after overlong filtering
    advantages: torch.Tensor
    old_log_probs: torch.Tensor | None  # None: on-policy, the current log-probs detached
    rollout_log_probs: torch.Tensor | None = None
    ref_log_probs: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.rows.tokens.shape[0]

    def slice(self, start: int, end: int) -> UpdateBatch:
        part = slice(start, end)
        return UpdateBatch(
            self.rows.select(part),
            *(
                None if t is None else t[part]
                for t in (
                    self.loss_mask,
                    self.advantages,
                    self.old_log_probs,
                    self.rollout_log_probs,
                    self.ref_log_probs,
                )
            ),
        )

    def to(self, device: torch.device) -> UpdateBatch:
        """The per-token tensors on ``device`` (rows stay on the host: the schedule moves them)."""
        return UpdateBatch(
            self.rows,
            *(
                None if t is None else t.to(device)
                for t in (
                    self.loss_mask,
                    self.advantages,
                    self.old_log_probs,
                    self.rollout_log_probs,
                    self.ref_log_probs,
                )
            ),
        )

    def micro_batches(self, sizes: int | Sequence[int]) -> Iterator[UpdateBatch]:
        """Consecutive micro-batches of ``sizes`` rows (``rows.chunk_bounds``)."""
        for start, end in chunk_bounds(len(self), sizes):
            yield self.slice(start, end)


class MegatronActor:
    """GPTModel + Megatron DDP + Megatron optimizer and LR schedule, on an initialised rank."""

    def __init__(
        self,
        model_config: ModelConfig,
        actor_config: MegatronConfig,
        rl_config: RLConfig,
        layout: ParallelLayout,
        total_optimizer_steps: int,
        params_dtype: torch.dtype = torch.float32,
        temperature: float = 1.0,
        initialize: bool = True,
        vocab_size: int | None = None,
    ) -> None:
        """``initialize=False``: a checkpoint provides every weight next, so the model skips
        Megatron's random initialisation (at 32B minutes of fp32 work and host memory per
        rank, thrown away by the load). ``vocab_size``: the HF vocabulary the rollout engine
        samples from (padding rows beyond it leave the softmax)."""
        from megatron.core.distributed import (
            DistributedDataParallel,
            DistributedDataParallelConfig,
            finalize_model_grads,
        )
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
        from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

        from mindspeed_rl.models.gpt_builder import build_gpt_model
        from mindspeed_rl.platform.device import current_device, device_type

        if model_config.moe_grouped_gemm and device_type() == "cpu":
            # GroupedMLP needs a grouped-GEMM kernel; checkpoints in either layout load into the
            # per-expert model (checkpoint/expert_layout.py)
            logger.info("moe_grouped_gemm: no grouped GEMM on CPU, building per-expert MLPs")
            model_config = model_config.model_copy(update={"moe_grouped_gemm": False})
        self.model_config = model_config  # the architecture actually built
        self.device = current_device()  # batches arrive on the host from the driver
        self.rl = rl_config
        self.temperature = temperature  # of the rollout: log-probs of logits / temperature
        self.actor_config = actor_config
        self.loss_agg_mode = resolve_loss_agg_mode(
            rl_config.token_level_loss, rl_config.loss_agg_mode
        )
        self.clip_low, self.clip_high = clip_bounds(
            rl_config.clip_ratio,
            rl_config.clip_higher_enable,
            rl_config.clip_ratio_low,
            rl_config.clip_ratio_high,
        )
        module = build_gpt_model(
            model_config, layout, params_dtype, perform_initialization=initialize,
            vocab_size=vocab_size, **model_build_options(actor_config),
        )  # fmt: skip
        self.micro_layout = micro_layout(rl_config, actor_config, module.config)
        # on the rank's device before DDP wraps it: DDP's buffers (and, without the distributed
        # optimizer, the parameters themselves) are allocated where the module is
        module.to(self.device)
        check_placement(module, self.device)
        self.model = DistributedDataParallel(
            config=module.config,
            ddp_config=DistributedDataParallelConfig(
                grad_reduce_in_fp32=True,
                use_distributed_optimizer=actor_config.use_distributed_optimizer,
            ),
            module=module,
        )
        # Megatron-LM's training loop wires this; without it the DP all-reduce never happens.
        module.config.finalize_model_grads_func = finalize_model_grads
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam",
                lr=actor_config.lr,
                min_lr=actor_config.min_lr,
                weight_decay=actor_config.weight_decay,
                adam_beta1=actor_config.adam_beta1,
                adam_beta2=actor_config.adam_beta2,
                clip_grad=actor_config.clip_grad,
                bf16=params_dtype == torch.bfloat16,
                params_dtype=params_dtype,
                use_distributed_optimizer=actor_config.use_distributed_optimizer,
            ),
            [self.model],
        )
        warmup = int(actor_config.lr_warmup_fraction * total_optimizer_steps)
        self.scheduler = OptimizerParamScheduler(
            self.optimizer,
            init_lr=0.0 if warmup else actor_config.lr,
            max_lr=actor_config.lr,
            min_lr=actor_config.min_lr,
            lr_warmup_steps=warmup,
            lr_decay_steps=max(total_optimizer_steps, 1),
            lr_decay_style=actor_config.lr_decay_style,
            start_wd=actor_config.weight_decay,
            end_wd=actor_config.weight_decay,
            wd_incr_steps=max(total_optimizer_steps, 1),
            wd_incr_style="constant",
        )

    @property
    def module(self) -> torch.nn.Module:
        return self.model.module

    # --- operations --------------------------------------------------------------------------

    def compute_log_prob(
        self, rows: MegatronRows, micro_batches: int | Sequence[int]
    ) -> torch.Tensor | None:
        """Log-probs [B, R] of the responses under the current weights, on the last pipeline
        stage (None on the others). ``micro_batches``: rows per micro-batch (``chunk_bounds``)."""
        return forward_log_probs(
            self.model, self.device, self.temperature, rows, micro_batches, self.micro_layout
        )

    def backward_mini_batch(
        self,
        batch: UpdateBatch,
        micro_batches: int | Sequence[int],
        kl_coef: float | None = None,
    ) -> dict[str, float]:
        """Forward + backward of one mini-batch (this DP rank's share); gradients accumulate in
        the DDP buffers, reduced over DP. ``kl_coef``: the KL loss coefficient of this iteration
        (the KL controller's; default ``init_kl_coef``). Returns metrics summed over micro-batches
        and DP ranks (on the last pipeline stage; empty elsewhere)."""
        from megatron.core import parallel_state

        self.model.train()
        micros = list(batch.micro_batches(micro_batches))
        dp_size = parallel_state.get_data_parallel_world_size()
        # [the loss's denominator, valid tokens (of the token-mean metrics)], one all-reduce
        counts = torch.stack(
            [
                torch.stack([loss_denominator(m.loss_mask, mode) for m in micros]).sum()
                for mode in (self.loss_agg_mode, "token-mean")
            ]
        ).to(device=self.device, dtype=torch.float32)
        torch.distributed.all_reduce(counts, group=parallel_state.get_data_parallel_group())
        denominator, tokens = counts[0], counts[1]
        # the schedule divides each micro-batch loss by len(micros); DDP averages over DP
        undo_megatron_scaling = len(micros) * dp_size
        rl = self.rl
        kl_coef = rl.init_kl_coef if kl_coef is None else kl_coef

        def loss_func_for(index: int, shaped):
            micro = micros[index].to(self.device)

            def loss_func(logits):
                lp, entropy = response_log_probs(
                    logits, shaped, self.temperature, with_entropy=True,
                    entropy_grad=rl.entropy_coeff != 0,
                )  # fmt: skip
                old = micro.old_log_probs if micro.old_log_probs is not None else lp.detach()
                out = policy_loss(
                    lp,
                    old,
                    micro.advantages,
                    micro.loss_mask,
                    loss_agg_mode=self.loss_agg_mode,
                    global_denominator=denominator,
                    global_tokens=tokens,
                    clip_ratio_low=self.clip_low,
                    clip_ratio_high=self.clip_high,
                    clip_ratio_c=rl.clip_ratio_c,
                    entropy=entropy,
                    entropy_coeff=rl.entropy_coeff,
                    use_kl_loss=rl.use_kl_loss,
                    ref_log_probs=micro.ref_log_probs,
                    kl_penalty_kind=rl.kl_penalty,
                    kl_coef=kl_coef,
                    rollout_log_probs=micro.rollout_log_probs,
                    tis_imp_ratio_cap=rl.tis_imp_ratio_cap,
                )
                return out.loss * undo_megatron_scaling, out.metrics

            return loss_func

        outputs = run_schedule(
            self.model, self.device, [m.rows for m in micros], loss_func_for, forward_only=False,
            layout=self.micro_layout,
        )  # fmt: skip
        metrics: dict[str, torch.Tensor] = {}
        for out in outputs:
            for key, value in out.items():
                metrics[key] = metrics.get(key, 0.0) + value.float()
        if metrics:
            keys = sorted(metrics)
            stacked = torch.stack([metrics[k] for k in keys])
            torch.distributed.all_reduce(stacked, group=parallel_state.get_data_parallel_group())
            return dict(zip(keys, stacked.tolist()))
        return {}

    def zero_grad(self) -> None:
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()

    def step(self) -> tuple[bool, float | None]:
        """Optimizer step (grad clipping inside) and LR schedule step."""
        ok, grad_norm, _ = self.optimizer.step()
        if ok:
            self.scheduler.step(increment=1)
        return ok, grad_norm

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def model_build_options(actor_config: MegatronConfig) -> dict:
    """The platform's layer spec (``models/layer_specs.py``) and megatron_training's keys of the
    TransformerConfig, for the actor and (with a KL term) the reference model, which must run the
    same architecture."""
    from mindspeed_rl.models import layer_specs
    from mindspeed_rl.platform.device import device_type

    backend = layer_specs.platform_backend()
    # config/platform_rules.py, which --dry-run applies too (the packing half: micro_layout)
    problem = context_parallel_problem(
        actor_config.context_parallel_size, True, backend,
        backend in layer_specs.CONTEXT_PARALLEL, False,
    )  # fmt: skip
    if problem:
        raise ValueError(problem)
    return {
        "backend": backend,
        # accelerators create each TP shard on the device; the host path would first
        # initialise every full weight in fp32
        "use_cpu_initialization": device_type() == "cpu",
        # init only matters without `load`
        "init_method_std": actor_config.init_method_std,
        "hidden_dropout": actor_config.hidden_dropout,
        "attention_dropout": actor_config.attention_dropout,
        **parallel_and_memory_fields(actor_config),
    }


def parallel_and_memory_fields(config: MegatronConfig) -> dict[str, object]:
    """The YAML's sequence-parallel, context-parallel and activation-recompute keys as
    ``TransformerConfig`` fields (config/checks.py has already refused inconsistent
    combinations). ``context_parallel_algo`` has one value, megatron's ring over the load-balanced
    split: TE's default, and MindSpeed reads it from its arguments (platform/megatron_setup.py)."""
    fields: dict[str, object] = dict(
        sequence_parallel=config.sequence_parallel,
        context_parallel_size=config.context_parallel_size,
        recompute_granularity=config.recompute_granularity,
    )
    if config.recompute_granularity == "full":
        fields.update(
            recompute_method=config.recompute_method,
            recompute_num_layers=config.recompute_num_layers,
        )
    return fields


def check_placement(module: torch.nn.Module, device: torch.device) -> None:
    """Every parameter and buffer on ``device``: a stray host tensor would make the first forward
    mix devices (or silently train a host copy)."""
    stray = [
        f"{name} on {t.device}"
        for name, t in [*module.named_parameters(), *module.named_buffers()]
        if t.device.type != device.type
    ]
    if stray:
        raise RuntimeError(f"actor tensors not on {device}: {', '.join(stray[:5])}")
