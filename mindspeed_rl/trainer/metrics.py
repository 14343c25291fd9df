"""Where metrics go: one summary line per iteration on stdout, TensorBoard and wandb when asked.

Metric names are ``group/name``; docs/dapo.md lists them with the DAPO knob each one watches.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path

SUMMARY_KEYS = (
    ("val/acc", "val_acc", "{:.3f}"),
    ("rollout/acc", "acc", "{:.3f}"),
    ("rollout/score_mean", "score", "{:+.3f}"),
    ("actor/pg_loss", "pg_loss", "{:+.4f}"),
    ("actor/pg_clipfrac", "clipfrac", "{:.3f}"),
    ("actor/entropy", "entropy", "{:.3f}"),
    ("actor/grad_norm", "grad_norm", "{:.3f}"),
    ("actor/kl", "kl", "{:.2e}"),  # only with a KL term
    ("rewards/kl", "reward_kl", "{:.2e}"),
    ("actor/kl_coef", "kl_coef", "{:.2e}"),
    ("response_length/mean", "resp_len", "{:.1f}"),
    ("batch/real_token_share", "real_tok", "{:.2f}"),
    ("batch/dp_imbalance", "dp_imb", "{:.2f}"),
    ("dynamic_sampling/num_gen_batches", "gen_batches", "{:.0f}"),
    ("timing/total", "time", "{:.1f}s"),
    ("throughput/e2e_tokens_per_s_per_device", "tok/s/dev", "{:.1f}"),
)


class MetricsSink:
    """stdout summary (every ``log_interval`` iterations), JSON lines, TensorBoard, wandb."""

    def __init__(
        self,
        log_dir: str | None,
        log_interval: int = 1,
        use_tensorboard: bool = False,
        use_wandb: bool = False,
        wandb_project: str | None = None,
        wandb_exp_name: str | None = None,
        config: Mapping | None = None,
    ) -> None:
        self.log_interval = log_interval
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self._jsonl = open(Path(log_dir) / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ValueError(
                    "rl_config.use_tensorboard: true needs the tensorboard package: "
                    "pip install 'mindspeed_rl[tensorboard]' (or set use_tensorboard: false)"
                ) from err

            self._tb = SummaryWriter(log_dir=str(Path(log_dir or ".") / "tensorboard"))
        if use_wandb:
            try:
                import wandb
            except ImportError as err:
                raise ValueError(
                    "rl_config.use_wandb: true needs the wandb package: pip install wandb"
                ) from err

            self._wandb = wandb.init(project=wandb_project, name=wandb_exp_name, config=config)

    def log(self, iteration: int, metrics: Mapping[str, float]) -> str:
        line = summary_line(iteration, metrics)
        if iteration % self.log_interval == 0:
            print(line, flush=True)
        if self._jsonl is not None:
            # wall-clock seconds since the epoch: time-to-accuracy and throughput across a run
            record = {"iteration": iteration, "time": time.time(), **metrics}
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, iteration)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=iteration)
        return line

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def summary_line(iteration: int, metrics: Mapping[str, float]) -> str:
    parts = [f"iter {iteration}"]
    for key, label, fmt in SUMMARY_KEYS:
        if key in metrics:
            parts.append(f"{label} {fmt.format(metrics[key])}")
    return " | ".join(parts)


def non_finite(metrics: Mapping[str, float]) -> list[str]:
    return [k for k, v in metrics.items() if not math.isfinite(v)]
