"""mindspeed-rl: DAPO post-training for LLMs on Ascend NPUs, NVIDIA GPUs and CPUs.

Install torch for your platform first (see docs/install.md), then
``pip install -c constraints/<cpu|cuda|npu>.txt -e .[test]``: the constraint files pin versions
that are known to work together without upgrading the platform's torch.
"""

from setuptools import find_packages, setup

# Floors are the oldest versions Ascend hosts run (torch 2.5 with torch_npu 2.5; MindSpeed pins
# megatron-core 0.12.x); the constraint files pick the exact versions per platform.
INSTALL_REQUIRES = [
    "torch>=2.5",
    "megatron-core>=0.12,<0.17",
    "transformers>=4.51",
    "safetensors>=0.4",
    "tokenizers>=0.21",
    "ray[default]>=2.40",
    "pyyaml>=6.0",
    "numpy>=1.26",
    "pyarrow>=15",
    "tensordict>=0.6",
    "omegaconf>=2.3",
    "pydantic>=2.7",
    "tqdm>=4.66",
    "matplotlib>=3.8",  # the quickstart's plot (mindspeed_rl/quickstart/plot.py)
    # rule verifiers: math_verify_reward stands on math-verify (as in the Ascend suite);
    # math_17k_acc / base_acc read LaTeX answers as text with pylatexenc (the suite's pin)
    "math-verify>=0.9",
    "pylatexenc>=2.10",
]

setup(
    name="mindspeed_rl",
    version="0.1.0",
    description="DAPO RL post-training for LLMs: Ascend NPU first, same code on GPU and CPU",
    packages=find_packages(include=["mindspeed_rl", "mindspeed_rl.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # torch_npu must match the host's torch and CANN; MindSpeed and vllm-ascend are
        # installed from source (docs/install.md).
        "npu": ["torch_npu>=2.5"],
        "gpu": ["vllm>=0.8", "transformer_engine[pytorch]>=2.0"],
        "test": ["pytest>=8", "ruff>=0.6"],
        "tensorboard": ["tensorboard>=2.15"],
        "wandb": ["wandb>=0.17"],
    },
)
