"""Kills what a local Ray cluster leaves behind when its driver dies without ``ray.shutdown()``.

Run by path (stdlib only, so it needs no importable package) by ``ray_cluster.start_local``::

    python ray_reaper.py PID [PID ...]      # the cluster's own processes (GCS, raylet, ...)

Why: Ray ties GCS and raylet to the driver (PR_SET_PDEATHSIG), but the raylet's children
``DashboardAgent`` and ``RuntimeEnvAgent`` notice the raylet's death and then block ~60 s trying to
report it to the dead GCS; after a SIGKILL of the trainer they outlive it. This process records,
once a second, the given processes and all their descendants; when its stdin reaches EOF (the
driver is gone, however it died) it SIGKILLs every recorded process that still runs, checked by
start time so that a reused pid is never hit. A clean shutdown writes ``stop`` first: nothing is
killed. Linux only (``/proc``); elsewhere it is not started.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (after the parenthesised command, which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def snapshot(roots: list[int]) -> dict[int, int]:
    """{pid: start time} of ``roots`` and all their descendants that run now."""
    tree, found, todo = _children(), {}, list(roots)
    while todo:
        pid = todo.pop()
        start = _start_time(pid)
        if start is None or pid in found:
            continue
        found[pid] = start
        todo.extend(tree.get(pid, []))
    return found


def kill(recorded: dict[int, int]) -> list[int]:
    """SIGKILL each recorded process that still runs with the recorded start time."""
    killed = []
    for pid, start in recorded.items():
        if _start_time(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
    return killed


def main(argv: list[str]) -> int:
    roots = [int(p) for p in argv]
    recorded: dict[int, int] = {}
    while True:
        # forget what has exited (its pid may be reused), add what has started
        recorded = {p: s for p, s in recorded.items() if _start_time(p) == s}
        recorded.update(snapshot(roots))
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
        if ready:
            line = sys.stdin.readline()
            if line.strip() == "stop":
                return 0
            if not line:  # EOF: the driver died
                time.sleep(0.5)  # let Ray's own fate sharing act first
                kill(recorded)
                return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the run must not stop the reaper
    sys.exit(main(sys.argv[1:]))
