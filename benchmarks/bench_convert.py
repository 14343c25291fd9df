"""Conversion speed and memory: a synthetic ~1B-parameter Qwen2 checkpoint, HF -> mcore -> HF.

    python benchmarks/bench_convert.py [--work-dir /tmp/bench_convert] [--layers 16] [--keep]

Writes a random bf16 Qwen2 checkpoint (hidden 2048, 16 heads / 2 KV heads, ffn 5632, vocab 64000,
untied, qkv bias; ~1.0B parameters) in ~500 MB safetensors shards with an index, then runs, each
in its own process so that its peak RSS is its own:

1. ``cli/convert_ckpt.py`` hf -> mg, TP=2 PP=2, next to two plain copies of its input files: in
   the kernel (``cp -r``: copy_file_range, no byte enters the process) and through a 64 MiB
   user-space buffer (``readinto`` + ``write``);
2. ``cli/convert_ckpt.py`` mg -> hf (5 GB shards, the transformers default), with the same two
   copies of the mcore files.

Each is repeated (``--repeats``, alternating, median and best reported). A conversion is timed
twice: as the CLI reports it (from its start to the last byte written) and as a whole process,
which adds a fixed start-up -- the interpreter and ``import torch`` -- measured alone in the
same run (a converter process that does nothing else). Goals: conversion <= 2x the copy time;
peak RSS <= largest output shard + 1 GiB. Files are hot in the page cache for every run. On a
virtual machine that hands freed memory back to its host, each run's page-cache allocation
costs vary by several times between runs: compare medians over several repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
SHARD_BYTES = 500 * 2**20


def model_config(layers: int):
    from mindspeed_rl.config.schema import ModelConfig

    return ModelConfig(
        num_layers=layers, hidden_size=2048, ffn_hidden_size=5632, num_attention_heads=16,
        num_query_groups=2, group_query_attention=True, max_position_embeddings=4096,
        rotary_base=1e6, padded_vocab_size=64000, add_qkv_bias=True, norm_epsilon=1e-6,
    )  # fmt: skip


def write_synthetic_checkpoint(out: Path, layers: int) -> int:
    """Random bf16 weights of every tensor Qwen2 has, shard by shard; returns parameters.

    Runs in its own process (``--generate``): the parent must stay small, since a child's peak
    RSS as the kernel reports it includes the parent's pages it was forked with.
    """
    import torch

    from mindspeed_rl.models.hf_config import hf_config_dict
    from mindspeed_rl.models.param_mapping import WeightMapping

    model = model_config(layers)
    shapes = WeightMapping(model, vocab_size=64000).hf_shapes()
    out.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    pending, pending_bytes, files, weight_map = {}, 0, [], {}

    def flush():
        from safetensors.torch import save_file

        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(pending, str(out / name), metadata={"format": "pt"})
        files.append((name, list(pending)))

    params = 0
    for name, shape in shapes.items():
        tensor = torch.randn(shape, generator=generator, dtype=torch.float32).to(torch.bfloat16)
        params += tensor.numel()
        if pending and pending_bytes + tensor.numel() * 2 > SHARD_BYTES:
            flush()
            pending, pending_bytes = {}, 0
        pending[name] = tensor
        pending_bytes += tensor.numel() * 2
    flush()
    for i, (name, names) in enumerate(files, start=1):
        final = f"model-{i:05d}-of-{len(files):05d}.safetensors"
        (out / name).rename(out / final)
        weight_map.update(dict.fromkeys(names, final))
    index = {"metadata": {"total_size": params * 2}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    config = hf_config_dict("qwen2", model, vocab_size=64000, dtype="bfloat16")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return params


def files_of(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def run_measured(args: list[str]) -> tuple[float, int, float | None]:
    """Run a command; return (wall seconds, its peak RSS in bytes, the seconds it reports).

    ``cli/convert_ckpt.py`` prints "... in X s": its time without interpreter start and imports.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed ({status}): {' '.join(args)}")
    reported = re.search(r" in ([0-9.]+) s$", output.strip())
    return seconds, usage.ru_maxrss * 1024, float(reported.group(1)) if reported else None


_COPY = """
import sys, pathlib
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
view = memoryview(bytearray(64 << 20))
for p in sorted(src.rglob("*")):
    if not p.is_file():
        continue
    out = dst / p.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "rb", buffering=0) as f, open(out, "wb", buffering=0) as g:
        while n := f.readinto(view):
            g.write(view[:n])
"""


def copy_command(source: Path, dest: Path, mode: str) -> list[str]:
    """A process copying every file of ``source``: ``cp`` (coreutils: copy_file_range, in the
    kernel), or Python through a user buffer."""
    if mode == "kernel":
        return ["cp", "-r", str(source), str(dest)]
    return [sys.executable, "-c", _COPY, str(source), str(dest)]


_STARTUP = "import mindspeed_rl.checkpoint.hf_to_mcore, mindspeed_rl.checkpoint.mcore_to_hf"


def _stats(values: list[float]) -> str:
    runs = ", ".join(f"{v:.2f}" for v in values)
    return f"median {statistics.median(values):5.2f} s, best {min(values):5.2f} s  ({runs})"


def _ratio(label: str, convert: list[float], copy: list[float]) -> str:
    """Per repeat (a conversion and the copies just before it share the machine's state), then
    the median of those ratios."""
    ratios = [c / p for c, p in zip(convert, copy, strict=True)]
    median = statistics.median(ratios)
    verdict = "met" if median <= 2 else "MISSED"
    runs = ", ".join(f"{r:.2f}" for r in ratios)
    return f"    {label:<44} median {median:4.2f}  ({runs})  goal <= 2: {verdict}"


def report(label: str, runs: dict[str, list[float]], rss: list[int], out: Path) -> None:
    largest = max(p.stat().st_size for p in files_of(out))
    total = sum(p.stat().st_size for p in files_of(out))
    rss_goal = largest + GIB
    print(f"{label}: output {total / GIB:.2f} GiB in {len(files_of(out))} files")
    for name, values in runs.items():
        print(f"    {name:<34} {_stats(values)}")
    copies = ("copy in the kernel (cp)", "copy through a user buffer")
    faster = [min(pair) for pair in zip(*(runs[c] for c in copies), strict=True)]
    conversion = runs["conversion (as the CLI reports)"]
    for copy in copies:
        print(_ratio(f"conversion / {copy}", conversion, runs[copy]))
    print(_ratio("conversion / the faster copy", conversion, faster))
    print(_ratio("whole process / the faster copy", runs["whole process"], faster))
    print(
        f"    peak RSS {max(rss) / GIB:.2f} GiB, largest output shard {largest / GIB:.2f} GiB -> "
        f"goal <= {rss_goal / GIB:.2f} GiB: {'met' if max(rss) <= rss_goal else 'MISSED'}"
    )


def measure(convert: list[str], source: Path, out: Path, copy_dir: Path, repeats: int):
    """Alternate the start-up, the copies and the conversion ``repeats`` times, each run
    starting with no dirty pages (os.sync) so that none pays for another's writeback."""
    runs: dict[str, list[float]] = {
        "whole process": [],
        "conversion (as the CLI reports)": [],
        "start-up alone (python + imports)": [],
        "copy in the kernel (cp)": [],
        "copy through a user buffer": [],
    }
    rss: list[int] = []
    startup = [sys.executable, "-c", _STARTUP]
    for _ in range(repeats):
        runs["start-up alone (python + imports)"].append(run_measured(startup)[0])
        for mode in ("kernel", "user"):
            shutil.rmtree(copy_dir, ignore_errors=True)
            os.sync()
            label = "copy in the kernel (cp)" if mode == "kernel" else "copy through a user buffer"
            runs[label].append(run_measured(copy_command(source, copy_dir, mode))[0])
        shutil.rmtree(copy_dir, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        os.sync()
        seconds, peak, reported = run_measured(convert)
        runs["whole process"].append(seconds)
        runs["conversion (as the CLI reports)"].append(reported)
        rss.append(peak)
    return runs, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.generate is not None:
        print(write_synthetic_checkpoint(args.generate, args.layers))
        return
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_convert_"))
    work.mkdir(parents=True, exist_ok=True)
    hf, mg, back = work / "hf", work / "mg", work / "hf_back"
    try:
        for path in (hf, mg, back, work / "copy"):
            shutil.rmtree(path, ignore_errors=True)
        start = time.perf_counter()
        generate = [sys.executable, __file__, "--generate", str(hf), "--layers", str(args.layers)]
        params = int(subprocess.run(generate, check=True, capture_output=True).stdout)
        size = sum(p.stat().st_size for p in files_of(hf))
        print(
            f"synthetic Qwen2: {params / 1e9:.2f}B parameters, bf16, {len(files_of(hf)) - 2} "
            f"shards, {size / GIB:.2f} GiB (written in {time.perf_counter() - start:.1f} s)"
        )
        convert = [sys.executable, "cli/convert_ckpt.py", "--use-mcore-models",
                   "--model-type", "GPT", "--model-type-hf", "qwen2"]  # fmt: skip
        to_mg = convert + [
            "--load-model-type", "hf", "--save-model-type", "mg", "--load-dir", str(hf),
            "--save-dir", str(mg), "--target-tensor-parallel-size", "2",
            "--target-pipeline-parallel-size", "2", "--add-qkv-bias",
        ]  # fmt: skip
        runs, rss = measure(to_mg, hf, mg, work / "copy", args.repeats)
        report("hf -> mg (TP=2 PP=2)", runs, rss, mg)
        to_hf = convert + [
            "--load-model-type", "mg", "--save-model-type", "hf", "--load-dir", str(mg),
            "--save-dir", str(back),
        ]  # fmt: skip
        runs, rss = measure(to_hf, mg, back, work / "copy", args.repeats)
        report("mg -> hf (5 GB shards)", runs, rss, back)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
