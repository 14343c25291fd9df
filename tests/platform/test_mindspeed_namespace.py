"""On NPU, MindSpeed gets the typed config twice, in the order it documents: as command-line flags
while ``mindspeed.megatron_adaptor`` is imported (before anything of ``megatron.training``), and
as Megatron-LM's argument namespace (Megatron-LM's defaults, plus MindSpeed's, overlaid with the
config). Stub ``torch_npu``, ``mindspeed`` and ``megatron.training`` packages stand in for the
Ascend stack; a subprocess keeps them out of this one."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

STUBS = {
    "torch_npu/__init__.py": "",
    "torch_npu/contrib/__init__.py": "",
    "torch_npu/contrib/transfer_to_npu.py": "",
    "mindspeed/__init__.py": "",
    # what the real adaptor does that matters here: read sys.argv on import, then extend
    # Megatron-LM's parser with MindSpeed's arguments
    "mindspeed/megatron_adaptor.py": """
        import argparse, sys
        TRAINING_IMPORTED_FIRST = "megatron.training" in sys.modules
        ARGV = list(sys.argv[1:])
        import megatron.training.arguments as arguments
        _parse = arguments.parse_args
        def parse_args(extra_args_provider=None, ignore_unknown_args=False):
            def mindspeed_args(parser):
                parser.add_argument("--sparse-mode", type=int, default=0)
                parser.add_argument("--tp-2d", action="store_true")
                parser.add_argument("--use-flash-attn", action="store_true")
                return parser
            return _parse(mindspeed_args, ignore_unknown_args)
        arguments.parse_args = parse_args
    """,
    "megatron/training/__init__.py": "",
    "megatron/training/global_vars.py": "_GLOBAL_ARGS = None",
    "megatron/training/arguments.py": """
        import argparse
        def parse_args(extra_args_provider=None, ignore_unknown_args=False):
            parser = argparse.ArgumentParser(allow_abbrev=False)
            parser.add_argument("--tensor-model-parallel-size", type=int, default=1)
            parser.add_argument("--num-layers", type=int, default=None)
            parser.add_argument("--sequence-parallel", action="store_true")
            parser.add_argument("--use-fused-swiglu", action="store_true")
            parser.add_argument("--position-embedding-type", default="learned_absolute")
            if extra_args_provider is not None:
                parser = extra_args_provider(parser)
            if ignore_unknown_args:
                return parser.parse_known_args()[0]
            return parser.parse_args()
    """,
}

SCRIPT = """
import json, sys
from mindspeed_rl.platform import megatron_setup
megatron_setup.device_type = lambda: "npu"
argv = list(sys.argv)
megatron_setup.prepare_megatron({
    "tensor_model_parallel_size": 8, "sequence_parallel": True, "use_flash_attn": True,
    "use_fused_swiglu": False, "num_layers": 4, "bf16": True, "load": None,
    **json.loads(sys.argv[1]),
})
import mindspeed.megatron_adaptor as adaptor
from megatron.training import global_vars
args = vars(global_vars._GLOBAL_ARGS)
print(json.dumps({
    "training_imported_first": adaptor.TRAINING_IMPORTED_FIRST,
    "adaptor_argv": adaptor.ARGV,
    "argv_restored": sys.argv == argv,
    "args": {k: str(v) if k == "params_dtype" else v for k, v in args.items()},
}))
"""


def _prepare_with_stubs(tmp_path, extra: dict | None = None) -> dict:
    for name, text in STUBS.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(extra or {})],
        env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_adaptor_comes_first_and_the_namespace_holds_megatron_and_mindspeed_defaults(tmp_path):
    result = _prepare_with_stubs(tmp_path)
    assert result["training_imported_first"] is False
    assert result["argv_restored"]
    argv = result["adaptor_argv"]
    assert "--use-flash-attn" in argv and "--sequence-parallel" in argv
    assert argv[argv.index("--tensor-model-parallel-size") + 1] == "8"
    assert "--use-fused-swiglu" not in argv and "--load" not in argv
    args = result["args"]
    # MindSpeed's defaults, Megatron-LM's defaults, then the typed config on top
    assert args["sparse_mode"] == 0 and args["tp_2d"] is False
    assert args["position_embedding_type"] == "learned_absolute"
    assert args["tensor_model_parallel_size"] == 8 and args["num_layers"] == 4
    assert args["sequence_parallel"] is True and args["use_flash_attn"] is True
    assert args["use_fused_swiglu"] is False and args["load"] is None
    assert args["params_dtype"] == "torch.bfloat16"


def test_moe_tp_extend_ep_reaches_mindspeed_as_megatron_core_sizes(tmp_path):
    """megatron-core places the experts (expert TP 1, EP = TP x EP); MindSpeed 2.3.0's own
    moe_tp_extend_ep patches (BaseMoELayer: num_experts // EP // TP) must not run on top."""
    result = _prepare_with_stubs(
        tmp_path, {"moe_tp_extend_ep": True, "expert_model_parallel_size": 2}
    )
    assert "--moe-tp-extend-ep" not in result["adaptor_argv"]
    argv = result["adaptor_argv"]
    assert argv[argv.index("--expert-model-parallel-size") + 1] == "16"
    assert argv[argv.index("--expert-tensor-parallel-size") + 1] == "1"
    args = result["args"]
    assert args["moe_tp_extend_ep"] is False
    assert args["expert_model_parallel_size"] == 16 and args["expert_tensor_parallel_size"] == 1
