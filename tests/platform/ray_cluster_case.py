"""Driver bodies for test_ray_cluster.py, run as subprocesses: ``local`` starts the run's own
cluster and waits to be killed; ``join`` joins the cluster in RAY_ADDRESS and exits."""

import logging
import sys
import time

import ray

from mindspeed_rl.platform.ray_cluster import init_ray, shutdown_local

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
started = init_ray({}, num_cpus=1, resources=None)


@ray.remote
def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


print(f"started={started} node={ray.get(node_id.remote())}", flush=True)
if sys.argv[1] == "local":
    print(f"address={ray.get_runtime_context().gcs_address}", flush=True)
    time.sleep(600)  # SIGKILLed by the test
else:
    ray.shutdown() if not started else shutdown_local()
