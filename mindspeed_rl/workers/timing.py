"""Wall-clock seconds per named phase (the driver's iteration phases, a worker's model compute)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

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
