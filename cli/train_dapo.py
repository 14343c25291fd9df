"""Train a model with DAPO.

    python cli/train_dapo.py --config-name dapo_qwen25_32b_A3 [section.key=value ...] [--dry-run]

Without ``--dry-run`` it joins the Ray cluster named by ``RAY_ADDRESS`` (examples/dapo/*.sh start
one and set it) or starts a local one of its own (docs/multi_node.md), and trains; a failed
worker ends the run with exit code 1 and names the rank.
``--dry-run`` validates the config (every problem at once), prints the resolved YAML and the run
plan, and exits 0, or prints the problems and exits 2. It never starts Ray or touches a device.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindspeed_rl.config.validation import ConfigError  # noqa: E402
from mindspeed_rl.trainer.config_entry import load_run_config, print_dry_run  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config-name", required=True, help="configs/<NAME>.yaml, or a .yaml path")
    parser.add_argument("--config-path", default=None, help="directory holding the configs")
    parser.add_argument("--dry-run", action="store_true", help="validate, print, exit")
    parser.add_argument("--log-dir", default=None, help="metrics.jsonl and TensorBoard events")
    parser.add_argument("overrides", nargs="*", help="section.key=value (YAML-typed values)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_run_config(args.config_name, args.config_path, args.overrides)
    except ConfigError as err:
        print(f"invalid config ({len(err.problems)} problem(s)):", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if args.dry_run:
        print_dry_run(config)
        return 0
    from mindspeed_rl.trainer.launch import run_training
    from mindspeed_rl.workers.group import WorkerError

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("megatron").setLevel(logging.WARNING)
    try:
        run_training(config, log_dir=args.log_dir)
    except WorkerError as err:
        print(f"training failed: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # a path, checkpoint or data problem found before training
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
