"""The integrated worker's set-up phases (workers/setup_phases.py), each alone.

The Ray stand-in answers ``get_runtime_context().get_accelerator_ids()`` as Ray 2.60's
``runtime_context.py`` does (resource name -> list of id strings) for a worker that reserved one
GPU; ``init_distributed`` and the vLLM engine are recorded, not run.
"""

from __future__ import annotations

import types

import pytest

from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.workers import setup_phases
from mindspeed_rl.workers.integrated import IntegratedWorker


def _ray_assigning(ids: dict[str, list[str]]):
    context = types.SimpleNamespace(get_accelerator_ids=lambda: ids)
    return types.SimpleNamespace(is_initialized=lambda: True, get_runtime_context=lambda: context)


@pytest.fixture
def worker():
    import torch

    threads = torch.get_num_threads()  # the platform phase sets the worker's thread count
    w = IntegratedWorker(1)
    w.config = load_run_config(CONFIG_NAME)
    yield w
    torch.set_num_threads(threads)


def test_platform_phase_refuses_a_forced_nz_before_megatron(worker, monkeypatch):
    import mindspeed_rl.platform.megatron_setup as megatron_setup

    prepared = []
    monkeypatch.setattr(megatron_setup, "prepare_megatron", lambda cfg: prepared.append(cfg))
    monkeypatch.setenv("VLLM_ASCEND_ENABLE_NZ", "1")
    with pytest.raises(ValueError, match="VLLM_ASCEND_ENABLE_NZ='1' in the worker's environment"):
        setup_phases.platform(worker, worker.config, threads=1)
    assert prepared == []
    monkeypatch.setenv("VLLM_ASCEND_ENABLE_NZ", "0")
    setup_phases.platform(worker, worker.config, threads=1)
    assert len(prepared) == 1


def test_distributed_phase_binds_the_device_ray_assigned(worker, monkeypatch):
    import mindspeed_rl.platform.device as device
    import mindspeed_rl.platform.distributed as distributed

    calls = []
    monkeypatch.setattr(distributed, "init_distributed", lambda layout, **kw: calls.append(kw))
    monkeypatch.setattr(device, "device_type", lambda: "cuda")
    monkeypatch.setitem(__import__("sys").modules, "ray", _ray_assigning({"GPU": ["6"]}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    # the bundle order says local rank 0; Ray reserved device 6, index 2 of the visible list
    assert setup_phases.distributed(worker, 2, 0, "127.0.0.1", 1234) == 2
    assert calls[0]["local_rank"] == 2 and calls[0]["rank"] == 1
    assert worker.device_index == 2


def test_engine_phase_gives_vllm_the_assigned_device(worker, monkeypatch):
    import mindspeed_rl.rollout.vllm_engine as vllm_engine

    made = []
    monkeypatch.setattr(vllm_engine, "VLLMRolloutEngine", lambda *a, **kw: made.append(kw))
    worker.device_index = 5
    hf = setup_phases.HFAssets("/hf", None, None, [2], 0)
    setup_phases.engine(worker, hf, "vllm", "cuda")
    assert made == [{"local_rank": 5}]
    assert worker.returns_rollout  # infer TP 1: every rank returns its rollouts


def test_hf_assets_phase_names_the_key(tmp_path, worker):
    config = worker.config.model_copy(
        update={
            "actor": worker.config.actor.model_copy(
                update={"tokenizer_name_or_path": str(tmp_path)}
            )
        }
    )
    with pytest.raises(ValueError, match="megatron_training.tokenizer_name_or_path="):
        setup_phases.hf_assets(config)
