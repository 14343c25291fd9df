"""What must happen before ``megatron`` is imported, per platform.

* npu: ``torch_npu``, ``torch_npu.contrib.transfer_to_npu`` and, when installed,
  ``mindspeed.megatron_adaptor`` (MindSpeed's fused kernels and Megatron patches). MindSpeed reads its
  switches from Megatron-LM's argument namespace, so the fusion switches of our config are handed to
  it through ``megatron.training.global_vars`` before the adaptor is imported.
* cuda: nothing.
* cpu: the project's scoped CPU adaptor (``cpu_adaptor``).

Call :func:`prepare_megatron` once per process, before the first ``import megatron``; it is
idempotent. Modules that use Megatron import it inside functions, after this ran.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Mapping

from mindspeed_rl.platform.device import device_type

logger = logging.getLogger(__name__)

# Switches that name MindSpeed fusions / Ascend kernels. They are honoured on NPU only.
MINDSPEED_FUSION_KEYS = (
    "use_flash_attn",
    "use_fused_rmsnorm",
    "use_fused_swiglu",
    "use_fused_rotary_pos_emb",
    "use_fused_ring_attention_update",
    "use_fused_moe_token_permute_and_unpermute",
)

_prepared: str | None = None


def active_fusions(config: Mapping[str, object]) -> dict[str, bool]:
    """The fusion switches that take effect here: all requested ones on NPU, none elsewhere.

    Logs one line on non-NPU hosts naming the switches that were requested and are ignored.
    """
    requested = {k: bool(config.get(k, False)) for k in MINDSPEED_FUSION_KEYS if config.get(k)}
    if device_type() == "npu":
        return requested
    if requested:
        logger.info(
            "MindSpeed fusions %s apply on Ascend NPUs only; ignored on %s",
            ", ".join(sorted(requested)),
            device_type(),
        )
    return {}


def _install_mindspeed(fusions: Mapping[str, bool]) -> None:
    import torch_npu  # noqa: F401
    from torch_npu.contrib import transfer_to_npu  # noqa: F401

    if importlib.util.find_spec("mindspeed") is None:
        logger.warning(
            "MindSpeed is not installed: Megatron runs on NPU through transfer_to_npu only, "
            "without fused kernels (see docs/install.md)"
        )
        return
    if importlib.util.find_spec("megatron.training") is not None:
        # MindSpeed's patches call megatron.training.get_args(); give them our switches.
        from megatron.training import global_vars

        if getattr(global_vars, "_GLOBAL_ARGS", None) is None:
            global_vars._GLOBAL_ARGS = argparse.Namespace(**dict(fusions))
    import mindspeed.megatron_adaptor  # noqa: F401


def prepare_megatron(config: Mapping[str, object] | None = None) -> str:
    """Prepare this process for ``import megatron``; returns the device type it prepared for."""
    global _prepared
    kind = device_type()
    if _prepared is not None:
        return _prepared
    fusions = active_fusions(config or {})  # elsewhere than NPU: one INFO line, if any is set
    if kind == "cpu":
        from mindspeed_rl.platform import cpu_adaptor

        cpu_adaptor.install()
    elif kind == "npu":
        if any(name.startswith("megatron") for name in sys.modules):
            logger.warning(
                "megatron was imported before MindSpeed's adaptor; patches may not apply"
            )
        _install_mindspeed(fusions)
    _prepared = kind
    return kind
