"""Rank body for test_layer_specs.py: the project backend against megatron-core's local spec."""

from __future__ import annotations

import torch

from mindspeed_rl.config.schema import ModelConfig
from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed

GQA_BIAS = ModelConfig(
    num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4,
    group_query_attention=True, num_query_groups=2, max_position_embeddings=64,
    padded_vocab_size=64, add_qkv_bias=True,
)  # fmt: skip
QK_NORM = GQA_BIAS.model_copy(update={"add_qkv_bias": False, "qk_layernorm": True})


def _logits(gpt, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    positions = torch.arange(tokens.shape[1]).expand_as(tokens)
    with torch.no_grad():
        return gpt(tokens, positions, mask)


def _packed_against_separate(gpt) -> float:
    """Sequences packed into one THD row (``PackedSeqParams``) against each run alone: RoPE
    restarts and attention stops at every boundary. Max abs logits difference."""
    from megatron.core.packed_seq_params import PackedSeqParams

    lengths = [5, 1, 7]
    g = torch.Generator().manual_seed(1)
    parts = [torch.randint(0, 64, (1, n), generator=g) for n in lengths]
    packed = torch.cat(parts, dim=1)
    cu = torch.tensor([0, 5, 6, 13], dtype=torch.int32)
    params = PackedSeqParams(
        qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=7, max_seqlen_kv=7
    )
    positions = torch.arange(packed.shape[1]).unsqueeze(0)
    with torch.no_grad():
        together = gpt(packed, positions, None, packed_seq_params=params)
    alone = torch.cat([_logits(gpt, part, None) for part in parts], dim=1)
    return float((together - alone).abs().max())


def run(rank: int, world_size: int) -> dict:
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    from mindspeed_rl.models import layer_specs
    from mindspeed_rl.models.gpt_builder import build_gpt_model, transformer_config
    from mindspeed_rl.workers.rows import MegatronRows

    init_distributed(ParallelLayout(), seed=7)
    try:
        out: dict = {}
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, 64, (3, 24), generator=g)
        mask = MegatronRows(tokens, torch.zeros(3, dtype=torch.long), 1).causal_mask()
        for name, model in (("gqa_bias", GQA_BIAS), ("qk_norm", QK_NORM)):
            reference = build_gpt_model(model, backend=layer_specs.MEGATRON_LOCAL)
            project = build_gpt_model(model, backend=layer_specs.PROJECT)
            state = {k: v for k, v in reference.state_dict().items() if "_extra" not in k}
            # weights away from their init (norms at ones hide a swapped norm weight)
            state = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in state.items()}
            reference.load_state_dict(state, strict=False)
            missing = project.load_state_dict(state, strict=False)
            module_types = {type(m) for m in project.modules()}
            out[name] = {
                "same_names": sorted(state)
                == sorted(k for k in project.state_dict() if "_extra" not in k),
                "missing": list(missing.missing_keys),
                "local_modules_left": sorted(
                    t.__name__ for t in module_types & {WrappedTorchNorm, DotProductAttention}
                ),
            }
            expected = _logits(reference.eval(), tokens, mask)
            no_mask = _logits(project.eval(), tokens, None)
            out[name]["diff_no_mask"] = float((no_mask - expected).abs().max())
            out[name]["diff_mask"] = float((_logits(project, tokens, mask) - expected).abs().max())
            out[name]["scale"] = float(expected.abs().max())
        out["packed_diff"] = _packed_against_separate(project)
        # the TE spec: megatron-core's TE extension in every role of the local spec (0.12.x's
        # extension imports transformer_engine unguarded: nothing to inspect without TE)
        try:
            from megatron.core.extensions import transformer_engine as te_ext
        except ModuleNotFoundError as err:
            out["te"] = {"missing": err.name}
            return out
        config = transformer_config(GQA_BIAS)
        te = layer_specs.decoder_spec(GQA_BIAS, config, layer_specs.TRANSFORMER_ENGINE)
        layer = te.submodules.layer_specs[0].submodules
        attention, mlp = layer.self_attention.submodules, layer.mlp.submodules

        out["te"] = {
            "layers": len(te.submodules.layer_specs),
            "roles": [
                layer.input_layernorm is te_ext.TENorm,
                layer.pre_mlp_layernorm is te_ext.TENorm,
                te.submodules.layer_norm is te_ext.TENorm,
                attention.core_attention is te_ext.TEDotProductAttention,
                attention.linear_qkv is te_ext.TEColumnParallelLinear,
                attention.linear_proj is te_ext.TERowParallelLinear,
                mlp.linear_fc1 is te_ext.TEColumnParallelLinear,
                mlp.linear_fc2 is te_ext.TERowParallelLinear,
            ],
            "local_left": [
                role is cls
                for role in (attention.linear_qkv, mlp.linear_fc2)
                for cls in (ColumnParallelLinear, RowParallelLinear)
            ],
        }
        return out
    finally:
        destroy_distributed()
