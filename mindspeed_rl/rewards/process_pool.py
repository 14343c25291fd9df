"""Verifier calls in worker processes, each call under a wall-clock deadline.

Why processes: a Python thread cannot be stopped, and ``signal.alarm`` works only on the main
thread of the main interpreter, which a Ray actor's method or a background thread is not. A worker
that overruns the deadline is killed and replaced; its call is reported as a time-out and the rest
of its chunk runs again. A worker that dies (segfault, ``os._exit``, the OOM killer) costs only the
call it was running, reported as an error.

The workers are ``python -m mindspeed_rl.rewards.verifier_worker`` processes connected by a socket
pair (see that module for the protocol). They are not ``multiprocessing`` children: ``spawn``
re-runs the parent's ``__main__`` in every child (a driver script without a main guard fails,
Ray's worker module gets re-imported) and ``fork`` copies threads and device contexts.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from mindspeed_rl.rewards.verifier import VerifierFn
from mindspeed_rl.rewards.verifier_worker import (
    ERROR,
    PROGRESS_BYTES,
    READY,
    TIMEOUT,
    CallOutcome,
    failed,
)

logger = logging.getLogger(__name__)

_CHUNKS_PER_WORKER = 4  # several chunks per worker keep every worker busy until the end
_MAX_CHUNK = 256
_START_TIMEOUT_S = 120.0  # a worker imports Python and this package; slow on a loaded host
_STOP_TIMEOUT_S = 2.0


@dataclass
class _Worker:
    process: subprocess.Popen
    conn: Connection
    page: mmap.mmap
    progress: memoryview  # float64 [start time of the running call (monotonic), its chunk index]
    chunk: list[int] | None = None  # indices of the tasks it is working on


def _stop(worker: _Worker, graceful: bool) -> None:
    if graceful:
        try:
            worker.conn.send(None)
            worker.process.wait(_STOP_TIMEOUT_S)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            logger.debug(
                "verifier worker %d did not stop by itself; killing it", worker.process.pid
            )
    if worker.process.poll() is None:
        worker.process.kill()
        worker.process.wait()
    worker.conn.close()
    worker.progress.release()
    worker.page.close()


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        _stop(worker, graceful=True)
    workers.clear()


class BoundedProcessPool:
    """A persistent pool of verifier processes with a per-call deadline.

    Args:
        verifiers: name -> module-level verifier function (pickled by reference into workers).
        num_workers: processes to run (``rl_config.verifier_parallel``).
        timeout_s: wall-clock bound of one call (``rl_config.verifier_timeout``).

    ``run`` may be called from any thread, one call at a time (a lock enforces it). Use as a
    context manager or call ``close``; workers also stop when the pool is garbage-collected and
    exit by themselves when this process dies.
    """

    def __init__(
        self, verifiers: Mapping[str, VerifierFn], num_workers: int, timeout_s: float
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._verifiers = dict(verifiers)
        self._timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)
        self.restarts = 0  # workers replaced after a time-out or a crash, over the pool's life
        self._workers.extend(self._launch() for _ in range(num_workers))
        for worker in self._workers:
            self._await_ready(worker)

    @property
    def num_workers(self) -> int:
        return len(self._workers)

    def _launch(self) -> _Worker:
        ours, theirs = socket.socketpair()
        with tempfile.TemporaryFile() as backing:  # unlinked: shared by fd only
            backing.truncate(PROGRESS_BYTES)
            page = mmap.mmap(backing.fileno(), PROGRESS_BYTES)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mindspeed_rl.rewards.verifier_worker",
                    str(theirs.fileno()),
                    str(backing.fileno()),
                ],
                pass_fds=(theirs.fileno(), backing.fileno()),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        theirs.close()
        conn = Connection(ours.detach())
        conn.send(self._verifiers)
        return _Worker(process, conn, page, memoryview(page).cast("d"))

    def _await_ready(self, worker: _Worker) -> None:
        ready = False
        try:
            ready = worker.conn.poll(_START_TIMEOUT_S) and worker.conn.recv() == READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            code = worker.process.poll()
            raise RuntimeError(
                f"a verifier worker process did not start within {_START_TIMEOUT_S:.0f} s "
                f"(exit code {code}); its stderr above says why (often: a verifier function "
                "that cannot be imported by module and name, such as a lambda or a closure)"
            )

    def _replace(self, worker: _Worker) -> _Worker:
        _stop(worker, graceful=False)
        fresh = self._launch()
        self._workers[self._workers.index(worker)] = fresh
        self._await_ready(fresh)
        self.restarts += 1
        return fresh

    def run(self, tasks: Sequence[tuple[str, str, str]]) -> list[CallOutcome]:
        """Outcomes of ``(verifier name, response, ground truth)`` calls, in order."""
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("BoundedProcessPool.run called after close()")
            return self._run(tasks)

    def _run(self, tasks: Sequence[tuple[str, str, str]]) -> list[CallOutcome]:
        outcomes: list[CallOutcome | None] = [None] * len(tasks)
        size = math.ceil(len(tasks) / (self.num_workers * _CHUNKS_PER_WORKER))
        size = max(1, min(_MAX_CHUNK, size))
        pending = deque(
            list(range(start, min(start + size, len(tasks))))
            for start in range(0, len(tasks), size)
        )
        idle = list(self._workers)
        busy: list[_Worker] = []
        while pending or busy:
            while pending and idle:
                busy.append(self._dispatch(idle.pop(), pending.popleft(), tasks))
            deadline = min(w.progress[0] for w in busy) + self._timeout_s
            readable = wait([w.conn for w in busy], timeout=max(0.0, deadline - time.monotonic()))
            for worker in list(busy):
                overdue = time.monotonic() - worker.progress[0] > self._timeout_s
                if worker.conn in readable or overdue:
                    busy.remove(worker)
                    idle.append(self._settle(worker, outcomes, pending))
        assert all(o is not None for o in outcomes), "every task gets exactly one outcome"
        return outcomes  # type: ignore[return-value]

    def _dispatch(
        self, worker: _Worker, chunk: list[int], tasks: Sequence[tuple[str, str, str]]
    ) -> _Worker:
        """Send a chunk to a worker; one that died while idle is replaced first."""
        payload = [tasks[i] for i in chunk]
        try:
            worker.progress[0] = time.monotonic()
            worker.progress[1] = -1
            worker.conn.send(payload)
        except OSError:  # it died between calls (e.g. killed for memory): no call is to blame
            logger.warning("verifier worker %d died while idle; replacing it", worker.process.pid)
            worker = self._replace(worker)
            worker.progress[0] = time.monotonic()
            worker.progress[1] = -1
            worker.conn.send(payload)
        worker.chunk = chunk
        return worker

    def _settle(
        self, worker: _Worker, outcomes: list[CallOutcome | None], pending: deque[list[int]]
    ) -> _Worker:
        """Collect a finished chunk, or settle a dead / overdue worker; return a usable worker."""
        chunk = worker.chunk
        assert chunk is not None, "only busy workers are settled"
        worker.chunk = None
        results = None
        died = False
        try:
            if worker.conn.poll():
                results = worker.conn.recv()
        except (EOFError, OSError):
            died = True  # the socket reads as closed: the process exited or is exiting
        if results is not None:
            for task_index, outcome in zip(chunk, results, strict=True):
                outcomes[task_index] = CallOutcome._make(outcome)
            return worker
        # Dead or overdue. Kill it first, then read its progress, which is now stable. The worker
        # writes the start time before the index, so one killed between the two writes blames the
        # call that had just finished late: the one that overran.
        worker.process.kill()
        worker.process.wait()
        running = max(0, int(worker.progress[1]))
        if died:
            code = worker.process.returncode
            outcome = failed(ERROR, f"verifier worker process died (exit code {code})")
        else:
            elapsed = time.monotonic() - worker.progress[0]
            outcome = failed(
                TIMEOUT, f"no result after {elapsed:.2f} s (limit {self._timeout_s} s)"
            )
        outcomes[chunk[running]] = outcome
        retry = chunk[:running] + chunk[running + 1 :]
        if retry:
            pending.appendleft(retry)
        logger.warning(
            "verifier call %s: %s; worker replaced, %d other calls of its chunk rerun",
            outcome.status,
            outcome.error,
            len(retry),
        )
        return self._replace(worker)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self._finalizer()

    def __enter__(self) -> BoundedProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
