"""One verifier call made safe, and the worker process that makes such calls for ``process_pool``.

``call_verifier`` turns anything a verifier does short of hanging or killing its process into an
outcome: an exception or a malformed result is an ``error``. The worker (``python -m
mindspeed_rl.rewards.verifier_worker CONN_FD PROGRESS_FD``) is started by ``BoundedProcessPool``:

1. it receives the verifier functions, pickled by reference (module and qualified name),
2. then chunks of ``(verifier name, response, ground truth)``, answering each chunk with its
   outcomes in one message,
3. and before each call writes the call's start time and index into a shared two-double page,
   which is how the parent times calls without any message traffic.

The worker is a plain ``python -m`` process, not a ``multiprocessing`` child, so it never re-runs
the parent's ``__main__`` (a driver script, or Ray's worker module inside an actor).
"""

from __future__ import annotations

import math
import mmap
import os
import sys
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import NamedTuple

from mindspeed_rl.rewards.verifier import VerifierFn

# Outcome statuses.
OK = "ok"
ERROR = "error"
TIMEOUT = "timeout"

MAX_PRED_CHARS = 1024  # a verifier's `pred` is for logs; never ship megabytes back
MAX_ERROR_CHARS = 300
PROGRESS_BYTES = 16  # two float64: [start time of the running call (monotonic), its chunk index]
READY = "ready"
_ORPHAN_CHECK_S = 1.0


class CallOutcome(NamedTuple):
    """What one verifier call produced, flat so that chunks of them pickle fast (plain tuples on
    the wire: a nested NamedTuple costs ~100x more to pickle).

    ``status`` is ``ok``, ``error`` or ``timeout``; ``score`` / ``acc`` / ``pred`` are the
    verifier's result when ok (score NaN otherwise), ``error`` says what went wrong.
    """

    status: str
    score: float
    acc: bool
    pred: str
    error: str


def failed(status: str, error: str) -> CallOutcome:
    return CallOutcome(status, math.nan, False, "", error)


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose __str__ raises is still reported, by its type
        text = type(exc).__name__
    return text[:MAX_ERROR_CHARS]


def call_verifier(fn: VerifierFn, response: str, ground_truth: str) -> CallOutcome:
    """Run one verifier call; an exception or a malformed result becomes an ``error`` outcome."""
    try:
        result = fn(response, ground_truth)
        score = float(result.score)
        if not math.isfinite(score):
            raise ValueError(f"verifier returned a non-finite score {score}")
        outcome = CallOutcome(OK, score, bool(result.acc), str(result.pred)[:MAX_PRED_CHARS], "")
    except Exception as exc:  # model text must never crash the step: report, score as wrong
        return failed(ERROR, _describe(exc))
    return outcome


def serve(conn: Connection, progress: memoryview) -> None:
    """Worker loop: verifiers first, then chunks until ``None`` or the parent goes away."""
    verifiers: Mapping[str, VerifierFn] = conn.recv()
    conn.send(READY)
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        outcomes = []
        for index, (name, response, ground_truth) in enumerate(chunk):
            # Start time first, then index: see BoundedProcessPool._settle.
            progress[0] = time.monotonic()
            progress[1] = index
            outcomes.append(tuple(call_verifier(verifiers[name], response, ground_truth)))
        conn.send(outcomes)


def _exit_when_orphaned(parent_pid: int) -> None:
    """A worker whose parent died mid-call would otherwise finish a hanging call on its own."""
    while os.getppid() == parent_pid:
        time.sleep(_ORPHAN_CHECK_S)
    os._exit(1)


def main(argv: list[str]) -> None:
    conn_fd, progress_fd = int(argv[0]), int(argv[1])
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    page = mmap.mmap(progress_fd, PROGRESS_BYTES)
    progress = memoryview(page).cast("d")
    serve(Connection(conn_fd), progress)


if __name__ == "__main__":
    main(sys.argv[1:])
