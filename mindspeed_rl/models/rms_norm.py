"""RMSNorm for the project's layer spec: torch's ``rms_norm``, usable with sequence parallelism.

megatron-core's local spec builds norms through ``WrappedTorchNorm``, which asserts
``not config.sequence_parallel``. Nothing in a norm itself depends on the sequence split: each
rank normalises its own ``[s / tp, b, h]`` rows. What sequence parallelism needs is that the
weight's gradient, a partial sum over this rank's rows, is summed over the TP group;
``finalize_model_grads`` does that for every parameter marked ``sequence_parallel = True`` (as
Transformer Engine's norms and MindSpeed's ``PTNorm`` mark theirs). The parameter is ``weight``,
as in ``torch.nn.RMSNorm``: checkpoint names do not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class RMSNorm(torch.nn.Module):
    """``x / rms(x) * weight`` over the last dimension; the weight starts at ones."""

    def __init__(
        self,
        config,
        hidden_size: int,
        eps: float = 1e-5,
        persist_layer_norm: bool = False,
        zero_centered_gamma: bool = False,
        normalization: str = "RMSNorm",
    ) -> None:
        """Signature of megatron-core's norm modules (``build_module`` passes these); the
        persist / zero-centred variants are Apex / TE kernels and refused."""
        super().__init__()
        if config.normalization != "RMSNorm" or normalization != "RMSNorm":
            raise ValueError(f"normalization={config.normalization!r}: this module is RMSNorm")
        if zero_centered_gamma or getattr(config, "layernorm_zero_centered_gamma", False):
            raise ValueError("layernorm_zero_centered_gamma is not supported by RMSNorm")
        self.eps = eps
        self.weight = torch.nn.Parameter(
            torch.ones(hidden_size, dtype=config.params_dtype, device=_init_device(config))
        )
        self.weight.sequence_parallel = config.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def _init_device(config) -> torch.device:
    if config.use_cpu_initialization:
        return torch.device("cpu")
    from mindspeed_rl.platform.device import current_device

    return current_device()
