"""Train a model with DAPO.

    python cli/train_dapo.py --config-name dapo_qwen25_32b_A3 [section.key=value ...] [--dry-run]
        [--max-restarts N]

Without ``--dry-run`` it joins the Ray cluster named by ``RAY_ADDRESS`` (examples/dapo/*.sh start
one and set it) or starts a local one of its own (docs/multi_node.md), and trains. ``--dry-run``
validates the config (every problem at once), prints the resolved YAML and the run plan, and exits
0, or prints the problems and exits 2. It never starts Ray or touches a device. The rules that
depend on the platform (rollout engine, attention backend) are those of this host; ``--platform
npu`` checks a config for an Ascend run from a CPU box (docs/coming_from_mindspeed_rl.md).

``--max-restarts N`` (or ``rl_config.max_restarts``): after a worker or node failure, wait (up to
10 min) until the cluster has the run's devices again and resume from the last complete
checkpoint under ``actor_config.save``, at most N times; each restart is logged with its cause.

Exit status: 0 trained; 1 the run failed (a worker died, naming the rank, or dynamic sampling
stopped with its diagnosis); 2 bad input (config, paths, data, a checkpoint that does not fit:
one line naming the file or key); 130 Ctrl-C (workers stopped). ``--debug`` or
``MINDSPEED_RL_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindspeed_rl.cli_errors import (  # noqa: E402
    EXIT_FAILED,
    EXIT_INPUT,
    configure_logging,
    debug_enabled,
    print_config_error,
    run_reporting_errors,
)
from mindspeed_rl.config.validation import ConfigError  # noqa: E402
from mindspeed_rl.trainer.config_entry import (  # noqa: E402
    PLATFORMS,
    host_platform,
    load_run_config,
    print_dry_run,
)

PROG = "train_dapo"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config-name", required=True, help="configs/<NAME>.yaml, or a .yaml path")
    parser.add_argument("--config-path", default=None, help="directory holding the configs")
    parser.add_argument("--dry-run", action="store_true", help="validate, print, exit")
    parser.add_argument(
        "--platform", choices=PLATFORMS, default=None,
        help="with --dry-run: check the platform rules of this platform (default: this host's)",
    )  # fmt: skip
    parser.add_argument("--log-dir", default=None, help="metrics.jsonl and TensorBoard events")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of errors too")
    parser.add_argument(
        "--max-restarts", type=int, default=None, metavar="N",
        help="after a worker or node failure, wait for the devices and resume from the last\n"
        "complete checkpoint, at most N times (default: rl_config.max_restarts)",
    )  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="section.key=value (YAML-typed values)")
    args = parser.parse_args(argv)
    if args.max_restarts is not None and args.max_restarts < 0:
        parser.error(f"--max-restarts {args.max_restarts}: expected 0 or more")
    return args


def _train(args: argparse.Namespace) -> int:
    if args.platform is not None and not args.dry_run:
        print(
            f"{PROG}: --platform applies to --dry-run only; a run uses this host's", file=sys.stderr
        )
        return EXIT_INPUT
    host = host_platform()
    # a run that joins a cluster (RAY_ADDRESS) runs on that cluster's devices, which may not be
    # this host's (a CPU head node): the workers apply the platform rules there
    joins = not args.dry_run and os.environ.get("RAY_ADDRESS")
    platform = args.platform or (None if joins else host)
    try:
        config = load_run_config(args.config_name, args.config_path, args.overrides, platform)
    except ConfigError as err:
        status = print_config_error(PROG, err)
        if (
            platform == "cpu"
            and args.platform is None
            and any("[platform: cpu]" in p.message for p in err.problems)
        ):
            print(f"{PROG}: checked for this CPU host; --platform npu (or cuda) checks the config "
                  "for the accelerator it is meant for", file=sys.stderr)  # fmt: skip
        return status
    if args.dry_run:
        print_dry_run(config, platform)
        return 0
    from mindspeed_rl.trainer.restart import run_with_restarts

    configure_logging()
    for level, message in config.notices:
        logging.getLogger(PROG).log(logging.getLevelName(level.upper()), message)
    logging.getLogger("megatron").setLevel(logging.WARNING)
    restarts = config.rl_config.max_restarts if args.max_restarts is None else args.max_restarts
    run_with_restarts(config, args.log_dir, restarts)
    return 0


def _handlers() -> list:
    """Error classes of the modules the run got as far as importing (so --dry-run loads none)."""
    handlers = []
    if "mindspeed_rl.workers.group" in sys.modules:
        from mindspeed_rl.workers.group import WorkerError, WorkerInputError

        handlers += [(WorkerInputError, EXIT_INPUT, "error"),  # before ValueError: it is one
                     (WorkerError, EXIT_FAILED, "training failed")]  # fmt: skip
    if "mindspeed_rl.algorithms.dynamic_sampling" in sys.modules:
        from mindspeed_rl.algorithms.dynamic_sampling import DynamicSamplingError

        handlers.append((DynamicSamplingError, EXIT_FAILED, "training stopped"))
    # a path, checkpoint or data problem found before training
    return [*handlers, ((ValueError, OSError), EXIT_INPUT, "error")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_reporting_errors(PROG, lambda: _train(args), _handlers, debug_enabled(args.debug))


if __name__ == "__main__":
    sys.exit(main())
