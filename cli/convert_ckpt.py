"""Convert weights between Hugging Face and Megatron-core, and check that the logits agree.

Hugging Face -> Megatron (legacy layout, ``release``), MindSpeed-LLM's flags::

    python cli/convert_ckpt.py --use-mcore-models --model-type GPT --model-type-hf qwen2 \\
        --load-model-type hf --save-model-type mg \\
        --target-tensor-parallel-size 8 --target-pipeline-parallel-size 1 --add-qkv-bias \\
        --load-dir ./Qwen2.5-32B-Instruct --save-dir ./qwen25_32b_mcore_tp8 [--verify]

MoE checkpoints in MindSpeed's expert layout (whole experts over TP x EP shards, what the Ascend
suite's MoE recipes train with): add ``--moe-tp-extend-ep`` (``--moe-grouped-gemm`` for
GroupedMLP weights, as MindSpeed requires with it).

Megatron -> Hugging Face (safetensors shards + index, config.json, tokenizer files)::

    python cli/convert_ckpt.py --use-mcore-models --model-type GPT --model-type-hf qwen2 \\
        --load-model-type mg --save-model-type hf \\
        --load-dir ./ckpt/actor --save-dir ./qwen25_32b_dapo_hf \\
        --hf-config-dir ./Qwen2.5-32B-Instruct [--verify]

Logits check only (spawns TP x PP x EP CPU processes, loads the Hugging Face model in fp32)::

    python cli/convert_ckpt.py --verify --load-dir ./qwen25_32b_mcore_tp8 --hf-dir ./Qwen2.5-32B

Exit status: 0 done (and logits within --verify-tolerance), 1 logits differ beyond it, 2 bad
input: one message on stderr, and a conversion that fails leaves nothing in --save-dir; 130 on
Ctrl-C (nothing left in --save-dir either). ``--debug`` or ``MINDSPEED_RL_DEBUG=1`` adds the
traceback.
Details: docs/checkpoint_conversion.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindspeed_rl.cli_errors import configure_logging, debug_enabled, run_reporting_errors  # noqa: E402
from mindspeed_rl.models.registry import CLI_NAMES, architecture_for_cli  # noqa: E402

EXIT_OK, EXIT_MISMATCH, EXIT_INPUT = 0, 1, 2
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(text: str) -> int:
    """'5GB' -> 5e9, '500MiB' -> 500 * 2**20, '1000' -> 1000 bytes."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 5GB or 500MiB")
    number, unit = float(match.group(1)), match.group(2).upper()
    binary = "I" in unit
    letter = unit.replace("IB", "").replace("B", "")
    base = 2 ** (10 * "KMGT".index(letter) + 10) if binary and letter else _UNITS[letter]
    return int(number * base)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert_ckpt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--use-mcore-models", action="store_true", help="accepted (mcore is the only kind)")
    add("--model-type", default="GPT", choices=["GPT"], help="accepted (GPT is the only kind)")
    add("--model-type-hf", choices=sorted(CLI_NAMES), help="checked against config.json")
    add("--load-model-type", choices=["hf", "mg"], help="format of --load-dir")
    add("--save-model-type", choices=["hf", "mg"], help="format to write into --save-dir")
    add("--load-dir", type=Path, required=True, help="input checkpoint directory")
    add("--save-dir", type=Path, help="output directory (must be empty unless --force)")
    add("--target-tensor-parallel-size", type=int, default=1, help="TP of the mg output")
    add("--target-pipeline-parallel-size", type=int, default=1, help="PP of the mg output")
    add("--target-expert-parallel-size", type=int, default=1, help="EP of the mg output (MoE)")
    add("--num-layer-list", help="layers per pipeline stage of the mg output, e.g. 16,17,16,15")
    add("--add-qkv-bias", action="store_true", help="assert the model has qkv bias (Qwen2)")
    add("--moe-grouped-gemm", action="store_true", help="write experts as GroupedMLP weights")
    add(
        "--moe-tp-extend-ep",
        action="store_true",
        default=None,
        help="MindSpeed's expert layout: whole experts over TP x EP shards (mg output; for an mg "
        "input, what its shards hold when they do not record it)",
    )
    add("--make-vocab-size-divisible-by", type=int, default=1, help="pad vocab to k x TP rows")
    add("--padded-vocab-size", type=int, help="exact embedding rows of the mg output")
    add("--tokenizer-model", type=Path, help="tokenizer directory/file copied into the hf output")
    add("--hf-config-dir", type=Path, help="original HF model dir (config.json, tokenizer)")
    add("--max-shard-size", type=parse_size, default="5GB", help="hf output shard size")
    add("--force", action="store_true", help="replace a non-empty --save-dir")
    add("--verify", action="store_true", help="compare Megatron and transformers logits")
    add("--hf-dir", type=Path, help="HF model to compare with (--verify without conversion)")
    add("--verify-tolerance", type=float, default=1e-3, help="max abs logits difference")
    add("--verify-seq-length", type=int, default=32, help="random-token sequence length")
    add("--verify-batch-size", type=int, default=2, help="random-token batch size")
    add("--verify-prompt", action="append", help="text prompt (repeatable; needs a tokenizer)")
    add("--debug", action="store_true", help="print tracebacks of errors too")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    converting = args.load_model_type is not None or args.save_model_type is not None
    if converting:
        if args.load_model_type is None or args.save_model_type is None:
            raise ValueError("pass both --load-model-type and --save-model-type")
        if args.load_model_type == args.save_model_type:
            raise ValueError(
                f"--load-model-type and --save-model-type are both {args.load_model_type}"
            )
        if args.save_dir is None:
            raise ValueError("--save-dir is required to convert")
        if args.hf_dir is not None:
            raise ValueError("--hf-dir is for --verify without conversion")
    elif not args.verify:
        raise ValueError("nothing to do: pass --load-model-type/--save-model-type, or --verify")
    elif args.hf_dir is None:
        raise ValueError("--verify without conversion needs --hf-dir (the Hugging Face model)")
    for flag in ("tensor", "pipeline", "expert"):
        value = getattr(args, f"target_{flag}_parallel_size")
        if value < 1:
            raise ValueError(f"--target-{flag}-parallel-size {value}: must be at least 1")
    if args.make_vocab_size_divisible_by < 1:
        raise ValueError("--make-vocab-size-divisible-by must be at least 1")


def _pipeline_layers(args: argparse.Namespace) -> tuple[int, ...] | None:
    """--num-layer-list as layers per stage (checked against the model by the mapping)."""
    if args.num_layer_list is None:
        return None
    from mindspeed_rl.models.pipeline_split import parse_num_layer_list

    try:
        return parse_num_layer_list(args.num_layer_list)
    except ValueError as err:
        raise ValueError(f"--num-layer-list {err}") from None


def _size(summary) -> str:
    share = summary.kernel_bytes / summary.bytes if summary.bytes else 0.0
    return f"{summary.bytes / 2**30:.2f} GiB, {share:.0%} copied file to file"


def _convert(args: argparse.Namespace) -> tuple[Path, Path] | None:
    """Run the conversion; returns (mcore dir, hf dir) for --verify."""
    from mindspeed_rl.checkpoint.mcore_layout import ShardLayout

    model_type = architecture_for_cli(args.model_type_hf).model_type if args.model_type_hf else None
    if args.load_model_type == "hf":
        from mindspeed_rl.checkpoint.hf_to_mcore import HfToMcoreOptions, convert_hf_to_mcore
        from mindspeed_rl.models.hf_config import read_hf_config

        if args.add_qkv_bias:
            info, _ = read_hf_config(args.load_dir)
            if not info.model.add_qkv_bias:
                raise ValueError(
                    f"--add-qkv-bias given but {args.load_dir}/config.json is a "
                    f"{info.model_type} model, which has no qkv bias"
                )
        layout = ShardLayout(
            args.target_tensor_parallel_size,
            args.target_pipeline_parallel_size,
            args.target_expert_parallel_size,
            moe_tp_extend_ep=bool(args.moe_tp_extend_ep),
            pipeline_layers=_pipeline_layers(args),
        )
        summary = convert_hf_to_mcore(
            HfToMcoreOptions(
                hf_dir=args.load_dir,
                save_dir=args.save_dir,
                layout=layout,
                make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                padded_vocab_size=args.padded_vocab_size,
                grouped_experts=args.moe_grouped_gemm,
                expect_model_type=model_type,
                force=args.force,
            )
        )
        print(
            f"wrote {summary.files} Megatron shard(s) ({layout.describe()}, {_size(summary)}) "
            f"to {args.save_dir} in {summary.seconds:.2f} s"
        )
        return args.save_dir, args.load_dir
    from mindspeed_rl.checkpoint.mcore_to_hf import McoreToHfOptions, convert_mcore_to_hf

    summary = convert_mcore_to_hf(
        McoreToHfOptions(
            load_dir=args.load_dir,
            save_dir=args.save_dir,
            hf_config_dir=args.hf_config_dir,
            tokenizer=args.tokenizer_model,
            max_shard_bytes=args.max_shard_size,
            expect_model_type=model_type,
            moe_tp_extend_ep=args.moe_tp_extend_ep,
            force=args.force,
        )
    )
    print(
        f"wrote {summary.files} safetensors shard(s) ({_size(summary)}) to {args.save_dir} "
        f"in {summary.seconds:.2f} s"
    )
    return args.load_dir, args.save_dir


def _verify(args: argparse.Namespace, mcore_dir: Path, hf_dir: Path) -> int:
    from mindspeed_rl.checkpoint.logits_check import check_logits

    report = check_logits(
        mcore_dir,
        hf_dir,
        prompts=args.verify_prompt,
        seq_length=args.verify_seq_length,
        batch=args.verify_batch_size,
        moe_tp_extend_ep=args.moe_tp_extend_ep,
    )
    print(report)
    if not report.passed(args.verify_tolerance):
        print(
            f"convert_ckpt: logits differ: max abs diff {report.max_abs_diff:.3e} > "
            f"--verify-tolerance {args.verify_tolerance:g}",
            file=sys.stderr,
        )
        return EXIT_MISMATCH
    print(f"logits match within {args.verify_tolerance:g}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("%(levelname)s %(name)s: %(message)s")

    def run() -> int:
        _check_args(args)
        dirs = _convert(args) if args.load_model_type else (args.load_dir, args.hf_dir)
        return _verify(args, *dirs) if args.verify else EXIT_OK

    handlers = [((ValueError, RuntimeError, OSError), EXIT_INPUT, "error")]
    return run_reporting_errors("convert_ckpt", run, handlers, debug_enabled(args.debug))


if __name__ == "__main__":
    sys.exit(main())
