"""mindspeed-rl: DAPO post-training for LLMs on Ascend NPUs, NVIDIA GPUs and CPUs.

The package root imports nothing heavy: ``import mindspeed_rl.algorithms`` must stay cheap on any
machine. Sub-packages follow the layering in docs/architecture.md.
"""

__version__ = "0.1.0"
