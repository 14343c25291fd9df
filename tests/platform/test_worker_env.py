"""The workers' environment (platform/worker_env.py) against what vllm-ascend and vLLM read.

vllm-ascend v0.11.0 ``vllm_ascend/envs.py``: ``VLLM_ASCEND_ENABLE_NZ`` defaults to 1
(``int(os.getenv("VLLM_ASCEND_ENABLE_NZ", 1))``); ``vllm_ascend/worker/worker_v1.py``
``NPUWorker.wake_up`` raises "FRACTAL_NZ mode is enabled ... Please set VLLM_ASCEND_ENABLE_NZ=0."
whenever ``is_enable_nz()`` holds. v0.23.0 ``worker/worker.py`` raises the same from
``get_ascend_config().weight_nz_mode`` (``ascend_config.py``: additional_config ``weight_nz_mode``,
else the same environment variable with the same default). vLLM 0.11.0 / 0.23.0
``vllm/config/parallel.py`` takes ``data_parallel_size = envs.VLLM_DP_SIZE`` under an SPMD launch
when no size is passed. The suite's worker environment is MindSpeed-RL 05a90d7
``configs/envs/runtime_env.yaml`` plus ``cli/train_dapo.py`` (hccl_buffersize, VLLM_DP_SIZE).
"""

from __future__ import annotations

import pytest

from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.platform import worker_env as we
from mindspeed_rl.trainer.config_entry import load_run_config

RECIPE = "dapo_qwen3_30b_a3b_A3"  # infer EP 8 over infer TP 1: vLLM data parallelism 8

# the suite's runtime_env.yaml as shipped, the keys this project reads (values as there)
SUITE_YAML = """\
env_vars:
  RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES: 'true'
  TOKENIZERS_PARALLELISM: 'true'
  PYTORCH_NPU_ALLOC_CONF: 'expandable_segments:True'
  HCCL_CONNECT_TIMEOUT: '1800'
  HCCL_EXEC_TIMEOUT: '3600'
  CUDA_DEVICE_MAX_CONNECTIONS: '1'
  VLLM_DP_SIZE: '8'
  HCCL_BUFFSIZE: '256'
  VLLM_USE_V1: '1'
  VLLM_ASCEND_ENABLE_NZ: '0'
  TASK_QUEUE_ENABLE: "2"
"""


class AscendWorkerStandIn:
    """vllm-ascend's ``NPUWorker.wake_up`` as far as the NZ switch goes (v0.11.0
    ``worker_v1.py`` / v0.23.0 ``worker.py``, reading ``envs.py``'s default of 1)."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.environ = environ
        self.woken: list = []

    def wake_up(self, tags=None) -> None:
        if int(self.environ.get("VLLM_ASCEND_ENABLE_NZ", 1)):
            raise ValueError(
                "FRACTAL_NZ mode is enabled. This may cause model parameter precision issues "
                "in the RL scenarios. Please set VLLM_ASCEND_ENABLE_NZ=0."
            )
        self.woken.append(tags)


def _config(*overrides):
    return load_run_config(RECIPE, overrides=list(overrides))


def test_an_npu_worker_wakes_its_vllm_ascend_engine():
    with pytest.raises(ValueError, match="FRACTAL_NZ"):
        AscendWorkerStandIn({}).wake_up(["weights"])  # vllm-ascend's default
    env = we.worker_env(_config(), "npu")
    engine = AscendWorkerStandIn(dict(env))
    engine.wake_up(["weights"])
    assert engine.woken == [["weights"]]
    assert env["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True"
    assert env["VLLM_DP_SIZE"] == "8"


def test_the_suites_runtime_env_and_hccl_buffersize(tmp_path):
    path = tmp_path / "runtime_env.yaml"
    path.write_text(SUITE_YAML)
    env = we.worker_env(_config(f"rl_config.runtime_env_path={path}"), "npu")
    assert env["TASK_QUEUE_ENABLE"] == "2" and env["TOKENIZERS_PARALLELISM"] == "true"
    assert env["HCCL_BUFFSIZE"] == "256"
    # the recipe's key wins over the file, as in the suite's cli/train_dapo.py
    config = _config(f"rl_config.runtime_env_path={path}", "rl_config.hccl_buffersize=640")
    assert we.worker_env(config, "npu")["HCCL_BUFFSIZE"] == "640"
    # NZ, HCCL and the NPU allocator only on NPU
    assert "VLLM_ASCEND_ENABLE_NZ" not in we.worker_env(_config(), "cuda")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [("VLLM_ASCEND_ENABLE_NZ: '1'", "VLLM_ASCEND_ENABLE_NZ='1'"),
     ("VLLM_DP_SIZE: '1'", "vLLM data parallelism 8"),
     ("HCCL_BUFFSIZE: [1]", "need a string or number")],
)  # fmt: skip
def test_dry_run_refuses_what_the_engines_cannot_run(tmp_path, line, fragment):
    key = line.split(":")[0]
    text = "\n".join(row for row in SUITE_YAML.splitlines() if key not in row)
    path = tmp_path / "runtime_env.yaml"
    path.write_text(f"{text}\n  {line}\n")
    with pytest.raises(ConfigError) as info:
        _config(f"rl_config.runtime_env_path={path}")
    (problem,) = [p for p in info.value.problems if p.key == "rl_config.runtime_env_path"]
    assert fragment in problem.message


def test_a_missing_runtime_env_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="runtime_env_path.*file not found"):
        _config(f"rl_config.runtime_env_path={tmp_path / 'nope.yaml'}")


def test_a_forced_nz_in_the_process_environment_is_refused():
    we.check_process_env({})
    we.check_process_env({"VLLM_ASCEND_ENABLE_NZ": "0"})
    with pytest.raises(ValueError, match="VLLM_ASCEND_ENABLE_NZ='2' in the worker"):
        we.check_process_env({"VLLM_ASCEND_ENABLE_NZ": "2"}, where="the worker's environment")
    env = {"PYTORCH_NPU_ALLOC_CONF": "mine"}
    we.apply_to_process({"PYTORCH_NPU_ALLOC_CONF": "x", "VLLM_ASCEND_ENABLE_NZ": "0"}, env)
    assert env == {"PYTORCH_NPU_ALLOC_CONF": "mine", "VLLM_ASCEND_ENABLE_NZ": "0"}
