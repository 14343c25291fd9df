"""End-to-end DAPO on CPU through Ray: invariants, a simulated 2-node cluster, a dying worker.

The assets (tiny model, its Megatron checkpoint, the preprocessed task) are built once per module
with the quickstart's own pipeline; each run trains 3 iterations. The first run trains beside
another Ray cluster on the machine (as on a shared host) and saves its last iteration, which is
then converted to Hugging Face without ``--hf-config-dir``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray

from mindspeed_rl.trainer.launch import run_training
from mindspeed_rl.workers.group import WorkerError
from tests.trainer.run_configs import training_config

pytestmark = pytest.mark.slow

ITERATIONS = 3
REQUIRED_METRICS = (
    "rollout/acc", "rollout/score_mean", "rollout/overlong_ratio", "response_length/mean",
    "response_length/max", "response_length/clip_ratio", "actor/pg_loss", "actor/pg_clipfrac",
    "actor/pg_clipfrac_high", "actor/pg_clipfrac_low", "actor/ppo_kl", "actor/entropy",
    "actor/grad_norm", "actor/lr", "dynamic_sampling/num_gen_batches",
    "dynamic_sampling/kept_group_ratio", "timing/gen", "timing/reward", "timing/old_log_prob",
    "timing/update", "timing/sync", "timing/total", "throughput/e2e_tokens_per_s_per_device",
    "host_mem/rss_gb", "rollout/log_prob_diff_vs_actor",
)  # fmt: skip


def _config(assets, *extra):
    return training_config(assets, ITERATIONS, *extra)


_FOREIGN = """
import sys, ray
ray.init(address="local", num_cpus=1, include_dashboard=False, _temp_dir=sys.argv[1])
print(ray.get_runtime_context().get_node_id(), flush=True)
sys.stdin.read()  # until the test closes it
ray.shutdown()
"""


@pytest.fixture(scope="module")
def foreign_cluster():
    """Another user's cluster on this machine: found by ``address="auto"``, not ours to join."""
    temp_dir = tempfile.mkdtemp(prefix="rayf")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _FOREIGN, temp_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env=env, text=True,
    )  # fmt: skip
    node_id = proc.stdout.readline().strip()
    yield proc, node_id
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def trained(assets, foreign_cluster, tmp_path_factory):
    """One 3-iteration run beside the foreign cluster, saving its last iteration. Shuffled
    mini-batches: the actor's old log-probs of the shuffled rows must still match the rollout's,
    so every row kept its own tokens, masks and log-probs; the profiler records iteration 2 on
    rank 1 only."""
    save = tmp_path_factory.mktemp("trained") / "ckpt"
    traces = assets[1] / "profiling"
    config = _config(
        assets, f"actor_config.save={save}", f"megatron_training.save_interval={ITERATIONS}",
        "rl_config.shuffle_mini_batch=true", "profiler.enable=true",
        f"profiler.save_path={traces}", "profiler.ranks=[1]", "profiler.start_iteration=2",
        "profiler.end_iteration=2",
    )  # fmt: skip
    return config, run_training(config, log_dir=str(assets[1] / "logs")), save


def test_three_iterations_keep_the_dapo_invariants(assets, trained):
    config, result, _ = trained
    traces = assets[1] / "profiling"
    assert [p.name for p in traces.iterdir()] == ["rank1_iter2-2.pt.trace.json"]
    events = json.loads((traces / "rank1_iter2-2.pt.trace.json").read_text())["traceEvents"]
    assert any(e.get("name") == "aten::mm" for e in events)
    history = result.history
    assert len(history) == ITERATIONS
    n = config.rl_config.n_samples_per_prompt
    for i, metrics in enumerate(history, start=1):
        missing = [k for k in REQUIRED_METRICS if k not in metrics]
        assert not missing, missing
        assert all(math.isfinite(v) for v in metrics.values())
        # exactly filter_groups_train_batch_size prompts, none of them with a constant score
        assert metrics["throughput/trained_samples"] == 8 * n
        assert metrics["dynamic_sampling/constant_groups_trained"] == 0
        assert metrics["dynamic_sampling/num_gen_batches"] >= 1
        # two mini-batches: old log-probs are recomputed by the actor and must match the rollout's
        assert metrics["rollout/log_prob_diff_vs_actor"] <= 1e-3
        assert metrics["actor/weight_version"] == i  # the engine runs what the actor trained
        assert metrics["memory/update_gib"] > 0 and metrics["memory/generate_gib"] > 0
        # the trained score is the verifier's plus the overlong shaping; a truncated response
        # (no eos at the cap) gets the whole penalty, so the mean penalty is at most -its share
        shaped = metrics["reward/acc_for_dapo/mean"] + metrics["rollout/overlong_penalty_mean"]
        assert metrics["rollout/score_mean"] == pytest.approx(shaped, abs=1e-5)
        assert metrics["rollout/overlong_penalty_mean"] <= -metrics["rollout/overlong_ratio"] + 1e-6
        assert metrics["response_length/max"] <= config.rl_config.rollout_max_tokens
    # the chain-of-thought task's long tail reaches the overlong buffer in the run
    assert any(m["rollout/overlong_penalty_mean"] < 0 for m in history)
    assert (
        max(m["response_length/max"] for m in history)
        > min(m["response_length/mean"] for m in history) * 1.5
    )
    lines = (assets[1] / "logs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]


def test_a_run_beside_another_cluster_trains_on_its_own(trained, foreign_cluster):
    _, result, _ = trained
    proc, foreign_node = foreign_cluster
    assert len(result.history) == ITERATIONS
    assert foreign_node and {i.node_id for i in result.worker_info}.isdisjoint({foreign_node})
    assert proc.poll() is None, "the other cluster is left running"


def test_a_trained_checkpoint_converts_to_hf_without_hf_config_dir(assets, trained, tmp_path):
    from cli.convert_ckpt import main as convert

    _, _, save = trained
    out = tmp_path / "hf"
    args = ["--load-model-type", "mg", "--save-model-type", "hf", "--load-dir", str(save),
            "--save-dir", str(out), "--verify", "--verify-tolerance", "1e-4"]  # fmt: skip
    assert convert(args) == 0
    original = json.loads((Path(assets[0]["hf"]) / "config.json").read_text())
    assert json.loads((out / "config.json").read_text()) == original


def test_two_node_cluster_places_one_worker_per_node(assets):
    from ray.cluster_utils import Cluster

    cluster = Cluster()
    for _ in range(2):
        cluster.add_node(num_cpus=3, resources={"cpu_slot": 1})
    try:
        ray.init(address=cluster.address)
        result = run_training(_config(assets, "megatron_training.train_iters=1"))
        nodes = {info.node_id for info in result.worker_info}
        assert len(nodes) == 2 and len(result.history) == 1
    finally:
        ray.shutdown()
        cluster.shutdown()


class _ReportedPids(logging.Handler):
    """The worker pids this run reports ("worker processes: rank 0 pid 123 (node ...), ...")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.pids: dict[int, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("worker processes:"):
            found = re.findall(r"rank (\d+) pid (\d+)", text)
            self.pids = {int(rank): int(pid) for rank, pid in found}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_dying_worker_fails_the_run_quickly_and_names_it(assets, tmp_path):
    """The victim is rank 1 as this run reports it; beside other runs on the machine (other
    tests, other users) nothing is picked by process title."""
    log_dir = tmp_path / "logs"
    killed: dict = {}
    reported = _ReportedPids()
    launch_logger = logging.getLogger("mindspeed_rl.trainer.launch")
    launch_logger.addHandler(reported)
    level = launch_logger.level
    launch_logger.setLevel(logging.INFO)

    def kill_rank_1_after_the_first_iteration():
        deadline = time.time() + 240
        while time.time() < deadline:
            metrics = log_dir / "metrics.jsonl"
            if reported.pids and metrics.exists() and metrics.read_text().strip():
                killed["pids"] = dict(reported.pids)
                os.kill(killed["pids"][1], signal.SIGKILL)
                killed["at"] = time.time()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_rank_1_after_the_first_iteration, daemon=True)
    watcher.start()
    try:
        with pytest.raises(WorkerError, match=r"worker rank \d") as info:
            run_training(_config(assets, "megatron_training.train_iters=50"), log_dir=str(log_dir))
    finally:
        launch_logger.removeHandler(reported)
        launch_logger.setLevel(level)
    assert time.time() - killed["at"] < 60
    assert sorted(killed["pids"]) == [0, 1]
    assert "ActorDiedError" in str(info.value) or "died" in str(info.value).lower()
    deadline = time.time() + 10
    while any(_alive(p) for p in killed["pids"].values()) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in killed["pids"].values()), "no orphaned worker process"
