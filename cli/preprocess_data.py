"""Preprocess a dataset file into Megatron indexed datasets for DAPO training.

    python cli/preprocess_data.py math_17k                      # configs/datasets/math_17k.yaml
    python cli/preprocess_data.py my.yaml input=/data/x.parquet workers=16

The first argument is a name under configs/datasets/ or a YAML path; ``key=value`` arguments
override YAML keys (values parsed as YAML). Keys and output files: docs/data.md. Exit status:
0 on success, 2 on a configuration or input error (one message on stderr, no output written),
130 on Ctrl-C (no output written). ``--debug`` or ``MINDSPEED_RL_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys

from mindspeed_rl.cli_errors import (
    EXIT_INPUT,
    configure_logging,
    debug_enabled,
    run_reporting_errors,
)
from mindspeed_rl.data.preprocess import preprocess_dataset
from mindspeed_rl.data.preprocess_config import load_preprocess_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="preprocess_data",
        description="Preprocess a parquet/json/jsonl dataset into Megatron indexed datasets.",
    )
    parser.add_argument("config", help="name under configs/datasets/ (e.g. math_17k) or YAML path")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override YAML keys")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of errors too")
    args = parser.parse_args(argv)
    configure_logging()

    def run() -> int:
        preprocess_dataset(load_preprocess_config(args.config, args.overrides))
        return 0

    # OSError: what the checks could not foresee (a disk that fills up), still one line
    handlers = [((ValueError, OSError), EXIT_INPUT, "error")]
    return run_reporting_errors("preprocess_data", run, handlers, debug_enabled(args.debug))


if __name__ == "__main__":
    sys.exit(main())
