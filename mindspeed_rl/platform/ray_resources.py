"""Ray's view of the devices: the ``ray start`` flag of a node, the platform of a cluster, the
device Ray assigned to a worker.

Read against Ray 2.60 (``ray/_private/accelerators/{npu,nvidia_gpu}.py``, ``runtime_context.py``,
``_private/worker.py``):

* GPUs are a predefined resource: ``ray start --num-gpus=N`` (``--resources='{"GPU": N}'`` is
  refused). NPUs are a custom resource name that Ray's NPU accelerator manager also detects;
  the suite passes ``--resources='{"NPU": N}'``, which Ray takes. On CPU this project's workers
  reserve a custom ``cpu_slot`` each.
* The platform of a run is the cluster's, not the driver's: a head node without devices would
  otherwise ask for ``cpu_slot`` bundles that no node has. ``MINDSPEED_RL_DEVICE`` overrides.
* With ``RAY_EXPERIMENTAL_NOSET_{ASCEND_RT,CUDA}_VISIBLE_DEVICES`` (set by ``workers/group.py``:
  colocated vLLM with TP > 1 needs to see its peers' devices) Ray leaves the visible-devices
  variable alone, and ``get_accelerator_ids()`` names the devices it reserved for the worker, as
  entries of the visible list the raylet started with (or slot indices when none was set). Two
  jobs on one node get disjoint ids; the bundle order within our placement group knows nothing of
  the other job. The worker binds to the position of its id in its visible list.

``python -m mindspeed_rl.platform.ray_resources --count 8`` prints this node's ``ray start``
flag (``examples/dapo/launch_common.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping

from mindspeed_rl.platform.device import DEVICE_ENV, DEVICE_TYPES

RESOURCE = {"npu": "NPU", "cuda": "GPU", "cpu": "cpu_slot"}
VISIBLE_ENV = {"npu": "ASCEND_RT_VISIBLE_DEVICES", "cuda": "CUDA_VISIBLE_DEVICES"}


def start_flag(platform: str, count: int) -> str:
    """The ``ray start`` argument that registers ``count`` devices of ``platform``."""
    if count < 1:
        raise ValueError(f"--count {count}: a node registers at least one device")
    if platform == "cuda":
        return f"--num-gpus={count}"
    return "--resources=" + json.dumps({RESOURCE[platform]: count})


def cluster_platform(resources: Mapping[str, float], env: Mapping[str, str] = os.environ) -> str:
    """npu / cuda / cpu from the cluster's resources (``ray.cluster_resources()``), unless
    ``MINDSPEED_RL_DEVICE`` names one."""
    forced = env.get(DEVICE_ENV, "").strip().lower()
    if forced:
        if forced not in DEVICE_TYPES:
            raise ValueError(f"{DEVICE_ENV}={forced!r}: expected one of {', '.join(DEVICE_TYPES)}")
        return forced
    if resources.get("NPU", 0) > 0:
        return "npu"
    if resources.get("GPU", 0) > 0:
        return "cuda"
    return "cpu"


def device_index(assigned: list[str], visible: str | None) -> int:
    """This process's device index for the one accelerator id Ray assigned."""
    if len(assigned) != 1:
        raise RuntimeError(f"a worker reserves one device; Ray assigned {assigned}")
    (device,) = assigned
    if visible:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if device not in entries:
            raise RuntimeError(f"Ray assigned device {device}, not in the visible list {visible}")
        return entries.index(device)
    return int(device)


def assigned_device_index(platform: str, fallback: int, env: Mapping[str, str] = os.environ):
    """The device Ray reserved for this worker (a Ray worker on an accelerator), else
    ``fallback`` (no Ray: the device check; CPU)."""
    import sys

    ray = sys.modules.get("ray")
    if platform == "cpu" or ray is None or not ray.is_initialized():
        return fallback
    ids = ray.get_runtime_context().get_accelerator_ids().get(RESOURCE[platform], [])
    return device_index(ids, env.get(VISIBLE_ENV[platform]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="This node's `ray start` device flag.")
    parser.add_argument("--count", type=int, required=True, help="devices of this node")
    parser.add_argument("--device", choices=DEVICE_TYPES, help="default: detected here")
    args = parser.parse_args(argv)
    if args.device is None:
        from mindspeed_rl.platform.device import device_type

        args.device = device_type()
    try:
        print(start_flag(args.device, args.count))
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
