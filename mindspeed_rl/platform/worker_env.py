"""The environment of every worker process, per platform, in one place.

The Ascend suite (MindSpeed-RL 05a90d7) sets its workers' environment from
``configs/envs/runtime_env.yaml`` (``rl_config.runtime_env_path``) and overwrites two keys in
``cli/train_dapo.py``: ``HCCL_BUFFSIZE`` from ``rl_config.hccl_buffersize`` and, with inference
expert parallelism, ``VLLM_DP_SIZE``. Here the same keys are built from the config:

* platform defaults (``DEFAULTS``), of which on NPU:
  - ``VLLM_ASCEND_ENABLE_NZ=0``: vllm-ascend defaults it to 1 (``vllm_ascend/envs.py``, v0.11.0
    and v0.23.0) and then refuses every ``wake_up`` ("FRACTAL_NZ mode is enabled ... set
    VLLM_ASCEND_ENABLE_NZ=0": ``worker/worker_v1.py`` v0.11.0, ``worker/worker.py`` v0.23.0);
    NZ-cast weights would also not take a reload. A run that forces it on is refused.
  - ``PYTORCH_NPU_ALLOC_CONF=expandable_segments:True``: the actor and the engine take turns on
    one device; growing segments instead of fixed blocks keeps the freed memory usable.
  - HCCL's connect / execution timeouts of the suite (first steps of a 32B model compile long).
  - ``CUDA_DEVICE_MAX_CONNECTIONS=1`` (also on CUDA): Megatron's overlap of TP communication
    with compute orders kernels on one queue.
* the YAML at ``rl_config.runtime_env_path`` (``env_vars:`` as in the suite), over the defaults;
* derived keys, over both: ``HCCL_BUFFSIZE`` from ``rl_config.hccl_buffersize`` when set (the
  suite's precedence); ``VLLM_DP_SIZE`` = the vLLM data-parallel size this project gives the engine
  (``infer_expert_parallel_size // infer_tensor_parallel_size`` when EP is wider, else 1). vLLM
  reads ``VLLM_DP_SIZE`` under ``external_launcher`` when no data-parallel size is passed
  (``vllm/config/parallel.py``, 0.11.0 and 0.23.0): the suite's recipes set it to the EP size,
  which here would start that many engines per TP group, so a YAML value that differs is refused.

``--dry-run`` reports what the YAML gets wrong (:func:`env_problems`); the driver refuses a
forced-on NZ in its own environment (the Ray runtime env would silently override it), and a
worker refuses one in its process environment at set-up (:func:`check_process_env`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.config.validation import Problem

NZ_ENV = "VLLM_ASCEND_ENABLE_NZ"
DP_SIZE_ENV = "VLLM_DP_SIZE"
BUFFSIZE_ENV = "HCCL_BUFFSIZE"
PATH_KEY = "rl_config.runtime_env_path"

_EVERY_PLATFORM = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
DEFAULTS: dict[str, dict[str, str]] = {
    "npu": {
        NZ_ENV: "0",
        "PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True",
        "HCCL_CONNECT_TIMEOUT": "1800",
        "HCCL_EXEC_TIMEOUT": "3600",
        "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    },
    "cuda": {"CUDA_DEVICE_MAX_CONNECTIONS": "1"},
    "cpu": {},
}


def _nz_problem(value: str, where: str) -> str | None:
    if value.strip() in ("0", ""):
        return None
    return (
        f"{NZ_ENV}={value!r} in {where}: vllm-ascend refuses every wake_up with NZ weights "
        f"(and a weight sync cannot reload them); remove it or set it to 0"
    )


def read_runtime_env(path: str | os.PathLike) -> dict[str, str]:
    """``env_vars`` of a runtime-env YAML (the suite's format); errors name the file."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{PATH_KEY}={path}: file not found")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{PATH_KEY}={path}: not valid YAML ({err})") from err
    env = data.get("env_vars", {}) if isinstance(data, dict) else None
    if not isinstance(env, dict):
        raise ValueError(f"{PATH_KEY}={path}: expected a mapping 'env_vars: {{NAME: value}}'")
    bad = sorted(str(k) for k, v in env.items() if isinstance(v, (dict, list)) or v is None)
    if bad:
        raise ValueError(f"{PATH_KEY}={path}: env_vars {bad} need a string or number value")
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()}


def vllm_dp_size(config: RunConfig) -> int:
    gen = config.generate_config
    ep, tp = gen.infer_expert_parallel_size, gen.infer_tensor_parallel_size
    return ep // tp if ep > tp else 1


def worker_env(config: RunConfig, platform: str) -> dict[str, str]:
    """The env_vars every worker of ``config`` gets on ``platform`` (npu, cuda, cpu)."""
    env = {**_EVERY_PLATFORM, **DEFAULTS[platform]}
    path = config.rl_config.runtime_env_path
    from_file = read_runtime_env(path) if path is not None else {}
    problem = _nz_problem(from_file.get(NZ_ENV, "0"), f"{PATH_KEY}={path}")
    if problem:
        raise ValueError(problem)
    env.update(from_file)
    if config.rl_config.hccl_buffersize is not None:
        env[BUFFSIZE_ENV] = str(config.rl_config.hccl_buffersize)
    dp = str(vllm_dp_size(config))
    if from_file.get(DP_SIZE_ENV, dp) != dp:
        raise ValueError(_dp_message(path, from_file[DP_SIZE_ENV], dp))
    env[DP_SIZE_ENV] = dp
    return env


def _dp_message(path, value: str, dp: str) -> str:
    return (
        f"{DP_SIZE_ENV}={value!r} in {PATH_KEY}={path}: the rollout engines run vLLM data "
        f"parallelism {dp} (generate_config.infer_expert_parallel_size // "
        f"infer_tensor_parallel_size when EP is wider, else 1); remove the key or set it to {dp}"
    )


def env_problems(config: RunConfig, where: Callable[[str], str]) -> list[Problem]:
    """``--dry-run``'s check of the runtime-env YAML (every platform: the file travels)."""
    try:
        worker_env(config, "npu")
    except ValueError as err:
        return [Problem(where(PATH_KEY), PATH_KEY, str(err).removeprefix(f"{PATH_KEY}="))]
    return []


def check_process_env(env: Mapping[str, str] = os.environ, where: str = "the environment") -> None:
    """Refuse a forced-on NZ in this process's environment (the driver before Ray starts the
    workers, or a worker at set-up)."""
    problem = _nz_problem(env.get(NZ_ENV, "0"), where)
    if problem:
        raise ValueError(problem)


def apply_to_process(wanted: Mapping[str, str], env: dict | None = None) -> None:
    """For a worker without Ray (the device check): the worker env into this process, the
    user's own settings first, except a forced-on NZ, which is refused."""
    env = os.environ if env is None else env
    check_process_env(env)
    for key, value in wanted.items():
        env.setdefault(key, value)
