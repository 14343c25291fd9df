from pathlib import Path

import pytest
import torch

from tests.models import tiny_hf


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Every tiny architecture saved once per session as bf16 safetensors shards + index."""
    root = tmp_path_factory.mktemp("hf")
    return {
        name: tiny_hf.save_tiny_model(name, root / name, seed=i, dtype=torch.bfloat16)
        for i, name in enumerate(sorted(tiny_hf.MODELS))
    }


def read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors
