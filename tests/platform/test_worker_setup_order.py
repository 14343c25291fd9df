"""On NPU, the worker imports nothing of megatron before MindSpeed's adaptor.

MindSpeed 2.3.0_core_r0.12.1, ``mindspeed/megatron_adaptor.py``: on import it parses its switches
from ``sys.argv`` and applies ``MindSpeedFeaturesManager.apply_features_pre_patches`` -- "apply
patches before import megatron" -- which replace megatron modules (fused kernels, the jit fuser,
optimizers) that a prior import would already have bound. The worker's set-up therefore runs its
platform phase (``prepare_megatron``) before any phase that imports megatron.

Run in a fresh interpreter through the real ``IntegratedWorker.setup``, with recording stand-ins
(``tests/platform/standins``) for ``torch_npu`` (``torch.npu.is_available()``) and
``mindspeed.megatron_adaptor``, which records the megatron modules present and the command line
it parses, and then stops the set-up as a CPU cannot go further.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).with_name("standins")

BODY = r"""
import sys
from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.workers.integrated import IntegratedWorker

config = load_run_config(CONFIG_NAME, overrides=["megatron_training.use_flash_attn=true"])
assert not [m for m in sys.modules if m.startswith("megatron")], "the test itself imported it"
try:
    IntegratedWorker(0).setup(config, world_size=1, local_rank=0, master_addr="127.0.0.1",
                              master_port=29999, total_optimizer_steps=1)
except Exception as err:
    print("STOPPED", type(err).__name__, err)
"""


def test_no_megatron_module_before_the_mindspeed_adaptor(tmp_path):
    record = tmp_path / "record.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(STANDINS), str(REPO)]),
        "MINDSPEED_RL_DEVICE": "npu",
        "STANDIN_RECORD": str(record),
    }
    out = subprocess.run(
        [sys.executable, "-c", BODY], env=env, capture_output=True, text=True, timeout=300
    )
    assert "STOPPED AdaptorStandInStop" in out.stdout, out.stdout + out.stderr
    events = [json.loads(line) for line in record.read_text().splitlines()]
    assert [e["event"] for e in events] == ["torch_npu", "transfer_to_npu", "megatron_adaptor"]
    adaptor = events[-1]
    assert adaptor["megatron"] == [], f"imported before the adaptor: {adaptor['megatron'][:8]}"
    # the switches reach MindSpeed's argv parser (requested fusions on, the others off)
    assert "--use-flash-attn" in adaptor["argv"]
    assert "--use-fused-rmsnorm" not in adaptor["argv"]
