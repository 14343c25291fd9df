"""The launch scripts on two namespaced nodes, as docs/multi_node.md tells a user to run them.

Two nodes (``tests/multinode/nodes.py``: own network, PID, mount and UTS namespaces, a veth link,
own /tmp and /dev/shm; the project, model, data and checkpoints on the shared filesystem under
/var/tmp) run ``examples/dapo/dapo_trainer_qwen25_32b.sh`` with NNODES=2, NPUS_PER_NODE=1,
MASTER_ADDR = node 1's IP, SOCKET_IFNAME = its veth, and Ray token authentication with the token
on shared storage (RAY_AUTH_TOKEN_PATH, read by Ray 2.60's C++ AuthenticationTokenLoader:
``ray/_raylet.so``, ``ray/_private/authentication/authentication_token_setup.py``). The quickstart
model trains DP 2, one worker per node, gloo over the veth. Three runs, as few as the claims allow:

A. 4 iterations straight, checkpoints at 2 and 4: both scripts exit 0; one worker on each node
   (node 2's seen from node 2's own namespace).
B. the same run resumed from A's iteration 2 with ``--max-restarts 1``, checkpointing every
   iteration; node 2 is killed (every process, as a power loss) in iteration 4 and started again:
   the run finishes, the restart is in the log, and iterations 3 and 4 (the resumed one and the
   one after the restart, resumed from B's checkpoint 3) equal A's uninterrupted 3 and 4.
C. node loss without restarts: node 2 killed in iteration 2; node 1's script exits non-zero
   within 60 s with one line naming node 2's IP and rank 1, nothing of the run is left on node 1,
   and the checkpoint of iteration 1 is intact.

After each run no namespace, veth link, process or /dev/shm file of the test remains.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.multinode.nodes import (
    NamespacedNodes,
    NamespaceError,
    check_support,
    held_namespaces,
    leftover_namespaces,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "examples/dapo/dapo_trainer_qwen25_32b.sh"
COMPARED = ("actor/pg_loss", "actor/entropy", "actor/grad_norm", "rollout/score_mean",
            "rollout/acc", "actor/weight_version")  # fmt: skip
SHARED_ROOT = os.environ.get("MSRL_MULTINODE_SHARED", "/var/tmp")


def _require_namespaces() -> None:
    """In CI a host that cannot make namespaces is a failure with its reason, never a skip."""
    try:
        check_support()
    except NamespaceError as err:
        if os.environ.get("MINDSPEED_RL_REQUIRE_NAMESPACES") or os.environ.get("CI"):
            pytest.fail(f"two-node test cannot run: {err}")
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def shared():
    """The cluster's shared storage: model, data, checkpoints, logs, the Ray token."""
    _require_namespaces()
    root = Path(tempfile.mkdtemp(prefix="msrl_2node_", dir=SHARED_ROOT))
    from mindspeed_rl.quickstart.pipeline import CONFIG_NAME, prepare_assets
    from mindspeed_rl.trainer.config_entry import load_run_config

    reuse = os.environ.get("MSRL_MULTINODE_ASSETS")  # prepared assets, to re-run by hand faster
    if reuse:
        base = Path(reuse)
        paths = {"hf": base / "hf", "mcore": base / "mcore", "data": base / "data" / "addition"}
        yield root, paths
        shutil.rmtree(root, ignore_errors=True)
        return
    paths = prepare_assets(root / "assets", load_run_config(CONFIG_NAME).model, problems=480,
                           warm_steps=120, seed=0)  # fmt: skip
    yield root, paths
    shutil.rmtree(root, ignore_errors=True)


def _overrides(paths, iterations: int, *extra: str) -> list[str]:
    return [
        "quickstart_cpu",
        f"megatron_training.tokenizer_name_or_path={paths['hf']}",
        f"megatron_training.data_path={paths['data']}",
        f"actor_config.load={paths['mcore']}",
        f"megatron_training.train_iters={iterations}",
        "rl_config.validate_before_train=false", "rl_config.validation_interval=0",
        "rl_config.filter_groups_train_batch_size=8", "rl_config.mini_batch_size=4",
        "rl_config.filter_groups_max_batches=-1", *extra,
    ]  # fmt: skip


class TwoNodeRun:
    """The launch script on both nodes of a fresh 2-node cluster; everything checked gone after."""

    def __init__(self, root: Path, name: str, nodes: int = 2) -> None:
        self.dir = root / name
        self.dir.mkdir()
        self.nodes = NamespacedNodes(nodes)
        self.pid_namespaces = set()
        self.procs: dict[int, subprocess.Popen] = {}

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            NNODES="2", NPUS_PER_NODE="1", MASTER_ADDR=self.nodes[0].ip,
            SOCKET_IFNAME=self.nodes[0].ifname, PYTHON=sys.executable, JEMALLOC_OPTIONAL="1",
            RAY_AUTH_TOKEN_PATH=str(self.dir / "ray_token"), LOG_DIR=str(self.dir / "logs"),
            NODE_WAIT_S="300",
        )  # fmt: skip
        env.update(extra)
        return env

    def launch(self, index: int, args: list[str], **env: str) -> subprocess.Popen:
        node = self.nodes[index]
        self.pid_namespaces.add(node.pid_ns)
        out = open(self.dir / f"node{index + 1}.out", "ab")  # noqa: SIM115 (closed by the child)
        proc = node.popen(["bash", SCRIPT, *args], cwd=REPO, env=self.env(**env), stdout=out,
                          stderr=subprocess.STDOUT)  # fmt: skip
        out.close()
        self.procs[index] = proc
        return proc

    def output(self, index: int) -> str:
        return (self.dir / f"node{index + 1}.out").read_text(errors="replace")

    def metrics(self) -> list[dict]:
        path = self.dir / "metrics" / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_for(self, what: str, predicate, timeout: float = 900.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.output(0)[-3000:]}")
            if self.procs[0].poll() is not None:
                raise AssertionError(f"node 1 exited while waiting for {what}:\n{self.output(0)}")
            time.sleep(0.5)

    def close(self) -> None:
        try:
            self.nodes.close()
        finally:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=30)
        assert not leftover_namespaces(self.nodes.prefix), "a namespace of the test is left"
        # the veth ends and the bridge lived only inside the deleted namespaces
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert self.nodes.prefix not in links and "veth0" not in links
        left = held_namespaces(self.pid_namespaces, "pid")
        assert not left, f"processes of the test's nodes left: {left}"
        # each node's /dev/shm was its own tmpfs (checked when it started), freed with its mount
        # namespace: no process holds one any more. (The host's /dev/shm is not compared: other
        # jobs on the machine create files there meanwhile.)
        assert not held_namespaces(self.nodes.mount_namespaces, "mnt")


def _worker_lines(ps: str) -> list[str]:
    return [line for line in ps.splitlines() if "ray::IntegratedWorker" in line]


def _compared(metrics: list[dict], iteration: int) -> dict:
    last = [m for m in metrics if m["iteration"] == iteration][-1]
    return {k: last[k] for k in COMPARED}


def _tracker(path: Path) -> str | None:
    tracker = path / "latest_checkpointed_iteration.txt"
    return tracker.read_text().strip() if tracker.exists() else None


@pytest.fixture(scope="module")
def straight(shared):
    """Run A: 4 iterations across the two nodes, checkpoints at 2 and 4."""
    root, paths = shared
    run = TwoNodeRun(root, "a")
    start = time.monotonic()
    try:
        args = _overrides(paths, 4, f"actor_config.save={run.dir / 'ckpt'}",
                          "megatron_training.save_interval=2", "--log-dir", str(run.dir / "metrics"))  # fmt: skip
        head = run.launch(0, args)
        worker = run.launch(1, args)
        run.wait_for("a worker on each node", lambda: len(_worker_lines(run.nodes[1].ps())) == 1
                     and len(_worker_lines(run.nodes[0].ps())) == 1)  # fmt: skip
        seen = {"node1": run.nodes[0].ps(), "node2": run.nodes[1].ps()}
        assert head.wait(timeout=900) == 0, run.output(0)
        assert worker.wait(timeout=120) == 0, run.output(1)
        metrics = run.metrics()
    finally:
        run.close()
    print(f"\nrun A: {time.monotonic() - start:.0f} s; processes seen from each node:")
    for name, ps in seen.items():
        print(f"--- {name}\n{ps}")
    return run, metrics, seen


def test_two_nodes_train_dp2_one_worker_each_and_save(straight):
    run, metrics, seen = straight
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4]
    assert _tracker(run.dir / "ckpt") == "4"
    assert (run.dir / "ckpt" / "iter_0000002").is_dir()
    # node 2's worker, seen from inside node 2: it sees its own processes only (its Ray)
    node2 = seen["node2"]
    assert len(_worker_lines(node2)) == 1
    assert "raylet" in node2 and "gcs_server" not in node2 and "train_dapo" not in node2
    assert "gcs_server" in seen["node1"] and "train_dapo" in seen["node1"]
    head = run.output(0)
    assert "waiting up to 300 s for 2 x cpu_slot on 2 node(s)" in head
    assert f"on nodes {run.nodes[0].ip}, {run.nodes[1].ip}" in head
    assert "stopped this node's Ray" in head and "stopped this node's Ray" in run.output(1)
    # the run log under logs/ holds what the script printed
    assert any("head" in p.name for p in (run.dir / "logs").glob("*.log"))


def test_restart_after_node_loss_resumes_and_matches_the_uninterrupted_run(shared, straight):
    root, paths = shared
    run_a, metrics_a, _ = straight
    run = TwoNodeRun(root, "b")
    ckpt = run.dir / "ckpt"
    start = time.monotonic()
    try:
        args = _overrides(
            paths, 4, f"actor_config.save={ckpt}", "megatron_training.save_interval=1",
            f"actor_config.load={run_a.dir / 'ckpt'}", "actor_config.ckpt_step=2",
            "actor_config.finetune=false", "--log-dir", str(run.dir / "metrics"), "--max-restarts", "1",
        )  # fmt: skip
        head = run.launch(0, args)
        run.launch(1, args)
        run.wait_for("iteration 3 saved", lambda: _tracker(ckpt) == "3"
                     and any(m["iteration"] == 3 for m in run.metrics()))  # fmt: skip
        run.nodes[1].kill()  # power loss of node 2 during iteration 4
        killed_at = time.monotonic()
        run.nodes[1].start()
        worker = run.launch(1, args)
        assert head.wait(timeout=900) == 0, run.output(0)
        finished = time.monotonic() - killed_at
        assert worker.wait(timeout=120) == 0, run.output(1)
        metrics = run.metrics()
    finally:
        run.close()
    print(f"\nrun B: {time.monotonic() - start:.0f} s, {finished:.0f} s from the kill to the end")
    log = run.output(0)
    print("\n".join(line for line in log.splitlines() if "restart" in line or "lost with" in line))
    assert "restart 1 of 1 after: node 10." in log and "resuming from" in log, log[-3000:]
    assert f"node {run.nodes[1].ip}" in log
    assert [m["iteration"] for m in metrics][-1] == 4
    for iteration in (3, 4):
        assert _compared(metrics, iteration) == _compared(metrics_a, iteration), iteration


def test_node_loss_ends_the_run_naming_the_node_and_keeps_the_checkpoint(shared, straight):
    from mindspeed_rl.checkpoint.training_state import load_trainer_state

    root, paths = shared
    run = TwoNodeRun(root, "c")
    ckpt = run.dir / "ckpt"
    try:
        args = _overrides(paths, 3, f"actor_config.save={ckpt}", "megatron_training.save_interval=1",
                          "--log-dir", str(run.dir / "metrics"))  # fmt: skip
        head = run.launch(0, args)
        run.launch(1, args)
        run.wait_for("iteration 1 saved", lambda: _tracker(ckpt) == "1")
        run.nodes[1].kill()
        killed_at = time.monotonic()
        status = head.wait(timeout=120)
        took = time.monotonic() - killed_at
        # the run's last processes (the launch script's tee) exit with it; the node's init
        # reaps them within moments: wait for that, bounded
        deadline = time.monotonic() + 15
        while True:
            node1_left = [
                line for line in run.nodes[0].ps().splitlines()[1:] if "ps -eo" not in line
            ]
            if len(node1_left) <= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        run.close()
    print(f"\nrun C: node 1 exited {status} {took:.1f} s after node 2 was killed")
    assert status != 0 and took < 60, (status, took)
    out = run.output(0)
    lines = [line for line in out.splitlines() if "lost with rank(s)" in line]
    print("\n".join(lines))
    assert len(lines) == 1 and f"node {run.nodes[1].ip} (Ray node " in lines[0], lines
    # the rank named is the one the run placed on node 2 (ranks go by Ray node id, so node 2
    # may hold rank 0 or 1)
    lost_node, ranks = re.search(
        r"\(Ray node (\w+)\) lost with rank\(s\) \[(\d+)\]", lines[0]
    ).groups()
    placed = {rank: (ip, node) for rank, ip, node in
              re.findall(r"rank (\d+) pid \d+ on (\S+) \(node (\w+)\)", out)}  # fmt: skip
    assert placed[ranks] == (run.nodes[1].ip, lost_node) and len(placed) == 2, (placed, lines)
    # only the node's init is left on node 1 (PID 1 of its namespace)
    assert len(node1_left) == 1 and node1_left[0].split()[0] == "1", node1_left
    assert _tracker(ckpt) == "1"
    assert load_trainer_state(ckpt, 1)["iteration"] == 1


def test_bounded_waits_and_a_wrong_token_fail_with_one_line_each(shared):
    """Three nodes, none of which can train: the head waits NODE_WAIT_S for devices that never
    come, node 2 looks for a head at an address where none runs, node 3 presents a wrong token.
    Each exits non-zero with one line naming what did not come, and stops the Ray it started."""
    root, paths = shared
    run = TwoNodeRun(root, "waits", nodes=3)
    wrong_head = f"{run.nodes.subnet}.99"
    try:
        args = _overrides(paths, 1)
        head = run.launch(0, args, NODE_WAIT_S="40")
        lost = run.launch(1, args, NODE_WAIT_S="40", MASTER_ADDR=wrong_head)
        run.wait_for("the head's token", lambda: (run.dir / "ray_token").exists())
        bad = run.launch(2, args, NODE_WAIT_S="40", RAY_AUTH_TOKEN="not-the-head-token")
        statuses = [proc.wait(timeout=900) for proc in (head, lost, bad)]
        left = {i: _worker_lines(run.nodes[i].ps()) for i in range(3)}
    finally:
        run.close()
    if statuses != [3, 2, 2]:
        for i in range(3):
            print(f"--- node {i + 1} exited {statuses[i]}:\n{run.output(i)[-3000:]}")
    assert statuses == [3, 2, 2], statuses
    assert "after 40 s only 1 of 2 x cpu_slot joined" in run.output(0)
    assert f"the head {wrong_head}:6766 did not answer in 40 s" in run.output(1)
    assert "refused this node's Ray token" in run.output(2)
    # the head stops the Ray it started; node 2 found no head and node 3 was refused by it, so
    # neither has a Ray running: for all three, nothing of the run is left
    assert "stopped this node's Ray" in run.output(0)
    assert not any(left.values())
