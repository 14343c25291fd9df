"""Print the bash lines that make jemalloc the malloc of every process a launch script starts.

    eval "$(python cli/jemalloc_env.py)"        # in a launch script, before `ray start`

prints, e.g. on Debian / Ubuntu x86_64:

    export LD_PRELOAD=/lib/x86_64-linux-gnu/libjemalloc.so.2
    export MALLOC_CONF=background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:0

Other entries of an exported LD_PRELOAD are kept; an exported MALLOC_CONF is kept unless
--malloc-conf is given. Before printing, a Python child is started with these variables to check
that jemalloc really serves its malloc and accepts MALLOC_CONF. The library is searched in the
ldconfig cache and the usual directories of Debian / Ubuntu / openEuler / CentOS on x86_64 and
aarch64; MINDSPEED_RL_JEMALLOC_PATH overrides the search (docs/memory.md).

Exit status 0: the lines are on stdout, one summary line on stderr. Exit status 1: the reason and
the install command for this distribution are on stderr and stdout is the single command `false`,
so that `eval "$(python cli/jemalloc_env.py)"` fails too (under `set -e` the script stops).
With --optional a missing jemalloc (never a wrong MINDSPEED_RL_JEMALLOC_PATH) prints a warning,
nothing on stdout, and exits 0: for scripts that also run on CPU-only development machines.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from mindspeed_rl.platform.jemalloc_preload import (  # noqa: E402
    JEMALLOC_PATH_ENV,
    LONG_RUN_MALLOC_CONF,
    JemallocNotFoundError,
    preload_env,
    shell_exports,
    verify_preload,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Print `export LD_PRELOAD=... MALLOC_CONF=...` lines that preload jemalloc.",
        epilog=f"Override the library search with {JEMALLOC_PATH_ENV}=/path/libjemalloc.so.2.",
    )
    parser.add_argument(
        "--malloc-conf",
        default=None,
        help="MALLOC_CONF to export (default: an exported MALLOC_CONF, else "
        f"{LONG_RUN_MALLOC_CONF}; '' for jemalloc's built-in defaults)",
    )
    parser.add_argument(
        "--optional",
        action="store_true",
        help="when jemalloc is not installed, warn and exit 0 with nothing to eval",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        env_vars = preload_env(malloc_conf=args.malloc_conf)
        verify_preload(env_vars)
    except JemallocNotFoundError as err:
        if args.optional and not os.environ.get(JEMALLOC_PATH_ENV):
            print(f"warning: running without jemalloc: {err}", file=sys.stderr)
            return 0
        return _fail(str(err))
    except ValueError as err:
        return _fail(str(err))
    sys.stdout.write(shell_exports(env_vars))
    print(
        f"jemalloc: LD_PRELOAD={env_vars['LD_PRELOAD']} MALLOC_CONF={env_vars['MALLOC_CONF']}",
        file=sys.stderr,
    )
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    print("false")  # makes `eval "$(python cli/jemalloc_env.py)"` fail as well
    return 1


if __name__ == "__main__":
    sys.exit(main())
