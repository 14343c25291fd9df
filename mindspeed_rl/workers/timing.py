"""Wall-clock seconds per named phase (the driver's iteration phases, a worker's model compute)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Add the seconds since the previous lap (or since creation) to ``name``: the phases of
        a straight-line sequence such as a worker's set-up."""
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def metrics(self, prefix: str = "timing/") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in self.seconds.items()}

    def pop(self) -> dict[str, float]:
        seconds, self.seconds = self.seconds, {}
        return seconds
