"""Seconds per DAPO iteration, tokens/s, and the share of time outside model compute.

    python benchmarks/bench_dapo_iteration.py [--iterations 12]

The quickstart config (tiny Qwen2-style model, 2 CPU workers, filter groups on), its assets built
by the quickstart pipeline. Model compute = time inside model code on the slowest worker per phase
(generation, old log-probs, forward/backward/step); orchestration = everything else of the
iteration (Ray calls and transfers, padding and batch building, rewards, weight sync). Goal:
orchestration <= 15% of the iteration.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindspeed_rl.quickstart.pipeline import CONFIG_NAME, prepare_assets  # noqa: E402
from mindspeed_rl.trainer.config_entry import load_run_config  # noqa: E402
from mindspeed_rl.trainer.launch import run_training  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        base = load_run_config(CONFIG_NAME)
        paths = prepare_assets(Path(tmp), base.model, problems=960, warm_steps=150, seed=0)
        config = load_run_config(
            CONFIG_NAME,
            overrides=[
                f"megatron_training.tokenizer_name_or_path={paths['hf']}",
                f"megatron_training.data_path={paths['data']}",
                f"actor_config.load={paths['mcore']}",
                f"megatron_training.train_iters={args.iterations}",
                "rl_config.validate_before_train=false",
                "rl_config.validation_interval=0",
                *args.overrides,
            ],
        )
        history = run_training(config).history[2:]  # the first iterations warm caches up

    def med(key: str) -> float:
        return statistics.median(h.get(key, 0.0) for h in history)

    print(f"iterations measured: {len(history)} (after 2 warm-up iterations)")
    print(f"seconds / iteration            {med('timing/total'):.3f}")
    print(f"e2e tokens / s / device        {med('throughput/e2e_tokens_per_s_per_device'):.0f}")
    for phase in ("gen", "reward", "old_log_prob", "update", "sync"):
        print(f"  timing/{phase:13s} {med('timing/' + phase):.3f} s"
              f"   compute/{phase}: {med('compute/' + phase):.3f} s")  # fmt: skip
    share = med("timing/orchestration_share")
    print(f"orchestration share (median)   {share * 100:.1f}%  (goal <= 15%)")


if __name__ == "__main__":
    main()
