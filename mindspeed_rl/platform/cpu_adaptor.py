"""Run megatron-core, unmodified, on a machine without an accelerator.

megatron-core assumes CUDA in a handful of places (measured on 0.12.3 and 0.16.1 with torch 2.13):

* ``torch.cuda.current_device()`` and ``device='cuda'`` in factory calls (rotary embedding,
  optimizer scale tensors, grad buffers, schedules' token counters);
* the CUDA RNG tracker of ``tensor_parallel.random`` (``_get_cuda_rng_state``,
  ``_set_cuda_rng_state``, ``torch.cuda.manual_seed``);
* string checks such as ``param.grad.type() == 'torch.cuda.FloatTensor'`` (clip_grads, the
  distributed and float16 optimizers);
* on 0.16.1, ``moe_utils.te_general_gemm`` referenced without Transformer Engine.

This is the job ``torch_npu.contrib.transfer_to_npu`` and MindSpeed do for NPUs. Unlike them, the
adaptor is *scoped*: it never patches ``torch`` itself, because the Hugging Face rollout engine runs
in the same process and must see the real torch (wrapping torch's factory functions globally was
measured to corrupt transformers' rotary ``inv_freq`` at load time). Instead:

1. every ``megatron.*`` module, already imported or imported later (an import hook), gets a
   ``torch`` global that is a view of the real torch whose ``cuda`` attribute maps device calls to
   the CPU and whose factory functions turn ``device='cuda'`` into the CPU;
2. the RNG tracker's state accessors act on the CPU generator, which *is* the device generator of a
   CPU process, so ``model_parallel_cuda_manual_seed`` keeps its meaning;
3. Megatron functions whose bytecode mentions CUDA (``x.cuda()``, ``'torch.cuda.FloatTensor'``)
   run with ``Tensor.cuda()`` returning the CPU tensor and ``Tensor.type()`` reporting CPU tensors
   under their CUDA names -- on the calling thread, inside those functions only;
4. symbols that are missing or broken without Transformer Engine are defined or replaced (0.16.1's
   ``te_general_gemm``; 0.12.x's FP8 shard quantizer, which raises even with no FP8 parameter).

``install()`` refuses to run when an accelerator is present. Tests check that a transformers model
gives bit-identical logits with and without the adaptor (tests/platform/test_cpu_adaptor.py).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import torch

_MEGATRON_PREFIX = "megatron."
_CPU = torch.device("cpu")
_FACTORIES = (
    "arange", "as_tensor", "empty", "empty_like", "empty_strided", "eye", "full", "full_like",
    "linspace", "ones", "ones_like", "rand", "rand_like", "randint", "randn", "randn_like",
    "randperm", "tensor", "zeros", "zeros_like",
)  # fmt: skip
_installed = False
_tls = threading.local()


def _to_cpu_device(device: Any) -> Any:
    """'cuda', 'cuda:1', 0, torch.device('cuda') -> cpu; anything else unchanged."""
    if isinstance(device, int) and not isinstance(device, bool):
        return _CPU
    if isinstance(device, str) and device.split(":")[0] == "cuda":
        return _CPU
    if isinstance(device, torch.device) and device.type == "cuda":
        return _CPU
    return device


def _cpu_factory(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def factory(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _to_cpu_device(kwargs["device"])
        return fn(*args, **kwargs)

    return factory


class _NullStream:
    """Stands in for torch.cuda.Stream / Event: CPU work is synchronous."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, other) -> None:
        pass

    def wait_event(self, event) -> None:
        pass

    def record_event(self, event=None):
        return _NullStream()

    def record(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


def _cpu_rng_state(device: Any = "cuda", *args, **kwargs) -> torch.Tensor:
    return torch.get_rng_state()


def _set_cpu_rng_state(new_state: torch.Tensor, *args, **kwargs) -> None:
    torch.set_rng_state(new_state)


def _build_cuda_view() -> types.SimpleNamespace:
    """What ``torch.cuda`` looks like to Megatron on a CPU host."""
    random_ns = types.SimpleNamespace(
        get_rng_state=_cpu_rng_state, set_rng_state=_set_cpu_rng_state
    )
    view = types.SimpleNamespace(
        current_device=lambda: _CPU,
        device_count=lambda: 1,
        is_available=lambda: False,
        synchronize=lambda *a, **k: None,
        empty_cache=lambda: None,
        ipc_collect=lambda: None,
        set_device=lambda *a, **k: None,
        get_rng_state=_cpu_rng_state,
        set_rng_state=_set_cpu_rng_state,
        manual_seed=lambda seed: torch.manual_seed(seed),
        manual_seed_all=lambda seed: torch.manual_seed(seed),
        default_generators=(torch.default_generator,),
        random=random_ns,
        Stream=_NullStream,
        Event=_NullStream,
        stream=lambda *a, **k: contextlib.nullcontext(),
        device=lambda *a, **k: contextlib.nullcontext(),
        default_stream=lambda *a, **k: _NullStream(),
        current_stream=lambda *a, **k: _NullStream(),
        memory_allocated=lambda *a, **k: 0,
        max_memory_allocated=lambda *a, **k: 0,
        memory_reserved=lambda *a, **k: 0,
        max_memory_reserved=lambda *a, **k: 0,
        reset_peak_memory_stats=lambda *a, **k: None,
        amp=torch.cuda.amp,
        nvtx=torch.cuda.nvtx,
    )
    return view


class _TorchView(types.ModuleType):
    """The ``torch`` that Megatron modules see: the real one, but for ``cuda`` and factories."""

    def __init__(self) -> None:
        super().__init__("torch", torch.__doc__)
        self.__dict__["cuda"] = _build_cuda_view()
        for name in _FACTORIES:
            self.__dict__[name] = _cpu_factory(getattr(torch, name))

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


_TORCH_VIEW: _TorchView | None = None


# --- tensor methods: .type() string checks and .cuda() -------------------------------------
# Megatron compares ``tensor.type()`` with 'torch.cuda.FloatTensor' and calls ``tensor.cuda()``.
# Those are methods, which no module-level view can intercept, so the two methods are replaced
# once with versions that behave exactly like torch's own unless the calling thread is inside a
# Megatron function that mentions CUDA (a thread-local depth counter set by the wrappers below).

_original_tensor_type = torch.Tensor.type
_original_tensor_cuda = torch.Tensor.cuda


def _in_megatron() -> bool:
    return getattr(_tls, "megatron_depth", 0) > 0


def _tensor_type(self, dtype=None, non_blocking=False, **kwargs):
    result = _original_tensor_type(self, dtype, non_blocking, **kwargs)
    if dtype is None and _in_megatron() and self.device.type == "cpu":
        return result.replace("torch.", "torch.cuda.", 1)
    return result


def _tensor_cuda(self, device=None, non_blocking=False, **kwargs):
    if _in_megatron():
        return self
    return _original_tensor_cuda(self, device, non_blocking, **kwargs)


def _in_megatron_context(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _tls.megatron_depth = getattr(_tls, "megatron_depth", 0) + 1
        try:
            return fn(*args, **kwargs)
        finally:
            _tls.megatron_depth -= 1

    wrapper.__mindspeed_rl_cpu_wrapped__ = True
    return wrapper


def _mentions_cuda(code: types.CodeType) -> bool:
    """True if the bytecode names ``cuda`` (``x.cuda()``, ``torch.cuda``) or a CUDA type string."""
    if "cuda" in code.co_names:
        return True
    for const in code.co_consts:
        if isinstance(const, str) and const.startswith("torch.cuda."):
            return True
        if isinstance(const, (tuple, frozenset)) and any(
            isinstance(c, str) and c.startswith("torch.cuda.") for c in const
        ):
            return True
        if isinstance(const, types.CodeType) and _mentions_cuda(const):
            return True
    return False


# raw function -> its wrapper, so that names bound by ``from x import f`` (possibly during a
# circular import, before f's module finished) are rebound too
_WRAPPED: dict[Callable, Callable] = {}


def _wrap_cuda_functions(owner: Any, module_name: str) -> None:
    """Wrap the functions (and methods of classes) defined in ``module_name`` that need it."""
    for name, value in list(vars(owner).items()):
        raw = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if inspect.isclass(value) and value.__module__ == module_name and owner is not value:
            _wrap_cuda_functions(value, module_name)
            continue
        if not inspect.isfunction(raw) or raw.__module__ != module_name:
            continue
        if getattr(raw, "__mindspeed_rl_cpu_wrapped__", False):
            continue
        # inspect.unwrap: decorators such as @torch.no_grad() hide the function's own bytecode
        if _mentions_cuda(inspect.unwrap(raw).__code__):
            wrapped = _in_megatron_context(raw)
            _WRAPPED[raw] = wrapped
            if isinstance(value, staticmethod):
                wrapped = staticmethod(wrapped)
            elif isinstance(value, classmethod):
                wrapped = classmethod(wrapped)
            setattr(owner, name, wrapped)


# --- per-module adaptation --------------------------------------------------------------------

_OPTIONAL_SYMBOLS = {
    # referenced unconditionally in 0.16.1 even when Transformer Engine is absent
    "megatron.core.transformer.moe.moe_utils": ("te_general_gemm",),
}


def _quantize_param_shard_without_te(model_params, *args, **kwargs) -> None:
    """0.12.x's fallback raises even when there is no FP8 parameter to quantize."""
    if len(model_params) > 0:
        raise RuntimeError("FP8 parameters need Transformer Engine, which is not installed")


# replacements for module attributes that are broken without Transformer Engine
_FIXUPS = {
    "megatron.core.fp8_utils": {"_quantize_param_shard_impl": _quantize_param_shard_without_te},
}


def _adapt_module(module: types.ModuleType) -> None:
    name = module.__name__
    namespace = module.__dict__
    if namespace.get("torch") is torch:
        namespace["torch"] = _TORCH_VIEW
    if name == "megatron.core.tensor_parallel.random":
        namespace["_get_cuda_rng_state"] = _cpu_rng_state
        namespace["_set_cuda_rng_state"] = _set_cpu_rng_state
    for symbol in _OPTIONAL_SYMBOLS.get(name, ()):
        namespace.setdefault(symbol, None)
    if importlib.util.find_spec("transformer_engine") is None:
        namespace.update(_FIXUPS.get(name, {}))
    known = len(_WRAPPED)
    _wrap_cuda_functions(module, name)
    if len(_WRAPPED) != known:
        for other in list(sys.modules.values()):
            if other is not None and other.__name__.startswith(_MEGATRON_PREFIX):
                _rebind_wrapped(other.__dict__)
    else:
        _rebind_wrapped(namespace)


def _rebind_wrapped(namespace: dict) -> None:
    for key, value in list(namespace.items()):
        if inspect.isfunction(value) and value in _WRAPPED:
            namespace[key] = _WRAPPED[value]


class _AdaptingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        _adapt_module(module)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, ... for tracebacks
        return getattr(self._inner, name)


class _MegatronFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith(_MEGATRON_PREFIX):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _AdaptingLoader(spec.loader)
        return spec


def install() -> None:
    """Adapt megatron-core to this CPU-only process. Idempotent. Refuses on accelerator hosts."""
    global _installed, _TORCH_VIEW
    if _installed:
        return
    from mindspeed_rl.platform.device import device_type

    kind = device_type()
    if kind != "cpu":
        raise RuntimeError(f"the CPU adaptor must not be installed on a {kind} host")
    _TORCH_VIEW = _TorchView()
    torch.Tensor.type = _tensor_type
    torch.Tensor.cuda = _tensor_cuda
    sys.meta_path.insert(0, _MegatronFinder())
    for mod_name, module in list(sys.modules.items()):
        if mod_name.startswith(_MEGATRON_PREFIX) and module is not None:
            _adapt_module(module)
    _installed = True


def is_installed() -> bool:
    return _installed
