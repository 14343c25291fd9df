"""Recording stand-in of torch_npu for tests/platform/test_worker_setup_order.py: registers
``torch.npu`` as torch_npu does (the one attribute the platform layer asks before MindSpeed:
``is_available``) and records the order of imports. Not on the path of any other test."""

import sys

import torch

from . import _record

_record.event("torch_npu")


class _NPU:
    @staticmethod
    def is_available() -> bool:
        return True


torch.npu = _NPU()
sys.modules.setdefault("torch.npu", torch.npu)
