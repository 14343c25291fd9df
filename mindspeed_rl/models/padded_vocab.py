"""Keep a padded vocabulary's extra rows out of the softmax.

A checkpoint converted with ``padded_vocab_size`` above the Hugging Face ``vocab_size`` (e.g.
``make_vocab_size_divisible_by: 128``, Megatron-LM's default) has output rows that the HF model,
and so every rollout engine, lacks. Their logits (0 for the zero rows the converter writes) would
enter the actor's softmax and shift every log-prob against the engine's (0.047 mean abs diff on a
tiny model), so the importance ratio would not be 1 on unchanged weights. A forward hook on the
output layer sets them to ``PAD_LOGIT`` on the TP rank that holds them: finite, so that
``p * logit`` in the entropy stays 0 instead of NaN, and far enough below any real logit that
``exp`` of it is 0 at every temperature.
"""

from __future__ import annotations

import torch

PAD_LOGIT = -1.0e4


def mask_padded_vocab(gpt: torch.nn.Module, vocab_size: int, padded_vocab_size: int) -> bool:
    """Hook ``gpt``'s output layer (last pipeline stage only) so that logits of ids
    ``>= vocab_size`` are ``PAD_LOGIT``; returns whether a hook was added."""
    output_layer = getattr(gpt, "output_layer", None)
    if output_layer is None or vocab_size >= padded_vocab_size:
        return False
    from megatron.core import parallel_state

    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    per_rank = padded_vocab_size // tp
    first_pad = vocab_size - rank * per_rank  # local column of the first padded id
    if first_pad >= per_rank:
        return False  # this rank's slice holds real ids only

    def hook(module, inputs, output):
        logits, bias = output
        column = torch.arange(logits.shape[-1], device=logits.device)
        return logits.masked_fill(column >= max(first_pad, 0), PAD_LOGIT), bias

    output_layer.register_forward_hook(hook)
    return True
