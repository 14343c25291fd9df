"""The quickstart's picture of a run: accuracy and response length per iteration (matplotlib).

Drawn from the run's history (the rows ``metrics.jsonl`` holds), written next to it as a PNG:

- top: the rollout's accuracy per iteration (all generated samples, dynamic-sampling rounds
  included) and the held-out sampled accuracy where the run validated;
- bottom: mean and longest response per iteration, with the overlong buffer's start and
  ``rollout_max_tokens`` drawn in, so a policy that drifts into the penalty shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def _series(history: Sequence[Mapping[str, float]], key: str) -> tuple[list[int], list[float]]:
    rows = [h for h in history if key in h]
    return [int(h["iteration"]) for h in rows], [float(h[key]) for h in rows]


def length_trend(history: Sequence[Mapping[str, float]], parts: int = 4) -> list[tuple[int, float]]:
    """Mean response length over ``parts`` equal spans of the iterations: (last iteration, mean)."""
    iterations, lengths = _series(history, "response_length/mean")
    if not lengths:
        return []
    size = max(1, -(-len(lengths) // parts))
    return [
        (
            iterations[min(i + size, len(lengths)) - 1],
            sum(lengths[i : i + size]) / len(lengths[i : i + size]),
        )
        for i in range(0, len(lengths), size)
    ]


def plot_run(
    history: Sequence[Mapping[str, float]],
    path: str | Path,
    rollout_max_tokens: int,
    overlong_buffer: int | None = None,
    title: str = "",
) -> Path:
    """Write the two-panel PNG to ``path`` (written to a temporary name, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    from matplotlib import pyplot as plt

    path = Path(path)
    fig, (acc_ax, len_ax) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    x, acc = _series(history, "rollout/acc")
    acc_ax.plot(x, acc, color="tab:blue", alpha=0.6, label="rollout accuracy (training samples)")
    vx, vacc = _series(history, "val/acc")
    acc_ax.plot(vx, vacc, "o-", color="tab:red", label="held-out sampled accuracy")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1)
    acc_ax.grid(alpha=0.3)
    acc_ax.legend(loc="upper left", fontsize=8)
    if title:
        acc_ax.set_title(title, fontsize=10)
    x, mean = _series(history, "response_length/mean")
    len_ax.plot(x, mean, color="tab:green", label="mean response")
    x, longest = _series(history, "response_length/max")
    len_ax.plot(x, longest, color="tab:olive", alpha=0.6, label="longest response")
    len_ax.axhline(rollout_max_tokens, color="black", linestyle="--", linewidth=1,
                   label=f"rollout_max_tokens ({rollout_max_tokens})")  # fmt: skip
    if overlong_buffer:
        start = rollout_max_tokens - overlong_buffer
        len_ax.axhline(start, color="gray", linestyle=":", linewidth=1,
                       label=f"overlong penalty starts ({start})")  # fmt: skip
    len_ax.set_ylabel("tokens")
    len_ax.set_xlabel("iteration")
    len_ax.set_ylim(0, rollout_max_tokens * 1.45)  # room for the legend above the cap
    len_ax.grid(alpha=0.3)
    len_ax.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fig.savefig(partial, format="png", dpi=110)
    plt.close(fig)
    partial.replace(path)
    return path
