"""profiler: the chosen iterations on the chosen ranks, a trace file per rank (no Ray here; the
end-to-end run in test_dapo_e2e.py profiles one iteration through the real workers)."""

import json

import torch

from mindspeed_rl.config.schema import ProfilerConfig
from mindspeed_rl.platform.profiler import PlatformProfiler
from mindspeed_rl.trainer.profiling import IterationProfiler
from mindspeed_rl.workers.profiling import ProfilingMixin


def test_cpu_profiler_writes_a_chrome_trace_with_the_ops(tmp_path):
    profiler = PlatformProfiler(tmp_path / "traces", "rank0_iter1-1", with_memory=True)
    profiler.start()
    torch.ones(64, 64) @ torch.ones(64, 64)
    path = profiler.stop()
    assert path == tmp_path / "traces" / "rank0_iter1-1.pt.trace.json"
    events = json.loads(path.read_text())["traceEvents"]
    assert any(e.get("name") == "aten::mm" for e in events)
    assert any(e.get("name") == "[memory]" for e in events)  # with_memory


class _Worker(ProfilingMixin):
    def __init__(self, rank):
        self.rank = rank


class _Workers:
    """WorkerGroup.call over in-process workers, recording the calls."""

    def __init__(self, ranks):
        self.workers = [_Worker(r) for r in ranks]
        self.calls = []

    def call(self, method, *args):
        self.calls.append(method)
        return [getattr(w, method)(*args) for w in self.workers]


def _run(config, iterations, start_at=1, ranks=(0, 1)):
    workers = _Workers(ranks)
    profiler = IterationProfiler(config, workers, train_iters=iterations)
    timeline = []
    for i in range(start_at, iterations + 1):
        profiler.before(i)
        timeline.append((i, profiler.active))
        profiler.after(i)
    profiler.close()
    return timeline, workers.calls


def test_the_window_and_the_ranks(tmp_path):
    config = ProfilerConfig(enable=True, save_path=str(tmp_path), ranks=[1], start_iteration=2,
                            end_iteration=3)  # fmt: skip
    timeline, calls = _run(config, 5)
    assert [i for i, active in timeline if active] == [2, 3]
    assert calls == ["start_profile", "stop_profile"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank1_iter2-3.pt.trace.json"]


def test_resumed_inside_the_window_and_ended_inside_it(tmp_path):
    config = ProfilerConfig(enable=True, save_path=str(tmp_path), ranks=[0], start_iteration=2,
                            end_iteration=9)  # fmt: skip
    timeline, calls = _run(config, 4, start_at=3)
    assert [i for i, active in timeline if active] == [3, 4]
    assert calls == ["start_profile", "stop_profile"]
    assert [p.name for p in tmp_path.iterdir()] == ["rank0_iter3-4.pt.trace.json"]


def test_disabled_profiler_calls_nothing(tmp_path):
    timeline, calls = _run(ProfilerConfig(save_path=str(tmp_path)), 3)
    assert calls == [] and not any(active for _, active in timeline)
    assert list(tmp_path.iterdir()) == []
