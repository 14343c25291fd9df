"""jemalloc's ``mallctl`` through ctypes: is it this process's malloc, its statistics, purge, and
the per-step host memory metrics of the trainer.

jemalloc keeps freed pages ("dirty") for ``dirty_decay_ms`` before it returns them to the kernel,
so resident memory lags behind what the program holds. ``host_memory_metrics`` purges every
arena first (an ``madvise`` per dirty extent, nothing when there is nothing to purge) and then
reports, so the numbers logged each step are what the process really needs, and memory freed
between two steps goes back at once instead of piling up across actors on a host. How jemalloc
gets into the process: ``mindspeed_rl.platform.jemalloc_preload`` and docs/memory.md.

Nothing here loads jemalloc: it only finds a jemalloc that the dynamic loader already bound as the
process's malloc, so on a process without it every function is a cheap no-op and never crashes.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass

logger = logging.getLogger(__name__)

# jemalloc.h: MALLCTL_ARENAS_ALL, the arena index that means "every arena" in arena.<i>.* names.
MALLCTL_ARENAS_ALL = 4096
_PURGE_ALL = f"arena.{MALLCTL_ARENAS_ALL}.purge".encode()
_GIB = float(1 << 30)
# Size of the malloc() made to check that jemalloc counts the process's own malloc calls; a small
# size class, so the probe never maps memory.
_PROBE_BYTES = 4096
_FIX_HINT = (
    'start the processes after `eval "$(python cli/jemalloc_env.py)"` (before `ray start`) or '
    "give Ray workers runtime_env={'env_vars': "
    "mindspeed_rl.platform.jemalloc_preload.ray_runtime_env_vars()}; see docs/memory.md"
)


@dataclass(frozen=True)
class JemallocStats:
    """jemalloc's global statistics in bytes, as of the last epoch refresh.

    allocated <= active <= resident: bytes the program holds; bytes of the pages holding them;
    pages jemalloc has touched and not returned (active + dirty + its metadata, an upper bound of
    its share of RSS). mapped: virtual memory of active extents; retained: virtual memory given
    back to the kernel but kept mapped for reuse (costs no RSS); metadata: jemalloc's own.
    """

    allocated: int
    active: int
    resident: int
    mapped: int
    retained: int
    metadata: int


_STAT_NAMES = tuple(JemallocStats.__dataclass_fields__)


class Jemalloc:
    """Calls into the jemalloc that serves this process's malloc; get one from
    ``active_jemalloc()``, which checks that it does."""

    def __init__(self, mallctl: Callable[..., int]) -> None:
        # int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
        mallctl.argtypes = [
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.c_void_p,
            ctypes.c_size_t,
        ]
        mallctl.restype = ctypes.c_int
        self._mallctl = mallctl
        self._epoch = ctypes.c_uint64(1)

    def _ctl(self, name: bytes, oldp, oldlenp, newp, newlen: int) -> None:
        err = self._mallctl(name, oldp, oldlenp, newp, newlen)
        if err:
            raise RuntimeError(f"mallctl({name.decode()!r}) failed: {os.strerror(err)}")

    def read(self, name: str, ctype: type = ctypes.c_size_t) -> int | bool | bytes:
        """The value of a mallctl name, e.g. ``read("opt.narenas", ctypes.c_uint)``."""
        value = ctype()
        size = ctypes.c_size_t(ctypes.sizeof(value))
        self._ctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0)
        return value.value

    def refresh(self) -> None:
        """Advance the stats epoch: jemalloc's stats.* are snapshots taken at the last refresh."""
        self._ctl(b"epoch", None, None, ctypes.byref(self._epoch), ctypes.sizeof(self._epoch))

    def stats(self) -> JemallocStats:
        """Refresh, then read the global statistics."""
        self.refresh()
        return JemallocStats(**{name: self.read(f"stats.{name}") for name in _STAT_NAMES})

    def purge(self) -> None:
        """Return the dirty pages of every arena to the kernel now (``arena.<all>.purge``)."""
        self._ctl(_PURGE_ALL, None, None, None, 0)

    def describe(self) -> str:
        """Version and the settings that decide how fast freed memory goes back, for one log
        line: background thread on/off, dirty / muzzy decay of new arenas, arena count."""
        version = self.read("version", ctypes.c_char_p).decode().split("-")[0]
        return (
            f"jemalloc {version} (background_thread={self.read('background_thread', ctypes.c_bool)}"
            f", dirty_decay_ms={self.read('arenas.dirty_decay_ms', ctypes.c_ssize_t)}"
            f", muzzy_decay_ms={self.read('arenas.muzzy_decay_ms', ctypes.c_ssize_t)}"
            f", narenas={self.read('arenas.narenas', ctypes.c_uint)})"
        )


def _probe_active() -> Jemalloc | None:
    """A ``Jemalloc`` when jemalloc serves this process's malloc(), else None.

    Looked up in the process's global symbol scope, where malloc() calls resolve: a jemalloc
    loaded with RTLD_LOCAL is not there. Being there is not enough either (loaded with
    RTLD_GLOBAL after libc, it exports mallctl while glibc still serves malloc), so one malloc()
    through the process's own symbol must show up in jemalloc's per-thread byte counter.
    """
    process = ctypes.CDLL(None)
    try:
        mallctl = process.mallctl
    except AttributeError:
        return None
    jemalloc = Jemalloc(mallctl)
    malloc, free = process.malloc, process.free
    malloc.argtypes, malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    free.argtypes, free.restype = [ctypes.c_void_p], None
    try:
        before = jemalloc.read("thread.allocated", ctypes.c_uint64)
        pointer = malloc(_PROBE_BYTES)
        after = jemalloc.read("thread.allocated", ctypes.c_uint64)
        free(pointer)
    except RuntimeError as err:  # ENOENT: a jemalloc built without --enable-stats
        logger.warning("jemalloc found but unusable for host memory metrics: %s", err)
        return None
    return jemalloc if after - before >= _PROBE_BYTES else None


@functools.cache
def active_jemalloc() -> Jemalloc | None:
    """The jemalloc serving this process's malloc, or None (checked once: the allocator of a
    process is fixed when it starts)."""
    return _probe_active()


def is_active() -> bool:
    """Whether jemalloc is this process's malloc (not merely loaded)."""
    return active_jemalloc() is not None


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int | None:
    """Resident set size of this process from /proc/self/statm (None where there is no procfs)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except OSError:
        return None


def host_memory_metrics(purge: bool = True) -> dict[str, float]:
    """Host memory of this process for the trainer's per-step metrics, in GiB (2**30 bytes).

    With ``purge`` (the default) the dirty pages of every arena go back to the kernel first and
    ``host_mem/jemalloc_purged_gb`` says how much that released (it can come out slightly
    negative when other threads allocate meanwhile). Keys: ``host_mem/rss_gb``,
    ``host_mem/jemalloc_active`` (1.0 / 0.0) and, when jemalloc is active,
    ``host_mem/jemalloc_{allocated,active,resident,mapped,retained,metadata}_gb``. Costs tens of
    microseconds plus the ``madvise`` calls of what there is to purge (benchmarks/bench_jemalloc.py).
    """
    metrics: dict[str, float] = {}
    rss = rss_bytes()
    jemalloc = active_jemalloc()
    metrics["host_mem/jemalloc_active"] = float(jemalloc is not None)
    if jemalloc is not None:
        if purge:
            jemalloc.refresh()
            resident_before = jemalloc.read("stats.resident")
            jemalloc.purge()
        stats = jemalloc.stats()
        for name, value in asdict(stats).items():
            metrics[f"host_mem/jemalloc_{name}_gb"] = value / _GIB
        if purge:
            metrics["host_mem/jemalloc_purged_gb"] = (resident_before - stats.resident) / _GIB
        rss = rss_bytes()  # after the purge
    if rss is not None:
        metrics["host_mem/rss_gb"] = rss / _GIB
    return metrics


_warned = False


def check_host_allocator(device: str | None = None) -> bool:
    """Log which allocator serves this process, as a warning (once per process) on an NPU / GPU
    host without jemalloc, where long runs grow host memory until they are killed. Returns
    ``is_active()``.

    ``device`` is 'npu' | 'cuda' | 'cpu'; None asks ``mindspeed_rl.platform.device``. Call it once
    in the driver and in each worker at start-up.
    """
    global _warned
    jemalloc = active_jemalloc()
    if jemalloc is not None:
        logger.info("host allocator: %s", jemalloc.describe())
        return True
    if device is None:
        from mindspeed_rl.platform.device import device_type  # lazy: imports torch

        device = device_type()
    if device == "cpu":
        logger.info("host allocator: glibc malloc (jemalloc not preloaded; fine on CPU)")
    elif not _warned:
        _warned = True
        logger.warning(
            "jemalloc is not the malloc of this process (pid %d on %s, device %s): host memory of "
            "long runs grows until the process is killed. To fix, %s.",
            os.getpid(),
            socket.gethostname(),
            device,
            _FIX_HINT,
        )
    return False
