"""A small GPTModel trained for a few steps with Megatron's own DDP, optimizer and schedule.

Used by test_megatron_cpu.py: the same full weights and data in several (TP, PP, DP) layouts must
give the single-process loss sequence. The split of full weights into shards is written here on
purpose, independently of mindspeed_rl.models, so that it checks Megatron on CPU and nothing else.
"""

from __future__ import annotations

import torch

from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed
from tests.distributed_harness import rendezvous

VOCAB, SEQ, HIDDEN, FFN, HEADS, GROUPS, LAYERS = 64, 16, 32, 64, 4, 2, 4
GLOBAL_BATCH, STEPS, LR = 4, 3, 1e-2


def _config(tp: int, pp: int):
    import torch.nn.functional as F
    from megatron.core.transformer import TransformerConfig

    return TransformerConfig(
        num_layers=LAYERS,
        hidden_size=HIDDEN,
        ffn_hidden_size=FFN,
        num_attention_heads=HEADS,
        num_query_groups=GROUPS,
        normalization="RMSNorm",
        layernorm_epsilon=1e-6,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        pipeline_dtype=torch.float32,
        params_dtype=torch.float32,
        use_cpu_initialization=True,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        masked_softmax_fusion=False,
        bias_activation_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
    )


def _model(tp: int, pp: int):
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    return GPTModel(
        config=_config(tp, pp),
        transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
        vocab_size=VOCAB,
        max_sequence_length=SEQ,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_base=10000,
    )


def _shard(name: str, full: torch.Tensor, tp: int, tp_rank: int) -> torch.Tensor:
    """Megatron TP shard of a full (TP=1) tensor."""
    if tp == 1 or full.dim() == 0:
        return full
    if "linear_fc1.weight" in name:  # [gate; up], each split along the output dim
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(tp)[tp_rank], up.chunk(tp)[tp_rank]], dim=0)
    column_parallel = ("linear_qkv.weight", "linear_qkv.bias", "word_embeddings", "output_layer")
    if any(key in name for key in column_parallel):
        return full.chunk(tp, dim=0)[tp_rank].clone()
    if "linear_proj.weight" in name or "linear_fc2.weight" in name:
        return full.chunk(tp, dim=1)[tp_rank].clone()
    return full  # norms are replicated


def _load_full(model, full: dict[str, torch.Tensor], tp: int, pp: int) -> None:
    from megatron.core import parallel_state

    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    layer_offset = parallel_state.get_pipeline_model_parallel_rank() * (LAYERS // pp)
    state = {}
    for name in model.state_dict():
        if name.endswith("_extra_state"):
            continue
        global_name = name
        if name.startswith("decoder.layers."):
            parts = name.split(".")
            parts[2] = str(int(parts[2]) + layer_offset)
            global_name = ".".join(parts)
        state[name] = _shard(global_name, full[global_name], tp, tp_rank)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("_extra_state") for k in missing), (
        missing,
        unexpected,
    )


def _batches() -> list[torch.Tensor]:
    """The same batch every step, so that the loss must fall (the test checks learning too)."""
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, VOCAB, (GLOBAL_BATCH, SEQ + 1), generator=g)] * STEPS


def _forward_step(data_iterator, model):
    tokens = next(data_iterator)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    b, s = inputs.shape
    position_ids = torch.arange(s).unsqueeze(0).expand(b, s)
    causal_mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1).expand(b, 1, s, s)
    output = model(inputs, position_ids, causal_mask, labels=labels)

    def loss_func(per_token_loss: torch.Tensor):
        loss = per_token_loss.float().mean()
        return loss, {"loss": loss.detach()}

    return output, loss_func


def train(
    layout: ParallelLayout, distributed_optimizer: bool, full: dict | None, run_index: int = 0
) -> dict:
    """Train STEPS steps in ``layout``; returns the per-step loss (DP-averaged) and full weights
    when ``full`` is None (the reference run, TP=PP=1)."""
    from megatron.core import parallel_state
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    tp, pp = layout.tensor_model_parallel_size, layout.pipeline_model_parallel_size
    # a fresh rendezvous per re-initialisation: a peer must never read the previous store's keys
    init_distributed(layout, seed=1234, init_method=rendezvous(f"train{run_index}"))
    try:
        model = _model(tp, pp)
        initial = None
        if full is None:
            initial = {k: v.clone() for k, v in model.state_dict().items() if "_extra" not in k}
        else:
            _load_full(model, full, tp, pp)
        config = model.config
        # what Megatron-LM's training loop wires: the DP all-reduce / reduce-scatter of grads
        config.finalize_model_grads_func = finalize_model_grads
        ddp_model = DistributedDataParallel(
            config=config,
            ddp_config=DistributedDataParallelConfig(
                grad_reduce_in_fp32=True, use_distributed_optimizer=distributed_optimizer
            ),
            module=model,
        )
        optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam",
                lr=LR,
                weight_decay=0.0,
                clip_grad=1.0,
                use_distributed_optimizer=distributed_optimizer,
                params_dtype=torch.float32,
            ),
            [ddp_model],
        )
        dp = parallel_state.get_data_parallel_world_size()
        dp_rank = parallel_state.get_data_parallel_rank()
        forward_backward = get_forward_backward_func()
        losses = []
        for tokens in _batches():
            ddp_model.zero_grad_buffer()
            optimizer.zero_grad()
            local = tokens.chunk(dp)[dp_rank]
            out = forward_backward(
                forward_step_func=_forward_step,
                data_iterator=iter([local]),
                model=[ddp_model],
                num_microbatches=1,
                seq_length=SEQ,
                micro_batch_size=local.shape[0],
                forward_only=False,
            )
            ok, grad_norm, _ = optimizer.step()
            assert ok
            loss = torch.zeros(1)
            if parallel_state.is_pipeline_last_stage():
                loss += out[0]["loss"]
            # every rank reports the DP-mean loss of the last stage
            torch.distributed.all_reduce(loss)
            losses.append(loss.item() / (dp * tp))
        return {"losses": losses, "initial": initial}
    finally:
        destroy_distributed()


def run_layouts(rank: int, world_size: int, full: dict) -> dict:
    """Rank entry for the 2-process test: three layouts one after the other in one process."""
    results = {}
    results["tp2"] = train(ParallelLayout(tensor_model_parallel_size=2), False, full)["losses"]
    results["pp2"] = train(ParallelLayout(pipeline_model_parallel_size=2), False, full, 1)["losses"]
    results["dp2_distopt"] = train(ParallelLayout(), True, full, 2)["losses"]
    return results


def run_reference(rank: int, world_size: int) -> dict:
    return train(ParallelLayout(), False, None)
