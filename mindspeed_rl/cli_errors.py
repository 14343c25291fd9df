"""How the command-line entry points end on an error: one line on stderr and an exit status.

Exit status: 0 done; 1 the run failed (a worker died, training stopped with a diagnosis);
2 bad input (config, paths, data, checkpoints: the message names the file or key and what would
be valid, and nothing was left half-written); 130 interrupted by Ctrl-C (after the run's own
cleanup). Errors that are none of these are bugs and keep their traceback.

``MINDSPEED_RL_DEBUG=1`` in the environment (or ``--debug`` where a command has it) prints the
traceback before the line, for bug reports. This module imports nothing heavy: the commands
import it before their work starts.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "MINDSPEED_RL_DEBUG"

# (exception types, exit status, prefix of the message)
Handler = tuple[type[BaseException] | tuple[type[BaseException], ...], int, str]


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is emitted, not when the handler was made:
    a command called in-process after another (the tests) never logs into a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """INFO to stderr, once per process; handlers someone else installed are left alone."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def run_reporting_errors(
    prog: str,
    body: Callable[[], int],
    handlers: Sequence[Handler] | Callable[[], Sequence[Handler]],
    debug: bool = False,
) -> int:
    """``body()``, or the exit status of the first handler matching what it raised.

    Handlers are tried in order, so list subclasses before their bases. A callable is asked for
    them only after an error: a command can then name exception classes of modules it imports
    late (Ray's) without importing them on the paths that never need them (``--dry-run``). Ctrl-C is always one
    line and exit 130: ``body`` has unwound through its ``finally`` blocks by then (workers
    killed, Ray stopped), which is the clean stop the user asked for.
    """
    try:
        return body()
    except KeyboardInterrupt:
        return _report(prog, "interrupted", EXIT_INTERRUPTED, debug)
    except Exception as err:  # noqa: BLE001  (matched against the handlers, else re-raised)
        for types, status, prefix in handlers() if callable(handlers) else handlers:
            if isinstance(err, types):
                return _report(prog, f"{prefix}: {err}" if prefix else str(err), status, debug)
        raise


def print_config_error(prog: str, err) -> int:
    """A ``ConfigError``: one line for one problem, else a header and one line per problem."""
    problems = err.problems
    if len(problems) == 1:
        print(f"{prog}: invalid config: {problems[0]}", file=sys.stderr)
    else:
        print(f"{prog}: invalid config ({len(problems)} problems):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    return EXIT_INPUT


def _report(prog: str, message: str, status: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"{prog}: {message}", file=sys.stderr)
    return status
