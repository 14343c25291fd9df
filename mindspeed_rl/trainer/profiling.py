"""The driver side of ``profiler``: which iterations are recorded, on which ranks.

``profiler.enable`` records iterations ``start_iteration``..``end_iteration`` (1-based, as in
the logs; clipped to the run) on the ranks in ``profiler.ranks``: one trace per rank under
``save_path``, written when the window closes (or when the run ends inside it). Everything the
iteration does on the rank is in it: generation, log-probs, update, weight sync.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mindspeed_rl.config.schema import ProfilerConfig

logger = logging.getLogger(__name__)


class IterationProfiler:
    def __init__(self, config: ProfilerConfig, workers, train_iters: int) -> None:
        # absolute: the workers do not share the driver's working directory
        self.config = config.model_copy(update={"save_path": str(Path(config.save_path).resolve())})
        self.workers = workers
        self.first = max(config.start_iteration, 1)
        self.last = min(config.end_iteration, train_iters)
        self.active = False

    def before(self, iteration: int) -> None:
        """Called before iteration ``iteration`` (1-based) runs."""
        if self.config.enable and not self.active and self.first <= iteration <= self.last:
            # a run resumed inside the window records what is left of it
            self.workers.call("start_profile", self.config, iteration, self.last)
            self.active = True

    def after(self, iteration: int) -> None:
        if self.active and iteration >= self.last:
            self.close()

    def close(self) -> None:
        if not self.active:
            return
        self.active = False
        paths = [p for p in self.workers.call("stop_profile") if p is not None]
        logger.info("profiler: wrote %s", ", ".join(paths) or "nothing (no rank in ranks)")
