"""The CPU quickstart (README's first command): a tiny model learns a synthetic math task by DAPO.

    python cli/quickstart.py [--workdir outputs/quickstart] [section.key=value ...]

Builds a tiny Qwen2-style model and tokenizer locally, warm-starts it, converts it to Megatron-core
with the real converter, preprocesses the task with the real pipeline, runs DAPO on 2 CPU workers
(configs/quickstart_cpu.yaml), prints held-out sampled accuracy before and after and the trend of
the response length, and plots both per iteration (logs/quickstart.png).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindspeed_rl.algorithms.dynamic_sampling import DynamicSamplingError  # noqa: E402
from mindspeed_rl.cli_errors import (  # noqa: E402
    EXIT_FAILED,
    EXIT_INPUT,
    configure_logging,
    debug_enabled,
    print_config_error,
    run_reporting_errors,
)
from mindspeed_rl.config.validation import ConfigError  # noqa: E402
from mindspeed_rl.quickstart.pipeline import run_quickstart  # noqa: E402
from mindspeed_rl.quickstart.plot import length_trend  # noqa: E402
from mindspeed_rl.workers.group import WorkerError, WorkerInputError  # noqa: E402

PROG = "quickstart"
# subclasses before their bases: WorkerInputError is a ValueError too
HANDLERS = [
    (WorkerInputError, EXIT_INPUT, "error"),
    (WorkerError, EXIT_FAILED, "training failed"),
    (DynamicSamplingError, EXIT_FAILED, "training stopped"),
    ((ValueError, OSError), EXIT_INPUT, "error"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--workdir", default="outputs/quickstart", help="where everything is written"
    )
    parser.add_argument("--warm-steps", type=int, default=400, help="supervised warm-start steps")
    parser.add_argument(
        "overrides", nargs="*", help="section.key=value on configs/quickstart_cpu.yaml"
    )
    parser.add_argument("--debug", action="store_true", help="print tracebacks of errors too")
    args = parser.parse_args(argv)
    configure_logging()
    logging.getLogger("megatron").setLevel(logging.WARNING)

    def run() -> int:
        try:
            result = run_quickstart(args.workdir, args.overrides, warm_steps=args.warm_steps)
        except ConfigError as err:
            return print_config_error(PROG, err)
        print(
            f"held-out sampled accuracy ({result.validation_prompts} prompts): "
            f"before {result.accuracy_before:.3f} -> after {result.accuracy_after:.3f} "
            f"({(result.accuracy_after - result.accuracy_before) * 100:+.1f} points) "
            f"in {result.seconds:.0f} s"
        )
        trend = " -> ".join(
            f"{mean:.1f} (to iter {it})" for it, mean in length_trend(result.history)
        )
        print(f"mean response length, tokens: {trend}")
        print(f"plot of accuracy and response length per iteration: {result.plot}")
        return 0

    return run_reporting_errors(PROG, run, HANDLERS, debug_enabled(args.debug))


if __name__ == "__main__":
    sys.exit(main())
