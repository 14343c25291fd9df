"""Node loss and automatic restart of a run.

* When a rank fails on a multi-node cluster, the cause is often a lost node (power, network,
  kernel OOM killer): the collective peers see a broken connection before Ray has declared the
  node dead. :func:`lost_nodes` asks Ray (bounded) which of the run's nodes died, so that the
  run ends with one line naming the node's IP and its ranks, not a peer's socket error.
* ``--max-restarts N`` / ``rl_config.max_restarts``: after a worker or node failure, wait
  (bounded) until the cluster again has the devices the run needs, then resume from the last
  complete checkpoint under ``actor_config.save``, at most N times; each restart is logged with
  its cause. Bad input (a checkpoint that does not fit, a missing file) is never retried.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.workers.group import WorkerError

logger = logging.getLogger(__name__)

LOST_NODE_WAIT_S = 45.0  # Ray's GCS declares a silent node dead after its health checks fail
RESTART_WAIT_S = 600.0  # the devices of a lost node must be back within this


class NodeLostError(WorkerError):
    """A node of the run died; the message names its IP and the ranks it held."""


def lost_nodes(placements, wait_s: float = LOST_NODE_WAIT_S) -> list[tuple[str, str, list[int]]]:
    """(ip, node id, ranks) of the run's nodes that Ray reports dead, polled up to ``wait_s``.

    Nothing to wait for when every rank ran on the driver's own node (it is alive: we are on it)."""
    import ray

    ranks_by_node: dict[str, list[int]] = {}
    for p in placements:
        ranks_by_node.setdefault(p.node_id, []).append(p.rank)
    own = ray.get_runtime_context().get_node_id()
    if set(ranks_by_node) <= {own}:
        return []
    deadline = time.monotonic() + wait_s
    while True:
        nodes = {n["NodeID"]: n for n in ray.nodes()}
        dead = [
            (nodes[nid]["NodeManagerAddress"], nid, ranks)
            for nid, ranks in ranks_by_node.items()
            if nid in nodes and not nodes[nid]["Alive"]
        ]
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(0.5)


def node_lost_message(dead: list[tuple[str, str, list[int]]], cause: BaseException) -> str:
    parts = [
        f"node {ip} (Ray node {nid[:12]}) lost with rank(s) {ranks}" for ip, nid, ranks in dead
    ]
    first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return f"{'; '.join(parts)}; first error seen: {first}"


def wait_for_devices(world: int, wait_s: float = RESTART_WAIT_S) -> None:
    """Block until the (joined) cluster has ``world`` device slots, or raise naming what is missing."""
    import ray

    from mindspeed_rl.platform.device import ray_resource_name

    if not ray.is_initialized():
        return  # a private local cluster: the next attempt starts a fresh one with its slots
    resource = ray_resource_name()
    deadline = time.monotonic() + wait_s
    have = ray.cluster_resources().get(resource, 0)
    if have < world:
        logger.warning("restart: waiting up to %.0f s for %d x %s (the cluster has %g)",
                       wait_s, world, resource, have)  # fmt: skip
    while have < world:
        if time.monotonic() >= deadline:
            alive = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
            raise WorkerError(
                f"restart: after {wait_s:.0f} s the cluster has {have:g} of the {world} x "
                f"{resource} the run needs (nodes up: {', '.join(alive)}); start the launch "
                "script again on the lost node(s)"
            )
        time.sleep(1.0)
        have = ray.cluster_resources().get(resource, 0)


def last_complete_iteration(save: str | None) -> int | None:
    """The tracker's iteration under ``save`` (written after a checkpoint is complete), or None."""
    from mindspeed_rl.checkpoint import mcore_layout

    if not save or not (Path(save) / mcore_layout.TRACKER_FILE).is_file():
        return None
    found = mcore_layout.read_tracker(save)
    return None if found == mcore_layout.RELEASE else int(found)


def resume_config(config: RunConfig) -> tuple[RunConfig, int | None]:
    """``config`` resuming from the last complete checkpoint under actor_config.save (the
    original config, from its start, when none was written yet) and that iteration."""
    iteration = last_complete_iteration(config.actor.save)
    if iteration is None:
        return config, None
    actor = config.actor.model_copy(
        update={
            "finetune": False,
            "load": config.actor.save,
            "ckpt_step": None,
            "no_load_optim": False,
            "no_load_rng": False,
        }  # fmt: skip
    )
    return config.model_copy(update={"actor": actor}), iteration


def run_with_restarts(config: RunConfig, log_dir: str | None, max_restarts: int):
    """``run_training`` restarted after a worker or node failure, at most ``max_restarts`` times."""
    from mindspeed_rl.trainer.launch import run_training
    from mindspeed_rl.workers.group import WorkerInputError

    restarts = 0
    while True:
        try:
            return run_training(config, log_dir=log_dir)
        except WorkerInputError:
            raise
        except WorkerError as err:
            if restarts >= max_restarts:
                raise
            restarts += 1
            cause = str(err).splitlines()[0]
            logger.warning("restart %d of %d after: %s", restarts, max_restarts, cause)
            wait_for_devices(config.rl_config.actor_resource.num_npus)
            config, iteration = resume_config(config)
            if iteration is None:
                logger.warning("restart %d: no complete checkpoint under actor_config.save=%s; "
                               "starting the run over", restarts, config.actor.save)  # fmt: skip
            else:
                logger.warning("restart %d: resuming from %s iteration %d", restarts,
                               config.actor.save, iteration)  # fmt: skip
