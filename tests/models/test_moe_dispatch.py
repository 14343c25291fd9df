"""The actor's MoE token dispatcher: the YAML's where the platform runs it, allgather on CPU
(gloo refuses the alltoall dispatcher's tensor split sizes), logged once."""

import logging

import pytest

from mindspeed_rl.models import moe_dispatch


@pytest.mark.parametrize(
    ("configured", "version", "device", "chosen"),
    [
        ("alltoall_seq", (0, 16), "npu", "alltoall"),
        ("alltoall_seq", (0, 12), "npu", "alltoall_seq"),
        ("alltoall", (0, 16), "cuda", "alltoall"),
        ("allgather", (0, 16), "cuda", "allgather"),
        ("alltoall_seq", (0, 16), "cpu", "allgather"),
        ("alltoall", (0, 12), "cpu", "allgather"),
    ],
)
def test_dispatcher_per_platform_and_megatron_version(configured, version, device, chosen):
    assert moe_dispatch.token_dispatcher(configured, version, device) == chosen


def test_the_cpu_switch_is_logged_once_with_its_reason(caplog):
    moe_dispatch._log_choice.cache_clear()
    with caplog.at_level(logging.INFO, logger="mindspeed_rl.models.moe_dispatch"):
        for _ in range(3):
            moe_dispatch.token_dispatcher("alltoall", (0, 16), "cpu")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "allgather instead of alltoall" in lines[0] and "gloo" in lines[0]
