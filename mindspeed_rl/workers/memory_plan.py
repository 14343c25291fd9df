"""The memory ledger predicted from the config: bytes per rank per phase, before anything runs.

Computed from the model shape and the parallel layout (nothing is allocated; ``--dry-run``
prints it), for the phases of ``workers/residency.py``. What a phase holds:

* actor params: the rank's share (layers / PP, dense weights / TP, experts / EP) in the training
  dtype; the embedding and output layer sit on the first / last stage, so the larger stage counts;
* grads: fp32 (Megatron's ``grad_reduce_in_fp32``), one per parameter;
* optimizer: Adam's two fp32 moments plus an fp32 main copy of bf16 weights, divided by the
  data-parallel size with the distributed optimizer;
* engine weights: the whole model / rollout TP (experts / rollout EP) in ``generate_config.dtype``;
* reference: with a KL term, a second copy of the actor params, on the device in its log-prob
  pass only;
* KV cache: what vLLM takes, ``kv_cache_memory_bytes`` or else ``gpu_memory_utilization`` x
  device memory minus its weights; with ``engine: hf`` (allocated per call) a full cache of
  ``max_num_seqs`` x ``max_model_len`` tokens.

Activations and the allocator's fragmentation are not in it: a phase that fits with little to
spare may still run out. The device memory is ``generate_config.device_memory_gb`` (default 64 GB,
an Atlas A2 / A3 NPU).
"""

from __future__ import annotations

import dataclasses

from mindspeed_rl.config.schema import ModelConfig, RunConfig
from mindspeed_rl.models.pipeline_split import parse_num_layer_list
from mindspeed_rl.workers.residency import CATEGORIES, PHASES

GIB = 1 << 30
DEFAULT_DEVICE_MEMORY_GB = 64.0  # Atlas A2 / A3 (the 910B / 910C NPUs)
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_PRINTED_PHASES = ("update", "sync", "generate", "log_prob")


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    """Parameters of one layer and of the embedding / output layer."""

    dense_per_layer: int  # attention + dense MLP + norms (TP-split, except the norms)
    experts_per_layer: int  # routed experts of a MoE layer (EP- and TP-split)
    embedding: int
    output: int  # the output layer (0 when tied to the embedding) and the final norm

    def total(self, layers: int) -> int:
        return (
            layers * (self.dense_per_layer + self.experts_per_layer) + self.embedding + self.output
        )


def param_counts(model: ModelConfig) -> ParamCounts:
    h, heads = model.hidden_size, model.num_attention_heads
    head_dim = model.kv_channels or h // heads
    groups = model.num_query_groups if model.group_query_attention else heads
    qkv_out = (heads + 2 * groups) * head_dim
    attention = qkv_out * h + heads * head_dim * h
    attention += qkv_out if model.add_qkv_bias else 0
    attention += 2 * head_dim if model.qk_layernorm else 0
    mlp_matrices = 3 if model.swiglu else 2
    norms = 2 * h
    if model.num_experts:
        ffn = model.moe_ffn_hidden_size or model.ffn_hidden_size
        dense = attention + norms + model.num_experts * h  # the router is replicated
        experts = model.num_experts * mlp_matrices * ffn * h
    else:
        dense = attention + norms + mlp_matrices * model.ffn_hidden_size * h
        experts = 0
    vocab = model.padded_vocab_size or 0
    output = (vocab * h if model.untie_embeddings_and_output_weights else 0) + h
    return ParamCounts(dense, experts, vocab * h, output)


def _actor_params_per_rank(config: RunConfig, counts: ParamCounts) -> tuple[float, float]:
    """(dense, expert) parameters on the busiest rank."""
    actor = config.actor
    tp, pp, ep = (
        actor.tensor_model_parallel_size,
        actor.pipeline_model_parallel_size,
        actor.expert_model_parallel_size,
    )
    uneven = parse_num_layer_list(actor.num_layer_list)  # the busiest stage counts
    layers = max(uneven) if uneven else -(-config.model.num_layers // pp)
    ends = max(counts.embedding, counts.output) if pp > 1 else counts.embedding + counts.output
    dense = (layers * counts.dense_per_layer + ends) / tp
    experts = layers * counts.experts_per_layer / (ep * tp)
    return dense, experts


def predicted_bytes(config: RunConfig) -> dict[str, float]:
    """Full size of every ledger category on one rank (a phase holds a subset of them)."""
    actor, gen, rl = config.actor, config.generate_config, config.rl_config
    counts = param_counts(config.model)
    dense, experts = _actor_params_per_rank(config, counts)
    world = rl.actor_resource.num_npus
    tp, pp, ep = (
        actor.tensor_model_parallel_size,
        actor.pipeline_model_parallel_size,
        actor.expert_model_parallel_size,
    )
    param_bytes = 2 if actor.bf16 else 4
    optimizer_per_param = 8 + (4 if actor.bf16 else 0)
    optimizer = optimizer_per_param * (dense + experts)
    if actor.use_distributed_optimizer:
        optimizer = optimizer_per_param * (
            dense / (world // (tp * pp)) + experts / max(world // (tp * pp * ep), 1)
        )
    layers = config.model.num_layers
    engine = _DTYPE_BYTES[gen.dtype] * (
        (layers * counts.dense_per_layer + counts.embedding + counts.output)
        / gen.infer_tensor_parallel_size
        + layers
        * counts.experts_per_layer
        / (gen.infer_tensor_parallel_size * gen.infer_expert_parallel_size)
    )
    device = device_memory_bytes(config)
    if gen.engine == "hf":  # transformers' cache, fp32 in the HF engine
        model = config.model
        head_dim = model.kv_channels or model.hidden_size // model.num_attention_heads
        groups = (
            model.num_query_groups if model.group_query_attention else model.num_attention_heads
        )
        kv_cache = 4 * 2 * layers * groups * head_dim * gen.max_num_seqs * gen.max_model_len
    elif gen.kv_cache_memory_bytes is not None:  # vLLM given the cache in bytes
        kv_cache = float(gen.kv_cache_memory_bytes)
    else:
        kv_cache = max(gen.gpu_memory_utilization * device - engine, 0.0)
    return {
        "actor_params": param_bytes * (dense + experts),
        "actor_grads": 4 * (dense + experts),
        "actor_optimizer": optimizer,
        "engine_weights": engine,
        "kv_cache": kv_cache,
        "reference": param_bytes * (dense + experts) if _has_reference(config) else 0.0,
    }


def _has_reference(config: RunConfig) -> bool:
    return config.rl_config.use_kl_loss or config.rl_config.use_kl_in_reward


def device_memory_bytes(config: RunConfig) -> float:
    gb = config.generate_config.device_memory_gb
    return (DEFAULT_DEVICE_MEMORY_GB if gb is None else gb) * GIB


def phase_ledger(config: RunConfig) -> dict[str, dict[str, float]]:
    """Bytes resident per phase: what the phase needs, plus what may not be offloaded."""
    gen = config.generate_config
    sizes = predicted_bytes(config)
    offloaded = {
        "params": gen.offload_train_param,
        "grads": gen.offload_train_grad,
        "optimizer": gen.offload_train_optimizer,
    }
    ledger = {}
    printed = _PRINTED_PHASES + (("ref_log_prob",) if _has_reference(config) else ())
    for name in printed:
        phase = PHASES[name]
        resident = dict.fromkeys(CATEGORIES, 0.0)
        for group, category in zip(
            ("params", "grads", "optimizer"), ("actor_params", "actor_grads", "actor_optimizer")
        ):
            if group in phase.actor or not offloaded[group]:
                resident[category] = sizes[category]
        for tag, category in (("weights", "engine_weights"), ("kv_cache", "kv_cache")):
            if tag in phase.engine:
                resident[category] = sizes[category]
        if phase.reference:
            resident["reference"] = sizes["reference"]
        ledger[name] = resident
    return ledger


def ledger_report(config: RunConfig) -> tuple[dict, list[str]]:
    """The ``--dry-run`` block (GiB per rank per phase) and a warning per phase that does not
    fit the device memory."""
    device = device_memory_bytes(config)
    block: dict = {"device_memory_gib": round(device / GIB, 1), "phases_gib_per_rank": {}}
    warnings = []
    for name, resident in phase_ledger(config).items():
        total = sum(resident.values())
        row = {k: round(v / GIB, 2) for k, v in resident.items() if v}
        row["total"] = round(total / GIB, 2)
        block["phases_gib_per_rank"][name] = row
        if total > device:
            warnings.append(
                f"memory: phase '{name}' needs {total / GIB:.1f} GiB per rank before activations, "
                f"more than the {device / GIB:.0f} GiB of device memory "
                "(generate_config.device_memory_gb); raise TP/PP or enable offload_train_*"
            )
    return block, warnings
