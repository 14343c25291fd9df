"""RewardScorer: weighted combination, and safety: errors and time-outs score as incorrect, are
counted, and never fail the step, in-process and in worker processes, off the main thread too."""

from __future__ import annotations

import random
import threading
import time

import pytest

from mindspeed_rl.rewards.process_pool import BoundedProcessPool
from mindspeed_rl.rewards.scoring import RewardScorer
from tests.rewards import misbehaving_verifiers as mv


def test_weighted_sum_of_verifiers():
    responses = [
        "<think>t</think><answer>3</answer>\nAnswer: 3",  # acc 1.0, format 1.0
        "Answer: 3",  # acc 1.0, format 0.0
        "<think>t</think><answer>4</answer>\nAnswer: 4",  # acc -1.0, format 1.0
    ]
    with RewardScorer(["acc_for_dapo", "format"], [1.0, 0.5], 5.0, 1) as scorer:
        out = scorer.score(responses, ["3", "3", "3"])
    assert out.verifier_scores == {"acc_for_dapo": [1.0, 1.0, -1.0], "format": [1.0, 0.0, 1.0]}
    assert out.scores == [1.5, 1.0, -0.5]
    assert out.acc["acc_for_dapo"] == [True, True, False]
    assert out.pred["acc_for_dapo"] == ["3", "3", "4"]
    assert out.metrics["reward/acc_for_dapo/mean"] == pytest.approx(1 / 3)
    assert out.metrics["reward/format/acc"] == pytest.approx(2 / 3)
    assert out.metrics["reward/acc_for_dapo/errors"] == 0.0


def test_config_mistakes_are_value_errors_naming_the_key():
    with pytest.raises(ValueError, match="Did you mean 'acc_for_dapo'"):
        RewardScorer(["acc_for_dapoo"], [1.0], 5.0, 1)
    with pytest.raises(ValueError, match="verifier_weight has 2 entries"):
        RewardScorer(["acc_for_dapo"], [1.0, 1.0], 5.0, 1)
    with pytest.raises(ValueError, match="verifier_timeout"):
        RewardScorer(["acc_for_dapo"], [1.0], 0.0, 1)
    with pytest.raises(ValueError, match="verifier_parallel"):
        RewardScorer(["acc_for_dapo"], [1.0], 5.0, 0)
    with pytest.raises(ValueError, match="twice"):
        RewardScorer(["format", "format"], [1.0, 1.0], 5.0, 1)


def test_mismatched_lengths_and_non_strings_are_rejected():
    scorer = RewardScorer(["format"], [1.0], 5.0, 1)
    with pytest.raises(ValueError, match="2 responses but 1 ground truths"):
        scorer.score(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="must be a str, got NoneType"):
        scorer.score(["a", None], ["a", "b"])


def test_in_process_errors_and_overruns_score_as_incorrect_and_are_counted():
    scorer = RewardScorer(["raises", "nan", "exact"], [1.0, 1.0, 1.0], 5.0, 1, registry=mv.REGISTRY)
    out = scorer.score(["RAISE", "ok"], ["x", "ok"])
    assert out.verifier_scores["raises"] == [-1.0, 1.0]
    assert out.verifier_scores["nan"] == [-1.0, -1.0]
    assert out.metrics["reward/raises/errors"] == 1.0
    assert out.metrics["reward/nan/errors"] == 2.0
    assert out.scores == [-3.0, 1.0]
    # In-process a call cannot be interrupted, but one that ran past the limit is a time-out.
    slow = RewardScorer(["spins"], [1.0], 0.05, 1, registry=mv.REGISTRY)
    mv_hang = mv.HANG_SECONDS
    try:
        mv.HANG_SECONDS = 0.1
        out = slow.score(["SPIN", "fine"], ["x", "fine"])
    finally:
        mv.HANG_SECONDS = mv_hang
    assert out.verifier_scores["spins"] == [-1.0, 1.0]
    assert out.metrics["reward/spins/timeouts"] == 1.0


def test_worker_processes_kill_overruns_and_survive_crashes_from_a_background_thread():
    """Hard bound: hanging (sleep) and spinning (GIL-holding loop) calls end at the limit, a call
    that kills its process costs only itself; all from a non-main thread, where no signal works."""
    names = ["exact", "hangs", "spins", "raises", "dies"]
    responses = [f"r{i}" for i in range(40)]
    responses[3], responses[17], responses[25], responses[31] = "HANG", "SPIN", "DIE", "RAISE"
    truths = list(responses)
    result: dict = {}

    def work() -> None:
        with RewardScorer(names, [1.0] * 5, 0.5, 2, registry=mv.REGISTRY) as scorer:
            start = time.monotonic()
            result["out"] = scorer.score(responses, truths)
            result["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and "out" in result
    out = result["out"]
    assert result["elapsed"] < 10, "time-outs must cut the 60 s calls short"
    assert out.metrics["reward/hangs/timeouts"] == 1.0
    assert out.metrics["reward/spins/timeouts"] == 1.0
    assert out.metrics["reward/dies/errors"] == 1.0
    assert out.metrics["reward/raises/errors"] == 1.0
    for name, bad in [("hangs", 3), ("spins", 17), ("dies", 25), ("raises", 31)]:
        expected = [1.0] * 40
        expected[bad] = -1.0
        assert out.verifier_scores[name] == expected, name
    assert out.verifier_scores["exact"] == [1.0] * 40
    assert sum(out.metrics[f"reward/{n}/timeouts"] for n in names) == 2.0


def test_pool_gives_the_same_scores_as_in_process():
    rng = random.Random(3)
    truths = [str(rng.randint(0, 20)) for _ in range(300)]
    responses = [
        "x" * rng.randint(0, 3000) + f"\nAnswer: ${rng.randint(0, 20)}$" * rng.randint(0, 1)
        for _ in range(300)
    ]
    names, weights = ["acc_for_dapo", "format"], [1.0, 0.1]
    sequential = RewardScorer(names, weights, 5.0, 1).score(responses, truths)
    with RewardScorer(names, weights, 5.0, 2) as scorer:
        parallel = scorer.score(responses, truths)
        again = scorer.score(responses[:7], truths[:7])  # the pool is reused across calls
    assert parallel == sequential
    assert again.scores == sequential.scores[:7]
    assert 0 < sum(s > 0 for s in sequential.verifier_scores["acc_for_dapo"]) < 300


def test_pool_replaces_a_worker_that_died_between_calls_and_rejects_use_after_close():
    pool = BoundedProcessPool({"exact": mv.exact_match}, 1, 1.0)
    assert pool.run([("exact", "a", "a")])[0].score == 1.0
    idle = pool._workers[0].process
    idle.kill()  # as the OOM killer would, while no call is running
    idle.wait()
    outcomes = pool.run([("exact", "a", "a"), ("exact", "a", "b")])
    assert [o.status for o in outcomes] == ["ok", "ok"]
    assert [o.score for o in outcomes] == [1.0, -1.0]
    assert pool.restarts == 1
    pool.close()
    with pytest.raises(RuntimeError, match="after close"):
        pool.run([("exact", "a", "a")])
    with pytest.raises(ValueError, match="num_workers"):
        BoundedProcessPool({}, 0, 1.0)


@pytest.mark.slow
def test_time_outs_work_inside_a_threaded_ray_actor():
    """A Ray actor with max_concurrency > 1 runs its methods on pool threads, where
    signal.alarm cannot be used; the process-based bound still ends the hanging call."""
    import os

    import ray

    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = (
            ray.remote(_ScoringActor)
            .options(max_concurrency=2, runtime_env={"env_vars": {"PYTHONPATH": repo_root}})
            .remote()
        )
        metrics, on_main_thread = ray.get(actor.score.remote(), timeout=120)
    finally:
        if started_here:
            ray.shutdown()
    assert not on_main_thread
    assert metrics["reward/hangs/timeouts"] == 1.0
    assert metrics["reward/hangs/mean"] == 0.0  # -1 for the hang, +1 for the good response


class _ScoringActor:
    def score(self) -> tuple[dict, bool]:
        with RewardScorer(["hangs"], [1.0], 0.5, 2, registry=mv.REGISTRY) as scorer:
            out = scorer.score(["HANG", "a"], ["x", "a"])
        return out.metrics, threading.current_thread() is threading.main_thread()
