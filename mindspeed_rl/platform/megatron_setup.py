"""What must happen before ``megatron`` is imported, per platform.

* npu: ``torch_npu``, ``torch_npu.contrib.transfer_to_npu`` and, when installed,
  ``mindspeed.megatron_adaptor`` (MindSpeed's fused kernels and Megatron patches), in the order
  MindSpeed documents: the adaptor before anything of ``megatron.training``. MindSpeed reads its
  switches twice: on import, from the command line (its parser over ``sys.argv``), and at run
  time, from Megatron-LM's argument namespace (``megatron.training.get_args()``), where its
  always-applied attention patches read many attributes (``tp_2d``, ``sparse_mode``,
  ``pre_tockens``, ``use_fusion_attn_v2``, ...). So the adaptor is imported with the typed config
  spelled as command-line flags, and afterwards the namespace is built from Megatron-LM's own
  argument defaults (its ``parse_args``, which MindSpeed extends with its arguments) overlaid with
  the typed config (:func:`megatron_namespace`).
* cuda: nothing.
* cpu: the project's scoped CPU adaptor (``cpu_adaptor``).

Call :func:`prepare_megatron` once per process, before the first ``import megatron``; it is
idempotent. Modules that use Megatron import it inside functions, after this ran.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import sys
from collections.abc import Iterator, Mapping

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


def command_line(config: Mapping[str, object]) -> list[str]:
    """``config`` as Megatron-style flags: ``--use-flash-attn`` for a true switch, ``--name value``
    for numbers and strings; false, null and structured values are left to the defaults."""
    argv: list[str] = []
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            argv += [flag, str(value)]
    return argv


@contextlib.contextmanager
def _argv(arguments: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = [saved[0] if saved else "mindspeed_rl", *arguments]
    try:
        yield
    finally:
        sys.argv = saved


def megatron_namespace(config: Mapping[str, object]) -> argparse.Namespace:
    """Megatron-LM's argument namespace: its parser's defaults (with whatever arguments MindSpeed
    added to it) overlaid with ``config``, and ``params_dtype`` as Megatron-LM derives it."""
    if importlib.util.find_spec("megatron.training") is None:
        logger.warning(
            "Megatron-LM (megatron.training) is not installed: MindSpeed's patches see only "
            "the typed config, not Megatron-LM's argument defaults"
        )
        args = argparse.Namespace()
    else:
        from megatron.training.arguments import parse_args

        with _argv([]):
            args = parse_args(ignore_unknown_args=True)
    for key, value in config.items():
        setattr(args, key, value)
    import torch

    args.params_dtype = torch.bfloat16 if config.get("bf16") else torch.float32
    return args


def mindspeed_view(config: Mapping[str, object]) -> dict[str, object]:
    """``config`` as MindSpeed must see it. ``moe_tp_extend_ep`` is realised by megatron-core
    itself (expert TP 1, expert parallelism over TP x EP ranks: ``models/placement.py``), so
    MindSpeed gets those sizes and not the switch: its own ``moe_tp_extend_ep`` patches
    (``BaseMoELayer``, ``GroupedMLP``) would divide the experts by TP a second time."""
    config = dict(config)
    if config.get("moe_tp_extend_ep"):
        tp = int(config.get("tensor_model_parallel_size") or 1)
        ep = int(config.get("expert_model_parallel_size") or 1)
        config.update(
            moe_tp_extend_ep=False,
            expert_model_parallel_size=tp * ep,
            expert_tensor_parallel_size=1,
        )
    return config


def _install_mindspeed(config: Mapping[str, object]) -> None:
    import torch_npu  # noqa: F401
    from torch_npu.contrib import transfer_to_npu  # noqa: F401

    if importlib.util.find_spec("mindspeed") is None:
        logger.warning(
            "MindSpeed is not installed: Megatron runs on NPU through transfer_to_npu only, "
            "without fused kernels (see docs/install.md)"
        )
        return
    with _argv(command_line(config)):
        import mindspeed.megatron_adaptor  # noqa: F401
    args = megatron_namespace(config)
    if importlib.util.find_spec("megatron.training") is not None:
        from megatron.training import global_vars

        global_vars._GLOBAL_ARGS = args  # set_args() of Megatron-LM, present in every version


def prepare_megatron(config: Mapping[str, object] | None = None) -> str:
    """Prepare this process for ``import megatron``; returns the device type it prepared for."""
    global _prepared
    kind = device_type()
    if _prepared is not None:
        return _prepared
    config = dict(config or {})
    fusions = active_fusions(config)  # elsewhere than NPU: one INFO line, if any is set
    if kind == "cpu":
        from mindspeed_rl.platform import cpu_adaptor

        cpu_adaptor.install()
    elif kind == "npu":
        if any(name.startswith("megatron") for name in sys.modules):
            logger.warning(
                "megatron was imported before MindSpeed's adaptor; patches may not apply"
            )
        off = {key: False for key in MINDSPEED_FUSION_KEYS}  # only requested fusions are on
        _install_mindspeed({**mindspeed_view(config), **off, **fusions})
    _prepared = kind
    return kind
