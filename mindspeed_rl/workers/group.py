"""A group of Ray actors, one per device, placed by a placement group over the cluster's nodes.

Ranks are assigned node by node (bundles sorted by node, then by index), so tensor-parallel groups,
which megatron-core builds from consecutive ranks, stay inside a node. Rank 0's node IP and a free
port on it become MASTER_ADDR / MASTER_PORT of torch.distributed.

Calls are SPMD: :meth:`WorkerGroup.call` runs a method on every rank and waits fail-fast: the first
rank that raises or dies aborts the whole call with its rank and error (the others are likely
blocked in a collective with it and would wait forever).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from mindspeed_rl.platform.device import device_type, ray_resource_name, visible_devices_env

logger = logging.getLogger(__name__)

# Ray narrows CUDA_VISIBLE_DEVICES / ASCEND_RT_VISIBLE_DEVICES to the reserved device; colocated
# inference with TP > 1 needs every device of the node, with the local rank mapped explicitly.
_NOSET_VISIBLE = {
    "CUDA_VISIBLE_DEVICES": "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES",
    "ASCEND_RT_VISIBLE_DEVICES": "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES",
}


class WorkerError(RuntimeError):
    """A rank failed; the message names it and carries its error."""


class WorkerInputError(WorkerError, ValueError):
    """A rank refused its input (a checkpoint that does not fit the run, a truncated or missing
    file): the worker's own one-line message, without Ray's wrapper and remote frames."""


# What a worker raises for bad input (checkpoints, paths); anything else is a failure of the run.
_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                 PermissionError)  # fmt: skip


def input_error_of(err: BaseException) -> BaseException | None:
    """The worker's own input error inside Ray's ``RayTaskError``, or None."""
    cause = getattr(err, "cause", None) if isinstance(err, ray.exceptions.RayTaskError) else None
    if isinstance(cause, _INPUT_ERRORS) and not isinstance(cause, ray.exceptions.RayError):
        return cause
    return None


@dataclasses.dataclass(frozen=True)
class RankPlacement:
    rank: int
    local_rank: int
    node_id: str
    bundle_index: int


def _placements(pg, world_size: int) -> list[RankPlacement]:
    bundle_nodes = placement_group_table(pg)["bundles_to_node_id"]
    order = sorted(range(world_size), key=lambda b: (bundle_nodes[b], b))
    placements, local = [], {}
    for rank, bundle in enumerate(order):
        node = bundle_nodes[bundle]
        placements.append(RankPlacement(rank, local.get(node, 0), node, bundle))
        local[node] = local.get(node, 0) + 1
    return placements


def device_options(platform: str) -> dict:
    """A worker's device request in Ray's actor options: GPUs through ``num_gpus`` (Ray 2.60
    ``_common/ray_option_utils.py`` refuses "GPU" in ``resources``), NPUs and the CPU's
    ``cpu_slot`` as custom resources (one CPU besides on accelerators, none on CPU)."""
    if platform == "cuda":
        return {"num_cpus": 1, "num_gpus": 1}
    return {
        "num_cpus": 0 if platform == "cpu" else 1,
        "resources": {ray_resource_name(platform): 1.0},
    }


class WorkerGroup:
    """``world_size`` instances of ``worker_cls`` (a plain class; made a Ray actor here).

    ``RankPlacement.local_rank`` orders the ranks of a node; the device a worker binds to is the
    one Ray assigned it (``platform/ray_resources.assigned_device_index``), since the visible
    devices are not narrowed here and another job may hold some of the node's devices."""

    def __init__(
        self,
        worker_cls: type,
        world_size: int,
        *,
        ready_timeout_s: float = 600.0,
        runtime_env: dict | None = None,
        platform: str | None = None,
    ) -> None:
        # the cluster's platform (a driver on a head node without devices is not the workers')
        platform = platform or device_type()
        resource = ray_resource_name(platform)
        bundles = [{resource: 1.0} for _ in range(world_size)]
        self._pg = placement_group(bundles, strategy="PACK")
        if not self._pg.wait(timeout_seconds=ready_timeout_s):
            available = ray.available_resources().get(resource, 0)
            remove_placement_group(self._pg)
            raise WorkerError(
                f"could not reserve {world_size} x {resource} in {ready_timeout_s:.0f} s "
                f"(the cluster has {available:g} free): start every node with its devices, or "
                "lower rl_config.actor_resource.num_npus"
            )
        env_vars = dict((runtime_env or {}).get("env_vars", {}))
        visible = visible_devices_env(platform)
        if visible is not None:
            env_vars[_NOSET_VISIBLE[visible]] = "1"
        remote_cls = ray.remote(worker_cls)
        self.placements = _placements(self._pg, world_size)
        self.workers = []
        for placement in self.placements:
            options = dict(
                **device_options(platform),
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self._pg, placement_group_bundle_index=placement.bundle_index
                ),
                runtime_env={**(runtime_env or {}), "env_vars": env_vars},
                max_restarts=0,
                # one thread: set_device() binds the calling thread, so every call must run on it
                max_concurrency=1,
            )
            self.workers.append(remote_cls.options(**options).remote(placement.rank))
        self.world_size = world_size

    def rendezvous(self) -> tuple[str, int]:
        """MASTER_ADDR / MASTER_PORT: rank 0's node IP and a free port there."""
        return tuple(self.get([self.workers[0].address_and_free_port.remote()], [0])[0])

    def call(self, method: str, *args: Any, per_rank: Sequence[Sequence[Any]] | None = None,
             **kwargs: Any) -> list[Any]:  # fmt: skip
        """Run ``method`` on every rank (``per_rank[r]`` are extra positional args of rank r)."""
        return self.wait(self.submit(method, *args, per_rank=per_rank, **kwargs), method)

    def submit(self, method: str, *args: Any, per_rank: Sequence[Sequence[Any]] | None = None,
               **kwargs: Any) -> list:  # fmt: skip
        """Start ``method`` on every rank and return at once (the refs for :meth:`wait`): the
        driver works on while the ranks run, e.g. during their set-up."""
        refs = []
        for rank, worker in enumerate(self.workers):
            extra = tuple(per_rank[rank]) if per_rank is not None else ()
            refs.append(getattr(worker, method).remote(*extra, *args, **kwargs))
        return refs

    def wait(self, refs: list, what: str = "call") -> list[Any]:
        """The results of :meth:`submit`'s refs, fail-fast, in rank order."""
        return self.get(refs, list(range(self.world_size)), what)

    def get(self, refs: list, ranks: list[int], what: str = "call") -> list[Any]:
        """ray.get with fail-fast: raise as soon as any rank fails."""
        pending = dict(zip(refs, ranks))
        results: dict[int, Any] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=None)
            for ref in ready:
                rank = pending.pop(ref)
                try:
                    results[rank] = ray.get(ref)
                except Exception as err:  # noqa: BLE001  (any rank error ends the run)
                    cause = input_error_of(err)
                    if cause is not None:
                        raise WorkerInputError(
                            f"worker rank {rank} refused its input in {what}: {cause}"
                        ) from err
                    node = (
                        self.placements[rank].node_id[:12] if rank < len(self.placements) else "?"
                    )
                    raise WorkerError(
                        f"worker rank {rank} (node {node}) failed in {what}: "
                        f"{type(err).__name__}: {_first_lines(err)}"
                    ) from err
        return [results[r] for r in ranks]

    def shutdown(self) -> None:
        """Kill every worker (also those blocked in a collective) and free the placement group."""
        for worker in self.workers:
            try:
                ray.kill(worker, no_restart=True)
            except ray.exceptions.RayError:
                pass  # already dead: nothing left to kill
        try:
            remove_placement_group(self._pg)
        except ray.exceptions.RayError:
            pass  # the cluster is going away with it


def _first_lines(err: BaseException, limit: int = 12) -> str:
    text = str(err).strip().splitlines()
    return "\n".join(text[-limit:]) if text else repr(err)
