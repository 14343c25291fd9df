"""Cost of the trainer's per-step host memory call: ``host_memory_metrics()`` (stats + purge).

    python benchmarks/bench_jemalloc.py [--steps 2000] [--freed-mib 64]

Re-executes itself with jemalloc preloaded (``preload_env()``, the long-run MALLOC_CONF) when it
is not already. Rows, each timed over many calls (median / p99 / max):

- baseline: reading RSS from /proc alone, the cheapest metric there is;
- the call without purge (stats only) and with purge when nothing was freed since the last step;
- the call with purge after ``--freed-mib`` MiB were freed since the last step (madvise work);
- refilling those MiB the next step (allocate + touch), after a step that purged vs. one that did
  not: the price of purging every step is paid here, in page faults.

Target: one stats + purge call < 5 ms. All arenas are in use first (threads allocate on each), so
the purge walks as many arenas as a busy worker has.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from mindspeed_rl.platform.jemalloc import active_jemalloc, host_memory_metrics, rss_bytes  # noqa: E402
from mindspeed_rl.platform.jemalloc_preload import preload_env  # noqa: E402

BUDGET_MS = 5.0
_REEXEC_MARK = "MINDSPEED_RL_BENCH_JEMALLOC_REEXEC"


def _timed(fn: Callable[[], object], steps: int) -> list[float]:
    """Milliseconds of each of ``steps`` calls of ``fn``."""
    out = []
    for _ in range(steps):
        start = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def _row(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print(
        f"{name:<52} median {statistics.median(ms):8.3f} ms  p99 {p99:8.3f} ms  "
        f"max {ms[-1]:8.3f} ms  (n={len(ms)})"
    )


def _use_all_arenas() -> None:
    """One thread per arena allocates and frees, so every arena exists and has been used."""
    narenas = active_jemalloc().read("opt.narenas", ctypes.c_uint)

    def work() -> None:
        blocks = [np.ones(1 << 14) for _ in range(64)]  # 64 x 128 KiB
        del blocks

    threads = [threading.Thread(target=work) for _ in range(narenas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="calls per cheap row")
    parser.add_argument("--freed-mib", type=int, default=64, help="MiB freed between two steps")
    args = parser.parse_args()

    if active_jemalloc() is None:
        if os.environ.get(_REEXEC_MARK):
            sys.exit("error: jemalloc still not active after re-executing with LD_PRELOAD")
        env = {**os.environ, **preload_env(), _REEXEC_MARK: "1"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    jemalloc = active_jemalloc()
    print(f"{jemalloc.describe()}, MALLOC_CONF={os.environ.get('MALLOC_CONF', '')!r}")
    _use_all_arenas()
    host_memory_metrics()

    _row("baseline: RSS from /proc/self/statm", _timed(rss_bytes, args.steps))
    _row("host_memory_metrics(purge=False)", _timed(lambda: host_memory_metrics(False), args.steps))
    idle = _timed(host_memory_metrics, args.steps)
    _row("host_memory_metrics() with nothing to purge", idle)

    blocks = args.freed_mib  # 1 MiB blocks: the arenas' size classes, not the oversize arena
    purge_ms, refill_after_purge, refill_after_keep = [], [], []
    for purge in (True, False):
        for _ in range(30):
            start = time.perf_counter_ns()
            held = [np.ones(1 << 17) for _ in range(blocks)]
            refill = (time.perf_counter_ns() - start) / 1e6
            (refill_after_purge if purge else refill_after_keep).append(refill)
            del held
            start = time.perf_counter_ns()
            host_memory_metrics(purge=purge)
            if purge:
                purge_ms.append((time.perf_counter_ns() - start) / 1e6)
    _row(f"host_memory_metrics() after freeing {blocks} MiB", purge_ms)
    _row(f"next step's refill of {blocks} MiB, previous step purged", refill_after_purge[1:])
    _row(f"next step's refill of {blocks} MiB, previous step kept", refill_after_keep[1:])

    worst = max(statistics.median(idle), statistics.median(purge_ms))
    verdict = "within" if worst < BUDGET_MS else "OVER"
    print(f"stats + purge median {worst:.3f} ms: {verdict} the {BUDGET_MS} ms budget")


if __name__ == "__main__":
    main()
