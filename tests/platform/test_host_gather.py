"""The TP all-gather of the weight sync through shared memory (gloo ranks on one host)."""

import pytest

from tests.distributed_harness import run_distributed
from tests.platform import host_gather_case

pytestmark = pytest.mark.slow


def test_shared_memory_gather_equals_gloo_all_gather():
    for result in run_distributed(host_gather_case.run, 2):
        assert result["available"], "two gloo ranks on one host must use shared memory"
        assert result["equal"] == [True] * 4
        assert result["reused_ok"]
        assert result["full_shm_equal"], "without room in /dev/shm the gather goes through gloo"
        assert result["full_shm_buffer_kept"]
        assert result["left_in_shm"] == [], "buffer names are unlinked once mapped"
