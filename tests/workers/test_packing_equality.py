"""Packed (THD) and trimmed micro-batches give the padded path's log-probs, reference log-probs
and gradients (fp32, <= 1e-5) at TP 1, TP 2 with sequence parallelism, PP 2 and DP 2."""

from __future__ import annotations

import pytest
import torch

from tests.distributed_harness import run_distributed
from tests.workers import packing_case

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs():
    world1 = run_distributed(packing_case.run_world1, 1)
    world2 = run_distributed(packing_case.run_world2, 2)
    return [("tp1", rank["tp1"]) for rank in world1] + [
        (name, rank[name]) for rank in world2 for name in ("tp2_sp", "pp2", "dp2")
    ]


def _max_rel(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)) for k in b)


@pytest.mark.parametrize("mode", ["trimmed", "packed"])
def test_equal_to_the_padded_path(runs, mode):
    compared = 0
    for name, run in runs:
        padded, other = run["padded"], run[mode]
        assert sum(float(g.abs().sum()) for g in padded["grads"].values()) > 0, name
        assert _max_rel(other["grads"], padded["grads"]) <= 1e-5, name
        for key in ("log_probs", "reference"):
            if padded[key] is None:  # not the last pipeline stage
                assert other[key] is None
                continue
            mask = run["mask"]  # past a row's response the values are unspecified
            torch.testing.assert_close(other[key][mask], padded[key][mask], rtol=0, atol=1e-5)
            compared += 1
        for key, value in padded["metrics"].items():
            assert other["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, key)
    assert compared >= 8  # every layout's last stage, both passes
