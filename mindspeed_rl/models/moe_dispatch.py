"""Which megatron-core MoE token dispatcher the actor runs: the YAML's, where the platform can.

* ``alltoall_seq`` is MindSpeed's name; megatron-core 0.13+ only has ``alltoall`` (same math).
* On CPU (gloo) the ``alltoall`` dispatcher cannot run with EP > 1: it hands the split sizes of
  ``all_to_all_single`` over as tensors (a CUDA host converts them first,
  ``moe_utils.maybe_move_tensor_to_cpu``) and gloo refuses them. megatron-core's ``allgather``
  dispatcher computes the same expert outputs with all-gathers and reduce-scatters, which gloo
  runs, so CPU uses it whatever the YAML says, and says so once in the log.
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)

# MindSpeed's dispatcher -> megatron-core >= 0.13's
_RENAMED = {"alltoall_seq": "alltoall"}
CPU_DISPATCHER = "allgather"


def token_dispatcher(configured: str, megatron_version: tuple[int, int], device_type: str) -> str:
    """The ``moe_token_dispatcher_type`` to build with, for the YAML's ``configured`` one."""
    chosen = _RENAMED.get(configured, configured) if megatron_version >= (0, 13) else configured
    if device_type == "cpu":
        chosen = CPU_DISPATCHER
    if chosen != configured:
        _log_choice(configured, chosen, device_type)
    return chosen


@functools.cache
def _log_choice(configured: str, chosen: str, device_type: str) -> None:
    reason = (
        "gloo's all_to_all_single refuses the alltoall dispatcher's tensor split sizes"
        if device_type == "cpu"
        else "megatron-core >= 0.13 names MindSpeed's alltoall_seq alltoall"
    )
    logger.info("MoE token dispatcher: %s instead of %s (%s)", chosen, configured, reason)
