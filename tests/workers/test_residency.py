"""The phase order of a colocated step, call by call, with the vLLM engine's sleep / wake logic
(a recording stand-in for ``vllm.LLM``: vLLM itself does not run on this host)."""

import torch

from mindspeed_rl.rollout.vllm_engine import VLLMRolloutEngine
from mindspeed_rl.workers.offload import GROUPS
from mindspeed_rl.workers.residency import PHASES, enter_phase


class RecordingLLM:
    def __init__(self, calls):
        self.calls = calls

    def sleep(self, level):
        self.calls.append(f"engine.sleep(level={level})")

    def wake_up(self, tags):
        self.calls.append(f"engine.wake_up({tags})")

    def apply_model(self, func):
        # vLLM's LLM.apply_model runs ``func`` on each worker's model; a dense model has no MoE
        # experts for rollout/expert_reload.py to put back in the kernel's layout
        return [func(torch.nn.Linear(2, 2))]


class RecordingOffloader:
    """The offloader's ``ensure`` contract: release what is not wanted, then restore."""

    def __init__(self, calls, enabled=GROUPS):
        self.calls, self.enabled = calls, set(enabled)
        self.resident = set(GROUPS)

    def ensure(self, wanted):
        for group in GROUPS:
            if group not in wanted and group in self.resident and group in self.enabled:
                self.resident.discard(group)
                self.calls.append(f"offload {group}")
        for group in GROUPS:
            if group in wanted and group not in self.resident:
                self.resident.add(group)
                self.calls.append(f"reload {group}")


def _vllm_engine(calls) -> VLLMRolloutEngine:
    engine = VLLMRolloutEngine.__new__(VLLMRolloutEngine)  # no vLLM: only the memory logic
    engine._llm = RecordingLLM(calls)
    engine.awake = {"weights", "kv_cache"}
    engine.has_sleep_mode = True  # as on CUDA / NPU
    engine.sleep_level = 2
    engine.keeps_weights_asleep = False
    return engine


def _run(phases, offloader_groups=GROUPS):
    calls: list[str] = []
    engine, offloader = _vllm_engine(calls), RecordingOffloader(calls, offloader_groups)
    for name in phases:
        calls.append(f"-- {name}")
        enter_phase(PHASES[name], offloader, engine)
    return calls


def test_one_iteration_follows_the_documented_order():
    calls = _run(["engine_init", "sync", "generate", "log_prob", "update", "sync", "generate"])
    assert calls == [
        "-- engine_init",
        "engine.sleep(level=2)",  # the stand-in engine starts awake, as vLLM does
        "offload params", "offload grads", "offload optimizer",
        "-- sync",
        "reload params",
        "engine.wake_up(['weights'])",
        "-- generate",
        "offload params",
        "engine.wake_up(['kv_cache'])",
        "-- log_prob",
        "engine.sleep(level=2)",
        "reload params",
        "-- update",
        "reload grads", "reload optimizer",
        "-- sync",
        "offload grads", "offload optimizer",  # released before the engine takes memory
        "engine.wake_up(['weights'])",
        "-- generate",
        "offload params",
        "engine.wake_up(['kv_cache'])",
    ]  # fmt: skip


def test_groups_without_offload_stay_and_the_kv_cache_waits_for_the_params():
    calls = _run(["update", "sync", "generate"], offloader_groups={"params"})
    assert "offload grads" not in calls and "offload optimizer" not in calls
    assert calls.index("offload params") < calls.index("engine.wake_up(['kv_cache'])")


def test_waking_an_awake_tag_calls_nothing():
    calls: list[str] = []
    engine = _vllm_engine(calls)
    engine.wake_up()
    engine.sleep()
    engine.sleep()
    engine.wake_up(["weights"])
    engine.wake_up(["weights"])
    engine.wake_up()
    assert calls == [
        "engine.sleep(level=2)",
        "engine.wake_up(['weights'])",
        "engine.wake_up(['kv_cache'])",
    ]
