"""Preprocess a dataset file into Megatron indexed datasets for DAPO training.

    python cli/preprocess_data.py math_17k                      # configs/datasets/math_17k.yaml
    python cli/preprocess_data.py my.yaml input=/data/x.parquet workers=16

The first argument is a name under configs/datasets/ or a YAML path; ``key=value`` arguments
override YAML keys (values parsed as YAML). Keys and output files: docs/data.md. Exit status:
0 on success, 2 on a configuration or input error (one message on stderr, no output written).
"""

from __future__ import annotations

import argparse
import logging
import sys

from mindspeed_rl.data.preprocess import preprocess_dataset
from mindspeed_rl.data.preprocess_config import load_preprocess_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="preprocess_data",
        description="Preprocess a parquet/json/jsonl dataset into Megatron indexed datasets.",
    )
    parser.add_argument("config", help="name under configs/datasets/ (e.g. math_17k) or YAML path")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override YAML keys")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        config = load_preprocess_config(args.config, args.overrides)
        preprocess_dataset(config)
    except ValueError as exc:
        print(f"preprocess_data: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
