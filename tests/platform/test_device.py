"""Platform answers on a CPU host, and the fusion switches' policy."""

import logging

import pytest
import torch

from mindspeed_rl.platform import device, megatron_setup


@pytest.fixture(autouse=True)
def _fresh_device_cache():
    device.device_type.cache_clear()
    yield
    device.device_type.cache_clear()


def test_cpu_host_answers(monkeypatch):
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)
    assert device.device_type() == "cpu"
    assert device.dist_backend() == "gloo"
    assert device.ray_resource_name() == "cpu_slot"
    assert device.current_device() == torch.device("cpu")
    assert device.device_count() == 1
    assert device.memory_stats()["allocated_gb"] == 0.0
    assert device.get_rng_state() is None
    device.synchronize()
    device.empty_cache()


def test_override_is_validated(monkeypatch):
    monkeypatch.setenv(device.DEVICE_ENV, "tpu")
    with pytest.raises(ValueError, match="expected one of npu, cuda, cpu"):
        device.device_type()
    device.device_type.cache_clear()
    monkeypatch.setenv(device.DEVICE_ENV, "cuda")
    with pytest.raises(ValueError, match="torch.cuda.is_available"):
        device.device_type()


def test_manual_seed_is_reproducible():
    device.manual_seed(5)
    a = torch.rand(3)
    device.manual_seed(5)
    assert torch.equal(a, torch.rand(3))


def test_fusions_pass_on_npu_only(monkeypatch, caplog):
    switches = {"use_flash_attn": True, "use_fused_rmsnorm": True, "use_fused_swiglu": False}
    with caplog.at_level(logging.INFO, logger=megatron_setup.__name__):
        assert megatron_setup.active_fusions(switches) == {}
    ignored = [r for r in caplog.records if "ignored on cpu" in r.getMessage()]
    assert len(ignored) == 1 and "use_flash_attn, use_fused_rmsnorm" in ignored[0].getMessage()
    monkeypatch.setattr(megatron_setup, "device_type", lambda: "npu")
    assert megatron_setup.active_fusions(switches) == {
        "use_flash_attn": True,
        "use_fused_rmsnorm": True,
    }


def test_prepare_megatron_says_which_fusions_it_ignores_here(monkeypatch, caplog):
    from mindspeed_rl.platform import cpu_adaptor

    monkeypatch.setattr(megatron_setup, "_prepared", None)
    monkeypatch.setattr(cpu_adaptor, "install", lambda: None)
    with caplog.at_level(logging.INFO, logger=megatron_setup.__name__):
        assert megatron_setup.prepare_megatron({"use_fused_swiglu": True}) == "cpu"
    ignored = [r.getMessage() for r in caplog.records if "ignored on cpu" in r.getMessage()]
    assert ignored == [
        "MindSpeed fusions use_fused_swiglu apply on Ascend NPUs only; ignored on cpu"
    ]
