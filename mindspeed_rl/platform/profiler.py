"""A profiler for this platform: ``torch_npu.profiler`` on Ascend NPUs, ``torch.profiler``
elsewhere (CPU activities, plus CUDA on GPUs).

Both write a trace that TensorBoard's profiler plugin and Perfetto (ui.perfetto.dev) open:
torch_npu through its ``tensorboard_trace_handler`` into ``save_dir`` (the layout MindStudio
Insight reads), torch as one Chrome-trace JSON per call of :meth:`PlatformProfiler.stop`.
"""

from __future__ import annotations

from pathlib import Path

from mindspeed_rl.platform.device import device_type


class PlatformProfiler:
    """Started and stopped explicitly (the window spans several calls into the worker)."""

    def __init__(self, save_dir: str | Path, name: str, with_memory: bool) -> None:
        self.save_dir = Path(save_dir)
        self.name = name  # file stem: tells ranks and iteration windows apart
        self.save_dir.mkdir(parents=True, exist_ok=True)
        kind = device_type()
        if kind == "npu":
            import torch_npu

            prof = torch_npu.profiler
            activities = [prof.ProfilerActivity.CPU, prof.ProfilerActivity.NPU]
            handler = prof.tensorboard_trace_handler(str(self.save_dir), worker_name=name)
            self._profile = prof.profile(
                activities=activities, profile_memory=with_memory, record_shapes=with_memory,
                on_trace_ready=handler,
            )  # fmt: skip
            self._exports_itself = True
        else:
            import torch

            activities = [torch.profiler.ProfilerActivity.CPU]
            if kind == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profile = torch.profiler.profile(
                activities=activities, profile_memory=with_memory, record_shapes=with_memory
            )
            self._exports_itself = False

    def start(self) -> None:
        self._profile.start()

    def stop(self) -> Path:
        """Stop and write the trace; returns the file (or, on NPU, the directory) written."""
        self._profile.stop()
        if self._exports_itself:
            return self.save_dir
        path = self.save_dir / f"{self.name}.pt.trace.json"
        self._profile.export_chrome_trace(str(path))
        return path
