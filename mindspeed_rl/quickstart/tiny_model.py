"""A tiny Qwen2-style Hugging Face model and tokenizer, built locally from a model YAML.

The model YAML (``configs/model/tiny_qwen2.yaml``) is the single source of truth: the Hugging Face
config is derived from it with the converter's own ``hf_config_dict``, so the Megatron model the
trainer builds from the YAML and the HF checkpoint the converter reads always agree.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mindspeed_rl.config.schema import ModelConfig


def build_tiny_hf_model(model: ModelConfig, tokenizer_dir: Path, out_dir: Path, seed: int = 0):
    """Save a randomly initialised ``Qwen2ForCausalLM`` of ``model``'s shape plus the tokenizer."""
    import transformers

    from mindspeed_rl.models.hf_config import hf_config_dict

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab = model.padded_vocab_size
    if vocab is None or len(tokenizer) > vocab:
        raise ValueError(
            f"padded_vocab_size={vocab} must hold the tokenizer's {len(tokenizer)} tokens"
        )
    raw = hf_config_dict("qwen2", model, vocab, dtype="float32")
    raw.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
               bos_token_id=None)  # fmt: skip
    config = transformers.Qwen2Config(**{k: v for k, v in raw.items() if k != "architectures"})
    torch.manual_seed(seed)
    hf_model = transformers.Qwen2ForCausalLM(config)
    hf_model.generation_config.eos_token_id = tokenizer.eos_token_id
    hf_model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    # the tokenizer as every later stage loads it: beside a Qwen2 config transformers builds its
    # Qwen2 tokenizer from these files, whose pre-tokenizer splits numbers into digits (the toy
    # tokenizer alone keeps merged numbers); the warm start must see the tokens the RL run sees
    return hf_model, transformers.AutoTokenizer.from_pretrained(str(out_dir))
