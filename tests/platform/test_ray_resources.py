"""Ray's device contract (platform/ray_resources.py, workers/group.py), against Ray 2.60:

* ``ray/_private/parameter.py`` ``RayParams._check_usage``: "GPU" cannot be a custom resource
  (``ray start --resources='{"GPU": N}'`` is refused; ``--num-gpus`` it is);
* ``ray/_common/ray_option_utils.py`` ``_validate_resources``: an actor's ``resources`` option may
  not name "GPU" ("Use the 'num_cpus' and 'num_gpus' keyword");
* ``ray/runtime_context.py`` ``get_accelerator_ids`` / ``_private/worker.py``
  ``get_accelerator_ids_for_accelerator_resource``: the ids Ray reserved for the worker, as
  entries of the originally visible list (else slot indices).
"""

from __future__ import annotations

import json

import pytest
from ray._common.ray_option_utils import validate_actor_options
from ray._private.parameter import RayParams
from ray.scripts.scripts import start

from mindspeed_rl.platform.ray_resources import (
    assigned_device_index,
    cluster_platform,
    device_index,
    start_flag,
)
from mindspeed_rl.workers.group import device_options


def _ray_start(flag: str) -> RayParams:
    """``ray start --head <flag>`` as Ray's CLI parses it, up to the parameters it checks."""
    params = start.make_context("start", ["--head", flag]).params
    resources = json.loads(params["resources"]) if params["resources"] else None
    return RayParams(num_gpus=params["num_gpus"], resources=resources)


def test_ray_start_takes_the_flag_of_each_platform():
    assert _ray_start(start_flag("cuda", 8)).num_gpus == 8
    assert _ray_start(start_flag("npu", 16)).resources == {"NPU": 16}
    assert _ray_start(start_flag("cpu", 2)).resources == {"cpu_slot": 2}
    with pytest.raises(AssertionError, match="cannot be a custom resource"):
        _ray_start('--resources={"GPU": 8}')  # what launch_common.sh passed on NVIDIA


@pytest.mark.parametrize("platform", ["npu", "cuda", "cpu"])
def test_ray_takes_the_workers_actor_options(platform):
    validate_actor_options({**device_options(platform), "max_concurrency": 1}, in_options=True)


def test_ray_refuses_gpu_as_a_custom_actor_resource():
    with pytest.raises(ValueError, match="num_gpus"):
        validate_actor_options({"num_cpus": 1, "resources": {"GPU": 1.0}}, in_options=True)


def test_the_platform_is_the_clusters():
    assert cluster_platform({"CPU": 64, "NPU": 16}, env={}) == "npu"
    assert cluster_platform({"CPU": 64, "GPU": 8}, env={}) == "cuda"
    assert cluster_platform({"CPU": 4, "cpu_slot": 2}, env={}) == "cpu"
    assert cluster_platform({"GPU": 8}, env={"MINDSPEED_RL_DEVICE": "cpu"}) == "cpu"


def test_a_worker_binds_to_the_device_ray_assigned():
    assert device_index(["5"], None) == 5
    assert device_index(["5"], "4,5,6,7") == 1  # the raylet started with 4-7 visible
    with pytest.raises(RuntimeError, match="not in the visible list"):
        device_index(["2"], "4,5")
    with pytest.raises(RuntimeError, match="one device"):
        device_index(["0", "1"], None)
    assert assigned_device_index("cpu", 3) == 3  # no accelerator: the bundle order


@pytest.mark.slow
def test_two_jobs_on_one_node_get_different_devices():
    """A real local Ray with two logical GPUs: another job's actor holds one; our worker, the
    first (local rank 0) of its placement group, must bind to the other."""
    import shutil
    import tempfile

    import ray

    temp = tempfile.mkdtemp(prefix="r")  # Unix socket paths under it are capped at 107 bytes
    ray.init(
        address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
        _temp_dir=temp,
        runtime_env={"env_vars": {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}},
    )  # fmt: skip
    try:

        @ray.remote(num_gpus=1, num_cpus=0)
        class Holder:
            def device(self):
                return assigned_device_index("cuda", 0)

        other = Holder.remote()
        theirs = ray.get(other.device.remote())
        ours = ray.get(Holder.remote().device.remote())
        assert {theirs, ours} == {0, 1}
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
