"""mindspeed-rl: DAPO post-training for LLMs on Ascend NPUs, NVIDIA GPUs and CPUs.

The package root imports nothing heavy: ``import mindspeed_rl.algorithms`` must stay cheap on any
machine. Sub-packages follow the layering in docs/architecture.md.
"""

from mindspeed_rl.platform import expected_warnings as _expected_warnings
from mindspeed_rl.platform import megatron_jit as _megatron_jit

__version__ = "0.1.0"

# first import of the package in every process (driver, Ray workers, CLIs): before megatron-core's
_expected_warnings.install()
_megatron_jit.install()  # on CPU, before megatron-core decorates anything with torch.compile
