"""The worker side of ``profiler``: rank-local start / stop around the iterations the driver
chooses (``trainer/profiling.py``). A mixin, so the worker classes stay about their own work."""

from __future__ import annotations

from mindspeed_rl.config.schema import ProfilerConfig


class ProfilingMixin:
    """Needs ``self.rank``. Every rank is called; ranks not in ``profiler.ranks`` do nothing."""

    rank: int
    _profiler = None

    def start_profile(self, config: ProfilerConfig, first: int, last: int) -> bool:
        """Start recording iterations ``first``..``last``; True on a profiled rank."""
        from mindspeed_rl.platform.profiler import PlatformProfiler

        if self.rank not in config.ranks or self._profiler is not None:
            return False
        name = f"rank{self.rank}_iter{first}-{last}"
        self._profiler = PlatformProfiler(config.save_path, name, config.with_memory)
        self._profiler.start()
        return True

    def stop_profile(self) -> str | None:
        """Stop and write the trace; its path on a profiled rank, else None."""
        if self._profiler is None:
            return None
        profiler, self._profiler = self._profiler, None
        return str(profiler.stop())


def with_profiling(worker_cls: type) -> type:
    """``worker_cls`` with the profiling methods, under its own name (Ray titles the worker
    processes ``ray::<name>``)."""
    return type(worker_cls.__name__, (ProfilingMixin, worker_cls), {"__module__": __name__})
