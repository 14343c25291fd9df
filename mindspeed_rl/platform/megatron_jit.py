"""megatron-core's JIT fuser off on CPU, set before any of its modules is decorated.

``megatron.core.jit`` sets ``jit_fuser = torch.compile`` at import, and a dozen megatron-core
modules (activations, norms, attention, MoE router and dispatcher, the fusions) apply it as a
decorator while they are imported. Each decoration calls ``torch.compile``, which imports
TorchDynamo and Inductor: about 1.8 s of the 2.7 s that ``import megatron.core`` takes on the CI
box, paid by the driver and by every worker before its first step. On CPU nothing of it is
wanted: the decorated functions are small elementwise fusions, Inductor's CPU code generation
would need a C++ toolchain on first call, and the eager functions compute the same values.
megatron-core's own switch, ``disable_jit_fuser()``, only acts on modules imported after it, so
it has to run the moment ``megatron.core.jit`` has executed: a one-shot import hook does that.
On accelerators the hook leaves the fuser as megatron-core sets it (TE / MindSpeed paths).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_MODULE = "megatron.core.jit"


def _on_cpu() -> bool:
    from mindspeed_rl.platform.device import device_type

    return device_type() == "cpu"


class _DisableOnCpu(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)  # one shot: the real finder locates the module
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            # torch is imported by now (megatron.core.jit imports it): asking for the device
            # costs nothing more
            if hasattr(module, "disable_jit_fuser") and _on_cpu():
                module.disable_jit_fuser()

        spec.loader.exec_module = exec_module
        return spec


def install() -> bool:
    """Install the hook unless megatron-core's fuser is already set; True if installed."""
    if _MODULE in sys.modules or any(isinstance(f, _DisableOnCpu) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _DisableOnCpu())
    return True
