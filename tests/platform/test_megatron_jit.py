"""megatron-core's torch.compile fuser: off on CPU before its modules decorate anything, as
megatron-core sets it on accelerators; and the eager functions compute what the fused ones do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# a fresh interpreter: the hook must act on the first import of megatron-core
_PROBE = """
import json, sys
import mindspeed_rl
from mindspeed_rl.platform import megatron_jit
if sys.argv[1] == "accelerator":  # what device_type() answers on a GPU / NPU host
    megatron_jit._on_cpu = lambda: False
import megatron.core.models.gpt, megatron.core.optimizer
import megatron.core.jit as jit
from megatron.core.fusions import fused_bias_swiglu
import torch
print(json.dumps({
    "fuser": jit.jit_fuser.__name__,
    "swiglu_compiled": hasattr(fused_bias_swiglu.swiglu, "_torchdynamo_orig_callable"),
    "inductor_imported": "torch._inductor.compile_fx" in sys.modules,
    "reinstall": megatron_jit.install(),
}))
"""


def _probe(platform: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _PROBE, platform],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_imports_megatron_without_torch_compile():
    seen = _probe("cpu")
    assert seen["fuser"] == "noop_decorator"
    assert not seen["swiglu_compiled"]
    assert not seen["inductor_imported"]
    assert seen["reinstall"] is False  # megatron-core is imported: too late, and said so


def test_accelerators_keep_megatron_cores_fuser():
    seen = _probe("accelerator")
    assert seen["fuser"] == "compile"
    assert seen["swiglu_compiled"]  # decorated by torch.compile


def test_eager_swiglu_equals_the_compiled_definition():
    """What the decorator would have wrapped is the same function: the values match the
    definition of SwiGLU computed by hand."""
    import torch
    from megatron.core.fusions import fused_bias_swiglu

    x = torch.randn(4, 6, dtype=torch.float64)
    a, b = torch.chunk(x, 2, dim=-1)
    expected = torch.nn.functional.silu(a) * b
    assert torch.allclose(fused_bias_swiglu.swiglu(x), expected)
