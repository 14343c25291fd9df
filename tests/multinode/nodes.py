"""N namespaced "nodes" on one Linux host: real network boundaries for multi-node tests.

A node is its own network namespace (an IPv4 address on a veth link to a private switch, a default
route through it), PID namespace (it sees only its own processes: a by-name kill stays inside it),
mount namespace with its own ``/tmp`` and ``/dev/shm`` (tmpfs) and UTS namespace (own hostname).
The rest of the filesystem is shared, as a cluster's shared storage is: put the project, the model
and the data outside ``/tmp`` (e.g. under ``/var/tmp``).

Needs root and ``ip`` (iproute2) and ``unshare``/``nsenter`` (util-linux). By hand::

    sudo python -m tests.multinode.nodes 2          # prints each node's IP and how to enter it;
                                                    # Ctrl-C removes everything
    sudo nsenter --target <init pid> --net --pid --mount --uts bash   # a shell "on" the node

In a test::

    with NamespacedNodes(2) as nodes:
        proc = nodes[1].popen(["bash", "examples/dapo/dapo_trainer_qwen25_32b.sh", ...])
        nodes[1].kill()       # power loss: every process of node 2 dies at once
        nodes[1].start()      # the node comes back (same address, empty /tmp)

Everything created (namespaces, links, processes) is removed by ``close()`` (also at exit).
Addresses come from 10.213.<k>.0/24 and exist only inside the namespaces made here.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

SUBNET = "10.213"
IFNAME = "veth0"  # the node's interface, as SOCKET_IFNAME names it

# PID 1 of a node: reaps orphans (Ray's daemons get re-parented to it), lives until killed
_INIT = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.5)
"""
# run by the node's init before anything: its own /tmp, /dev/shm and hostname
_SETUP = "mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /dev/shm && hostname {host} && exec {py} -c '{init}'"


class NamespaceError(RuntimeError):
    """Namespaces could not be made here (not root, no iproute2, a sandbox without them)."""


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NamespaceError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def check_support() -> None:
    """Raise NamespaceError with the reason when this host cannot make namespaced nodes."""
    if os.geteuid() != 0:
        raise NamespaceError("namespaced nodes need root (ip netns, unshare)")
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"),
                          ("nsenter", "util-linux"), ("ps", "procps")):  # fmt: skip
        if shutil.which(tool) is None:
            raise NamespaceError(f"`{tool}` not found: install {package}")
    probe = f"msrlprobe{uuid.uuid4().hex[:6]}"
    _run("ip", "netns", "add", probe)  # a sandbox without CAP_SYS_ADMIN fails here
    try:
        _run("ip", "netns", "exec", probe, "unshare", "--pid", "--fork", "--mount", "--uts",
             "--mount-proc", "true")  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)


class Node:
    """One namespaced node; ``index`` 0 is the first node (the master in the launch scripts)."""

    def __init__(self, cluster: NamespacedNodes, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.netns = f"{cluster.prefix}-n{index + 1}"
        self.ip = f"{cluster.subnet}.{index + 1}"
        self.hostname = f"node{index + 1}"
        self.ifname = IFNAME
        self.init: subprocess.Popen | None = None
        self.pid_ns: str | None = None
        self.mnt_ns: str | None = None

    def start(self) -> None:
        """Start the node's PID 1 (a fresh PID/mount/UTS namespace in its network namespace)."""
        init = _SETUP.format(host=self.hostname, py=sys.executable, init=_INIT)
        self.init = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--pid", "--fork", "--kill-child",
             "--mount", "--uts", "--mount-proc", "--propagation", "private", "sh", "-c", init],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        line = self.init.stdout.readline()
        if line.strip() != "ready":
            raise NamespaceError(
                f"{self.hostname} did not start: {self.init.stderr.read().strip()}"
            )
        init = self.init_pid()
        self.pid_ns = os.readlink(f"/proc/{init}/ns/pid")
        self.mnt_ns = os.readlink(f"/proc/{init}/ns/mnt")
        self.cluster.mount_namespaces.add(self.mnt_ns)
        # its /dev/shm and /tmp are its own tmpfs: nothing it writes there reaches the host's
        for path in ("/dev/shm", "/tmp"):
            if os.stat(f"/proc/{init}/root{path}").st_dev == os.stat(path).st_dev:
                raise NamespaceError(f"{self.hostname}: {path} is the host's, not its own tmpfs")

    def init_pid(self) -> int:
        """The host pid of the node's PID 1 (unshare's only child)."""
        children = Path(f"/proc/{self.init.pid}/task/{self.init.pid}/children").read_text().split()
        if not children:
            raise NamespaceError(f"{self.hostname}: its init is gone")
        return int(children[0])

    def enter(self, cwd: str | os.PathLike | None = None) -> list[str]:
        """The command prefix that runs a command on this node (in ``cwd``: entering the mount
        namespace would otherwise move it to the node's root)."""
        wd = [f"--wd={cwd}"] if cwd is not None else []
        pid = str(self.init_pid())
        return ["nsenter", "--target", pid, "--net", "--pid", "--mount", "--uts", *wd, "--"]

    def popen(self, cmd: list[str], cwd=None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen([*self.enter(cwd), *cmd], **kwargs)

    def run(self, cmd: list[str], cwd=None, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run([*self.enter(cwd), *cmd], **kwargs)

    def host_pids(self) -> list[int]:
        """Host pids of every live process of this node (its PID namespace)."""
        if self.pid_ns is None:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/pid") == self.pid_ns:
                        pids.append(int(entry))
                except OSError:
                    continue
        return sorted(pids)

    def ps(self) -> str:
        """``ps`` as seen from inside the node."""
        return self.run(["ps", "-eo", "pid,ppid,args", "--width", "200"]).stdout

    def kill(self, wait_s: float = 30.0) -> None:
        """Power loss: SIGKILL the node's PID 1, which takes every process of the node with it."""
        if self.init is None:
            return
        try:
            os.kill(self.init_pid(), signal.SIGKILL)
        except (NamespaceError, ProcessLookupError, FileNotFoundError):
            pass
        try:
            self.init.kill()
        except ProcessLookupError:
            pass
        self.init.wait(timeout=wait_s)
        deadline = time.monotonic() + wait_s
        while self.host_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.host_pids()
        if left:
            raise NamespaceError(f"{self.hostname}: processes {left} survived its PID 1")
        self.init = None
        self.pid_ns = None


class NamespacedNodes:
    """``n`` nodes on a private /24 joined by a bridge in a switch namespace of their own."""

    def __init__(self, n: int) -> None:
        check_support()
        tag = uuid.uuid4().hex[:6]
        self.prefix = f"msrl{tag}"
        # a subnet per instance: two harnesses (e.g. two CI jobs) never share addresses
        self.subnet = f"{SUBNET}.{int(tag[:2], 16)}"
        self.switch = f"{self.prefix}-sw"
        self.nodes = [Node(self, i) for i in range(n)]
        self.mount_namespaces: set[str] = set()  # every node's, restarts included
        self._closed = False
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        _run("ip", "netns", "add", self.switch)
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for node in self.nodes:
            _run("ip", "netns", "add", node.netns)
            port = f"p{node.index + 1}"
            # both ends are created inside their namespaces: nothing appears on the host
            _run("ip", "link", "add", IFNAME, "netns", node.netns, "type", "veth", "peer", "name",
                 port, "netns", self.switch)  # fmt: skip
            _run("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
            _run("ip", "-n", node.netns, "addr", "add", f"{node.ip}/24", "dev", IFNAME)
            _run("ip", "-n", node.netns, "link", "set", IFNAME, "up")
            _run("ip", "-n", node.netns, "link", "set", "lo", "up")
            _run("ip", "-n", node.netns, "route", "add", "default", "dev", IFNAME)
        for node in self.nodes:
            node.start()

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def __enter__(self) -> NamespacedNodes:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def netns_names(self) -> list[str]:
        return [self.switch, *(n.netns for n in self.nodes)]

    def close(self) -> None:
        """Kill every node's processes, then delete the namespaces (and with them the links)."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for node in self.nodes:
            try:
                node.kill()
            except (NamespaceError, subprocess.TimeoutExpired) as err:
                errors.append(str(err))
        existing = set(leftover_namespaces(self.prefix))
        for name in self.netns_names():
            if name in existing:
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
        left = leftover_namespaces(self.prefix)
        if left or errors:
            raise NamespaceError(f"left behind: namespaces {left}; {'; '.join(errors)}")


def held_namespaces(names: set[str], kind: str) -> list[int]:
    """Host pids of processes in any of the namespaces ``names`` (``kind``: pid, mnt, net)."""
    held = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/{kind}") in names:
                    held.append(int(entry))
            except OSError:
                continue
    return held


def leftover_namespaces(prefix: str = "msrl") -> list[str]:
    """Network namespaces whose name starts with ``prefix`` (the harness names all of its own so)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def _main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with NamespacedNodes(n) as nodes:
        for node in nodes.nodes:
            print(f"{node.hostname}: ip {node.ip} on {node.ifname}, netns {node.netns}; enter with")
            print(f"  nsenter --target {node.init_pid()} --net --pid --mount --uts bash")
        print("Ctrl-C removes the nodes and everything running on them", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    _main()
