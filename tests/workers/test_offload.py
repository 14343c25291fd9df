"""Offload on a simulated device: training keeps learning, and the memory order is kept.
The reference model of a KL term is offloaded between its passes and keeps its values.

One spawned process runs the integrated worker (Megatron actor, HF engine, weight sync,
checkpoint) for 3 iterations in each of fp32 / bf16 x distributed optimizer off / on, with offload
on and off, inside ``tests/simulated_device.py`` (host <-> device moves copy, as on a device).
"""

import pytest
import torch

from tests.distributed_harness import run_distributed
from tests.workers import offload_case

pytestmark = pytest.mark.slow

PAIRS = [(bf16, dist) for bf16 in (False, True) for dist in (False, True)]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    assets = offload_case.build_assets(tmp_path_factory.mktemp("offload"))
    return run_distributed(offload_case.run_matrix, 1, assets)[0]


def _key(bf16, dist, offload):
    return f"bf16={bf16},distopt={dist},offload={offload}"


def _equal(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("bf16,dist", PAIRS)
def test_offload_trains_exactly_like_no_offload(matrix, bf16, dist):
    off, on = matrix[_key(bf16, dist, False)], matrix[_key(bf16, dist, True)]
    for it in range(3):
        assert _equal(on["actor"][it], off["actor"][it]) == [], f"actor weights, iteration {it}"
        assert _equal(on["engine"][it], off["engine"][it]) == [], f"engine weights, iteration {it}"
        torch.testing.assert_close(on["log_probs"][it], off["log_probs"][it], rtol=0, atol=0)
    assert _equal(on["checkpoint"], off["checkpoint"]) == []
    # and the optimizer really moved the weights every iteration (a frozen model is "equal" too)
    for it in range(1, 3):
        changed = _equal(on["actor"][it], on["actor"][it - 1])
        assert len(changed) == len(on["actor"][it]), f"unchanged at iteration {it}"
    assert _equal(on["checkpoint"], on["actor"][-1]) == []


def test_no_random_initialisation_under_a_checkpoint(matrix):
    assert matrix["random_inits_under_a_checkpoint"] == 0
    assert matrix["random_inits_without_a_checkpoint"] > 0


def test_the_simulated_device_copied_moves(matrix):
    assert matrix["copied_moves"] > 0


def _entries(ledger: list[dict], phase: str) -> list[dict]:
    found = [e["resident"] for e in ledger if e["phase"] == phase]
    assert found, f"no ledger entry for {phase}"
    return found


@pytest.mark.parametrize("bf16,dist", PAIRS)
def test_memory_order_of_a_colocated_step(matrix, bf16, dist):
    ledger = matrix[_key(bf16, dist, True)]["ledger"]
    full = matrix[_key(bf16, dist, False)]["ledger"]
    sizes = _entries(full, "update")[-1]  # nothing offloaded: every group at its full size
    assert min(sizes["actor_params"], sizes["actor_grads"], sizes["actor_optimizer"]) > 0
    # the engine is created with the training state off the device
    (init,) = _entries(ledger, "engine_init")
    assert init["actor_params"] == init["actor_grads"] == init["actor_optimizer"] == 0
    for entry in _entries(ledger, "generate"):
        assert entry["actor_params"] == entry["actor_grads"] == entry["actor_optimizer"] == 0
        assert entry["engine_weights"] > 0
    assert any(e["kv_cache"] > 0 for e in _entries(ledger, "generate"))
    for entry in _entries(ledger, "sync"):
        assert entry["actor_grads"] == entry["actor_optimizer"] == entry["kv_cache"] == 0
        assert entry["actor_params"] == sizes["actor_params"] and entry["engine_weights"] > 0
    for entry in _entries(ledger, "log_prob"):
        assert entry["actor_grads"] == entry["actor_optimizer"] == 0
        assert entry["engine_weights"] == entry["kv_cache"] == 0
        assert entry["actor_params"] == sizes["actor_params"]
    updates, full_updates = _entries(ledger, "update"), _entries(full, "update")
    assert len(updates) == len(full_updates) == 6  # entering, and after the step
    for entry, resident in zip(updates, full_updates):  # Adam's state appears at the first step
        assert entry["engine_weights"] == entry["kv_cache"] == 0
        for group in ("actor_params", "actor_grads", "actor_optimizer"):
            assert entry[group] == resident[group]
    # never the optimizer state and the KV cache together, in any recorded phase
    for entry in ledger:
        resident = entry["resident"]
        assert not (resident["actor_optimizer"] and resident["kv_cache"]), entry


def test_host_copies_are_allocated_once(matrix):
    """Three offload cycles hold one host copy of params + optimizer state, not three."""
    for bf16, dist in PAIRS:
        run = matrix[_key(bf16, dist, True)]
        sizes = _entries(matrix[_key(bf16, dist, False)]["ledger"], "update")[-1]
        assert run["host_stash_bytes"] == sizes["actor_params"] + sizes["actor_optimizer"]


def test_without_kl_no_reference_is_built_resident_or_timed(matrix):
    for bf16, dist in PAIRS:
        for offload in (False, True):
            run = matrix[_key(bf16, dist, offload)]
            assert all(e["resident"]["reference"] == 0 for e in run["ledger"])
            assert not [e for e in run["ledger"] if e["phase"] == "ref_log_prob"]
            assert "ref_log_prob" not in run["timed"]
            assert not any(k in m for m in run["metrics"] for k in ("actor/kl", "actor/kl_loss"))


def test_reference_is_resident_only_in_its_pass_and_keeps_its_values(matrix):
    run = matrix["kl"]
    passes = [e["resident"] for e in run["ledger"] if e["phase"] == "ref_log_prob"]
    assert len(passes) == 6 and all(r["reference"] > 0 for r in passes)
    # the actor's params equal size (same model, same dtype) and stay for the update after
    assert all(r["reference"] == r["actor_params"] for r in passes)
    others = [e for e in run["ledger"] if e["phase"] != "ref_log_prob"]
    assert others and all(e["resident"]["reference"] == 0 for e in others)
    assert "ref_log_prob" in run["timed"]
    # iteration 0's rows: the reference equals the initial actor, and stays frozen through
    # three offload cycles while the actor trains
    first = run["fixed_ref_log_probs"][0]
    assert (first - run["log_probs"][0]).abs().max().item() <= 1e-6
    for later in run["fixed_ref_log_probs"][1:]:
        assert torch.equal(later, first)
    kls = [m["actor/kl"] for m in run["metrics"]]
    assert abs(kls[0]) <= 1e-6 < kls[1] < kls[2], kls  # starts at 0 (actor = reference), grows
    assert run["metrics"][1]["actor/kl_loss"] == pytest.approx(0.5 * kls[1])


def test_a_rank_dealt_no_prompts_still_calls_its_engine(matrix):
    # vLLM's data-parallel ranks step together: a rank without prompts must take part
    calls, out = matrix[_key(False, False, False)]["empty_share"]
    assert calls == [[]] and out is None
